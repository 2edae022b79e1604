//! Hostile configs and messages that an earlier adversarial pass found harmless, kept
//! harmless: each gets one clear error (or a bounded success) from `procman check` or the
//! message parser, never a crash, a hang or a flood of messages.

mod common;

use std::time::Duration;

use common::Sandbox;
use procman::protocol::{MAX_LINE, parse_line};

/// Generous: a debug build on a loaded 2-core machine. This bounds the wait; it is not a
/// speed assertion.
const T: Duration = Duration::from_secs(120);

/// `procman check` in a sandbox holding `config`: (exit code, stdout, stderr).
fn check(config: &str) -> (Option<i32>, String, String) {
    let sb = Sandbox::new(config);
    let (status, out, err) = sb.run(&["check"], T);
    (status.code(), out, err)
}

/// `procman check` in `sb` under a 2 GB address-space limit (so that a regression fails
/// instead of taking the machine down), which must fail: its stderr.
fn check_failing_in_2_gb(sb: &Sandbox) -> String {
    let mut limited = std::process::Command::new("sh");
    limited
        .args(["-c", "ulimit -v 2000000 && exec \"$0\" check"])
        .arg(env!("CARGO_BIN_EXE_procman"))
        .current_dir(sb.path())
        .stdin(std::process::Stdio::null());
    let mut running = common::Running::start(limited);
    let status = running.wait(T);
    let err = running.stderr_text();
    assert_eq!(status.code(), Some(1), "{err:.2000}");
    err
}

/// Asserts that `err` is exactly one `procman.yaml:LINE:COL: error: …` line on `line`
/// containing `part`.
#[track_caller]
fn one_error(err: &str, line: usize, part: &str) {
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{err:.2000}");
    assert!(
        lines[0].starts_with(&format!("procman.yaml:{line}:")) && lines[0].contains(part),
        "{:.2000}",
        lines[0]
    );
}

#[test]
fn billion_laughs_are_refused_at_the_first_anchor() {
    let mut config = String::from("web:\n  run: echo hi\n  env:\n    L0: &a0 \"lol\"\n");
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 10].join(", ");
        config.push_str(&format!("    L{level}: &a{level} [{refs}]\n"));
    }
    let (code, _, err) = check(&config);
    assert_eq!(code, Some(1), "{err}");
    one_error(&err, 4, "anchors and aliases");
}

#[test]
fn deep_nesting_gets_one_error() {
    const DEPTH: usize = 100_000;
    // Flow collections, closed and unclosed, as a value where a mapping is expected.
    let closed = format!(
        "web:\n  run: x\n  env: {}{}\n",
        "[".repeat(DEPTH),
        "]".repeat(DEPTH)
    );
    let (code, _, err) = check(&closed);
    assert_eq!(code, Some(1), "{err:.2000}");
    assert_eq!(err.lines().count(), 1, "{err:.2000}");
    assert!(err.starts_with("procman.yaml:3:"), "{err:.2000}");

    let unclosed = format!("web:\n  run: x\n  env: {}\n", "{a: ".repeat(DEPTH));
    let (code, _, err) = check(&unclosed);
    assert_eq!(code, Some(1), "{err:.2000}");
    assert_eq!(err.lines().count(), 1, "{err:.2000}");
    assert!(err.starts_with("procman.yaml:"), "{err:.2000}");

    // Block mappings, one level per line.
    let mut block = String::from("web:\n  run: x\n  env:\n");
    for level in 0..2_000 {
        block.push_str(&format!("{}k{level}:\n", " ".repeat(4 + level)));
    }
    let (code, _, err) = check(&block);
    assert_eq!(code, Some(1), "{err:.2000}");
    assert_eq!(err.lines().count(), 1, "{err:.2000}");
}

#[test]
fn a_large_config_is_read_or_refused_whole() {
    // 50 MB after an error on line 2: one error, found without reading on.
    let broken = format!("web:\n\trun: x\n{}\n", "x".repeat(50 << 20));
    let (code, _, err) = check(&broken);
    assert_eq!(code, Some(1), "{err:.2000}");
    one_error(&err, 2, "tabs");

    // 4 MB in one process's command: loaded (a release build reads 50 MB in seconds; a
    // debug build, as tests use, takes a minute).
    let big = format!("web:\n  run: echo {}\n", "x".repeat(4 << 20));
    let (code, _, err) = check(&big);
    assert_eq!((code, err.as_str()), (Some(0), ""), "{err:.2000}");

    // Past the 64 MiB limit (a sparse file: nothing to write): refused before parsing.
    let sb = Sandbox::new("");
    let file = std::fs::File::options()
        .write(true)
        .open(sb.file("procman.yaml"))
        .unwrap();
    file.set_len((64 << 20) + 1).unwrap();
    let (status, _, err) = sb.run(&["check"], T);
    assert_eq!(status.code(), Some(1), "{err:.2000}");
    assert_eq!(err.lines().count(), 1, "{err:.2000}");
    assert!(err.contains("larger than 67108864 bytes"), "{err}");

    // Many processes, each waiting for the one before, and a duplicate at the end.
    let mut many = String::new();
    for i in 0..5_000 {
        many.push_str(&format!("p{i}:\n  run: echo {i}\n  once: true\n"));
        if i > 0 {
            many.push_str(&format!("  depends:\n    - process_exited: p{}\n", i - 1));
        }
    }
    many.push_str("p0:\n  run: again\n");
    let (code, _, err) = check(&many);
    assert_eq!(code, Some(1), "{err:.2000}");
    one_error(&err, 5 * 5_000 - 1, "duplicate process `p0`");
}

/// Each duplicate key makes the loader parse the file again; in a large file full of them
/// that once took hours. Now the first few are reported and the rest of the work skipped.
#[test]
fn duplicates_in_a_large_file_are_reported_in_bounded_work() {
    let mut config: String = (0..300).map(|_| "d: {run: x}\n").collect();
    config.push_str(&format!("web:\n  run: echo {}\n", "x".repeat(256 << 10)));
    let (code, _, err) = check(&config);
    assert_eq!(code, Some(1), "{err:.2000}");
    let lines: Vec<&str> = err.lines().collect();
    assert!((2..=20).contains(&lines.len()), "{err:.2000}");
    for (i, line) in lines.iter().enumerate() {
        let expected = format!(
            "procman.yaml:{}:1: error: duplicate process `d` (first defined at line 1:1)",
            i + 2
        );
        assert!(line.starts_with(&expected), "{line:.300}");
    }
}

/// `${VAR}` in an `env` value sees the values above it, already expanded: eleven keys
/// each naming the one before ten times made a 736-byte config expand to 1.6 TB (an abort
/// at best, the machine's memory at worst); a dependency field naming a large value many
/// times did the same. Run under a 2 GB address-space limit so a regression cannot take
/// the machine down with it.
#[test]
fn expansion_bombs_get_one_error() {
    let mut laughs = String::from("web:\n  run: x\n  env:\n    A0: \"xxxxxxxxxxxxxxxx\"\n");
    for level in 1..12 {
        let refs = format!("${{A{}}}", level - 1).repeat(10);
        laughs.push_str(&format!("    A{level}: \"{refs}\"\n"));
    }
    let many = format!(
        "web:\n  run: x\n  env:\n    BIG: {}\n  depends:\n    - path: \"{}\"\n",
        "x".repeat(64 << 10),
        "$BIG".repeat(100_000)
    );
    for (config, line) in [(laughs, 8), (many, 6)] {
        let sb = Sandbox::new(&config);
        let err = check_failing_in_2_gb(&sb);
        // The key that went past the bound; a later key naming it may go past it again.
        let lines: Vec<&str> = err.lines().collect();
        assert!((1..=3).contains(&lines.len()), "{err:.2000}");
        assert!(
            lines[0].starts_with(&format!("procman.yaml:{line}:")),
            "{err:.2000}"
        );
        assert!(
            lines.iter().all(|l| l.contains("past 128 KiB")),
            "{err:.2000}"
        );
    }
}

/// The glob crate follows symlinks under `**` without noticing loops: two links back to
/// their parent (as /usr/lib/llvm-14/build has) made `procman check` walk 2^40 paths,
/// past 12 GB in a minute. Such a tree now gets one error naming the loop. Under a 2 GB
/// address-space limit so a regression fails instead of taking the machine down.
#[test]
fn a_symlink_loop_under_a_recursive_glob_gets_one_error() {
    let sb = Sandbox::new("w:\n  run: x\n  for_each: {glob: \"tree/**/*.conf\", as: F}\n");
    let deep = sb.file("tree/a/b");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("x.conf"), "").unwrap();
    std::os::unix::fs::symlink("..", deep.join("up")).unwrap();
    std::os::unix::fs::symlink("..", deep.join("again")).unwrap();
    let err = check_failing_in_2_gb(&sb);
    one_error(&err, 3, "symlink loop");
}

#[test]
fn hostile_message_lines_get_one_sentence() {
    let deep = format!(
        "{{\"type\":\"run\",\"name\":\"x\",\"run\":\"y\",\"depends\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let huge = format!(
        "{{\"type\":\"run\",\"name\":\"x\",\"run\":\"{}\"}}",
        "y".repeat(100 << 20)
    );
    let not_utf8 = b"{\"type\":\"run\",\"name\":\"\xff\xfe\",\"run\":\"y\"}".to_vec();
    let just_over = format!(
        "{{\"type\":\"run\",\"name\":\"x\",\"run\":\"{}\"}}",
        "y".repeat(MAX_LINE)
    );
    for line in [
        deep.into_bytes(),
        huge.into_bytes(),
        not_utf8,
        just_over.into_bytes(),
    ] {
        let error = parse_line(&line).unwrap_err();
        assert!(
            !error.is_empty() && !error.contains('\n') && error.len() < 400,
            "{error}"
        );
    }
}
