//! The control side of a running supervisor: requests from the FIFO and the socket flow
//! into the runner, the discovery file advertises the server, the idle watch (serve mode)
//! shuts it down when no client is left, and everything is removed at the end.

use std::io::Write;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::Input;
use super::machine::Event;
use crate::control::{self, RuntimePaths, ServerInfo};
use crate::duration::format_timeout;
use crate::output::Output;
use crate::server::{IdlePolicy, IdleWatch};

/// What the server bootstrap hands the supervisor: bound channels and their paths.
pub struct Listening {
    /// FIFO and socket, already bound.
    pub listener: control::Listener,
    /// Where they and the discovery file live.
    pub paths: RuntimePaths,
    /// `Some` in serve mode: new processes are accepted, and when to leave for lack of clients.
    pub serve: Option<IdlePolicy>,
    /// Told "ready" once the server listens (by `attach`, which started it).
    pub ready: Option<std::fs::File>,
}

/// The running control side.
pub(super) struct Listener {
    forward: AbortHandle,
    paths: RuntimePaths,
    idle: Option<IdleWatch>,
    /// Started by `attach`, with stdout in a log beside the runtime files: on a clean exit
    /// that log repeats `procman.log` and goes too.
    started_by_attach: bool,
}

impl Listener {
    /// Forwards requests to the runner, writes the discovery file, starts the idle watch,
    /// and tells `attach` (if it started us) that we listen.
    pub(super) fn start(
        listening: Listening,
        output: &Output,
        inputs: &mpsc::UnboundedSender<Input>,
    ) -> Listener {
        let Listening {
            mut listener,
            paths,
            serve,
            ready,
        } = listening;
        let forward = {
            let inputs = inputs.clone();
            tokio::spawn(async move {
                while let Some(incoming) = listener.next().await {
                    if inputs.send(Input::Control(incoming)).is_err() {
                        break;
                    }
                }
            })
        };
        if let Err(e) = ServerInfo::current(&paths).write(&paths.discovery) {
            output.procman(&format!("cannot write {}: {e}", paths.discovery.display()));
        }
        if serve.is_some() {
            output.procman(&format!(
                "listening on {} and {}",
                paths.fifo.display(),
                paths.socket.display()
            ));
        }
        let idle =
            serve
                .filter(|policy| !policy.is_never())
                .and_then(|policy| match IdleWatch::new(&paths) {
                    Ok(watch) => {
                        let inputs = inputs.clone();
                        watch.spawn(policy, move |reason| {
                            let _ = inputs.send(Input::Event(Event::Idle(reason)));
                        });
                        output.procman(&format!(
                            "idle shutdown: no-client timeout {}, disconnect timeout {}",
                            format_timeout(policy.no_client),
                            format_timeout(policy.disconnect)
                        ));
                        Some(watch)
                    }
                    Err(e) => {
                        output.procman(&format!(
                            "cannot watch for clients, idle shutdown is off: {e:#}"
                        ));
                        None
                    }
                });
        let started_by_attach = ready.is_some();
        if let Some(mut ready) = ready {
            let _ = ready.write_all(b"ready\n");
        }
        Listener {
            forward: forward.abort_handle(),
            paths,
            idle,
            started_by_attach,
        }
    }

    /// No longer discoverable: new clients get "no server" or start a fresh one instead of
    /// talking to one that is leaving. Connections already accepted stay open, so replies
    /// in flight (to `stop`) are delivered.
    pub(super) fn stop_listening(&self) {
        let paths = &self.paths;
        for path in [&paths.discovery, &paths.fifo, &paths.socket] {
            let _ = procref::discovery::remove(path);
        }
        if let Some(idle) = &self.idle {
            idle.unlock();
        }
    }

    /// The end: lets connection tasks write the replies already handed to them, then stops
    /// and removes what is ours.
    pub(super) async fn close(self) {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        self.forward.abort();
        if let Some(idle) = &self.idle {
            idle.remove_if_unused();
        }
        if self.started_by_attach {
            let _ = procref::discovery::remove(&self.paths.discovery.with_extension("log"));
        }
    }
}
