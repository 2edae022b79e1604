//! The loader end to end, through the binary: hostile `for_each` file names, environment
//! files and their precedence, Procfiles, replicas, odd files given as CONFIG, and `check`
//! agreeing with `run`.

mod common;

use std::time::Duration;

use common::Sandbox;

const T: Duration = Duration::from_secs(30);

/// Names that run code when spliced into a shell script, even inside double quotes.
const HOSTILE: [&str; 4] = [
    "$(touch PWNED).yaml",
    "`touch PWNED`.yaml",
    "a;touch PWNED.yaml",
    "\"; touch PWNED; \".yaml",
];

fn hostile_sandbox() -> Sandbox {
    let sb = Sandbox::new(
        "p:\n  for_each: {glob: \"in/*.yaml\", as: F}\n  run: echo \"[$F]\"; echo \"unquoted [\"$F\"]\"\n  once: true\n",
    );
    std::fs::create_dir(sb.file("in")).unwrap();
    for name in HOSTILE {
        std::fs::write(sb.file("in").join(name), "").unwrap();
    }
    sb
}

/// No file named PWNED anywhere under `dir`.
fn assert_nothing_ran(dir: &std::path::Path) {
    let found: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("PWNED"))
        })
        .filter(|p| !p.starts_with(dir.join("in")))
        .collect();
    assert!(found.is_empty(), "injected commands ran: {found:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn for_each_file_names_reach_the_script_only_through_the_environment() {
    let sb = hostile_sandbox();
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert_nothing_ran(sb.path());
    // The config's directory is the working directory: relative values, as procman 0.12.
    for name in HOSTILE {
        assert!(out.contains(&format!("| [in/{name}]")), "{name}:\n{out}");
        assert!(
            out.contains(&format!("| unquoted [in/{name}]")),
            "{name}:\n{out}"
        );
    }
}

#[test]
fn for_each_values_are_absolute_when_run_from_elsewhere() {
    let sb = hostile_sandbox();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = sb.file("procman.yaml");
    let mut cmd = sb.command(&["run", config.to_str().unwrap()]);
    cmd.current_dir(elsewhere.path());
    let mut running = common::Running::start(cmd);
    assert_eq!(running.wait(T).code(), Some(0), "{}", running.stderr_text());
    let out = running.stdout_text();
    let dir = std::fs::canonicalize(sb.path()).unwrap();
    for name in HOSTILE {
        let value = dir.join("in").join(name);
        assert!(out.contains(&format!("| [{}]", value.display())), "{out}");
    }
    assert_nothing_ran(sb.path());
    assert_nothing_ran(elsewhere.path());
}

#[test]
fn check_reports_a_glob_that_matches_nothing_as_run_does() {
    let sb = Sandbox::new("p:\n  for_each:\n    glob: \"in/*.yaml\"\n    as: F\n  run: echo $F\n");
    let (check, out, check_err) = sb.run(&["check"], T);
    assert_eq!(check.code(), Some(1));
    assert!(out.is_empty());
    assert!(
        check_err.contains(
            "procman.yaml:3:11: error: `for_each` glob `in/*.yaml` of process `p` matched no files"
        ),
        "{check_err}"
    );
    let (run, out, run_err) = sb.run(&[], T);
    assert_eq!(run.code(), Some(1), "{out}");
    assert_eq!(run_err, check_err);
    assert!(
        !sb.file("procman-logs").exists(),
        "run started before the config was valid"
    );
}

/// Each variable is defined by every layer from the inherited environment up to the one
/// named after it, so the value seen is the highest layer's.
#[test]
fn environment_precedence_table() {
    let layers = [
        "inherited",
        "dotenv",
        "envfile",
        "flag",
        "procfile",
        "procenv",
    ];
    let vars: Vec<String> = layers
        .iter()
        .map(|l| format!("IN_{}", l.to_uppercase()))
        .collect();
    // Layer i defines the variables IN_<layer j> for j >= i, each with value <layer i>.
    let lines = |i: usize| -> String {
        vars[i..]
            .iter()
            .map(|v| format!("{v}={}\n", layers[i]))
            .collect()
    };
    let env_yaml: String = vars[5..]
        .iter()
        .map(|v| format!("    {v}: procenv\n"))
        .collect();
    let echo: String = vars.iter().map(|v| format!("{v}=${v} ")).collect();
    let sb = Sandbox::new(&format!(
        "p:\n  env_file: proc.env\n  env:\n{env_yaml}  run: echo \"{echo}\"\n  once: true\n"
    ));
    std::fs::write(sb.file(".env"), lines(1)).unwrap();
    std::fs::write(sb.file("flag.env"), lines(2)).unwrap();
    std::fs::write(sb.file("proc.env"), lines(4)).unwrap();
    let mut args = vec!["run", "--env-file", "flag.env"];
    let flags: Vec<String> = vars[3..].iter().map(|v| format!("{v}=flag")).collect();
    for f in &flags {
        args.extend(["-e", f]);
    }
    let mut cmd = sb.command(&args);
    for v in &vars {
        cmd.env(v, "inherited");
    }
    let mut running = common::Running::start(cmd);
    assert_eq!(running.wait(T).code(), Some(0), "{}", running.stderr_text());
    let out = running.stdout_text();
    // The precedence, lowest first: inherited < .env < --env-file < -e < env_file < env.
    let expected = [
        ("IN_INHERITED", "inherited"),
        ("IN_DOTENV", "dotenv"),
        ("IN_ENVFILE", "envfile"),
        ("IN_FLAG", "flag"),
        ("IN_PROCFILE", "procfile"),
        ("IN_PROCENV", "procenv"),
    ];
    for (var, value) in expected {
        assert!(out.contains(&format!("{var}={value} ")), "{var}: {out}");
    }

    // --no-dotenv drops the .env layer: IN_DOTENV falls back to the inherited value.
    let mut cmd = sb.command(&["run", "--no-dotenv"]);
    for v in &vars {
        cmd.env(v, "inherited");
    }
    let mut running = common::Running::start(cmd);
    assert_eq!(running.wait(T).code(), Some(0), "{}", running.stderr_text());
    let out = running.stdout_text();
    assert!(out.contains("IN_DOTENV=inherited "), "{out}");
    assert!(out.contains("IN_PROCFILE=procfile "), "{out}");
}

#[test]
fn env_values_expand_variables_from_lower_layers() {
    let sb = Sandbox::new(
        "p:\n  env:\n    SHARD: \"${FROM_DOTENV}-7\"\n    NAME: \"shard-${SHARD}\"\n    KEEP: \"$SHARD\"\n  run: echo \"$NAME $KEEP\"\n  once: true\n",
    );
    std::fs::write(sb.file(".env"), "export FROM_DOTENV='east'\n").unwrap();
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.contains("p | shard-east-7 $SHARD"), "{out}");
}

#[test]
fn a_malformed_env_file_line_is_reported_with_file_and_line() {
    let sb = Sandbox::new("p:\n  env_file: [ok.env, bad.env]\n  run: echo hi\n");
    std::fs::write(sb.file("ok.env"), "A=1\n").unwrap();
    std::fs::write(
        sb.file("bad.env"),
        "# fine\nB=2\nthis is not an assignment\n",
    )
    .unwrap();
    let (status, _, err) = sb.run(&["check"], T);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.starts_with("bad.env:3: error: expected KEY=VALUE"),
        "{err}"
    );
    let (status, _, run_err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(1));
    assert_eq!(run_err, err);

    std::fs::remove_file(sb.file("bad.env")).unwrap();
    let (status, _, err) = sb.run(&["check"], T);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains(
            "procman.yaml:2:22: error: cannot read `env_file` bad.env of process `p`: no such file"
        ),
        "{err}"
    );
    let (status, _, err) = sb.run(&["check", "--env-file", "missing.env"], T);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("missing.env: error: cannot read"), "{err}");
}

/// Editors on Windows start UTF-8 files with a byte order mark, which YAML allows there;
/// it used to become part of the first process's name (or the first env key) and fail.
#[test]
fn a_byte_order_mark_is_not_part_of_the_first_name() {
    let sb =
        Sandbox::new("\u{feff}web:\n  env_file: a.env\n  run: echo \"A is $A\"; exec sleep 1000\n");
    std::fs::write(sb.file("a.env"), "\u{feff}A=1\n").unwrap();
    std::fs::write(sb.file("Procfile"), "\u{feff}web: true\n").unwrap();
    for args in [&["check"][..], &["check", "Procfile"]] {
        let (status, _, err) = sb.run(args, T);
        assert_eq!((status.code(), err.as_str()), (Some(0), ""), "{args:?}");
    }
    let mut running = sb.spawn(&[]);
    running.wait_for("web | A is 1", T);
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(T).code(), Some(0));

    // Columns on the first line count from after the mark, as editors show them.
    std::fs::write(sb.file("procman.yaml"), "\u{feff}web: {run: x, bogus: 2}\n").unwrap();
    let (_, _, err) = sb.run(&["check"], T);
    assert!(err.starts_with("procman.yaml:1:15: error:"), "{err}");
}

#[test]
fn a_foreman_procfile_runs_with_dotenv() {
    let sb = Sandbox::new("");
    std::fs::remove_file(sb.file("procman.yaml")).unwrap();
    std::fs::write(
        sb.file("Procfile"),
        "# web and worker\nweb: echo \"web on $PORT\"; exec sleep 1000\n\nworker:   echo \"worker $QUEUE\"; exec sleep 1000\n",
    )
    .unwrap();
    std::fs::write(sb.file(".env"), "PORT=5000\nQUEUE=\"default queue\"\n").unwrap();
    let (status, out, err) = sb.run(&["check"], T);
    assert_eq!(status.code(), Some(0), "{out}{err}");
    // No CONFIG and no procman.yaml: ./Procfile.
    let running = sb.spawn(&[]);
    running.wait_for("web | web on 5000", T);
    running.wait_for("worker | worker default queue", T);
    running.signal(libc::SIGTERM);
    let mut running = running;
    assert_eq!(running.wait(T).code(), Some(0));

    std::fs::write(sb.file("dev.procfile"), "web: x\nnot a line\nprocman: y\n").unwrap();
    let (status, _, err) = sb.run(&["check", "dev.procfile"], T);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("dev.procfile:2:1: error: expected `name: command`"),
        "{err}"
    );
    assert!(
        err.contains("dev.procfile:3:1: error: invalid process name"),
        "{err}"
    );
}

#[test]
fn replicas_run_numbered_instances_and_process_exited_waits_for_all() {
    let sb = Sandbox::new(
        "w:\n  replicas: 3\n  run: sleep 0.$PROCMAN_REPLICA; echo \"replica $PROCMAN_REPLICA\"\n  once: true\nafter:\n  depends:\n    - process_exited: w\n  run: echo all done\n  once: true\n",
    );
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{out}"))
    };
    for i in 0..3 {
        assert!(
            at(&format!("w-{i} | replica {i}")) < at("after | all done"),
            "{out}"
        );
    }
}

#[test]
fn odd_files_given_as_config_are_named_and_never_block() {
    let sb = Sandbox::new("");
    let fifo = sb.file("fifo.yaml");
    common::mkfifo(&fifo);
    let socket = sb.file("sock.yaml");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::create_dir(sb.file("dir.yaml")).unwrap();
    let cases = [
        ("fifo.yaml", "is a FIFO (named pipe), not a config file"),
        ("sock.yaml", "is a socket, not a config file"),
        ("dir.yaml", "is a directory, not a config file"),
        ("/dev/null", "is a character device, not a config file"),
    ];
    for (path, says) in cases {
        for command in ["check", "run"] {
            let (status, _, err) = sb.run(&[command, path], T);
            assert_eq!(status.code(), Some(1), "{command} {path}: {err}");
            assert!(err.contains(says), "{command} {path}: {err}");
        }
    }
}

#[test]
fn check_and_run_agree_on_configs_without_processes() {
    for text in ["", "# only a comment\n\n", "{}\n", "---\n"] {
        let sb = Sandbox::new(text);
        let (check, _, check_err) = sb.run(&["check"], T);
        let (run, out, run_err) = sb.run(&[], T);
        assert_eq!(check.code(), Some(1), "{text:?}: {check_err}");
        assert_eq!(run.code(), Some(1), "{text:?}: {out}{run_err}");
        assert_eq!(check_err, run_err, "{text:?}");
        assert!(check_err.contains("defines no processes"), "{check_err}");
    }
}

#[test]
fn names_are_checked_where_they_are_written() {
    let long = "x".repeat(65);
    let sb = Sandbox::new(&format!(
        "procman:\n  run: a\n{long}:\n  run: b\n\"a/b\":\n  run: c\n"
    ));
    let (status, _, err) = sb.run(&["check"], T);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("procman.yaml:1:1: error: invalid process name: `procman` is reserved"),
        "{err}"
    );
    assert!(
        err.contains("procman.yaml:3:1: error: invalid process name: process name"),
        "{err}"
    );
    assert!(
        err.contains("procman.yaml:5:1: error: invalid process name"),
        "{err}"
    );
}

#[test]
fn attach_passes_its_environment_flags_to_the_server_it_starts() {
    let marker = common::unique_sleep();
    let sb = Sandbox::new(&format!(
        "web:\n  run: echo \"$FROM_FILE $FROM_FLAG\" > seen.txt; exec sleep {marker}\n"
    ));
    let runtime = sb.file("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // A relative --env-file is the client's: the server runs elsewhere (the config's dir).
    let client_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        client_dir.path().join("extra.env"),
        "FROM_FILE=file-value\n",
    )
    .unwrap();
    let config = sb.file("procman.yaml");
    let seen = sb.file("seen.txt");
    let wait_and_show = format!(
        "i=0; while [ ! -s '{0}' ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; cat '{0}'",
        seen.display()
    );
    let mut cmd = sb.command(&[
        "attach",
        config.to_str().unwrap(),
        "--env-file",
        "extra.env",
        "-e",
        "FROM_FLAG=flag-value",
        "--disconnect-timeout",
        "0s",
        "--",
        "sh",
        "-c",
        &wait_and_show,
    ]);
    cmd.current_dir(client_dir.path())
        .env("PROCMAN_RUNTIME_DIR", &runtime);
    let mut running = common::Running::start(cmd);
    assert_eq!(running.wait(T).code(), Some(0), "{}", running.stderr_text());
    assert!(
        running.stdout_text().contains("file-value flag-value"),
        "{}",
        running.stdout_text()
    );
    // The server leaves once its only client is gone.
    assert!(
        common::eventually(T, || common::processes_matching(&format!(
            "^sleep {marker}"
        ))
        .is_empty()),
        "the server's process outlived it"
    );
    assert!(common::eventually(T, || std::fs::read_dir(&runtime)
        .unwrap()
        .next()
        .is_none()));
}
