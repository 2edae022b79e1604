//! `procman tui` in a real pseudo-terminal against a real server: the screen is read back
//! through a terminal emulator (vt100), keys are typed into the terminal.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{Served, free_port, unique_sleep};
use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};

/// Bound on every wait for the screen or a process.
const T: Duration = Duration::from_secs(30);

/// Screens kept for [`Pty::saw`].
const KEPT_SCREENS: usize = 2000;

/// What the terminal received.
struct Terminal {
    parser: vt100::Parser,
    raw: Vec<u8>,
    /// Successive distinct screens, oldest first (bounded).
    screens: Vec<String>,
    closed: bool,
}

/// A program in an 80×24 pseudo-terminal.
struct Pty {
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    terminal: Arc<(Mutex<Terminal>, Condvar)>,
    _master: Box<dyn MasterPty + Send>,
}

impl Pty {
    /// Runs `program args` in `dir` with `env` added, in a fresh 80×24 terminal.
    fn spawn(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> Pty {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 24,
                cols: 80,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("openpty");
        let mut cmd = CommandBuilder::new(program);
        cmd.args(args);
        cmd.cwd(dir);
        cmd.env("TERM", "xterm-256color");
        cmd.env_remove("NO_COLOR");
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = pair.slave.spawn_command(cmd).expect("spawn in the pty");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let writer = pair.master.take_writer().expect("pty writer");
        let terminal = Arc::new((
            Mutex::new(Terminal {
                parser: vt100::Parser::new(24, 80, 0),
                raw: Vec::new(),
                screens: Vec::new(),
                closed: false,
            }),
            Condvar::new(),
        ));
        let shared = Arc::clone(&terminal);
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // A test that failed while holding the lock poisoned it; keep reading.
                let mut t = shared.0.lock().unwrap_or_else(PoisonError::into_inner);
                t.parser.process(&buf[..n]);
                t.raw.extend_from_slice(&buf[..n]);
                let screen = t.parser.screen().contents();
                if t.screens.last() != Some(&screen) {
                    if t.screens.len() == KEPT_SCREENS {
                        t.screens.remove(0);
                    }
                    t.screens.push(screen);
                }
                drop(t);
                shared.1.notify_all();
            }
            shared
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .closed = true;
            shared.1.notify_all();
        });
        Pty {
            child,
            writer,
            terminal,
            _master: pair.master,
        }
    }

    /// `procman tui` of the served sandbox.
    fn tui(s: &Served, env: &[(&str, &str)]) -> Pty {
        let run = s.sb.file("run");
        let mut env = env.to_vec();
        env.push(("PROCMAN_RUNTIME_DIR", run.to_str().unwrap()));
        Pty::spawn(s.sb.path(), env!("CARGO_BIN_EXE_procman"), &["tui"], &env)
    }

    fn pid(&self) -> i32 {
        self.child.process_id().expect("pid") as i32
    }

    fn send(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    fn screen(&self) -> String {
        self.terminal.0.lock().unwrap().parser.screen().contents()
    }

    /// Waits until the screen satisfies `ok`; returns it. Panics with the screen on timeout.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + T;
        let (lock, cvar) = &*self.terminal;
        let mut t = lock.lock().unwrap();
        loop {
            let screen = t.parser.screen().contents();
            if ok(&screen) {
                return screen;
            }
            let now = Instant::now();
            assert!(
                now < deadline && !t.closed,
                "{what}: not on the screen within {T:?}; the screen:\n{screen}"
            );
            t = cvar.wait_timeout(t, deadline - now).unwrap().0;
        }
    }

    /// Waits until some screen shown since the start satisfied `ok` (it may be gone).
    fn saw(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + T;
        let (lock, cvar) = &*self.terminal;
        let mut t = lock.lock().unwrap();
        loop {
            if let Some(screen) = t.screens.iter().find(|s| ok(s)) {
                return screen.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline && !t.closed,
                "{what}: never on the screen within {T:?}; the last screen:\n{}",
                t.parser.screen().contents()
            );
            t = cvar.wait_timeout(t, deadline - now).unwrap().0;
        }
    }

    /// Waits until `row` of process `name` satisfies `ok`; returns that row.
    fn wait_row(&self, name: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let screen = self.wait(&format!("{name} {what}"), |s| row(s, name).is_some_and(&ok));
        row(&screen, name).unwrap().to_owned()
    }

    /// Bytes received from `from` on.
    fn raw_since(&self, from: usize) -> Vec<u8> {
        self.terminal.0.lock().unwrap().raw[from..].to_vec()
    }

    fn raw_len(&self) -> usize {
        self.terminal.0.lock().unwrap().raw.len()
    }

    /// Waits for the program to exit; returns its exit code.
    fn exit_code(&mut self) -> u32 {
        let deadline = Instant::now() + T;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader take in the last bytes.
                let (lock, cvar) = &*self.terminal;
                let t = lock.lock().unwrap();
                let _ = cvar.wait_timeout_while(t, Duration::from_secs(5), |t| !t.closed);
                return status.exit_code();
            }
            assert!(
                Instant::now() < deadline,
                "still running after {T:?}; the screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The terminal modes a well-behaved program leaves: main screen, cursor shown, no
    /// mouse reporting.
    fn assert_restored(&self) {
        let t = self.terminal.0.lock().unwrap();
        let screen = t.parser.screen();
        assert!(!screen.alternate_screen(), "still on the alternate screen");
        assert!(!screen.hide_cursor(), "the cursor is still hidden");
        assert_eq!(
            screen.mouse_protocol_mode(),
            vt100::MouseProtocolMode::None,
            "mouse reporting is still on"
        );
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The list row of process `name` (its first word after the selection marker).
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find(|line| {
        line.trim_start_matches(['▶', ' '])
            .split_whitespace()
            .next()
            == Some(name)
    })
}

/// The PID column of a list row.
fn pid_of(row: &str) -> Option<u32> {
    let words: Vec<&str> = row.split_whitespace().collect();
    words.get(words.len().checked_sub(3)?)?.parse().ok()
}

fn running(row: &str) -> bool {
    row.contains(" running ") && pid_of(row).is_some()
}

/// Stops the server and waits for it.
fn stop(s: &Served, server: &mut common::Running) {
    let (code, _, err) = s.client(&["stop"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.wait(T).code(), Some(0));
}

#[test]
fn the_list_shows_each_state_and_keys_stop_start_restart_and_quit() {
    let m = unique_sleep();
    let port = free_port();
    let s = Served::new(&format!(
        "web:\n  run: exec sleep {m}\n\
         waiter:\n  run: exec sleep {m}\n  depends:\n    - tcp: 127.0.0.1:{port}\n\
         job:\n  run: \"true\"\n  once: true\n\
         flaky:\n  run: exit 1\n  restart: always\n  restart_delay: 1h\n  max_restart_delay: 1h\n\
         later:\n  run: exec sleep {m}\n  autostart: false\n"
    ));
    let mut server = s.serve();
    let mut tui = Pty::tui(&s, &[]);
    let first = tui.wait_row("web", "running", running);
    tui.wait_row("waiter", "waiting", |r| {
        r.contains(&format!("waiting for tcp 127.0.0.1:{port}"))
    });
    tui.wait_row("job", "exited", |r| r.contains("exited (code 0)"));
    tui.wait_row("flaky", "backing off", |r| {
        r.contains("backing off (code 1), restart 1 in 59m")
    });
    tui.wait_row("later", "dormant", |r| r.contains("dormant"));
    // Names are coloured.
    let web_cell = {
        let t = tui.terminal.0.lock().unwrap();
        let screen = t.parser.screen();
        let y = screen
            .contents()
            .lines()
            .position(|l| row(l, "web").is_some())
            .unwrap();
        screen.cell(y as u16, 2).unwrap().fgcolor()
    };
    assert_ne!(web_cell, vt100::Color::Default);

    // The first row is selected: `s` stops it, Enter starts it, `r` restarts it.
    tui.send("s");
    tui.wait_row("web", "stopped", |r| r.contains("stopped"));
    tui.wait("the answer", |s| s.contains("stopped web"));
    tui.send("\r");
    let started = tui.wait_row("web", "running again", running);
    assert_ne!(pid_of(&started), pid_of(&first));
    tui.send("r");
    let restarted = tui.wait_row("web", "restarted", |r| {
        running(r) && pid_of(r) != pid_of(&started)
    });
    assert!(
        restarted.trim_end().ends_with(" 2"),
        "restarts: {restarted}"
    );
    tui.wait("the answer", |s| {
        s.contains(&format!(
            "started web (pid {})",
            pid_of(&restarted).unwrap()
        ))
    });
    // Enter on a running process says what to do instead.
    tui.send("\r");
    tui.wait("the refusal", |s| {
        s.contains("web is running: r restarts it")
    });

    // `q` leaves the view; the stack keeps running.
    tui.send("q");
    assert_eq!(tui.exit_code(), 0);
    tui.assert_restored();
    let status = s.status();
    let web = &status["processes"][0];
    assert_eq!(web["state"], "running", "{status}");
    assert_eq!(web["pid"].as_u64(), pid_of(&restarted).map(u64::from));

    // NO_COLOR: not one coloured cell.
    let mut plain = Pty::tui(&s, &[("NO_COLOR", "1")]);
    plain.wait_row("web", "running", running);
    {
        let t = plain.terminal.0.lock().unwrap();
        let screen = t.parser.screen();
        for y in 0..24 {
            for x in 0..80 {
                let cell = screen.cell(y, x).unwrap();
                assert_eq!(
                    (cell.fgcolor(), cell.bgcolor()),
                    (vt100::Color::Default, vt100::Color::Default),
                    "coloured cell at {x},{y}:\n{}",
                    screen.contents()
                );
            }
        }
    }
    plain.send("q");
    assert_eq!(plain.exit_code(), 0);
    stop(&s, &mut server);
}

#[test]
fn a_failure_that_ends_the_stack_shows_failed_then_the_view_closes() {
    let m = unique_sleep();
    let s = Served::new(&format!(
        "web:\n  run: trap '' TERM; exec sleep {m}\n  stop_timeout: 3s\n\
         bad:\n  run: read line < go; exit 3\n"
    ));
    let fifo = s.sb.file("go");
    common::mkfifo(&fifo);
    let mut server = s.serve();
    let mut tui = Pty::tui(&s, &[]);
    tui.wait_row("bad", "running", running);
    let mark = tui.raw_len();
    common::write_fifo(&fifo, b"go\n");
    tui.saw("bad failed", |s| {
        row(s, "bad").is_some_and(|r| r.contains("failed: bad exited with code 3"))
    });
    // The failure stops the stack and the server; the view says so and closes.
    assert_eq!(tui.exit_code(), 1);
    assert_eq!(server.wait(T).code(), Some(3));
    tui.assert_restored();
    // What it printed after leaving the alternate screen: why, and the last states.
    let after = String::from_utf8_lossy(&tui.raw_since(mark)).into_owned();
    let report = &after[after
        .rfind("\x1b[?1049l")
        .expect("left the alternate screen")..];
    assert!(report.contains("the server has exited"), "{report:?}");
    let bad = row(report, "bad").unwrap_or_else(|| panic!("no bad row in {report:?}"));
    assert!(
        bad.contains("failed") && bad.contains("bad exited with code 3"),
        "{bad}"
    );
}

#[test]
fn sigterm_restores_the_terminal_and_the_shell_works_after() {
    let m = unique_sleep();
    let s = Served::new(&format!("web:\n  run: exec sleep {m}\n"));
    let mut server = s.serve();
    let bin = Path::new(env!("CARGO_BIN_EXE_procman")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = s.sb.file("run");
    let mut shell = Pty::spawn(
        s.sb.path(),
        "/bin/sh",
        &[],
        &[
            ("PATH", &path),
            ("PS1", "$ "),
            ("PROCMAN_RUNTIME_DIR", run.to_str().unwrap()),
        ],
    );
    shell.wait("the prompt", |s| s.contains("$ "));
    shell.send("procman tui\r");
    shell.wait_row("web", "running", running);
    let children = format!("/proc/{0}/task/{0}/children", shell.pid());
    let tui: i32 = std::fs::read_to_string(&children)
        .unwrap()
        .trim()
        .parse()
        .expect("the shell's one child, the tui");
    let mark = shell.raw_len();
    // SAFETY: kill(2) on our own grandchild's pid; no memory involved.
    assert_eq!(unsafe { libc::kill(tui, libc::SIGTERM) }, 0);
    // Typing before the view has exited would feed the view, not the shell.
    assert!(common::eventually(T, || !procref::process::is_alive(
        tui as u32
    )));
    shell.wait("the prompt again", |s| s.matches("$ ").count() >= 2);
    let after = shell.raw_since(mark);
    for (sequence, what) in [
        (&b"\x1b[?1049l"[..], "leave the alternate screen"),
        (b"\x1b[?25h", "show the cursor"),
        (b"\x1b[?1000l", "stop mouse reporting"),
    ] {
        assert!(
            after.windows(sequence.len()).any(|w| w == sequence),
            "no {what} ({sequence:?}) in {:?}",
            String::from_utf8_lossy(&after)
        );
    }
    shell.assert_restored();
    // Canonical mode and echo are back: the shell reads a typed line and runs it.
    shell.send("echo exit-$? raw-$(stty -a | grep -c -- -icanon)\r");
    shell.wait("the command's output", |s| s.contains("exit-143 raw-0"));
    shell.send("exit\r");
    assert_eq!(shell.exit_code(), 0);
    // The view only left; the stack runs on.
    assert_eq!(s.status()["processes"][0]["state"], "running");
    stop(&s, &mut server);
}

#[test]
fn without_a_server_it_says_how_or_starts_one() {
    let m = unique_sleep();
    let s = Served::new(&format!("web:\n  run: exec sleep {m}\n"));

    // Not interactive: one line that says how, and a failure.
    let (code, out, err) = s.client(&["tui"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("procman serve"), "{err}");

    // Declined.
    let mut declined = Pty::tui(&s, &[]);
    declined.wait("the offer", |s| s.contains("Start one"));
    declined.send("n\r");
    assert_eq!(declined.exit_code(), 1);
    assert!(declined.screen().contains("start one with `procman serve"));
    assert!(s.runtime_files().is_empty());

    // Accepted: a server with attach's idle timeouts (here 1s), held while the view is
    // open, that leaves by itself once the view has quit.
    let idle = [
        ("PROCMAN_DISCONNECT_TIMEOUT", "1s"),
        ("PROCMAN_NO_CLIENT_TIMEOUT", "1s"),
    ];
    let mut accepted = Pty::tui(&s, &idle);
    accepted.wait("the offer", |s| {
        s.contains("it stops 1s after the last client leaves")
    });
    accepted.send("y\r");
    accepted.wait_row("web", "running", running);
    let screen = accepted.wait("the notice", |s| s.contains("started a server (pid"));
    let server: u32 = screen
        .split("started a server (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .expect("the server's pid");
    // Longer than the disconnect timeout: the open view keeps the server.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        procref::process::is_alive(server),
        "the server left while viewed"
    );
    accepted.wait_row("web", "still running", running);
    accepted.send("q");
    assert_eq!(accepted.exit_code(), 0);
    assert!(
        common::eventually(T, || !procref::process::is_alive(server)),
        "the server did not leave after the last client"
    );
    assert!(common::eventually(T, || s.runtime_files().is_empty()));
}

/// The resident memory of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The row of the screen that contains `text`, and the column where it starts.
fn find(tui: &Pty, text: &str) -> Option<(u16, u16)> {
    let t = tui.terminal.0.lock().unwrap();
    let screen = t.parser.screen();
    for (y, line) in screen.rows(0, 80).enumerate() {
        if let Some(byte) = line.find(text) {
            return Some((y as u16, line[..byte].chars().count() as u16));
        }
    }
    None
}

#[test]
fn output_lines_appear_with_their_colours_and_search_highlights_them() {
    let m = unique_sleep();
    let s = Served::new(&format!(
        "web:\n  run: printf 'hello \\033[31mred\\033[0m\\nGET /a 200\\nGET /b 404\\n'; exec sleep {m}\n"
    ));
    let mut server = s.serve();
    let mut tui = Pty::tui(&s, &[]);
    tui.wait("web's output in the pane", |s| {
        s.contains("hello red") && s.contains("GET /b 404")
    });
    let (y, x) = find(&tui, "red").unwrap();
    let red = tui
        .terminal
        .0
        .lock()
        .unwrap()
        .parser
        .screen()
        .cell(y, x)
        .unwrap()
        .fgcolor();
    assert_eq!(red, vt100::Color::Idx(1), "the process's red is kept");

    tui.send("/404\r");
    tui.wait("the search's answer", |s| {
        s.contains("\"404\": 1 matching line")
    });
    // The pane's line (the pane's title above it shows the query too).
    let (y, x) = find(&tui, "GET /b 404").unwrap();
    let x = x + "GET /b ".len() as u16;
    let hit = tui
        .terminal
        .0
        .lock()
        .unwrap()
        .parser
        .screen()
        .cell(y, x)
        .unwrap()
        .bgcolor();
    assert_ne!(hit, vt100::Color::Default, "the match is highlighted");

    // Everyone's output, with name prefixes.
    tui.send("m");
    tui.wait("the merged view", |s| s.contains("web | GET /a 200"));
    tui.send("q");
    assert_eq!(tui.exit_code(), 0);
    stop(&s, &mut server);
}

#[test]
fn memory_stays_bounded_while_a_process_prints_millions_of_lines() {
    const LINES: u32 = 2_000_000;
    let m = unique_sleep();
    let s = Served::new(&format!(
        "flood:\n  run: read line < go; seq 1 {LINES}; exec sleep {m}\n"
    ));
    let fifo = s.sb.file("go");
    common::mkfifo(&fifo);
    let mut server = s.serve();
    let mut tui = Pty::tui(&s, &[]);
    tui.wait_row("flood", "running", running);
    let before = rss_kib(tui.pid());
    common::write_fifo(&fifo, b"go\n");
    // Following, the pane ends with the last line once the view has taken in every line.
    tui.wait("the last line", |s| {
        s.lines().any(|l| l.trim() == LINES.to_string())
    });
    let after = rss_kib(tui.pid());
    eprintln!("tui RSS: {before} KiB before, {after} KiB after {LINES} lines");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    tui.send("q");
    assert_eq!(tui.exit_code(), 0);
    stop(&s, &mut server);
}

/// The terminal state a process's output must never change: modes, title, bell, and
/// every row outside the output pane (digits masked).
fn untouchable(tui: &Pty, pane: std::ops::Range<usize>) -> (String, Vec<String>) {
    let t = tui.terminal.0.lock().unwrap();
    let screen = t.parser.screen();
    let rows = screen
        .rows(0, 80)
        .enumerate()
        .filter(|(y, _)| !pane.contains(y))
        // The uptime column counts on.
        .map(|(_, row)| row.replace(|c: char| c.is_ascii_digit(), "#"))
        .collect();
    let modes = format!(
        "title {:?}, icon {:?}, alternate screen {}, cursor hidden {}, bells {}, mouse {:?}",
        screen.title(),
        screen.icon_name(),
        screen.alternate_screen(),
        screen.hide_cursor(),
        screen.audible_bell_count(),
        screen.mouse_protocol_mode(),
    );
    (modes, rows)
}

#[test]
fn escape_sequences_in_output_cannot_take_over_the_terminal() {
    let m = unique_sleep();
    let s = Served::new(&format!(
        "web:\n  run: read line < go; sh ./hostile.sh; exec sleep {m}\n"
    ));
    // Clear screen, title (OSC 0/2), cursor moves, bells, DCS, a hyperlink, leaving the
    // alternate screen, showing the cursor, mouse reporting, a full reset: only the
    // text and the colour may reach the pane.
    std::fs::write(
        s.sb.file("hostile.sh"),
        r"printf 'before\033[2J\033]0;pwned\007\033]2;pwned2\033\\\033[10;10HINJECTED\007\033P1$qm\033\\\033]8;;http://evil\033\\link\033]8;;\033\\\033[?1049l\033[?25h\033[?1000h\033c\033[H\033[31m red\033[0m after\n'
printf 'marker-done\n'
",
    )
    .unwrap();
    let fifo = s.sb.file("go");
    common::mkfifo(&fifo);
    let mut server = s.serve();
    let mut tui = Pty::tui(&s, &[]);
    tui.wait_row("web", "running", running);
    let screen = tui.wait("the pane's title", |s| s.contains("following"));
    // The pane: its title (which counts lines) and the rows below it, up to the status
    // line and the footer.
    let title = screen
        .lines()
        .position(|l| l.contains("following"))
        .unwrap();
    let pane = title..21;
    let before = untouchable(&tui, pane.clone());
    common::write_fifo(&fifo, b"go\n");
    let screen = tui.wait("the lines after the hostile one", |s| {
        s.contains("marker-done")
    });
    // Everything of the line but its escapes, on one row of the pane.
    let (y, _) = find(&tui, "beforeINJECTEDlink red after")
        .unwrap_or_else(|| panic!("the hostile line's text is not on one row:\n{screen}"));
    assert!(
        pane.contains(&usize::from(y)),
        "row {y} is outside the pane"
    );
    let (y, x) = find(&tui, "red after").unwrap();
    let red = tui
        .terminal
        .0
        .lock()
        .unwrap()
        .parser
        .screen()
        .cell(y, x)
        .unwrap()
        .fgcolor();
    assert_eq!(red, vt100::Color::Idx(1), "the colour is kept");
    let after = untouchable(&tui, pane);
    assert_eq!(
        before, after,
        "the output changed the terminal outside the pane"
    );
    tui.send("q");
    assert_eq!(tui.exit_code(), 0);
    tui.assert_restored();
    stop(&s, &mut server);
}
