use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::thread;

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

/// Feeds `chunks` through a real pipe from another thread into `capture`.
fn capture(out: &Output, name: &str, chunks: Vec<Vec<u8>>) -> u64 {
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    let mut writer = fs::File::from(writer);
    let handle = out.capture(name, reader);
    let writer = thread::spawn(move || {
        for chunk in chunks {
            writer.write_all(&chunk).expect("write");
        }
    });
    writer.join().expect("writer");
    handle.join().expect("reader").expect("capture")
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    fs::read(dir.join(file)).expect(file)
}

use std::fs;

#[test]
fn prefix_is_right_aligned() {
    let (out, mem) = output(ColorChoice::Never, false, None);
    out.register("web").expect("register");
    out.register("worker-long").expect("register");
    out.line("web", b"hello");
    out.procman("started");
    out.line("worker-long", b"x");
    assert_eq!(
        mem.text(),
        "        web | hello\n    procman | started\nworker-long | x\n"
    );
}

#[test]
fn width_covers_procman() {
    let (out, mem) = output(ColorChoice::Never, false, None);
    out.register("a").expect("register");
    out.line("a", b"");
    out.procman("two\nlines");
    assert_eq!(mem.text(), "      a | \nprocman | two\nprocman | lines\n");
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
            mem.text().contains('\x1b'),
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
    assert_eq!(mem.text(), "    web | x\n");
}

#[test]
fn colour_is_stable_and_covers_the_separator() {
    let (out, mem) = output(ColorChoice::Always, false, None);
    out.line("web", b"x");
    let painted = owo_colors::OwoColorize::color(&"    web | ", color::for_name("web"));
    assert_eq!(mem.text(), format!("{painted}x\n"));
    assert_eq!(mem.text(), "\x1b[96m    web | \x1b[39mx\n");
    out.procman("hi");
    assert!(
        mem.text().ends_with("\x1b[1mprocman | \x1b[0mhi\n"),
        "{:?}",
        mem.text()
    );
}

#[test]
fn capture_edge_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, mem) = output(ColorChoice::Never, false, Some(dir.path()));
    out.register("p").expect("register");
    let long: Vec<u8> = (0..200 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let mut data = Vec::new();
    data.extend_from_slice(b"one\r\n\n\x1b[31mred\x1b[0m\n\xff\xfe bad\n");
    data.extend_from_slice(&long);
    data.extend_from_slice(b"\nlast");
    // Split at awkward places to exercise the carried-over tail.
    let chunks = vec![
        data[..2].to_vec(),
        data[2..7000].to_vec(),
        data[7000..].to_vec(),
    ];
    assert_eq!(capture(&out, "p", chunks), 9);

    let term = mem.bytes();
    let mut expected = Vec::new();
    expected.extend_from_slice(b"      p | one\n      p | \n      p | \x1b[31mred\x1b[0m\n");
    expected.extend_from_slice(b"      p | \xff\xfe bad\n");
    for piece in long.chunks(64 * 1024) {
        expected.extend_from_slice(b"      p | ");
        expected.extend_from_slice(piece);
        expected.push(b'\n');
    }
    expected.extend_from_slice(b"      p | last\n");
    assert_eq!(term, expected);

    let mut own = Vec::new();
    own.extend_from_slice(b"one\n\nred\n\xff\xfe bad\n");
    for piece in long.chunks(64 * 1024) {
        own.extend_from_slice(piece);
        own.push(b'\n');
    }
    own.extend_from_slice(b"last\n");
    assert_eq!(read(dir.path(), "p.log"), own);
    let combined = read(dir.path(), "procman.log");
    assert_eq!(combined.len(), term.len() - 9);
    assert!(!combined.contains(&0x1b));
}

#[test]
fn log_dir_is_cleaned_and_names_sanitized() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("old.log"), "stale").expect("write");
    fs::write(dir.path().join("keep.output"), "kept").expect("write");
    let logs = dir.path().join("nested");
    fs::create_dir(&logs).expect("mkdir");
    fs::write(logs.join("old.log"), "stale").expect("write");
    let (out, _mem) = output(ColorChoice::Never, false, Some(&logs));
    out.register("../escape").expect("register");
    out.register(".hidden").expect("register");
    out.line("../escape", b"x");
    out.procman("hello");
    assert!(!logs.join("old.log").exists());
    assert!(dir.path().join("old.log").exists());
    assert_eq!(read(&logs, "%2E.%2Fescape.log"), b"x\n");
    assert_eq!(read(&logs, "%2Ehidden.log"), b"");
    assert!(!logs.join("procman.log.log").exists());
    let combined = String::from_utf8(read(&logs, "procman.log")).expect("utf8");
    assert_eq!(combined, "../escape | x\n  procman | hello\n");
    assert!(dir.path().join("keep.output").exists());
    let (_again, _mem) = output(ColorChoice::Never, false, Some(dir.path()));
    assert!(!dir.path().join("old.log").exists());
    assert!(dir.path().join("keep.output").exists());
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
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (w, name) in names.iter().enumerate() {
        let (reader, writer) = rustix::pipe::pipe().expect("pipe");
        readers.push(out.capture(name, reader));
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
    for reader in readers {
        assert_eq!(
            reader.join().expect("reader").expect("capture"),
            LINES as u64
        );
    }
    let prefix = |w: usize| format!("proc{w} | ");
    check_lines(&mem.bytes(), prefix, WRITERS, LINES);
    check_lines(&read(dir.path(), "procman.log"), prefix, WRITERS, LINES);
    for (w, name) in names.iter().enumerate() {
        let expected: String = (0..LINES).map(|i| format!("{w}:{i}\n")).collect();
        assert!(read(dir.path(), &format!("{name}.log")) == expected.as_bytes());
    }
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
    check_lines(&read(dir.path(), "p.log"), |_| String::new(), 1, 50_000);
    check_lines(
        &read(dir.path(), "procman.log"),
        |_| "p | ".into(),
        1,
        50_000,
    );
    assert!(out.flush().is_ok());
}

#[test]
fn status_line_on_tty_only() {
    let (out, mem) = output(ColorChoice::Never, true, None);
    out.set_status(Some("waiting: api".into()));
    out.line("api", b"up");
    out.set_status(None);
    assert_eq!(
        mem.text(),
        "\r\x1b[2Kwaiting: api\r\x1b[2K    api | up\n\r\x1b[2Kwaiting: api\r\x1b[2K"
    );

    let (out, mem) = output(ColorChoice::Never, false, None);
    out.set_status(Some("waiting: api".into()));
    out.line("api", b"up");
    assert_eq!(mem.text(), "    api | up\n");
}

#[test]
fn status_is_truncated() {
    let (out, mem) = output(ColorChoice::Never, true, None);
    out.set_status(Some("x".repeat(200)));
    assert_eq!(mem.text(), format!("\r\x1b[2K{}", "x".repeat(79)));
}

#[test]
fn control_characters_in_names_cannot_break_lines() {
    let (out, mem) = output(ColorChoice::Never, false, None);
    out.line("a\nb", b"x");
    assert_eq!(mem.text(), "    a?b | x\n");
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
