//! One procman per config and per log directory, refused before anything of the first
//! one's is touched; private runtime files that are never opened through a plant.

mod common;

use std::time::Duration;

use common::{Running, Sandbox, eventually, processes_matching};

const T: Duration = Duration::from_secs(20);

#[test]
fn a_second_instance_fails_at_once_and_leaves_the_first_ones_logs_intact() {
    // Why 4: the refused second `run` used to wipe the first one's procman-logs/*.log.
    let m = common::unique_sleep();
    let sb = Sandbox::new(&format!(
        "svc:\n  run: \"echo first-run-output; exec sleep {m}\"\n"
    ));
    let mut first = sb.spawn(&["run"]);
    first.wait_for("svc | first-run-output", T);
    let log = sb.file("procman-logs/svc.log");
    assert!(eventually(T, || std::fs::read_to_string(&log)
        .is_ok_and(|l| l.contains("first-run-output"))));

    for args in [&["run"][..], &["serve"][..]] {
        let (status, out, err) = sb.run(args, T);
        assert_eq!(status.code(), Some(2), "{args:?}: {out}{err}");
        let config = std::fs::canonicalize(sb.file("procman.yaml")).unwrap();
        assert!(
            err.contains(&format!(
                "another procman (pid {}) is running {}",
                first.pid(),
                config.display()
            )),
            "{args:?}: {err}"
        );
        assert!(!out.contains("started"), "{args:?}: it started: {out}");
    }
    // A different config with the same (default) log directory is refused as well.
    std::fs::write(sb.file("other.yaml"), "x:\n  run: echo second-run-output\n").unwrap();
    let (status, out, err) = sb.run(&["run", "other.yaml"], T);
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains(&format!(
            "another procman (pid {}) writes its logs to",
            first.pid()
        )),
        "{err}"
    );
    assert!(!out.contains("second-run-output"), "{out}");

    let svc_log = std::fs::read_to_string(&log).unwrap();
    assert!(svc_log.contains("first-run-output"), "svc.log: {svc_log:?}");
    let combined = std::fs::read_to_string(sb.file("procman-logs/procman.log")).unwrap();
    assert!(combined.contains("first-run-output"), "{combined}");
    assert_eq!(processes_matching(&format!("^sleep {m}")).len(), 1);

    first.signal(libc::SIGTERM);
    assert_eq!(first.wait(T).code(), Some(0));
    // With the first one gone, the lock is free again.
    let (status, out, err) = sb.run(&["run", "other.yaml"], T);
    assert_eq!(status.code(), Some(0), "{out}{err}");
}

#[test]
fn attach_refuses_a_planted_server_log() {
    // Why 2: the log of a server that `attach` starts was opened with create+append, so a
    // symlink (or a file others can read) planted at its path got the server's output.
    use std::os::unix::fs::PermissionsExt;
    let m = common::unique_sleep();
    let sb = Sandbox::new(&format!("web:\n  run: exec sleep {m}\n"));
    let run = sb.file("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let paths = procman::control::RuntimePaths::in_dir(&sb.file("procman.yaml"), &run).unwrap();
    let log = paths.discovery.with_extension("log");
    let victim = sb.file("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();

    let attach = |expect: &str| {
        let mut cmd = sb.command(&["attach", "--disconnect-timeout", "0s", "--", "true"]);
        cmd.env("PROCMAN_RUNTIME_DIR", &run);
        let mut client = Running::start(cmd);
        assert_eq!(client.wait(T).code(), Some(2), "{}", client.stdout_text());
        let err = client.stderr_text();
        assert!(
            err.contains(&format!("refusing the server log {}", log.display()))
                && err.contains(expect),
            "{err}"
        );
    };

    std::os::unix::fs::symlink(&victim, &log).unwrap();
    attach("symbolic link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    std::fs::remove_file(&log).unwrap();

    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    attach("mode 666");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
    std::fs::remove_file(&log).unwrap();

    // A clean path works, and the log it creates is private (and removed at the end).
    let stat = format!("stat -c %a {}", log.display());
    let mut cmd = sb.command(&[
        "attach",
        "--disconnect-timeout",
        "0s",
        "--",
        "sh",
        "-c",
        &stat,
    ]);
    cmd.env("PROCMAN_RUNTIME_DIR", &run);
    let mut client = Running::start(cmd);
    assert_eq!(client.wait(T).code(), Some(0), "{}", client.stderr_text());
    assert_eq!(client.stdout_lines(), vec!["600".to_owned()]);
    assert!(eventually(T, || std::fs::read_dir(&run).unwrap().count() == 0));
    assert!(eventually(T, || processes_matching(&m).is_empty()));
}

#[test]
fn attach_waits_for_a_server_that_is_still_shutting_down() {
    // The old server stopped listening but still holds the config's lock while its
    // process takes its time to stop; a new server would be refused, so attach waits.
    let m = common::unique_sleep();
    let sb = Sandbox::new(&format!(
        "svc:\n  run: \"trap 'sleep 2; exit 0' TERM; sleep {m} & wait\"\n  stop_timeout: 10s\n"
    ));
    let run = sb.file("run");
    let with_runtime = |args: &[&str]| {
        let mut cmd = sb.command(args);
        cmd.env("PROCMAN_RUNTIME_DIR", &run);
        cmd
    };
    let mut old = Running::start(with_runtime(&["serve"]));
    old.wait_for("listening on", T);
    let paths = procman::control::RuntimePaths::in_dir(&sb.file("procman.yaml"), &run).unwrap();
    let mut stop = Running::start(with_runtime(&["stop"]));
    assert!(eventually(T, || !paths.discovery.exists()));
    assert!(
        procman::server::instance_holder(&paths.config) == Some(old.pid() as u32),
        "the old server is already gone; the test proves nothing"
    );
    let mut client = Running::start(with_runtime(&[
        "attach",
        "--disconnect-timeout",
        "0s",
        "--",
        "true",
    ]));
    assert_eq!(client.wait(T).code(), Some(0), "{}", client.stderr_text());
    assert_eq!(old.wait(T).code(), Some(0));
    assert_eq!(stop.wait(T).code(), Some(0));
    assert!(eventually(T, || processes_matching(&m).is_empty()));
    assert!(eventually(T, || std::fs::read_dir(&run).unwrap().count() == 0));
}
