//! `procman logs` against a real server (`serve`), and from the log files without one.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Served, mkfifo, unique_sleep, write_fifo};

const T: Duration = Duration::from_secs(30);

/// The lines of the named process (prefix stripped), in printed order.
fn of<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.split_once(" | ").filter(|(n, _)| n.trim() == name))
        .map(|(_, text)| text)
        .collect()
}

/// A served stack whose `a` and `b` take turns printing, plus a `for_each` group. The
/// test releases each line through a FIFO only once the server has read the one before,
/// so the order of their lines is known however late the output thread runs.
fn stack() -> (Served, common::Running) {
    let m = unique_sleep();
    let s = Served::new(&format!(
        "a:\n  run: echo a1; read x < a2; echo a2; read x < a3; echo a3; exec sleep {m}\n\
         b:\n  run: read x < b1; echo b1; read x < b2; echo b2; exec sleep {m}\n\
         worker:\n  for_each:\n    glob: \"cf/*.yaml\"\n    as: CF\n  run: echo \"hi $CF\"; exec sleep {m}\n"
    ));
    // One FIFO per line: a second line written before the reader closed would be lost
    // with the FIFO's buffer when it did.
    for fifo in ["a2", "a3", "b1", "b2"] {
        mkfifo(&s.sb.file(fifo));
    }
    std::fs::create_dir(s.sb.file("cf")).unwrap();
    std::fs::write(s.sb.file("cf/one.yaml"), "").unwrap();
    std::fs::write(s.sb.file("cf/two.yaml"), "").unwrap();
    let server = s.serve();
    let shown = |name: &str, line: &str| {
        common::eventually(T, || {
            let (_, out, _) = s.client(&["logs", name]);
            out.contains(line)
        })
    };
    assert!(shown("a", "a1"), "a never printed a1");
    for line in ["b1", "a2", "b2", "a3"] {
        write_fifo(&s.sb.file(line), b"go\n");
        assert!(shown(&line[..1], line), "{line} never shown");
    }
    (s, server)
}

fn stop(s: &Served, mut server: common::Running) {
    let (code, _, err) = s.client(&["stop"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.wait(T).code(), Some(0));
}

#[test]
fn last_lines_merged_in_time_order_with_names_groups_and_limits() {
    let (s, server) = stack();
    let (code, out, err) = s.client(&["logs", "a", "b"]);
    assert_eq!(code, 0, "{err}");
    let texts: Vec<&str> = out
        .lines()
        .map(|l| l.split_once(" | ").unwrap().1)
        .collect();
    assert_eq!(texts, ["a1", "b1", "a2", "b2", "a3"], "{out}");
    // The usual prefixes: right-aligned to the widest name of the run (`worker-0`).
    assert!(
        out.lines().next().unwrap().starts_with("       a | a1"),
        "{out}"
    );

    // -n counts all named processes together, keeping the newest.
    let (_, out, _) = s.client(&["logs", "-n", "2", "a", "b"]);
    assert_eq!(of(&out, "a"), ["a3"], "{out}");
    assert_eq!(of(&out, "b"), ["b2"], "{out}");

    // No name: everyone, the supervisor's lines included.
    let (_, out, _) = s.client(&["logs", "-n", "1000"]);
    assert!(!of(&out, "procman").is_empty(), "{out}");
    assert_eq!(of(&out, "worker-0"), ["hi cf/one.yaml"], "{out}");

    // A group name is every instance.
    let (_, out, _) = s.client(&["logs", "worker"]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["worker-0 | hi cf/one.yaml", "worker-1 | hi cf/two.yaml"],
        "{out}"
    );

    // --since: nothing is that recent once the stack is quiet.
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, _) = s.client(&["logs", "--since", "100ms", "a", "b"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (_, out, _) = s.client(&["logs", "--since", "1h", "a"]);
    assert_eq!(of(&out, "a"), ["a1", "a2", "a3"]);

    // An unknown name is an error naming it, with a suggestion.
    let (code, out, err) = s.client(&["logs", "wroker"]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(
        err.contains("no process named \"wroker\"") && err.contains("did you mean `worker`?"),
        "{err}"
    );
    let (code, _, err) = s.client(&["logs", "-n", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid value 'x'"), "{err}");
    stop(&s, server);
}

#[test]
fn follow_sees_a_later_line_and_ends_when_the_server_leaves() {
    let m = unique_sleep();
    let s = Served::new(&format!(
        "web:\n  run: echo first; read x < go; echo \"later $x\"; exec sleep {m}\n\
         quiet:\n  run: read x < never; exec sleep {m}\n"
    ));
    mkfifo(&s.sb.file("go"));
    mkfifo(&s.sb.file("never"));
    let server = s.serve();
    let follower = common::Running::start(s.cmd(&["logs", "-f", "web"]));
    follower.wait_for("web | first", T);
    write_fifo(&s.sb.file("go"), b"news\n");
    follower.wait_for("web | later news", T);
    let mut follower = follower;
    stop(&s, server);
    assert_eq!(follower.wait(T).code(), Some(0));
    assert!(
        follower
            .stderr_text()
            .contains("has stopped; no more output"),
        "{}",
        follower.stderr_text()
    );
    // Only web's lines.
    assert!(
        follower
            .stdout_lines()
            .iter()
            .all(|l| l.starts_with("    web | ")),
        "{}",
        follower.stdout_text()
    );
}

#[test]
fn without_a_server_it_reads_the_log_file() {
    let s = Served::new("a:\n  run: echo one; echo two; echo three\n  once: true\n");
    let (status, _, err) = s.sb.run(&["run"], T);
    assert!(status.success(), "{err}");
    let (code, out, err) = s.client(&["logs", "-n", "2", "a"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "      a | two\n      a | three");
    assert!(err.contains("no server runs"), "{err}");
    let (_, out, _) = s.client(&["logs", "procman"]);
    assert!(out.contains("procman | exiting with code 0"), "{out}");
    let (code, _, err) = s.client(&["logs", "b"]);
    assert_eq!(code, 1);
    assert!(err.contains("no process named \"b\""), "{err}");
    // -f: the lines, then a clear refusal, since nothing writes the file any more.
    let (code, out, err) = s.client(&["logs", "-f", "-n", "1", "a"]);
    assert_eq!(code, 1);
    assert_eq!(out, "      a | three");
    assert!(err.contains("nothing to follow"), "{err}");
    // Another log directory.
    let (code, _, err) = s.client(&["logs", "--log-dir", "elsewhere"]);
    assert_eq!(code, 1);
    assert!(err.contains("no log at elsewhere/procman.log"), "{err}");
}

#[test]
fn a_closed_stdout_ends_it_quietly() {
    let m = unique_sleep();
    // More than a pipe holds, so the client is still writing when the pipe closes.
    let s = Served::new(&format!(
        "web:\n  run: for i in $(seq 1 1000); do printf 'line %s %0200d\\n' $i 0; done; exec sleep {m}\n"
    ));
    let server = s.serve();
    assert!(common::eventually(T, || {
        s.client(&["logs", "-n", "1", "web"])
            .1
            .contains("line 1000 ")
    }));
    for follow in [false, true] {
        let mut args = vec!["logs", "-n", "1000"];
        if follow {
            args.push("-f");
        }
        let mut child = s
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Like `| head -1`: read one line, close the pipe.
        let mut stdout = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while std::io::Read::read(&mut stdout, &mut byte).unwrap() == 1 && byte[0] != b'\n' {}
        drop(stdout);
        let child = std::cell::RefCell::new(child);
        assert!(
            common::eventually(T, || child.borrow_mut().try_wait().unwrap().is_some()),
            "still running with a closed stdout (follow={follow})"
        );
        let child = child.into_inner();
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "follow={follow}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "",
            "follow={follow}"
        );
    }
    stop(&s, server);
}
