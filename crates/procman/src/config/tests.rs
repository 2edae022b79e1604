//! Unit tests for the loader: parsing, mutators and validators on `procman.yaml` text.

use std::path::Path;
use std::time::Duration;

use super::*;

fn env() -> BTreeMap<String, String> {
    [("PM_TEST_PORT", "8080"), ("PM_TEST_DIR", "/srv")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Loads `text` as a config in `/cfg`, or, when it has a `for_each`, in a scratch directory
/// holding the files its globs match: `a.y`, `b.y`, `configs/a.yaml`, `nodes/n1.yaml`
/// (`/etc/nodes/` is read as that).
fn parse(text: &str) -> Result<Config, ConfigError> {
    if !text.contains("for_each") {
        return parse_str(text, Path::new("procman.yaml"), Path::new("/cfg"), &env());
    }
    let dir = tempfile::tempdir().unwrap();
    for file in ["a.y", "b.y", "configs/a.yaml", "nodes/n1.yaml"] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }
    let nodes = format!("{}/nodes/", dir.path().display());
    let text = text.replace("/etc/nodes/", &nodes);
    parse_str(&text, Path::new("procman.yaml"), dir.path(), &env())
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected Ok, got:\n{e}"),
    }
}

fn diags(text: &str) -> Vec<Diagnostic> {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

/// Asserts that the only diagnostic is at `line:col` and contains every `parts`.
#[track_caller]
fn only_err(text: &str, line: usize, col: usize, parts: &[&str]) {
    let d = diags(text);
    assert_eq!(d.len(), 1, "expected exactly one diagnostic, got {d:#?}");
    assert_eq!((d[0].line, d[0].column), (line, col), "{d:#?}");
    for p in parts {
        assert!(d[0].message.contains(p), "`{p}` not in {:?}", d[0].message);
    }
}

fn dep(text: &str) -> Dependency {
    let c = ok(text);
    c.processes[0].depends[0].clone()
}

// ---- successful parses -------------------------------------------------------------

#[test]
fn minimal_process_and_defaults() {
    let c = ok("web:\n  run: echo hello\n");
    assert_eq!(c.path, Path::new("procman.yaml"));
    assert!(c.dir.is_absolute());
    let p = &c.processes[0];
    assert_eq!(p.name, "web");
    assert_eq!(p.run, "echo hello");
    assert!(!p.once);
    assert!(p.autostart);
    assert!(p.env.is_empty() && p.depends.is_empty() && p.watch.is_empty());
    assert!(p.for_each.is_none() && p.cwd.is_none());
    assert_eq!(p.stop_timeout, Duration::from_secs(2));
    assert_eq!(p.location, Location { line: 1, column: 1 });
}

#[test]
fn empty_file_and_empty_mapping_are_ok() {
    assert!(ok("").processes.is_empty());
    assert!(ok("# just a comment\n\n").processes.is_empty());
    assert!(ok("{}\n").processes.is_empty());
    assert!(ok("---\n").processes.is_empty());
}

#[test]
fn processes_keep_file_order() {
    let c = ok("zeta:\n  run: a\nalpha:\n  run: b\nmid:\n  run: c\n");
    let names: Vec<_> = c.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
    assert_eq!(c.processes[1].location, Location { line: 3, column: 1 });
}

#[test]
fn env_scalars_are_stringified_as_written() {
    let c = ok(
        "w:\n  env:\n    PORT: 3000\n    DEBUG: true\n    RATIO: 0.50\n    S: \"x y\"\n  run: r\n",
    );
    let e = &c.processes[0].env;
    assert_eq!(e["PORT"], "3000");
    assert_eq!(e["DEBUG"], "true");
    assert_eq!(e["RATIO"], "0.50");
    assert_eq!(e["S"], "x y");
}

#[test]
fn multiline_run_once_autostart_cwd_stop_timeout() {
    let c = ok(
        "m:\n  run: |\n    a\n    b\n  once: true\n  autostart: false\n  cwd: sub/dir\n  stop_timeout: 500ms\n\
             n:\n  run: x\n  cwd: /abs\n  stop_timeout: 5\no:\n  run: x\n  stop_timeout: 1.5\n",
    );
    let m = &c.processes[0];
    assert_eq!(m.run, "a\nb\n");
    assert!(m.once && !m.autostart);
    assert_eq!(m.cwd, Some(c.dir.join("sub/dir")));
    assert_eq!(m.stop_timeout, Duration::from_millis(500));
    assert_eq!(c.processes[1].cwd.as_deref(), Some(Path::new("/abs")));
    assert_eq!(c.processes[1].stop_timeout, Duration::from_secs(5));
    assert_eq!(c.processes[2].stop_timeout, Duration::from_millis(1500));
}

#[test]
fn for_each_becomes_instances_that_keep_their_template() {
    let c = ok(
        "nodes:\n  for_each:\n    glob: \"configs/*.yaml\"\n    as: CONFIG_PATH\n  run: x $CONFIG_PATH\n  once: true\n",
    );
    assert_eq!(c.processes.len(), 1);
    let p = &c.processes[0];
    assert_eq!(p.name, "nodes-0");
    assert_eq!(p.group.as_deref(), Some("nodes"));
    let fe = p.for_each.as_ref().unwrap();
    assert_eq!(fe.glob, "configs/*.yaml");
    assert_eq!(fe.var, "CONFIG_PATH");
    // The shell reads the value from the environment; the script is left as written.
    assert_eq!(p.run, "x $CONFIG_PATH");
    let value = c.dir.join("configs/a.yaml").display().to_string();
    assert_eq!(p.instance_env.get("CONFIG_PATH"), Some(&value));
    assert!(!p.env.contains_key("CONFIG_PATH"));
}

#[test]
fn for_each_var_in_dependency_is_substituted_per_instance() {
    let c = ok(
        "n:\n  for_each: {glob: \"*.y\", as: CFG}\n  run: x\n  env:\n    WHICH: \"file ${CFG}\"\n  depends:\n    - path: $CFG.ready\n",
    );
    let names: Vec<&str> = c.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["n-0", "n-1"]);
    for (p, file) in c.processes.iter().zip(["a.y", "b.y"]) {
        let value = c.dir.join(file).display().to_string();
        match &p.depends[0].kind {
            DependencyKind::PathExists { path } => {
                assert_eq!(path, Path::new(&format!("{value}.ready")))
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(p.env["WHICH"], format!("file {value}"));
    }
}

#[test]
fn replicas_become_numbered_instances() {
    let c =
        ok("w:\n  run: work\n  replicas: 3\n  depends:\n    - path: /tmp/ready-$PROCMAN_REPLICA\n");
    let got: Vec<(&str, &str, Option<u32>)> = c
        .processes
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.instance_env[REPLICA_VAR].as_str(),
                p.replicas,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("w-0", "0", Some(3)),
            ("w-1", "1", Some(3)),
            ("w-2", "2", Some(3))
        ]
    );
    assert!(c.processes.iter().all(|p| p.group.as_deref() == Some("w")));
    match &c.processes[2].depends[0].kind {
        DependencyKind::PathExists { path } => assert_eq!(path, Path::new("/tmp/ready-2")),
        k => panic!("{k:?}"),
    }
}

#[test]
fn replicas_errors() {
    only_err(
        "w:\n  run: x\n  replicas: 0\n",
        3,
        13,
        &["`replicas` in process `w`", "1 to 1000"],
    );
    only_err("w:\n  run: x\n  replicas: 1001\n", 3, 13, &["1 to 1000"]);
    only_err(
        "w:\n  run: x\n  replicas: 2\n  for_each: {glob: \"*.y\", as: F}\n",
        3,
        3,
        &["both `for_each` and `replicas`"],
    );
    only_err(
        "w:\n  run: x\n  replicas: 2\nw-1:\n  run: y\n",
        1,
        1,
        &[
            "instance `w-1` of `w` (replicas)",
            "process `w-1` at line 4:1",
        ],
    );
}

#[test]
fn instances_can_be_named_by_group_or_one_by_one() {
    ok(
        "w:\n  run: x\n  once: true\n  replicas: 2\na:\n  run: y\n  depends:\n    - process_exited: w\n    - process_exited: w-1\n",
    );
}

#[test]
fn glob_matching_nothing_is_a_load_error() {
    only_err(
        "n:\n  run: x\n  for_each:\n    glob: \"none/*.yaml\"\n    as: F\n",
        4,
        11,
        &["`for_each` glob `none/*.yaml` of process `n` matched no files"],
    );
}

#[test]
fn env_values_expand_braced_variables_in_order() {
    let c = ok(
        "p:\n  env:\n    SHARD: \"3\"\n    NAME: \"shard-${SHARD}\"\n    PORT_URL: \"h:${PM_TEST_PORT}\"\n    RAW: \"$SHARD $${SHARD} ${{ x.Y }}\"\n  run: x\n  depends:\n    - process_exited: x\nx:\n  run: y\n  once: true\n",
    );
    let env = &c.processes[0].env;
    assert_eq!(env["NAME"], "shard-3");
    assert_eq!(env["PORT_URL"], "h:8080");
    assert_eq!(env["RAW"], "$SHARD ${SHARD} ${{ x.Y }}");
    only_err(
        "p:\n  env:\n    A: \"${LATER}\"\n    LATER: x\n  run: x\n",
        3,
        8,
        &[
            "undefined environment variable `LATER`",
            "`env` `A` of process `p`",
        ],
    );
}

#[test]
fn output_matches_dependency() {
    let c = ok(
        "db:\n  run: postgres\napi:\n  run: x\n  depends:\n    - output_matches: \"ready to accept connections\"\n      process: db\n      timeout_seconds: 30\n",
    );
    let d = &c.processes[1].depends[0];
    match &d.kind {
        DependencyKind::OutputMatches { process, regex } => {
            assert_eq!(process, "db");
            assert!(regex.is_match("LOG: database system is ready to accept connections"));
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(d.process(), Some("db"));
    assert_eq!(d.timeout, Duration::from_secs(30));
    only_err(
        "api:\n  run: x\n  depends:\n    - output_matches: \"a(\"\n      process: api2\napi2:\n  run: y\n",
        4,
        23,
        &["invalid regular expression", "unclosed group"],
    );
    only_err(
        "api:\n  run: x\n  depends:\n    - output_matches: ok\n      process: dbb\ndb:\n  run: y\n",
        5,
        16,
        &["unknown process `dbb`", "did you mean `db`"],
    );
    only_err(
        "api:\n  run: x\n  depends:\n    - output_matches: ok\n",
        4,
        7,
        &["needs `process: NAME`"],
    );
    only_err(
        "api:\n  run: x\n  depends:\n    - tcp: a:1\n      process: db\n",
        5,
        7,
        &["`process` only applies to `output_matches`"],
    );
    only_err(
        "api:\n  run: x\n  depends:\n    - output_matches: ok\n      process: api\n",
        5,
        16,
        &["waits for its own output"],
    );
}

#[test]
fn http_dependency_with_defaults() {
    let d =
        dep("a:\n  run: x\n  depends:\n    - url: http://localhost:8080/health\n      code: 200\n");
    match d.kind {
        DependencyKind::Http { url, code } => {
            assert_eq!(url, "http://localhost:8080/health");
            assert_eq!(code, 200);
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(d.poll_interval, Duration::from_secs(1));
    assert_eq!(d.timeout, Duration::from_secs(60));
    assert!(d.retry);
    assert_eq!(d.location, Location { line: 4, column: 7 });
}

#[test]
fn http_dependency_with_options() {
    let d = dep(
        "a:\n  run: x\n  depends:\n    - url: http://h/\n      code: 204\n      poll_interval: 0.5\n      timeout_seconds: 30\n      retry: false\n",
    );
    assert_eq!(d.poll_interval, Duration::from_millis(500));
    assert_eq!(d.timeout, Duration::from_secs(30));
    assert!(!d.retry);
    let d = dep(
        "a:\n  run: x\n  depends:\n    - url: http://h/\n      code: 200\n      poll_interval: 250ms\n      timeout_seconds: 2.5\n",
    );
    assert_eq!(d.poll_interval, Duration::from_millis(250));
    assert_eq!(d.timeout, Duration::from_millis(2500));
}

#[test]
fn simple_dependency_kinds() {
    let c = ok(
        "a:\n  run: x\n  depends:\n    - tcp: \"127.0.0.1:5432\"\n    - path: /tmp/ready.flag\n    - not_listening: \"127.0.0.1:8080\"\n    - not_exists: /tmp/api.lock\n    - not_running: \"old-api.*\"\n    - process_exited: m\nm:\n  run: y\n  once: true\n",
    );
    let d = &c.processes[0].depends;
    assert!(matches!(&d[0].kind, DependencyKind::Tcp { address } if address == "127.0.0.1:5432"));
    assert!(
        matches!(&d[1].kind, DependencyKind::PathExists { path } if path == Path::new("/tmp/ready.flag"))
    );
    assert!(
        matches!(&d[2].kind, DependencyKind::NotListening { address } if address == "127.0.0.1:8080")
    );
    assert!(
        matches!(&d[3].kind, DependencyKind::NotExists { path } if path == Path::new("/tmp/api.lock"))
    );
    assert!(matches!(&d[4].kind, DependencyKind::NotRunning { pattern } if pattern == "old-api.*"));
    assert!(matches!(&d[5].kind, DependencyKind::ProcessExited { name } if name == "m"));
    for x in d {
        assert_eq!(x.poll_interval, Duration::from_secs(1));
        assert_eq!(x.timeout, Duration::from_secs(60));
        assert!(x.retry);
    }
    assert_eq!(d[5].location, Location { line: 9, column: 7 });
}

#[test]
fn file_contains_inside_and_entry_level_options() {
    let d = dep(
        "a:\n  run: x\n  depends:\n    - file_contains:\n        path: $PM_TEST_DIR/c.yaml\n        format: yaml\n        key: \"$.envs[?(@.alias == 'local')].rpc\"\n        env: RPC\n        poll_interval: 0.25\n        timeout_seconds: 5\n        retry: false\n",
    );
    match &d.kind {
        DependencyKind::FileContains {
            path,
            format,
            key,
            env,
        } => {
            assert_eq!(path, Path::new("/srv/c.yaml"));
            assert_eq!(*format, FileFormat::Yaml);
            assert_eq!(key, "$.envs[?(@.alias == 'local')].rpc");
            assert_eq!(env.as_deref(), Some("RPC"));
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(d.poll_interval, Duration::from_millis(250));
    assert_eq!(d.timeout, Duration::from_secs(5));
    assert!(!d.retry);
    let d = dep(
        "a:\n  run: x\n  depends:\n    - file_contains: {path: f.json, format: json, key: $.a}\n      timeout_seconds: 9\n",
    );
    assert!(matches!(
        &d.kind,
        DependencyKind::FileContains {
            format: FileFormat::Json,
            env: None,
            ..
        }
    ));
    assert_eq!(d.timeout, Duration::from_secs(9));
    assert_eq!(d.poll_interval, Duration::from_secs(1));
}

#[test]
fn expansion_layers_system_extra_and_process_env() {
    let c = ok(
        "a:\n  env:\n    PM_TEST_PORT: \"9999\"\n    HOST: db\n  run: x\n  depends:\n    - tcp: ${HOST}:$PM_TEST_PORT\n    - url: http://x:$PM_TEST_PORT/$$\n      code: 200\nb:\n  run: x\n  depends:\n    - tcp: h:$PM_TEST_PORT\n",
    );
    assert!(
        matches!(&c.processes[0].depends[0].kind, DependencyKind::Tcp { address } if address == "db:9999")
    );
    assert!(
        matches!(&c.processes[0].depends[1].kind, DependencyKind::Http { url, .. } if url == "http://x:9999/$")
    );
    assert!(
        matches!(&c.processes[1].depends[0].kind, DependencyKind::Tcp { address } if address == "h:8080")
    );
    if let Ok(path) = std::env::var("PATH") {
        let c = ok("a:\n  run: x\n  depends:\n    - not_running: $PATH\n");
        assert!(
            matches!(&c.processes[0].depends[0].kind, DependencyKind::NotRunning { pattern } if *pattern == path)
        );
    }
}

#[test]
fn watch_defaults_and_actions() {
    let c = ok(
        "web:\n  run: x\n  watch:\n    - check:\n        url: http://h/\n        code: 200\n    - name: disk\n      check:\n        path: /var/run/ok\n      initial_delay: 5.0\n      poll_interval: 10s\n      failure_threshold: 1\n      on_fail:\n        spawn: rec\n    - check: {tcp: \"h:1\"}\n      on_fail: log\n    - check: {tcp: \"h:2\"}\n      on_fail: debug\nrec:\n  run: y\n  autostart: false\n",
    );
    let w = &c.processes[0].watch;
    assert_eq!(w[0].name, "web.watch-0");
    assert_eq!(w[0].initial_delay, Duration::ZERO);
    assert_eq!(w[0].poll_interval, Duration::from_secs(5));
    assert_eq!(w[0].failure_threshold, 3);
    assert_eq!(w[0].on_fail, OnFail::Shutdown);
    assert!(matches!(
        w[0].check.kind,
        DependencyKind::Http { code: 200, .. }
    ));
    assert_eq!(w[1].name, "disk");
    assert_eq!(w[1].initial_delay, Duration::from_secs(5));
    assert_eq!(w[1].poll_interval, Duration::from_secs(10));
    assert_eq!(w[1].failure_threshold, 1);
    assert_eq!(w[1].on_fail, OnFail::Spawn("rec".into()));
    assert_eq!(w[2].name, "web.watch-2");
    assert_eq!(w[2].on_fail, OnFail::Log);
    assert_eq!(w[3].on_fail, OnFail::Shutdown);
}

#[test]
fn templates_with_direct_and_transitive_dependency() {
    let c = ok(
        "setup:\n  run: s\n  once: true\nmiddle:\n  run: m\n  once: true\n  depends:\n    - process_exited: setup\napp:\n  env:\n    K: \"${{ setup.KEY }}\"\n  run: echo ${{middle.X}} ${{ setup.KEY }}\n  depends:\n    - process_exited: middle\n",
    );
    assert_eq!(c.processes[2].env["K"], "${{ setup.KEY }}");
}

// ---- errors --------------------------------------------------------------------------

#[test]
fn error_display_has_path_line_col_per_problem() {
    let e = parse("web:\n  run: x\n  depnds: []\n  once: \"yes\"\n").unwrap_err();
    let text = e.to_string();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("procman.yaml:3:3: error: unknown field `depnds` in process `web`"),
        "{text}"
    );
    assert!(lines[0].contains("did you mean `depends`?"), "{text}");
    assert!(
        lines[1].starts_with("procman.yaml:4:9: error: `once` in process `web`"),
        "{text}"
    );
}

#[test]
fn yaml_syntax_error() {
    only_err("web:\n  run: [\n", 3, 1, &["invalid YAML"]);
    only_err("web:\n  run: \"x\n", 2, 8, &["invalid YAML"]);
    // Found by fuzzing: at the end of a file without a final newline, the scanner's mark
    // is on a line past the end; the error points at the end of the last line instead.
    only_err("web:\n  run: x\nb", 3, 2, &["invalid YAML"]);
    only_err("web:\n  run: [", 2, 9, &["invalid YAML"]);
}

#[test]
fn top_level_not_mapping() {
    only_err("- a\n- b\n", 1, 1, &["top level must be a mapping"]);
    only_err("just text\n", 1, 1, &["top level must be a mapping"]);
}

#[test]
fn process_not_mapping() {
    only_err(
        "web: echo hi\n",
        1,
        6,
        &["process `web` must be a mapping", "`echo hi`"],
    );
    only_err("web:\n", 1, 1, &["process `web` is empty"]);
    only_err(
        "web:\n  - run: x\n",
        2,
        3,
        &["process `web` must be a mapping", "a list"],
    );
}

#[test]
fn duplicate_keys() {
    only_err(
        "web:\n  run: a\nweb:\n  run: b\n",
        3,
        1,
        &["duplicate process `web`", "1:1"],
    );
    only_err(
        "web:\n  run: a\n  once: true\n  run: b\n",
        4,
        3,
        &["duplicate key `run` in process `web`", "2:3"],
    );
    only_err(
        "w:\n  run: a\n  env:\n    A: 1\n    A: 2\n",
        5,
        5,
        &["duplicate key `A` in process `w`"],
    );
}

#[test]
fn every_duplicate_is_reported() {
    let d =
        diags("é: {run: \"ü\", run: y}\nb: {run: x}\nb: {run: x, once: true, \"once\": false}\n");
    let got: Vec<_> = d
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(got.len(), 3, "{d:#?}");
    assert_eq!((got[0].0, got[0].1), (1, 15));
    assert!(got[0].2.contains("duplicate key `run` in process `é`"));
    assert_eq!((got[1].0, got[1].1), (3, 1));
    assert!(got[1].2.contains("duplicate process `b`"));
    assert_eq!((got[2].0, got[2].1), (3, 25));
    assert!(got[2].2.contains("duplicate key `once` in process `b`"));
}

#[test]
fn unsupported_yaml_features() {
    only_err(
        "a:\n  run: x\n---\nb:\n  run: y\n",
        3,
        1,
        &["second YAML document"],
    );
    ok("a:\n  run: x\n--- # trailing marker\n");
    only_err("a: &x\n  run: y\nb: *x\n", 2, 6, &["anchors and aliases"]);
    only_err("a: !!str x\n", 1, 10, &["tags"]);
    only_err("? [a]\n: 1\n", 1, 3, &["keys must be plain strings"]);
    only_err("a:\n\trun: x\n", 2, 2, &["invalid YAML", "tabs"]);
}

#[test]
fn duplicate_does_not_hide_later_errors() {
    let d = diags("web:\n  run: a\nweb:\n  run: b\napi:\n  rn: x\n");
    let at: Vec<_> = d.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(at, [(3, 1), (5, 1), (6, 3)], "{d:#?}");
}

#[test]
fn unknown_keys_everywhere() {
    only_err(
        "web:\n  run: x\n  depnds: []\n",
        3,
        3,
        &[
            "unknown field `depnds` in process `web`",
            "expected one of run, env",
            "did you mean `depends`?",
        ],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - url: http://h\n      code: 200\n      timeout: 3\n",
        6,
        7,
        &[
            "unknown field `timeout`",
            "process `web`",
            "timeout_seconds",
        ],
    );
    only_err(
        "web:\n  run: x\n  for_each:\n    glob: a.y\n    as: B\n    sort: true\n",
        6,
        5,
        &["unknown field `sort`", "`for_each` in process `web`"],
    );
    only_err(
        "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      treshold: 3\n",
        5,
        7,
        &["unknown field `treshold`", "process `web`"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - file_contains: {path: p, format: json, key: $.a, keys: 1}\n",
        4,
        56,
        &["unknown field `keys`", "did you mean `key`?"],
    );
    let d = diags("web:\n  run: x\n  zzzzzz: 1\n");
    assert!(!d[0].message.contains("did you mean"), "{d:?}");
}

#[test]
fn wrong_types() {
    only_err(
        "web:\n  run: x\n  once: \"yes\"\n",
        3,
        9,
        &[
            "`once` in process `web` must be `true` or `false`",
            "\"yes\"",
        ],
    );
    only_err("web:\n  run: x\n  once: yes\n", 3, 9, &["`once`", "`yes`"]);
    only_err(
        "web:\n  run: x\n  depends: {}\n",
        3,
        12,
        &["`depends` in process `web` must be a list"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - url: http://h\n      code: abc\n",
        5,
        13,
        &["`code`", "process `web`", "HTTP status code", "`abc`"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - url: http://h\n      code: \"200\"\n",
        5,
        13,
        &["`code`"],
    );
    only_err(
        "web:\n  run: [a]\n",
        2,
        8,
        &["`run` in process `web` must be a string", "a list"],
    );
    only_err(
        "web:\n  run: x\n  env: [A]\n",
        3,
        8,
        &["`env` in process `web` must be a mapping"],
    );
    only_err(
        "web:\n  run: x\n  env:\n    A: [1]\n",
        4,
        8,
        &["`A` in `env` in process `web`"],
    );
    only_err(
        "web:\n  run: x\n  env:\n    A:\n",
        4,
        5,
        &["`A` in `env` in process `web` has no value"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - migrate\n",
        4,
        7,
        &[
            "a dependency of process `web` must be a mapping",
            "`migrate`",
        ],
    );
    only_err(
        "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      failure_threshold: 0\n",
        5,
        26,
        &[
            "failure_threshold",
            "at least 1",
            "watch `web.watch-0` of process `web`",
        ],
    );
    only_err(
        "web:\n  run: x\n  watch: {}\n",
        3,
        10,
        &["`watch` in process `web` must be a list"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - path: /x\n      retry: maybe\n",
        5,
        14,
        &["`retry`", "`maybe`"],
    );
}

#[test]
fn missing_or_empty_run() {
    only_err(
        "web:\n  once: true\n",
        1,
        1,
        &["process `web` has no `run` command"],
    );
    only_err(
        "web:\n  run: \"   \"\n",
        2,
        8,
        &["`run` in process `web` is empty"],
    );
    only_err(
        "web:\n  run:\n",
        2,
        3,
        &["`run` in process `web` must be a string", "nothing"],
    );
}

#[test]
fn dependency_kind_count() {
    only_err(
        "web:\n  run: x\n  depends:\n    - retry: false\n",
        4,
        7,
        &["has no kind", "process `web`", "url, tcp"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - tcp: a:1\n      path: /x\n",
        5,
        7,
        &["has both `tcp` and `path`", "process `web`"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - url: http://h\n",
        4,
        7,
        &["needs `code`", "process `web`"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - tcp: a:1\n      code: 200\n",
        5,
        7,
        &["`code` only applies to `url`", "process `web`"],
    );
}

#[test]
fn file_contains_errors() {
    only_err(
        "web:\n  run: x\n  depends:\n    - file_contains:\n        path: p\n        format: toml\n        key: $.a\n",
        6,
        17,
        &[
            "unknown `format` `toml`",
            "expected `json` or `yaml`",
            "process `web`",
        ],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - file_contains:\n        path: p\n        format: json\n        key: \"$.[\"\n",
        7,
        14,
        &["invalid JSONPath `$.[`", "process `web`"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - file_contains:\n        path: p\n        key: $.a\n",
        5,
        9,
        &["needs `format`", "process `web`"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - file_contains:\n        path: p\n        format: json\n        key: $.a\n        retry: false\n      retry: true\n",
        8,
        9,
        &["`retry` is given both inside `file_contains` and on the entry"],
    );
    let d = diags(
        "web:\n  run: x\n  depends:\n    - file_contains:\n        path: p\n        format: json\n        key: \"$[\"\n",
    );
    assert!(
        d[0].message.len() > "invalid JSONPath `$[` in ".len() + 30,
        "parser message missing: {d:?}"
    );
}

#[test]
fn process_exited_targets() {
    only_err(
        "web:\n  run: x\n  depends:\n    - process_exited: migrat\nmigrate:\n  run: m\n  once: true\n",
        4,
        23,
        &[
            "process `web` depends on unknown process `migrat`",
            "did you mean `migrate`?",
        ],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - process_exited: db\ndb:\n  run: m\n",
        4,
        23,
        &["process `web` waits for `db`", "not `once: true`"],
    );
    ok(
        "web:\n  run: x\n  depends:\n    - process_exited: nodes\nnodes:\n  for_each: {glob: \"*.y\", as: C}\n  run: m\n  once: true\n",
    );
}

#[test]
fn broken_target_does_not_cascade() {
    // `db`'s `once` is malformed, so whether it is `once` is unknown: one error only.
    only_err(
        "web:\n  run: x\n  depends:\n    - process_exited: db\ndb:\n  run: m\n  once: yes\n",
        7,
        9,
        &["`once` in process `db`"],
    );
    // `db` is not a mapping, but it exists.
    only_err(
        "web:\n  run: x\n  depends:\n    - process_exited: db\ndb: oops\n",
        5,
        5,
        &["process `db` must be a mapping"],
    );
}

#[test]
fn cycles() {
    only_err(
        "a:\n  run: x\n  once: true\n  depends:\n    - process_exited: b\nb:\n  run: y\n  once: true\n  depends:\n    - process_exited: a\n",
        10,
        7,
        &["circular dependency: a -> b -> a"],
    );
    only_err(
        "a:\n  run: x\n  once: true\n  depends:\n    - process_exited: a\n",
        5,
        7,
        &["circular dependency: a -> a"],
    );
    only_err(
        "a:\n  run: x\n  once: true\n  depends:\n    - process_exited: b\nb:\n  run: y\n  once: true\n  depends:\n    - process_exited: c\nc:\n  run: y\n  once: true\n  depends:\n    - tcp: h:1\n    - process_exited: a\n",
        16,
        7,
        &["circular dependency: a -> b -> c -> a"],
    );
}

#[test]
fn watch_errors() {
    only_err(
        "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      on_fail: {spawn: rec}\n",
        5,
        24,
        &["watch `web.watch-0` of process `web` spawns unknown process `rec`"],
    );
    only_err(
        "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      on_fail: {spawn: rec}\nrec:\n  run: y\n",
        5,
        24,
        &["spawns `rec`", "autostart: false"],
    );
    only_err(
        "web:\n  run: x\n  watch:\n    - name: h\n      check: {path: /x}\n    - name: h\n      check: {path: /y}\n",
        6,
        13,
        &["duplicate watch name `h` in process `web`", "4:13"],
    );
    only_err(
        "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      on_fail: restrat\n",
        5,
        16,
        &[
            "unknown `on_fail` action",
            "did you mean `restart`",
            "process `web`",
        ],
    );
    only_err(
        "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      on_fail: lgo\n",
        5,
        16,
        &["did you mean `log`?"],
    );
    only_err(
        "web:\n  run: x\n  watch:\n    - name: w\n      on_fail: log\n",
        4,
        7,
        &["watch `w` of process `web` needs `check`"],
    );
    only_err(
        "web:\n  run: x\n  watch:\n    - check: {process_exited: nope}\n",
        4,
        31,
        &["unknown process `nope`"],
    );
}

#[test]
fn template_errors() {
    only_err(
        "app:\n  run: echo ${{ nonexistent.KEY }}\n",
        2,
        8,
        &[
            "process `app` references output `${{ nonexistent.KEY }}`",
            "does not exist",
        ],
    );
    only_err(
        "server:\n  run: s\napp:\n  run: echo ${{ server.PORT }}\n",
        4,
        8,
        &["process `server` is not `once: true`"],
    );
    only_err(
        "setup:\n  run: s\n  once: true\napp:\n  env:\n    K: \"${{ setup.KEY }}\"\n  run: x\n",
        6,
        8,
        &[
            "process `app`",
            "does not depend on `setup`",
            "process_exited: setup",
        ],
    );
    only_err(
        "app:\n  run: echo ${{ nodot }}\n",
        2,
        8,
        &["invalid template", "process `app`"],
    );
}

#[test]
fn undefined_variable() {
    only_err(
        "web:\n  run: x\n  depends:\n    - path: $PM_TEST_NOPE/x\n",
        4,
        13,
        &[
            "undefined environment variable `PM_TEST_NOPE`",
            "`path`",
            "process `web`",
        ],
    );
    only_err(
        "web:\n  run: x\n  watch:\n    - check:\n        tcp: \"${PM_TEST_NOPE}:1\"\n",
        5,
        14,
        &["`PM_TEST_NOPE`", "process `web`"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - file_contains: {path: $PM_TEST_NOPE, format: json, key: $.a}\n",
        4,
        29,
        &["`PM_TEST_NOPE`", "file_contains.path"],
    );
}

#[test]
fn bad_durations() {
    only_err(
        "web:\n  run: x\n  stop_timeout: -1\n",
        3,
        17,
        &["must not be negative"],
    );
    only_err("web:\n  run: x\n  stop_timeout: nan\n", 3, 17, &["finite"]);
    only_err(
        "web:\n  run: x\n  stop_timeout: .nan\n",
        3,
        17,
        &["must be a duration"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - path: /x\n      timeout_seconds: -5s\n",
        5,
        24,
        &["must not be negative"],
    );
    only_err(
        "web:\n  run: x\n  depends:\n    - path: /x\n      poll_interval: soon\n",
        5,
        22,
        &["must be a duration", "`soon`"],
    );
    only_err(
        "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      initial_delay: inf\n",
        5,
        22,
        &["finite"],
    );
}

#[test]
fn many_errors_in_one_pass() {
    let d = diags(
        "a:\n  run: \"\"\nb:\n  once: maybe\n  run: x\nc:\n  run: y\n  depends:\n    - tcp: x\n      path: y\n",
    );
    let at: Vec<_> = d.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(at, [(2, 8), (4, 9), (10, 7)], "{d:#?}");
}

// ---- examples from procman 0.12's README and docs ---------------------------------------

const README_FORMAT: &str = r#"web:
  env:
    PORT: "3000"
  run: serve --port $PORT

migrate:
  run: db-migrate up
  once: true

api:
  depends:
    - process_exited: migrate
    - url: http://localhost:3000/health
      code: 200
      poll_interval: 0.5
      timeout_seconds: 30
  run: api-server start

setup:
  depends:
    - path: /tmp/ready.flag
  run: post-setup-task

db:
  depends:
    - tcp: "127.0.0.1:5432"
  run: db-client start

healthcheck:
  depends:
    - not_listening: "127.0.0.1:8080"
    - not_exists: /tmp/api.lock
    - not_running: "old-api.*"
  run: api-server --port 8080

nodes:
  for_each:
    glob: "/etc/nodes/*.yaml"
    as: NODE_CONFIG
  run: node-agent --config $NODE_CONFIG
  once: true

recovery:
  run: ./scripts/recover.sh
  autostart: false

web:
  run: web-server --port 8080
  watch:
    - name: health
      check:
        url: http://localhost:8080/health
        code: 200
      initial_delay: 5.0
      poll_interval: 10.0
      failure_threshold: 3
      on_fail: shutdown
    - name: disk
      check:
        path: /var/run/healthy
      on_fail:
        spawn: recovery
"#;

#[test]
fn readme_format_example_reports_only_the_duplicate_web() {
    only_err(README_FORMAT, 47, 1, &["duplicate process `web`", "1:1"]);
    let fixed = README_FORMAT.replacen("web:\n  env:", "web0:\n  env:", 1);
    let c = ok(&fixed);
    assert_eq!(c.processes.len(), 9);
    assert_eq!(c.process("web").map(|p| p.watch.len()), Some(2));
}

#[test]
fn readme_and_docs_examples_parse() {
    let examples = [
        "migrate:\n  run: db-migrate up\n  once: true\n\nweb:\n  run: serve --port 3000\n\napi:\n  depends:\n    - process_exited: migrate\n    - url: http://localhost:3000/health\n      code: 200\n      timeout_seconds: 30\n  run: api-server start\n",
        "web:\n  run: ./start-web --port 8080\n\nworker:\n  env:\n    RUST_LOG: debug\n  run: cargo run --bin worker\n  depends:\n    - url: http://localhost:8080/health\n      code: 200\n",
        "api:\n  run: cargo run --release --bin api-server\n\nmigrate:\n  run: |\n    ./run-migrations\n    echo \"DATABASE_URL=postgres://localhost:5432/mydb\" > $PROCMAN_OUTPUT\n\nhealthcheck:\n  run: curl -s http://localhost:8080/health && echo \"OK\"\n",
        "migrate:\n  run: |\n    ./run-migrations\n    echo \"DATABASE_URL=postgres://localhost:5432/mydb\" > $PROCMAN_OUTPUT\n  once: true\n\napi:\n  depends:\n    - process_exited: migrate\n  env:\n    DB_URL: \"${{ migrate.DATABASE_URL }}\"\n  run: ./start-api --db \"${{ migrate.DATABASE_URL }}\"\n",
        "setup:\n  run: ./generate-config\n  once: true\n\napi:\n  depends:\n    - process_exited: setup\n    - file_contains:\n        path: procman-logs/setup.output\n        format: yaml\n        key: \"$.database.url\"\n        env: DATABASE_URL\n  run: ./start-api\n",
        "nodes:\n  for_each:\n    glob: \"/etc/nodes/*.yaml\"\n    as: CONFIG_PATH\n  run: provision --config $CONFIG_PATH\n  once: true\n\ndeploy:\n  depends:\n    - process_exited: nodes\n  run: deploy-cluster\n  once: true\n",
        "api:\n  depends:\n    - path: $PM_TEST_DIR/.config/ready.flag\n    - url: http://localhost:${PM_TEST_PORT}/health\n      code: 200\n  run: ./start-api\n",
        "app:\n  depends:\n    - not_exists: /tmp/api.lock\n      retry: false\n    - file_contains:\n        path: /tmp/sui_client.yaml\n        format: yaml\n        key: \"$.envs[?(@.alias == 'local')].rpc\"\n        env: SUI_RPC_URL\n  run: x\n",
    ];
    for e in examples {
        ok(e);
    }
}

// ---- robustness ---------------------------------------------------------------------

#[test]
fn truncations_and_mutations_never_panic() {
    let fixed = README_FORMAT.replacen("web:\n  env:", "web0:\n  env:", 1);
    let mut variants: Vec<String> = Vec::new();
    for (i, _) in fixed.char_indices() {
        variants.push(fixed[..i].to_string());
    }
    let bytes = fixed.as_bytes();
    let junk = [
        b':', b'-', b'{', b'[', b'"', b'\'', b' ', b'\n', b'$', b'&', b'*', b'!', b'#', b'|', b'>',
        b'\t',
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    while variants.len() < 2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let pos = (seed % bytes.len() as u64) as usize;
        let mut b = bytes.to_vec();
        b[pos] = junk[(seed >> 32) as usize % junk.len()];
        if (seed >> 20) % 3 == 0 {
            b.truncate(pos + 1 + (seed >> 40) as usize % 40);
        }
        variants.push(String::from_utf8_lossy(&b).into_owned());
    }
    assert!(variants.len() >= 2000);
    for v in &variants {
        match parse(v) {
            Ok(_) => {}
            Err(e) => {
                let text = e.to_string();
                assert!(
                    !e.diagnostics().is_empty(),
                    "error without diagnostics for {v:?}"
                );
                assert!(text.starts_with("procman.yaml:"), "{text}");
            }
        }
    }
}

// ---- JSON dependencies --------------------------------------------------------------

#[test]
fn json_dependencies_use_the_same_rules() {
    let v = serde_json::json!([
        {"url": "http://localhost:$PM_TEST_PORT/health", "code": 200},
        {"process_exited": "anything"},
        {"file_contains": {"path": "/x", "format": "json", "key": "$.a"}, "retry": false},
        {"tcp": "h:1", "poll_interval": "250ms", "timeout_seconds": 3}
    ]);
    let deps = parse_dependencies_json(&v, &env()).unwrap();
    assert_eq!(deps.len(), 4);
    assert!(
        matches!(&deps[0].kind, DependencyKind::Http { url, code: 200 } if url == "http://localhost:8080/health")
    );
    assert!(matches!(&deps[1].kind, DependencyKind::ProcessExited { name } if name == "anything"));
    assert!(!deps[2].retry);
    assert_eq!(deps[3].poll_interval, Duration::from_millis(250));
    assert_eq!(deps[3].timeout, Duration::from_secs(3));
}

#[test]
fn json_dependency_errors_are_clear() {
    let e = parse_dependencies_json(&serde_json::json!({"url": "x"}), &env()).unwrap_err();
    assert!(e.contains("must be a list"), "{e}");
    let e = parse_dependencies_json(&serde_json::json!([{"url": "x", "code": "200"}]), &env())
        .unwrap_err();
    assert!(e.contains("`code`") && e.contains("depends[0]"), "{e}");
    let e = parse_dependencies_json(
        &serde_json::json!([{"tcp": "a"}, {"tcp": "$PM_TEST_NOPE"}, {"bogus": 1}]),
        &env(),
    )
    .unwrap_err();
    assert!(
        e.contains("depends[1]") && e.contains("PM_TEST_NOPE"),
        "{e}"
    );
    assert!(
        e.contains("unknown field `bogus`") && e.contains("depends[2]"),
        "{e}"
    );
    assert!(!e.contains(":0:0"), "{e}");
}

#[test]
fn load_errors() {
    let dir = std::env::temp_dir().join(format!("procman-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("nope.yaml");
    let e = load(&missing, &LoadOptions::default()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("no config file at") && text.contains("nope.yaml") && text.contains("hint:"),
        "{text}"
    );
    let e = load(&dir, &LoadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, b"web:\n  run: \xff\n").unwrap();
    assert!(
        load(&bad, &LoadOptions::default())
            .unwrap_err()
            .to_string()
            .contains("not valid UTF-8")
    );
    let good = dir.join("procman.yaml");
    std::fs::write(&good, "web:\n  run: x\n  cwd: sub\n").unwrap();
    let c = load(&good, &LoadOptions::default()).unwrap();
    let canon = std::fs::canonicalize(&good).unwrap();
    assert_eq!(c.path, canon);
    assert_eq!(c.dir, canon.parent().unwrap());
    assert_eq!(
        c.processes[0].cwd.as_deref(),
        Some(canon.parent().unwrap().join("sub").as_path())
    );
    std::fs::write(&good, "web:\n  rn: x\n").unwrap();
    let e = load(&good, &LoadOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1:1: error:", good.display())),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_empty_last_item_without_a_newline_is_located_inside_the_file() {
    // Found by fuzzing: the scanner marks the empty item on a line past the end.
    only_err(
        "a:\n  run: y\n  depends:\n    - ",
        4,
        7,
        &[
            "a dependency of process `a` must be a mapping",
            "got nothing",
        ],
    );
}

#[test]
fn a_lone_carriage_return_never_puts_a_column_past_its_line() {
    // Found by fuzzing: the scanner ends lines at a lone `\r`, editors do not.
    let text = "web:\n  run: x\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r bad: [\r:\r";
    for d in diags(text) {
        let line = text
            .split('\n')
            .nth(d.line - 1)
            .expect("line inside the file");
        assert!(
            (1..=line.chars().count() + 1).contains(&d.column),
            "{d:?} past line {line:?}"
        );
    }
}
