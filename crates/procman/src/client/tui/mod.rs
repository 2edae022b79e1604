//! `procman tui`: a live terminal view of a running stack, a client of its server's
//! socket like any other (docs/protocol.md).
//!
//! One subscription streams the process table and every output line; keys turn into
//! one-off requests. The pieces: [`app`] (state, and how messages and keys change it),
//! [`connection`] (the streaming connection), [`pane`] (bounded output tails, scrolling,
//! search), [`ansi`] (a process's colours, nothing else of its escapes), [`render`],
//! [`keys`], and [`terminal`] (the terminal's modes, restored on every way out).

mod ansi;
mod app;
mod connection;
mod keys;
mod pane;
mod render;
mod terminal;

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use procref::process::Process;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use self::app::{Action, App};
use self::connection::FromServer;
use self::terminal::TerminalGuard;
use super::attach::{AttachOptions, ensure_server};
use super::{ClientReference, warn_on_version_skew};
use crate::control::{self, RuntimePaths, ServerInfo, Stream};
use crate::duration::format_timeout;
use crate::protocol::{LogsRequest, Message, PROTOCOL_VERSION, Reply, Timestamp};

/// Shortest time between two frames while output pours in.
const FRAME: Duration = Duration::from_millis(33);

/// Most messages taken in between two looks at the keys and the clock.
const BATCH: usize = 4096;

/// Bound on starting a server for the view.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on one request made with a key (a stop waits for the process's `stop_timeout`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// `procman tui [CONFIG]`: shows the stack of the server for `config` until `q`; offers
/// to start a server when none runs, with these idle timeouts (`attach`'s). Returns the
/// exit code.
pub fn tui(
    config: &Path,
    disconnect_timeout: Option<Duration>,
    no_client_timeout: Option<Duration>,
) -> Result<i32> {
    let options = AttachOptions {
        disconnect_timeout,
        no_client_timeout,
        startup_timeout: STARTUP_TIMEOUT,
        serve_args: Vec::new(),
    };
    let paths = RuntimePaths::for_config(config)?;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let running = ServerInfo::read(&paths.discovery).filter(ServerInfo::is_live);
    if let Some(server) = &running {
        if server.protocol != PROTOCOL_VERSION {
            bail!(
                "the server for {} (pid {}) speaks protocol {}, this procman speaks {}; \
                 use the procman that started it",
                paths.config.display(),
                server.pid,
                server.protocol,
                PROTOCOL_VERSION
            );
        }
        warn_on_version_skew(server);
    } else if !(interactive && offer_server(&paths, disconnect_timeout)?) {
        let config = paths.config.display();
        eprintln!(
            "procman: no server runs for {config}; start one with `procman serve {config}` \
             (or `procman tui` in a terminal offers to)"
        );
        return Ok(1);
    }
    if !interactive {
        bail!("procman tui needs a terminal: its standard input and output are not both one");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(open(&paths, running.is_none().then_some(options)))
}

/// Asks whether to start a server; `true` for yes.
fn offer_server(paths: &RuntimePaths, disconnect: Option<Duration>) -> Result<bool> {
    let mut stderr = std::io::stderr();
    let lingers = match disconnect {
        Some(after) => format!(
            "it stops {} after the last client leaves",
            format_timeout(Some(after))
        ),
        None => "it runs until `procman stop`".into(),
    };
    write!(
        stderr,
        "No procman server runs for {}. Start one ({lingers})? [y/N] ",
        paths.config.display(),
    )?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// Holds a reference (starting a server with `start`'s options first), then runs the view.
async fn open(paths: &RuntimePaths, start: Option<AttachOptions>) -> Result<i32> {
    let reference = ClientReference::acquire(paths)?;
    let started = match start {
        Some(options) => Some((
            ensure_server(paths, reference.counter(), &options).await?,
            options.disconnect_timeout,
        )),
        None => None,
    };
    let code = run(paths, started).await;
    drop(reference);
    code
}

/// What the subscription task reports.
enum Incoming {
    /// A message from the server.
    Server(FromServer),
    /// The subscription ended; `snapshot` says whether it had delivered the table.
    Closed {
        error: Option<control::ClientError>,
        snapshot: bool,
    },
}

/// Why the view ended.
enum Outcome {
    /// `q`: the stack keeps running.
    Quit,
    /// This signal asked the view to end.
    Signal(i32),
    /// The stack stopped after this view asked it to (`Q`).
    StackStopped,
    /// The server went away on its own: why.
    ServerGone(String),
    /// The terminal closed (its input ended).
    TerminalGone,
}

/// The server process, pinned by a pidfd that a thread waits on in `poll(2)`, so its exit
/// is noticed without polling.
struct ServerWatch {
    pid: u32,
    exited: watch::Receiver<bool>,
}

fn watch_server(paths: &RuntimePaths) -> Option<ServerWatch> {
    let info = ServerInfo::read(&paths.discovery)?;
    let process = Process::open_verified(info.pid, info.start_time)?;
    let (tx, exited) = watch::channel(false);
    std::thread::Builder::new()
        .name("tui-server-exit".into())
        .spawn(move || {
            process.wait_exit(None);
            let _ = tx.send(true);
        })
        .ok()?;
    Some(ServerWatch {
        pid: info.pid,
        exited,
    })
}

/// The event loop: server messages, keys, answers, signals and the clock in; frames out.
async fn run(paths: &RuntimePaths, started: Option<(ServerInfo, Option<Duration>)>) -> Result<i32> {
    // Signals first: from the moment the terminal changes, they must reach this loop.
    let mut signals = [
        (libc::SIGTERM, signal(SignalKind::terminate())?),
        (libc::SIGHUP, signal(SignalKind::hangup())?),
        (libc::SIGINT, signal(SignalKind::interrupt())?),
        (libc::SIGQUIT, signal(SignalKind::quit())?),
    ];
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut app = App::new(paths.config.display().to_string(), color);
    if let Some((server, disconnect)) = &started {
        app.tell(
            format!(
                "started a server (pid {}), which stops {} after the last client leaves; log: {}",
                server.pid,
                format_timeout(*disconnect),
                paths.discovery.with_extension("log").display()
            ),
            false,
        );
    }
    let mut server = watch_server(paths);
    let server_pid = server.as_ref().map(|w| w.pid);
    let (server_tx, mut server_rx) = mpsc::channel(1024);
    tokio::spawn(subscribe(paths.clone(), server_tx.clone()));
    let (answer_tx, mut answer_rx) = mpsc::unbounded_channel();

    let mut guard = TerminalGuard::enter().context("preparing the terminal")?;
    let mut events = read_terminal_events();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut failed_subscriptions = 0;
    let mut dirty = true;
    let mut next_frame = Instant::now();
    let outcome = 'events: loop {
        if dirty && Instant::now() >= next_frame {
            guard
                .terminal
                .draw(|frame| render::draw(frame, &mut app, Timestamp::now()))
                .context("drawing")?;
            dirty = false;
            next_frame = Instant::now() + FRAME;
        }
        let counting = app.counting();
        let [term, hup, int, quit] = &mut signals;
        tokio::select! {
            _ = term.1.recv() => break Outcome::Signal(term.0),
            _ = hup.1.recv() => break Outcome::Signal(hup.0),
            _ = int.1.recv() => break Outcome::Signal(int.0),
            _ = quit.1.recv() => break Outcome::Signal(quit.0),
            event = events.recv() => {
                let Some(event) = event else { break Outcome::TerminalGone };
                let Some(command) = keys::command(&event, &app.mode) else { continue };
                match app.on_command(command) {
                    Some(Action::Quit) => break Outcome::Quit,
                    Some(Action::Request { message, doing }) => {
                        let (paths, answers) = (paths.clone(), answer_tx.clone());
                        tokio::spawn(async move {
                            let answer = control::request(&paths, &message, REQUEST_TIMEOUT).await;
                            let _ = answers.send((doing, answer));
                        });
                    }
                    None => {}
                }
                dirty = true;
                next_frame = Instant::now();
            }
            Some((doing, answer)) = answer_rx.recv() => {
                app.on_answer(&doing, answer);
                dirty = true;
            }
            incoming = server_rx.recv() => {
                // Take in what has arrived, but draw at least once a batch while output
                // pours in.
                let mut next = incoming;
                let mut budget = BATCH;
                while let Some(incoming) = next.take() {
                    match incoming {
                        Incoming::Server(message) => {
                            if matches!(message, FromServer::Reply(Reply::Status { .. })) {
                                failed_subscriptions = 0;
                            }
                            app.on_server(message);
                        }
                        Incoming::Closed { error, snapshot } => {
                            failed_subscriptions += usize::from(!snapshot);
                            match after_close(paths, server_pid, failed_subscriptions, error) {
                                AfterClose::Resubscribe => {
                                    app.await_tail();
                                    tokio::spawn(subscribe(paths.clone(), server_tx.clone()));
                                }
                                AfterClose::WaitForExit => {}
                                AfterClose::Gone(why) => break 'events Outcome::ServerGone(why),
                            }
                        }
                    }
                    budget -= 1;
                    if budget > 0 {
                        next = server_rx.try_recv().ok();
                    }
                }
                dirty = true;
            }
            () = exited(&mut server) => {
                break if app.stopping_stack {
                    Outcome::StackStopped
                } else {
                    Outcome::ServerGone("the server has exited".into())
                };
            }
            _ = tick.tick(), if counting => dirty = true,
            _ = tokio::time::sleep_until(next_frame), if dirty => {}
        }
    };
    drop(guard);
    let config = paths.config.display();
    Ok(match outcome {
        Outcome::Quit => 0,
        Outcome::Signal(signal) => 128 + signal,
        Outcome::StackStopped => {
            println!("procman: stopped the stack of {config}");
            0
        }
        Outcome::ServerGone(why) => {
            eprintln!("procman: {why} (config {config}); the view is closed. Last known states:");
            eprintln!("{}", super::status::table(&app.processes, Timestamp::now()));
            1
        }
        Outcome::TerminalGone => 1,
    })
}

/// What to do once the subscription ended.
enum AfterClose {
    /// The server still serves: it dropped the view (too far behind), subscribe again.
    Resubscribe,
    /// The server is leaving: wait for its exit.
    WaitForExit,
    /// Nothing more to wait for.
    Gone(String),
}

fn after_close(
    paths: &RuntimePaths,
    server_pid: Option<u32>,
    failures: usize,
    error: Option<control::ClientError>,
) -> AfterClose {
    let serving = ServerInfo::read(&paths.discovery)
        .filter(ServerInfo::is_live)
        .is_some_and(|info| Some(info.pid) == server_pid);
    let why = || match &error {
        Some(e) => format!("the connection to the server failed: {e}"),
        None => "the server closed the connection".into(),
    };
    match (server_pid, serving) {
        (None, _) => AfterClose::Gone(why()),
        (Some(_), true) if failures < 3 => AfterClose::Resubscribe,
        (Some(_), true) => AfterClose::Gone(why()),
        (Some(_), false) => AfterClose::WaitForExit,
    }
}

/// Resolves once the server has exited (never, if it could not be pinned).
async fn exited(server: &mut Option<ServerWatch>) {
    match server {
        Some(watch) => {
            let _ = watch.exited.wait_for(|&gone| gone).await;
        }
        None => std::future::pending().await,
    }
}

/// Subscribes (with output lines) and forwards what arrives; once the table snapshot is
/// in, fetches the kept output tail on a second connection.
async fn subscribe(paths: RuntimePaths, tx: mpsc::Sender<Incoming>) {
    let request = Message::Subscribe { logs: true };
    let mut snapshot = false;
    let error = match Stream::open(&paths, &request).await {
        Err(e) => Some(e),
        Ok(mut stream) => loop {
            match stream.next().await {
                Ok(Some(reply)) => {
                    let message = FromServer::from(reply);
                    let first =
                        !snapshot && matches!(message, FromServer::Reply(Reply::Status { .. }));
                    if tx.send(Incoming::Server(message)).await.is_err() {
                        return;
                    }
                    if first {
                        snapshot = true;
                        tokio::spawn(fetch_tail(paths.clone(), tx.clone()));
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        },
    };
    let _ = tx.send(Incoming::Closed { error, snapshot }).await;
}

/// The server's kept output (oldest first, from as many `logs` replies as it takes); an
/// empty tail if it has none to give.
async fn fetch_tail(paths: RuntimePaths, tx: mpsc::Sender<Incoming>) {
    let request = Message::Logs(LogsRequest {
        names: Vec::new(),
        lines: pane::MERGED_LINES,
        since: None,
        follow: false,
    });
    let fetch = async {
        let mut stream = Stream::open(&paths, &request).await.ok()?;
        let mut kept = Vec::new();
        loop {
            match stream.next().await.ok()?? {
                Reply::Logs { lines, more } => {
                    kept.extend(lines);
                    if !more {
                        return Some(kept);
                    }
                }
                _ => return None,
            }
        }
    };
    let lines = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let _ = tx.send(Incoming::Server(FromServer::Logs(lines))).await;
}

/// Terminal events, read on their own thread (crossterm's reading blocks).
fn read_terminal_events() -> mpsc::Receiver<crossterm::event::Event> {
    let (tx, rx) = mpsc::channel(256);
    std::thread::Builder::new()
        .name("tui-input".into())
        .spawn(move || {
            while let Ok(event) = crossterm::event::read() {
                if tx.blocking_send(event).is_err() {
                    break;
                }
            }
        })
        .ok();
    rx
}
