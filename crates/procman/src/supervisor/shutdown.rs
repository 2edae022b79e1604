//! Shutdown: stop every process group in reverse start order, each within its
//! `stop_timeout`, then SIGKILL; a second Ctrl-C kills at once.

use std::time::Duration;

use rustix::process::Signal;
use tokio::sync::mpsc;

use super::{Event, ExitSignal, State, Stop, Supervisor, describe_exit};

impl Supervisor {
    /// The one shutdown path, whatever the trigger; returns the exit code.
    pub(super) async fn shutdown(
        &mut self,
        stop: Stop,
        inbox: &mut mpsc::UnboundedReceiver<Event>,
    ) -> i32 {
        let code = match &stop {
            Stop::Failure { reason, code } => {
                self.output.procman(&format!("shutting down: {reason}"));
                *code
            }
            Stop::Requested { reason } => {
                self.output.procman(&format!("shutting down: {reason}"));
                0
            }
            Stop::Finished => 0,
        };
        // New requests now get "no server" instead of being ignored.
        if let Some(serving) = &self.serve {
            // No longer discoverable: new clients get "no server" or start a fresh one
            // instead of talking to one that is leaving. Connections already accepted
            // stay open until the end, so replies in flight (to `stop`) are delivered.
            let paths = &serving.paths;
            for path in [&paths.discovery, &paths.fifo, &paths.socket] {
                let _ = procref::discovery::remove(path);
            }
            if let Some(idle) = &serving.idle {
                idle.unlock();
            }
        }
        self.waiting.clear();
        self.output.set_status(None);
        if self.options.debug && matches!(stop, Stop::Failure { .. }) {
            self.debug_pause(inbox).await;
        }
        for proc in &mut self.procs {
            proc.tasks.drain(..).for_each(|t| t.abort());
        }
        // Stop in reverse start order: dependents before what they depend on.
        let mut order: Vec<usize> = (0..self.procs.len())
            .filter(|&i| matches!(self.procs[i].state, State::Running(_)))
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.procs[i].started_seq));
        let mut kill_now = false;
        for index in order {
            kill_now = self.stop_one(index, kill_now, Some(&mut *inbox)).await;
        }
        if let Some(serving) = &self.serve {
            // Let connection tasks write the replies already handed to them.
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            serving.forward.abort();
            if let Some(idle) = &serving.idle {
                idle.remove_if_unused();
            }
            if serving.started_by_attach {
                let _ = procref::discovery::remove(&serving.paths.discovery.with_extension("log"));
            }
        }
        self.output.procman(&format!("exiting with code {code}"));
        let _ = self.output.flush();
        code
    }

    /// SIGTERM to the group, up to `stop_timeout`, then SIGKILL. A second SIGINT turns
    /// every remaining stop into an immediate SIGKILL. Returns whether that happened.
    pub(super) async fn stop_one(
        &mut self,
        index: usize,
        mut kill_now: bool,
        mut inbox: Option<&mut mpsc::UnboundedReceiver<Event>>,
    ) -> bool {
        let proc = &mut self.procs[index];
        let name = proc.spec.name.clone();
        let timeout = proc.spec.stop_timeout;
        let State::Running(child) = &mut proc.state else {
            return kill_now;
        };
        let exited: ExitSignal = child.exit_signal();
        let pid = child.pid();
        if !kill_now {
            child.signal_group(Signal::TERM);
            let deadline = tokio::time::Instant::now() + timeout;
            let mut leader_exited = false;
            // Done when the leader has exited and nothing else is left in its group. The
            // leader's exit arrives on its pidfd; the other members are not our children
            // and the kernel reports no event for an emptied group, so while stragglers
            // remain (and only then) we look again every 20 ms, up to the deadline.
            while !leader_exited || child.group_alive() {
                tokio::select! {
                    _ = exited.wait(), if !leader_exited => {
                        leader_exited = true;
                        // A zombie leader still counts as a member of its group: reap it
                        // now (the status is kept for the log line below).
                        child.try_reap();
                    }
                    _ = tokio::time::sleep(Duration::from_millis(20)), if leader_exited => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        self.output.procman(&format!("{name} [{pid}] did not stop within {timeout:?}: SIGKILL"));
                        break;
                    }
                    Some(event) = async { match inbox.as_mut() { Some(inbox) => inbox.recv().await, None => std::future::pending().await } } => {
                        if let Event::Signal(libc::SIGINT) = event {
                            self.output.procman("second interrupt: killing everything now");
                            kill_now = true;
                            break;
                        }
                    }
                }
            }
        }
        let State::Running(child) = &mut self.procs[index].state else {
            return kill_now;
        };
        // Whatever is left of the group (the leader, or descendants that ignored SIGTERM).
        if child.group_alive() {
            child.signal_group(Signal::KILL);
        }
        exited.wait_timeout(Duration::from_secs(5)).await;
        let status = child.try_reap();
        let elapsed = child.started.elapsed().as_secs_f64();
        self.lifeline.forget(pid);
        if let Some(status) = status {
            let (how, code) = describe_exit(status);
            self.procs[index].exit_code = Some(code);
            self.output
                .procman(&format!("{name} [{pid}] {how} after {elapsed:.1}s"));
        }
        self.procs[index].state = State::Exited;
        kill_now
    }

    async fn debug_pause(&mut self, inbox: &mut mpsc::UnboundedReceiver<Event>) {
        self.output
            .procman("debug mode: shutdown paused; still running:");
        for proc in &self.procs {
            if let State::Running(child) = &proc.state {
                self.output
                    .procman(&format!("  - {} [pid {}]", proc.spec.name, child.pid()));
            }
        }
        self.output
            .procman("press ENTER to continue shutdown (or Ctrl-C)");
        let enter = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        });
        tokio::select! {
            _ = enter => {}
            _ = async { while !matches!(inbox.recv().await, Some(Event::Signal(_)) | None) {} } => {}
        }
    }
}
