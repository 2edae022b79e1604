use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use super::*;

/// An in-memory terminal that can be read while `Output` owns a clone.
#[derive(Clone, Default)]
struct Mem(Arc<Mutex<Vec<u8>>>);

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Mem {
    fn bytes(&self) -> Vec<u8> {
        lock(&self.0).clone()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

/// A terminal whose reader has gone away.
struct Closed;

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
}

fn output(color: ColorChoice, is_tty: bool, log_dir: Option<&Path>) -> (Output, Mem) {
    let mem = Mem::default();
    let config = OutputConfig {
        log_dir: log_dir.map(Path::to_path_buf),
        color,
    };
    let out = Output::build(config, Box::new(mem.clone()), is_tty, false, None).expect("output");
    (out, mem)
}

/// The terminal's text once everything given to `out` is written.
fn shown(out: &Output, mem: &Mem) -> String {
    out.flush().expect("flush");
    mem.text()
}

/// Feeds `chunks` through a real pipe from another thread into `capture`.
fn capture(out: &Output, name: &str, chunks: Vec<Vec<u8>>) -> u64 {
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    let mut writer = fs::File::from(writer);
    let capture = out.capture(name, reader);
    let writer = thread::spawn(move || {
        for chunk in chunks {
            writer.write_all(&chunk).expect("write");
        }
    });
    writer.join().expect("writer");
    capture.wait().expect("capture")
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    fs::read(dir.join(file)).expect(file)
}

/// `procman.log` without its time stamps, which must each be RFC 3339 UTC with milliseconds.
fn unstamped(log: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in log.split_inclusive(|&b| b == b'\n') {
        let (stamp, rest) = line.split_at(25);
        let stamp = std::str::from_utf8(stamp).expect("utf8 stamp");
        assert!(stamp.ends_with("Z "), "{stamp:?}");
        humantime::parse_rfc3339(stamp.trim_end()).expect("RFC 3339");
        assert_eq!(stamp.as_bytes()[19], b'.', "milliseconds in {stamp:?}");
        out.extend_from_slice(rest);
    }
    out
}

#[test]
fn prefix_is_right_aligned() {
    let (out, mem) = output(ColorChoice::Never, false, None);
    out.register("web").expect("register");
    out.register("worker-long").expect("register");
    out.line("web", b"hello");
    out.procman("started");
    out.line("worker-long", b"x");
    assert_eq!(
        shown(&out, &mem),
        "        web | hello\n    procman | started\nworker-long | x\n"
    );
}

#[test]
fn width_covers_procman() {
    let (out, mem) = output(ColorChoice::Never, false, None);
    out.register("a").expect("register");
    out.line("a", b"");
    out.procman("two\nlines");
    assert_eq!(
        shown(&out, &mem),
        "      a | \nprocman | two\nprocman | lines\n"
    );
}

#[test]
fn name_column_is_fixed_at_the_first_line_and_capped() {
    let (out, mem) = output(ColorChoice::Never, false, None);
    out.register("web").expect("register");
    out.procman("started");
    out.register(&"x".repeat(10_000)).expect("register");
    out.line(&"x".repeat(10_000), b"long");
    out.line("web", b"short");
    assert_eq!(
        shown(&out, &mem),
        "procman | started\nxxx…xxx | long\n    web | short\n"
    );

    let (out, mem) = output(ColorChoice::Never, false, None);
    out.register("a-name-of-exactly-thirty-chars")
        .expect("register");
    out.line("a-name-of-exactly-thirty-chars", b"x");
    assert_eq!(shown(&out, &mem), "a-name-of-ex…hirty-chars | x\n");
}

#[test]
fn colour_choices() {
    for (choice, tty, coloured) in [
        (ColorChoice::Always, false, true),
        (ColorChoice::Never, true, false),
        (ColorChoice::Auto, false, false),
        (ColorChoice::Auto, true, true),
    ] {
        let (out, mem) = output(choice, tty, None);
        out.line("web", b"x");
        assert_eq!(
            shown(&out, &mem).contains('\x1b'),
            coloured,
            "{choice:?} tty={tty}"
        );
    }
}

#[test]
fn no_color_disables_auto() {
    let mem = Mem::default();
    let config = OutputConfig::default();
    let out = Output::build(config, Box::new(mem.clone()), true, true, None).expect("output");
    out.line("web", b"x");
    assert_eq!(shown(&out, &mem), "    web | x\n");
}

#[test]
fn colours_follow_registration_and_cover_the_separator() {
    let (out, mem) = output(ColorChoice::Always, false, None);
    let names = [
        "web", "api", "db", "cache", "worker", "mail", "search", "queue", "auth",
    ];
    for name in names {
        out.register(name).expect("register");
    }
    for name in names {
        out.line(name, b"x");
    }
    out.procman("hi");
    let text = shown(&out, &mem);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "\x1b[36m    web | \x1b[39mx");
    let colours: std::collections::HashSet<&str> = lines[..9]
        .iter()
        .map(|l| &l[..l.find('m').expect("sgr")])
        .collect();
    assert_eq!(colours.len(), 9, "{lines:#?}");
    assert_eq!(lines[9], "\x1b[1mprocman | \x1b[0mhi");
}

#[test]
fn capture_edge_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, mem) = output(ColorChoice::Never, false, Some(dir.path()));
    out.register("p").expect("register");
    let long: Vec<u8> = (0..200 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let mut data = Vec::new();
    data.extend_from_slice(b"one\r\n\n\x1b[31mred\x1b[0m\n\xff\xfe bad\0nul\rcr\n");
    data.extend_from_slice(&long);
    data.extend_from_slice(b"\nlast");
    // Split at awkward places to exercise the carried-over tail.
    let chunks = vec![
        data[..2].to_vec(),
        data[2..7000].to_vec(),
        data[7000..].to_vec(),
    ];
    assert_eq!(capture(&out, "p", chunks), 9);
    out.flush().expect("flush");

    let term = mem.bytes();
    let mut expected = Vec::new();
    expected.extend_from_slice(b"      p | one\n      p | \n      p | \x1b[31mred\x1b[0m\n");
    expected.extend_from_slice(b"      p | \xff\xfe bad\0nul\rcr\n");
    for piece in long.chunks(64 * 1024) {
        expected.extend_from_slice(b"      p | ");
        expected.extend_from_slice(piece);
        expected.push(b'\n');
    }
    expected.extend_from_slice(b"      p | last\n");
    assert_eq!(term, expected);

    // The process's own log holds its bytes exactly as printed.
    assert!(read(dir.path(), "p.log") == data);
    // procman.log: the terminal's lines, stamped, without escape sequences, with other
    // control characters shown.
    let combined = unstamped(&read(dir.path(), "procman.log"));
    let clean = String::from_utf8_lossy(&expected)
        .replace("\x1b[31m", "")
        .replace("\x1b[0m", "")
        .replace('\0', "^@")
        .replace('\r', "^M");
    assert!(String::from_utf8_lossy(&combined) == clean);
}

/// Waits (boundedly) until the file at `path` holds `len` bytes.
fn wait_for_len(path: &Path, len: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fs::metadata(path).map_or(0, |m| m.len()) < len as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never reached {len} bytes",
            path.display()
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn combined_log_keeps_the_output_order_across_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, mem) = output(ColorChoice::Never, false, Some(dir.path()));
    let mut captures = Vec::new();
    let mut writers = Vec::new();
    for name in ["a", "b"] {
        out.register(name).expect("register");
        let (reader, writer) = rustix::pipe::pipe().expect("pipe");
        captures.push(out.capture(name, reader));
        writers.push((
            fs::File::from(writer),
            dir.path().join(format!("{name}.log")),
            0,
        ));
    }
    // Each step is read (its bytes are in the process's own log) before the next is written.
    let mut step = |w: usize, bytes: &[u8]| {
        let (writer, log, written) = &mut writers[w];
        writer.write_all(bytes).expect("write");
        *written += bytes.len();
        wait_for_len(log, *written);
    };
    step(0, b"a1\na2 sp");
    out.procman("between");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.tail(&["procman"], 1, None).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the supervisor line never came"
        );
        thread::sleep(Duration::from_millis(1));
    }
    step(1, b"b1\n");
    // The rest of a line split across reads, then escape sequences in a later read only.
    step(0, b"lit\n\x1b[1mbold\x1b[0m\r\nnul\0\n");
    out.procman("after");
    drop(writers);
    for capture in captures {
        capture.wait().expect("capture");
    }
    out.flush().expect("flush");

    assert_eq!(
        read(dir.path(), "a.log"),
        b"a1\na2 split\n\x1b[1mbold\x1b[0m\r\nnul\0\n"
    );
    assert_eq!(read(dir.path(), "b.log"), b"b1\n");
    let lines = [
        ("a", "a1"),
        ("procman", "between"),
        ("b", "b1"),
        ("a", "a2 split"),
        ("a", "\x1b[1mbold\x1b[0m"),
        ("a", "nul\0"),
        ("procman", "after"),
    ];
    let shown: String = lines
        .iter()
        .map(|(name, line)| format!("{name:>7} | {line}\n"))
        .collect();
    assert_eq!(mem.text(), shown);
    let logged = shown
        .replace("\x1b[1m", "")
        .replace("\x1b[0m", "")
        .replace('\0', "^@");
    let combined = unstamped(&read(dir.path(), "procman.log"));
    assert_eq!(String::from_utf8_lossy(&combined), logged);
}

#[test]
fn log_files_are_private_and_names_sanitized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("nested/logs");
    let (out, _mem) = output(ColorChoice::Never, false, Some(&logs));
    out.register("../escape").expect("register");
    out.register(".hidden").expect("register");
    out.line("../escape", b"x");
    out.procman("hello");
    out.flush().expect("flush");
    assert_eq!(read(&logs, "%2E.%2Fescape.log"), b"x\n");
    assert_eq!(read(&logs, "%2Ehidden.log"), b"");
    assert!(!logs.join("procman.log.log").exists());
    let combined = String::from_utf8(unstamped(&read(&logs, "procman.log"))).expect("utf8");
    assert_eq!(combined, "../escape | x\n  procman | hello\n");
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&logs), 0o700);
    assert_eq!(mode(&logs.join("procman.log")), 0o600);
    assert_eq!(mode(&logs.join("%2Ehidden.log")), 0o600);
}

/// Writes one line under `name` into a fresh `Output` on `dir` and drops it.
fn one_run(dir: &Path, name: &str, line: &str) {
    let (out, _mem) = output(ColorChoice::Never, false, Some(dir));
    out.line(name, line.as_bytes());
    out.flush().expect("flush");
}

#[test]
fn previous_run_survives_one_more_run_and_user_files_always() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("important.log"), "mine").expect("write");
    fs::write(d.join("notes.txt"), "mine too").expect("write");
    one_run(d, "web", "run 1");
    one_run(d, "web", "run 2");
    assert_eq!(read(d, "web.log"), b"run 2\n");
    assert_eq!(read(&d.join("previous"), "web.log"), b"run 1\n");
    let previous = String::from_utf8(read(&d.join("previous"), "procman.log")).expect("utf8");
    assert!(previous.ends_with("web | run 1\n"), "{previous}");

    // A user's file in previous/ is kept; the run before the previous one is gone.
    fs::write(d.join("previous/mine.log"), "keep").expect("write");
    one_run(d, "api", "run 3");
    assert_eq!(read(&d.join("previous"), "web.log"), b"run 2\n");
    assert_eq!(read(&d.join("previous"), "mine.log"), b"keep");
    assert!(!d.join("web.log").exists());
    assert_eq!(read(d, "api.log"), b"run 3\n");
    one_run(d, "db", "run 4");
    assert!(!d.join("previous/web.log").exists());
    assert_eq!(read(&d.join("previous"), "api.log"), b"run 3\n");

    assert_eq!(read(d, "important.log"), b"mine");
    assert_eq!(read(d, "notes.txt"), b"mine too");
    assert_eq!(read(&d.join("previous"), "mine.log"), b"keep");
}

#[test]
fn a_replaced_log_is_not_procman_s_any_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    one_run(d, "web", "run 1");
    // The user replaces web.log with a file of their own between runs.
    fs::remove_file(d.join("web.log")).expect("rm");
    fs::write(d.join("web.log"), "the user's").expect("write");
    let (out, mem) = output(ColorChoice::Never, false, Some(d));
    let err = out.register("web").expect_err("must refuse");
    assert!(
        err.to_string()
            .contains("already exists and procman has no record of creating it"),
        "{err}"
    );
    out.line("web", b"still shown");
    assert!(shown(&out, &mem).contains("web | still shown"));
    assert!(
        mem.text()
            .contains("the output of web is in procman.log only")
    );
    assert_eq!(read(d, "web.log"), b"the user's");
    assert!(!d.join("previous/web.log").exists());
}

#[test]
fn planted_symlinks_are_refused_and_their_targets_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("secret");
    fs::write(&target, "precious").expect("write");
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).expect("mkdir");

    std::os::unix::fs::symlink(&target, logs.join("procman.log")).expect("symlink");
    let err = Output::new(
        OutputConfig {
            log_dir: Some(logs.clone()),
            color: ColorChoice::Never,
        },
        Box::new(io::sink()),
        false,
    )
    .expect_err("must refuse");
    assert!(
        err.to_string().contains("procman.log is a symlink"),
        "{err}"
    );
    fs::remove_file(logs.join("procman.log")).expect("rm");

    std::os::unix::fs::symlink(&target, logs.join("web.log")).expect("symlink");
    let (out, _mem) = output(ColorChoice::Never, false, Some(&logs));
    let err = out.register("web").expect_err("must refuse");
    assert!(err.to_string().contains("web.log is a symlink"), "{err}");
    out.line("web", b"secret output");
    out.flush().expect("flush");
    assert_eq!(fs::read(&target).expect("read"), b"precious");

    // A symlinked previous/ is not entered either.
    drop(out);
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    fs::remove_file(logs.join("web.log")).expect("rm");
    one_run(&logs, "api", "x");
    std::os::unix::fs::symlink(&outside, logs.join("previous-link")).expect("symlink");
    fs::remove_dir_all(logs.join("previous")).expect("rm previous");
    fs::rename(logs.join("previous-link"), logs.join("previous")).expect("plant");
    let err = Output::new(
        OutputConfig {
            log_dir: Some(logs.clone()),
            color: ColorChoice::Never,
        },
        Box::new(io::sink()),
        false,
    )
    .expect_err("must refuse");
    assert!(
        err.to_string().contains("previous is a symlink"),
        "says what is wrong: {err}"
    );
    assert_eq!(fs::read_dir(&outside).expect("ls").count(), 0);
    assert_eq!(fs::read(&target).expect("read"), b"precious");
    assert!(logs.join("api.log").exists());
}

#[test]
fn an_untrusted_manifest_moves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("important.log"), "mine").expect("write");
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).expect("stat"));
    let forged = format!(
        "{{\"file\":\"important.log\",\"dev\":{},\"ino\":{}}}\n",
        std::os::unix::fs::MetadataExt::dev(&fs::metadata(d).expect("stat")),
        ino(&d.join("important.log"))
    );
    fs::write(d.join(".procman-manifest"), &forged).expect("write");
    fs::set_permissions(
        d.join(".procman-manifest"),
        fs::Permissions::from_mode(0o666),
    )
    .expect("chmod");
    let err = Output::new(
        OutputConfig {
            log_dir: Some(d.to_path_buf()),
            color: ColorChoice::Never,
        },
        Box::new(io::sink()),
        false,
    )
    .expect_err("must refuse");
    assert!(
        err.to_string().contains("was not written by procman"),
        "{err}"
    );
    assert_eq!(read(d, "important.log"), b"mine");

    // A FIFO as manifest is refused without hanging.
    fs::remove_file(d.join(".procman-manifest")).expect("rm");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        d.join(".procman-manifest"),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .expect("mkfifo");
    let err = Output::new(
        OutputConfig {
            log_dir: Some(d.to_path_buf()),
            color: ColorChoice::Never,
        },
        Box::new(io::sink()),
        false,
    )
    .expect_err("must refuse");
    assert!(
        err.to_string().contains("was not written by procman"),
        "{err}"
    );
    assert_eq!(read(d, "important.log"), b"mine");
}

/// Checks that `text` holds exactly `count` lines `{i}` from each writer, in order.
fn check_lines(text: &[u8], prefix: impl Fn(usize) -> String, writers: usize, count: usize) {
    let mut next = vec![0usize; writers];
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = std::str::from_utf8(line).expect("utf8").trim_start();
        let w = (0..writers)
            .find(|&w| line.starts_with(&prefix(w)))
            .unwrap_or_else(|| panic!("unknown line {line:?}"));
        let expected = format!("{}{w}:{}", prefix(w), next[w]);
        assert_eq!(line, expected);
        next[w] += 1;
    }
    assert_eq!(next, vec![count; writers]);
}

#[test]
fn many_writers_lose_nothing() {
    const WRITERS: usize = 8;
    const LINES: usize = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, mem) = output(ColorChoice::Never, false, Some(dir.path()));
    let names: Vec<String> = (0..WRITERS).map(|w| format!("proc{w}")).collect();
    for name in &names {
        out.register(name).expect("register");
    }
    let mut captures = Vec::new();
    let mut writers = Vec::new();
    for (w, name) in names.iter().enumerate() {
        let (reader, writer) = rustix::pipe::pipe().expect("pipe");
        captures.push(out.capture(name, reader));
        writers.push(thread::spawn(move || {
            let mut writer = io::BufWriter::new(fs::File::from(writer));
            for i in 0..LINES {
                writeln!(writer, "{w}:{i}").expect("write");
            }
            writer.flush().expect("flush");
        }));
    }
    for writer in writers {
        writer.join().expect("writer");
    }
    for capture in captures {
        assert_eq!(capture.wait().expect("capture"), LINES as u64);
    }
    let prefix = |w: usize| format!("proc{w} | ");
    check_lines(&mem.bytes(), prefix, WRITERS, LINES);
    check_lines(
        &unstamped(&read(dir.path(), "procman.log")),
        prefix,
        WRITERS,
        LINES,
    );
    for (w, name) in names.iter().enumerate() {
        let expected: String = (0..LINES).map(|i| format!("{w}:{i}\n")).collect();
        assert!(read(dir.path(), &format!("{name}.log")) == expected.as_bytes());
    }
}

/// A terminal that accepts nothing until `open` is set: a terminal the user paused.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<(Mutex<bool>, std::sync::Condvar)>,
    inner: Mem,
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (open, cv) = &*self.open;
        let mut guard = lock(open);
        while !*guard {
            guard = cv.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_blocked_terminal_blocks_the_writer_and_loses_nothing() {
    let gate = Gate::default();
    let out = Output::build(
        OutputConfig::default(),
        Box::new(gate.clone()),
        false,
        false,
        None,
    )
    .expect("output");
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    let capture = out.capture("p", reader);
    let (progress_tx, progress) = std::sync::mpsc::channel();
    let writer = thread::spawn(move || {
        let mut writer = fs::File::from(writer);
        for i in 0..200_000 {
            writeln!(writer, "0:{i}").expect("write");
            let _ = progress_tx.send(i);
        }
    });
    // The supervisor is not blocked by the terminal: its lines are queued.
    out.procman("still responsive");
    // The writer stops once the pipe and what the output thread holds are full.
    let mut last = 0;
    while let Ok(i) = progress.recv_timeout(Duration::from_millis(500)) {
        last = i;
    }
    assert!(last < 199_999, "the writer was never held back");
    *lock(&gate.open.0) = true;
    gate.open.1.notify_all();
    writer.join().expect("writer");
    assert_eq!(capture.wait().expect("capture"), 200_000);
    out.flush().expect("flush");
    let text = gate.inner.bytes();
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"procman |"))
        .collect();
    check_lines(&lines.join(&b'\n'), |_| "p | ".into(), 1, 200_000);
}

/// `procman run | cmd` where `cmd` never reads: the logs still get the lines read, and
/// the final flush gives the terminal up instead of hanging the shutdown for good.
#[test]
fn a_stuck_terminal_holds_neither_the_logs_nor_the_final_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = Gate::default();
    let release = || {
        *lock(&gate.open.0) = true;
        gate.open.1.notify_all();
    };
    let config = OutputConfig {
        log_dir: Some(dir.path().to_path_buf()),
        color: ColorChoice::Never,
    };
    let out = Output::build(config, Box::new(gate.clone()), false, false, None).expect("output");
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    let mut writer = fs::File::from(writer);
    for i in 0..1_000 {
        writeln!(writer, "0:{i}").expect("write");
    }
    drop(writer);
    let _capture = out.capture("p", reader);
    // The terminal takes none of these lines; the logs get them all the same.
    let logged = |file: &str| {
        fs::read(dir.path().join(file))
            .unwrap_or_default()
            .ends_with(b"0:999\n")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(logged("p.log") && logged("procman.log")) {
        if std::time::Instant::now() > deadline {
            release();
            panic!("the logs waited for a stuck terminal");
        }
        thread::sleep(Duration::from_millis(10));
    }
    check_lines(&read(dir.path(), "p.log"), |_| String::new(), 1, 1_000);
    let log = unstamped(&read(dir.path(), "procman.log"));
    let lines: Vec<&[u8]> = log
        .split(|&b| b == b'\n')
        .map(|l| &l[l.iter().take_while(|&&b| b == b' ').count()..])
        .filter(|l| !l.is_empty() && !l.starts_with(b"procman |"))
        .collect();
    check_lines(&lines.join(&b'\n'), |_| "p | ".into(), 1, 1_000);

    out.procman("exiting with code 0");
    let (done_tx, done) = std::sync::mpsc::channel();
    let flusher = out.clone();
    thread::spawn(move || {
        let _ = done_tx.send(flusher.flush());
    });
    let flushed = done.recv_timeout(Duration::from_secs(60));
    release();
    let flushed = flushed.expect("the final flush waited for good on a stuck terminal");
    assert!(flushed.is_err(), "a stuck terminal was reported as flushed");
}

#[test]
fn closed_terminal_keeps_draining_and_logging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = OutputConfig {
        log_dir: Some(dir.path().to_path_buf()),
        color: ColorChoice::Never,
    };
    let out = Output::new(config, Box::new(Closed), false).expect("output");
    let data: Vec<u8> = (0..50_000)
        .flat_map(|i| format!("0:{i}\n").into_bytes())
        .collect();
    assert_eq!(capture(&out, "p", vec![data]), 50_000);
    assert!(out.flush().is_ok());
    check_lines(&read(dir.path(), "p.log"), |_| String::new(), 1, 50_000);
    check_lines(
        &unstamped(&read(dir.path(), "procman.log")),
        |_| "p | ".into(),
        1,
        50_000,
    );
}

#[test]
fn finished_waits_for_every_writer_of_the_pipe() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (out, mem) = output(ColorChoice::Never, false, None);
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    let mut writer = fs::File::from(writer);
    let mut second = writer.try_clone().expect("dup");
    let capture = out.capture("p", reader);
    writer.write_all(b"from the process\n").expect("write");
    drop(writer);
    runtime.block_on(async move {
        let mut finished = std::pin::pin!(capture.finished());
        // A descendant still holds the pipe: not finished, however long we wait (bounded here).
        let pending = tokio::time::timeout(Duration::from_millis(300), &mut finished).await;
        assert!(pending.is_err(), "finished while a writer remained");
        second.write_all(b"from a descendant").expect("write");
        drop(second);
        assert_eq!(finished.await.expect("capture"), 2);
    });
    assert_eq!(
        mem.text(),
        "      p | from the process\n      p | from a descendant\n"
    );
}

#[test]
fn tail_is_bounded_after_millions_of_lines() {
    let (out, _mem) = output(ColorChoice::Never, false, None);
    out.register("chatty").expect("register");
    out.register("quiet").expect("register");
    out.line("quiet", b"only line");
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    let capture = out.capture("chatty", reader);
    const LINES: u64 = 2_000_000;
    let writer = thread::spawn(move || {
        let mut writer = io::BufWriter::new(fs::File::from(writer));
        for i in 0..LINES {
            writeln!(writer, "line {i}").expect("write");
        }
    });
    writer.join().expect("writer");
    assert_eq!(capture.wait().expect("capture"), LINES);
    let all = out.tail(&[], usize::MAX, None);
    let chatty: Vec<&LogLine> = all.iter().filter(|l| &*l.name == "chatty").collect();
    assert_eq!(chatty.len(), TAIL_LINES);
    assert_eq!(
        &*chatty[0].text,
        format!("line {}", LINES - TAIL_LINES as u64).as_bytes()
    );
    assert_eq!(
        &*chatty[TAIL_LINES - 1].text,
        format!("line {}", LINES - 1).as_bytes()
    );
    assert!(
        all.iter()
            .any(|l| &*l.name == "quiet" && &*l.text == b"only line")
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let bytes: usize = chatty.iter().map(|l| l.text.len()).sum();
    assert!(bytes <= TAIL_BYTES);

    let last_two = out.tail(&["quiet", "chatty"], 2, None);
    assert_eq!(last_two.len(), 2);
    assert!(last_two.iter().all(|l| &*l.name == "chatty"));
    assert_eq!(out.tail(&["quiet"], 5, None).len(), 1);
    assert!(
        out.tail(
            &["quiet"],
            5,
            Some(SystemTime::now() + Duration::from_secs(60))
        )
        .is_empty()
    );
    assert!(out.tail(&["nobody"], 5, None).is_empty());
}

#[test]
fn tail_keeps_raw_bytes_and_supervisor_lines() {
    let (out, _mem) = output(ColorChoice::Never, false, None);
    out.procman("starting");
    let chunks = vec![b"\x1b[32mgreen\x1b[0m\r\n\0nul\n".to_vec()];
    assert_eq!(capture(&out, "p", chunks), 2);
    let lines = out.tail(&[], 10, None);
    let got: Vec<(&str, &[u8])> = lines.iter().map(|l| (&*l.name, &*l.text)).collect();
    assert_eq!(
        got,
        [
            ("procman", &b"starting"[..]),
            ("p", b"\x1b[32mgreen\x1b[0m"),
            ("p", b"\0nul")
        ]
    );
}

#[test]
fn a_lagging_subscriber_is_told_and_slows_nobody() {
    let (out, _mem) = output(ColorChoice::Never, false, None);
    let mut follower = out.subscribe();
    let history = out.tail(&[], 10, None);
    assert!(history.is_empty());
    let lines = 10 * FEED_CAPACITY as u64;
    let data: Vec<u8> = (0..lines)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    // The subscriber reads nothing meanwhile; the capture still finishes.
    assert_eq!(capture(&out, "p", vec![data]), lines);
    match follower.try_recv() {
        Err(broadcast::error::TryRecvError::Lagged(missed)) => {
            assert!(missed >= lines - FEED_CAPACITY as u64, "missed {missed}")
        }
        other => panic!("expected a lag, got {other:?}"),
    }
    let rest: Vec<LogLine> = std::iter::from_fn(|| follower.try_recv().ok()).collect();
    assert!(!rest.is_empty() && rest.len() <= FEED_CAPACITY);
    assert_eq!(
        &*rest[rest.len() - 1].text,
        format!("{}", lines - 1).as_bytes()
    );
    assert!(rest.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
}

#[test]
fn following_after_the_tail_misses_and_repeats_nothing() {
    let (out, _mem) = output(ColorChoice::Never, false, None);
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    let capture = out.capture("p", reader);
    let writer = thread::spawn(move || {
        let mut writer = fs::File::from(writer);
        for i in 0..300 {
            writeln!(writer, "{i}").expect("write");
            if i % 50 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
        }
    });
    thread::sleep(Duration::from_millis(3));
    let mut follower = out.subscribe();
    let history = out.tail(&["p"], usize::MAX, None);
    let last = history.last().map_or(0, |l| l.seq + 1);
    writer.join().expect("writer");
    capture.wait().expect("capture");
    let mut seen: Vec<u64> = history.iter().map(|l| l.seq).collect();
    seen.extend(
        std::iter::from_fn(|| follower.try_recv().ok())
            .filter(|l| l.seq >= last)
            .map(|l| l.seq),
    );
    assert_eq!(seen, (0..300).collect::<Vec<u64>>());
}

#[test]
fn status_line_on_tty_only() {
    let (out, mem) = output(ColorChoice::Never, true, None);
    out.set_status(Some("waiting: api".into()));
    out.line("api", b"up");
    out.set_status(None);
    assert_eq!(
        shown(&out, &mem),
        "\r\x1b[2Kwaiting: api\r\x1b[2K    api | up\n\r\x1b[2Kwaiting: api\r\x1b[2K"
    );

    let (out, mem) = output(ColorChoice::Never, false, None);
    out.set_status(Some("waiting: api".into()));
    out.line("api", b"up");
    assert_eq!(shown(&out, &mem), "    api | up\n");
}

#[test]
fn status_is_truncated() {
    let (out, mem) = output(ColorChoice::Never, true, None);
    out.set_status(Some("x".repeat(200)));
    assert_eq!(shown(&out, &mem), format!("\r\x1b[2K{}", "x".repeat(79)));
}

#[test]
fn control_characters_in_names_cannot_break_lines() {
    let (out, mem) = output(ColorChoice::Never, false, None);
    out.line("a\nb", b"x");
    assert_eq!(shown(&out, &mem), "    a?b | x\n");
}

#[test]
fn colour_choice_parses() {
    assert_eq!(
        "always".parse::<ColorChoice>().ok(),
        Some(ColorChoice::Always)
    );
    assert_eq!(
        "never".parse::<ColorChoice>().ok(),
        Some(ColorChoice::Never)
    );
    assert_eq!("auto".parse::<ColorChoice>().ok(), Some(ColorChoice::Auto));
    assert!("sometimes".parse::<ColorChoice>().is_err());
}

mod properties {
    use proptest::prelude::*;

    use super::super::ansi::clean;
    use super::super::logdir::file_name;
    use super::super::names::{columns, label};

    proptest! {
        /// Whatever the name, its label takes exactly the column's width on a terminal.
        #[test]
        fn labels_fill_the_column_exactly(name in "(?s).{0,64}", width in 1usize..=24) {
            prop_assert_eq!(columns(&label(&name, width)), width);
        }

        /// Log file names fit every file system, stay in the directory and never collide.
        #[test]
        fn file_names_fit_stay_inside_and_differ(a in "(?s).{0,64}", b in "(?s).{0,64}") {
            for name in [&a, &b] {
                let file = file_name(name);
                prop_assert!(file.len() <= 255, "{} bytes", file.len());
                prop_assert!(!file.contains(['/', '\0']) && !file.starts_with('.'));
            }
            prop_assert_eq!(a == b, file_name(&a) == file_name(&b));
        }

        /// A cleaned line holds no control character but TAB.
        #[test]
        fn cleaned_lines_hold_no_controls(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            clean(&line, &mut out);
            prop_assert!(!out.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f));
        }
    }
}
