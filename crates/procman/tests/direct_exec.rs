//! A script that needs no shell is executed directly; the difference must not show. Each
//! row of the table runs once through the shell (`PROCMAN_ALWAYS_SHELL=1`) and once
//! without, in both containment modes, and the two must agree on exit code, output,
//! environment, arguments and pids.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::Sandbox;

/// One procman run of a one-process config: the process's exit code (from the log), its
/// output lines, procman's pid and the process's pid.
struct Outcome {
    code: i32,
    lines: Vec<String>,
    procman: u32,
    pid: u32,
}

fn run(sandbox: &Sandbox, script: &str, force_shell: bool, no_cgroup: bool) -> Outcome {
    let config = format!("p:\n  run: {script}\n  once: true\n  cwd: work\n");
    std::fs::write(sandbox.file("procman.yaml"), config).unwrap();
    let mut cmd = sandbox.command(&["run"]);
    cmd.env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}:/usr/bin:/bin",
                sandbox.file("first").display(),
                sandbox.file("later").display()
            ),
        )
        .env("NO_COLOR", "1")
        .env("HOME", sandbox.path())
        .env("FOO", "visible value")
        .env("PROCMAN_RUNTIME_DIR", sandbox.file("run"));
    if force_shell {
        cmd.env("PROCMAN_ALWAYS_SHELL", "1");
    }
    if no_cgroup {
        cmd.env("PROCMAN_NO_CGROUP", "1");
    }
    let mut running = common::Running::start(cmd);
    running.wait(Duration::from_secs(30));
    let out = running.stdout_lines();
    let procman = running.child.id();
    let mut outcome = Outcome {
        code: -1,
        lines: Vec::new(),
        procman,
        pid: 0,
    };
    for line in out {
        let Some((who, text)) = line.split_once(" | ") else {
            continue;
        };
        match who.trim() {
            "p" => outcome.lines.push(text.to_owned()),
            "procman" => {
                if let Some(rest) = text.strip_prefix("p [") {
                    let (pid, event) = rest.split_once("] ").unwrap();
                    outcome.pid = pid.parse().unwrap();
                    if event.starts_with("completed") {
                        outcome.code = 0;
                    } else if let Some(code) = event.strip_prefix("exited with code ") {
                        outcome.code = code.split(' ').next().unwrap().parse().unwrap();
                    }
                }
            }
            _ => {}
        }
    }
    outcome
}

fn executable(path: &Path, body: &str, mode: u32) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn sandbox() -> Sandbox {
    let sandbox = Sandbox::new("");
    let work = sandbox.file("work");
    for dir in ["work/dir", "first/later-tool", "later", "run"] {
        std::fs::create_dir_all(sandbox.file(dir)).unwrap();
    }
    std::fs::set_permissions(sandbox.file("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let shebang = "#!/bin/sh\n";
    executable(
        &work.join("args"),
        &format!("{shebang}echo \"$0\" \"$#\" \"$@\"\n"),
        0o755,
    );
    executable(
        &work.join("pids"),
        &format!("{shebang}echo \"$$ $PPID\"\n"),
        0o755,
    );
    executable(
        &work.join("fail"),
        &format!("{shebang}echo failing\nexit 7\n"),
        0o755,
    );
    executable(&work.join("plain"), "echo no shebang \"$@\"\n", 0o755);
    executable(
        &work.join("readable"),
        &format!("{shebang}echo no\n"),
        0o644,
    );
    // `later-tool` is a directory in the first PATH entry, a program in the second;
    // `shadowed` is not executable in the first, executable in the second.
    executable(
        &sandbox.file("later/later-tool"),
        &format!("{shebang}echo found later \"$@\"\n"),
        0o755,
    );
    executable(
        &sandbox.file("first/shadowed"),
        &format!("{shebang}echo wrong\n"),
        0o644,
    );
    executable(
        &sandbox.file("later/shadowed"),
        &format!("{shebang}echo executable one\n"),
        0o755,
    );
    sandbox
}

#[test]
fn direct_exec_and_the_shell_agree() {
    let sandbox = sandbox();
    // (script, expected exit code, expected output when the command runs)
    let table: &[(&str, i32, Option<&[&str]>)] = &[
        ("true", 0, Some(&[])),
        ("false", 1, Some(&[])),
        ("exec ./fail", 7, Some(&["failing"])),
        (
            "./args one two --three=3 a,b:c",
            0,
            Some(&["./args 4 one two --three=3 a,b:c"]),
        ),
        ("later-tool x", 0, Some(&["found later x"])),
        ("shadowed", 0, Some(&["executable one"])),
        ("./plain a b", 0, Some(&["no shebang a b"])),
        ("missing-command arg", 127, None),
        ("./missing", 127, None),
        ("./readable", 126, None),
        ("./dir", 126, None),
        ("exit 3", 3, Some(&[])),
    ];
    for no_cgroup in [false, true] {
        for (script, code, output) in table {
            let shell = run(&sandbox, script, true, no_cgroup);
            let direct = run(&sandbox, script, false, no_cgroup);
            let what = format!("{script:?} (no cgroup: {no_cgroup})");
            assert_eq!(
                shell.code, *code,
                "{what} through the shell: {:?}",
                shell.lines
            );
            assert_eq!(direct.code, *code, "{what} directly: {:?}", direct.lines);
            match output {
                Some(lines) => {
                    assert_eq!(shell.lines, *lines, "{what} through the shell");
                    assert_eq!(direct.lines, *lines, "{what} directly");
                }
                None => {
                    // One clear line each, naming the command.
                    let command = script.split(' ').next().unwrap();
                    assert_eq!(shell.lines.len(), 1, "{what}: {:?}", shell.lines);
                    assert!(
                        shell.lines[0].contains(command),
                        "{what}: {:?}",
                        shell.lines
                    );
                    assert_eq!(direct.lines.len(), 1, "{what}: {:?}", direct.lines);
                    assert!(
                        direct.lines[0].starts_with("procman: p: ")
                            && direct.lines[0].ends_with(command),
                        "{what}: {:?}",
                        direct.lines
                    );
                }
            }
        }
    }
}

#[test]
fn the_environment_and_the_process_tree_are_the_same() {
    let sandbox = sandbox();
    for no_cgroup in [false, true] {
        let env = |force_shell| {
            let mut lines: Vec<String> = run(&sandbox, "env", force_shell, no_cgroup)
                .lines
                .into_iter()
                .filter(|l| {
                    !l.starts_with("PROCMAN_INSTANCE=") && !l.starts_with("PROCMAN_ALWAYS_SHELL=")
                })
                .collect();
            lines.sort();
            lines
        };
        let (shell, direct) = (env(true), env(false));
        assert!(
            direct.contains(&"FOO=visible value".to_owned()),
            "{direct:?}"
        );
        assert_eq!(shell, direct);
        // The process is the command itself, a child of procman, either way.
        for force_shell in [true, false] {
            let outcome = run(&sandbox, "./pids", force_shell, no_cgroup);
            assert_eq!(
                outcome.lines,
                [format!("{} {}", outcome.pid, outcome.procman)],
                "shell: {force_shell}, no cgroup: {no_cgroup}"
            );
        }
    }
}
