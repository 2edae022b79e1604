//! `procman export`: the example configs and the README's configs exported to every
//! format and checked by the engines' own tools on this machine (`systemd-analyze
//! verify`, `docker-compose config`) or, for Kubernetes, against the API's JSON schemas
//! (tests/fixtures/kubernetes, the kubeconform approach); then what each mapping keeps.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Sandbox;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fenced ```yaml blocks of a Markdown file that are whole configs (they have `run:`).
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some(String::new()),
            Some(block) if line.trim_start().starts_with("```") => {
                if block.contains("run:") {
                    blocks.push(block.clone());
                }
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Every config the repository shows: examples/ and the README's, each in a sandbox with
/// the files it names (for_each globs, env files, working directories).
fn repository_configs() -> Vec<(String, Sandbox)> {
    let root = repo_root();
    let mut configs = Vec::new();
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let config = entry.unwrap().path().join("procman.yaml");
        if config.exists() {
            let text = std::fs::read_to_string(&config).unwrap();
            configs.push((config.display().to_string(), text));
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for (index, block) in yaml_blocks(&readme).into_iter().enumerate() {
        configs.push((format!("README.md, yaml block {}", index + 1), block));
    }
    assert!(configs.len() >= 3, "too few configs found: {configs:?}");
    configs
        .into_iter()
        .map(|(name, text)| {
            let sandbox = Sandbox::new(&text);
            for dir in ["configs", "services/web", "site"] {
                std::fs::create_dir_all(sandbox.file(dir)).unwrap();
            }
            std::fs::write(sandbox.file("configs/a.yaml"), "a: 1\n").unwrap();
            std::fs::write(sandbox.file("configs/b.yaml"), "b: 2\n").unwrap();
            std::fs::write(sandbox.file("web.env"), "WEB=1\n").unwrap();
            (name, sandbox)
        })
        .collect()
}

/// `procman export ARGS` in the sandbox, into `out`; (exit code, stdout, stderr).
fn export(sandbox: &Sandbox, format: &str, out: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["export", format, "procman.yaml", "--output", out];
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = sandbox.run(&args, LIMIT);
    (status.code().unwrap_or(-1), stdout, stderr)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// `systemd-analyze verify` on every unit, with the output directory as the unit path so
/// `Requires=` and `Wants=` resolve; any message at all is a failure.
fn systemd_verify(dir: &Path) {
    systemd_verify_as(dir, None);
}

/// `systemd-analyze --user verify`, the user manager's runtime directory in `runtime`.
fn systemd_verify_as(dir: &Path, runtime: Option<&Path>) {
    let units = files_in(dir);
    let mut command = Command::new("systemd-analyze");
    if let Some(runtime) = runtime {
        command.arg("--user").env("XDG_RUNTIME_DIR", runtime);
    }
    let output = command
        .arg("verify")
        .args(&units)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("systemd-analyze (Debian's systemd package) must be installed");
    let messages = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && messages.trim().is_empty(),
        "systemd-analyze verify: {}\n{messages}\n{}",
        output.status,
        dump(dir)
    );
}

/// `docker-compose config` of the exported file: its normalized form (interpolated).
fn compose_config(dir: &Path) -> serde_json::Value {
    let output = Command::new("docker-compose")
        .arg("--file")
        .arg(dir.join("compose.yaml"))
        .arg("config")
        .output()
        .expect("docker-compose (Debian's docker-compose package) must be installed; .ci/run installs it");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "docker-compose config: {}\n{stderr}\n{}",
        output.status,
        dump(dir)
    );
    serde_norway::from_slice(&output.stdout).expect("docker-compose config prints YAML")
}

fn kubernetes_validators() -> std::collections::BTreeMap<String, jsonschema::Validator> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubernetes/kubernetes-1.30-strict.json");
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let defs = bundle["$defs"].as_object().unwrap();
    defs.keys()
        .filter_map(|k| k.strip_prefix("kind."))
        .map(|kind| {
            let schema = serde_json::json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": format!("#/$defs/kind.{kind}"),
                "$defs": bundle["$defs"],
            });
            (kind.to_owned(), jsonschema::validator_for(&schema).unwrap())
        })
        .collect()
}

/// Every file is one object of a kind we have a schema for, and valid against it; names
/// are DNS labels. Returns the objects by file name.
fn kubernetes_validate(dir: &Path) -> Vec<(String, Value)> {
    let validators = kubernetes_validators();
    let mut objects = Vec::new();
    for file in files_in(dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        let object: Value = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}\n{text}", file.display()));
        let kind = object["kind"].as_str().unwrap_or_default();
        let validator = validators
            .get(kind)
            .unwrap_or_else(|| panic!("{}: unexpected kind {kind:?}", file.display()));
        let errors: Vec<String> = validator
            .iter_errors(&object)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{}:\n{}\n{text}",
            file.display(),
            errors.join("\n")
        );
        let name = object["metadata"]["name"].as_str().unwrap();
        assert!(is_dns_label(name), "{}: name {name:?}", file.display());
        objects.push((
            file.file_name().unwrap().to_string_lossy().into_owned(),
            object,
        ));
    }
    objects
}

fn is_dns_label(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn dump(dir: &Path) -> String {
    files_in(dir)
        .iter()
        .map(|f| {
            format!(
                "==> {}\n{}",
                f.display(),
                std::fs::read_to_string(f).unwrap_or_default()
            )
        })
        .collect()
}

fn object<'a>(objects: &'a [(String, Value)], file: &str) -> &'a Value {
    &objects
        .iter()
        .find(|(name, _)| name == file)
        .unwrap_or_else(|| {
            panic!(
                "no {file} among {:?}",
                objects.iter().map(|o| &o.0).collect::<Vec<_>>()
            )
        })
        .1
}

#[test]
fn repository_configs_export_to_every_format_and_the_engines_accept_them() {
    for (name, sandbox) in repository_configs() {
        let (code, _, stderr) = export(&sandbox, "systemd", "systemd", &[]);
        assert_eq!(code, 0, "{name}: {stderr}");
        systemd_verify(&sandbox.file("systemd"));

        let image = ["--image", "registry.example/app:1"];
        let (code, _, stderr) = export(&sandbox, "compose", "compose", &image);
        assert_eq!(code, 0, "{name}: {stderr}");
        let config = compose_config(&sandbox.file("compose"));
        assert!(
            config["services"]
                .as_object()
                .is_some_and(|s| !s.is_empty()),
            "{name}"
        );

        let (code, _, stderr) = export(&sandbox, "kubernetes", "kubernetes", &image);
        assert_eq!(code, 0, "{name}: {stderr}");
        let objects = kubernetes_validate(&sandbox.file("kubernetes"));
        assert!(!objects.is_empty(), "{name}");
    }
}

/// The demo's shape, with a replicas group, a dormant process and a hostile script.
const STACK: &str = r#"
setup:
  once: true
  run: |
    echo "100% of $HOME" > "$PROCMAN_OUTPUT"
    printf '%s\n' 'no' "a \"quoted\" \\ word" $'tab\there'
    cat <<'EOF'
      kept as is: ${HOME} %i %% $$ ; \n
    EOF
web:
  env:
    PORT: "8765"
    FLAG: "no"
  depends:
    - process_exited: setup
  run: exec python3 -m http.server "$PORT"
  stop_timeout: 1500ms
  restart: on-failure
  max_restarts: 3
  restart_delay: 1s
  max_restart_delay: 8s
client:
  depends:
    - process_exited: setup
    - url: http://127.0.0.1:8765/health
      code: 200
      timeout_seconds: 20
    - path: data/ready
      poll_interval: 0.5
  run: curl -fsS http://127.0.0.1:8765/
  once: true
worker:
  replicas: 3
  run: ./worker --shard "$PROCMAN_REPLICA"
recovery:
  run: ./recover
  autostart: false
  once: true
"#;

fn stack() -> Sandbox {
    let sandbox = Sandbox::new(STACK);
    std::fs::create_dir_all(sandbox.file("data")).unwrap();
    sandbox
}

fn unit(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|_| panic!("no unit {name}:\n{}", dump(dir)))
}

#[test]
fn systemd_units_keep_kinds_dependencies_and_restart_policy() {
    let sandbox = stack();
    let (code, stdout, stderr) = export(
        &sandbox,
        "systemd",
        "units",
        &["--app", "shop", "--systemd-version", "254"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wrote"), "{stdout}");
    let dir = sandbox.file("units");
    // Verified by the local systemd without the 254 keys in the next test.

    let setup = unit(&dir, "shop-setup.service");
    assert!(
        setup.contains("Type=oneshot\nRemainAfterExit=yes\n"),
        "{setup}"
    );
    // `$` and `%` escaped, newlines as \n inside one quoted word.
    assert!(
        setup.contains(r#"echo \"100%% of $$HOME\" > \"$$PROCMAN_OUTPUT\"\n"#),
        "{setup}"
    );

    let web = unit(&dir, "shop-web.service");
    for line in [
        "Type=exec",
        "After=shop-setup.service",
        "Requires=shop-setup.service",
        "Environment=FLAG=no",
        "TimeoutStopSec=1500ms",
        "Restart=on-failure",
        "RestartSec=1s",
        "RestartSteps=3",
        "RestartMaxDelaySec=8s",
        "StartLimitBurst=4",
    ] {
        assert!(web.lines().any(|l| l == line), "{line} missing:\n{web}");
    }

    let client = unit(&dir, "shop-client.service");
    let procman = env!("CARGO_BIN_EXE_procman");
    let url_wait = format!(
        "ExecStartPre={procman} wait --url http://127.0.0.1:8765/health --code 200 --timeout 20s --poll-interval 1s"
    );
    assert!(client.contains(&url_wait), "{client}");
    let data = std::fs::canonicalize(sandbox.path())
        .unwrap()
        .join("data/ready");
    assert!(
        client.contains(&format!(
            "wait --path {} --timeout 60s --poll-interval 500ms",
            data.display()
        )),
        "relative paths resolve against the config's directory:\n{client}"
    );

    // replicas: one template unit, its instances wanted by the target.
    let worker = unit(&dir, "shop-worker@.service");
    assert!(
        worker.contains("Environment=PROCMAN_REPLICA=%i"),
        "{worker}"
    );
    let target = unit(&dir, "shop.target");
    for wanted in [
        "shop-worker@0.service",
        "shop-worker@2.service",
        "shop-client.service",
    ] {
        assert!(target.contains(&format!("Wants={wanted}")), "{target}");
    }
    assert!(
        !target.contains("recovery"),
        "autostart: false is not wanted:\n{target}"
    );
    assert!(dir.join("shop-recovery.service").exists());
}

#[test]
fn systemd_warns_about_doubling_delays_before_254() {
    let sandbox = stack();
    let args = ["--systemd-version", "252", "--app", "shop"];
    let (code, _, stderr) = export(&sandbox, "systemd", "units", &args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: web: restart_delay: systemd 252 waits RestartSec="),
        "{stderr}"
    );
    assert!(!unit(&sandbox.file("units"), "shop-web.service").contains("RestartSteps"));
    systemd_verify(&sandbox.file("units"));
}

#[test]
fn user_units_are_wanted_by_the_default_target() {
    let sandbox = stack();
    let (code, _, stderr) = export(&sandbox, "systemd", "user", &["--user", "--app", "shop"]);
    assert_eq!(code, 0, "{stderr}");
    let target = unit(&sandbox.file("user"), "shop.target");
    assert!(target.contains("WantedBy=default.target"), "{target}");
    let runtime = tempfile::tempdir().unwrap();
    systemd_verify_as(&sandbox.file("user"), Some(runtime.path()));
}

#[test]
fn hostile_names_become_valid_unit_service_and_object_names() {
    let config = r#"
"web server": {run: "true"}
"@tpl": {run: "true"}
"Ünïcødé.名前": {run: "true"}
".hidden": {run: "true"}
"a-b": {run: "true", depends: [{process_exited: "x y"}]}
"x y": {run: "true", once: true}
"#;
    let sandbox = Sandbox::new(config);
    let (code, _, stderr) = export(&sandbox, "systemd", "units", &["--app", "my app"]);
    assert_eq!(code, 0, "{stderr}");
    let dir = sandbox.file("units");
    systemd_verify(&dir);
    assert!(
        dir.join(r"my\x20app-web\x20server.service").exists(),
        "{}",
        dump(&dir)
    );
    assert!(dir.join(r"my\x20app-\x40tpl.service").exists());
    let ab = unit(&dir, "my\\x20app-a-b.service");
    assert!(ab.contains("Requires=my\\x20app-x\\x20y.service"), "{ab}");

    let image = ["--image", "app:1"];
    let (code, _, stderr) = export(&sandbox, "compose", "compose", &image);
    assert_eq!(code, 0, "{stderr}");
    let services = compose_config(&sandbox.file("compose"))["services"].clone();
    assert_eq!(services.as_object().unwrap().len(), 6, "{services}");

    let (code, _, stderr) = export(&sandbox, "kubernetes", "k8s", &image);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        kubernetes_validate(&sandbox.file("k8s")).len(),
        6 + 3,
        "6 workloads + wait account"
    );
}

#[test]
fn compose_keeps_scripts_dependencies_and_health_checks() {
    let sandbox = stack();
    let (code, _, stderr) = export(
        &sandbox,
        "compose",
        "compose",
        &["--image", "app:1", "--image", "worker=worker:2", "--mount"],
    );
    assert_eq!(code, 0, "{stderr}");
    let config = compose_config(&sandbox.file("compose"));
    let services = &config["services"];

    // docker-compose itself reads the script back exactly as procman loads it.
    let loaded = procman::config::load(&sandbox.file("procman.yaml"), &Default::default()).unwrap();
    let command = services["setup"]["command"].as_array().unwrap();
    let script = &loaded.process("setup").unwrap().run;
    // `config` keeps Compose's own `$$` escapes, which `up` turns back into `$`.
    assert_eq!(command.last().unwrap(), &script.replace('$', "$$"));
    assert_eq!(command[..6], ["bash", "-e", "-u", "-o", "pipefail", "-c"]);
    assert_eq!(services["web"]["environment"]["FLAG"], "no");
    assert_eq!(services["web"]["restart"], "on-failure:3");
    assert_eq!(services["worker-1"]["image"], "worker:2");
    assert_eq!(services["worker-1"]["environment"]["PROCMAN_REPLICA"], "1");

    let depends = &services["client"]["depends_on"];
    assert_eq!(
        depends["setup"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(depends["web"]["condition"], "service_healthy");
    let health = services["web"]["healthcheck"]["test"].as_array().unwrap();
    assert_eq!(
        health,
        &[
            "CMD",
            "procman",
            "wait",
            "--url",
            "http://127.0.0.1:8765/health",
            "--code",
            "200",
            "--no-retry"
        ]
    );
    // The path condition has no Compose form: procman wait runs before the script.
    let client = services["client"]["command"].as_array().unwrap();
    assert_eq!(
        client[..4],
        ["procman", "wait", "--path", "/app/data/ready"]
    );
    assert!(client.contains(&Value::from("--")));
    assert_eq!(
        services["recovery"]["profiles"],
        serde_json::json!(["manual"])
    );
}

#[test]
fn kubernetes_objects_keep_workloads_probes_and_waits() {
    let sandbox = stack();
    let (code, _, stderr) = export(
        &sandbox,
        "k8s",
        "k8s",
        &["--image", "app:1", "--app", "shop"],
    );
    assert_eq!(code, 0, "{stderr}");
    let objects = kubernetes_validate(&sandbox.file("k8s"));

    let web = object(&objects, "web.deployment.yaml");
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 8765);
    assert_eq!(
        web["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        2
    );
    let service = object(&objects, "web.service.yaml");
    assert_eq!(service["spec"]["ports"][0]["port"], 8765);

    let client = object(&objects, "client.job.yaml");
    let init = client["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap();
    assert_eq!(init[0]["command"][0], "kubectl");
    assert_eq!(init[0]["command"][4], "job/setup");
    assert_eq!(init[1]["command"][3], "http://web:8765/health");
    assert_eq!(
        client["spec"]["template"]["spec"]["serviceAccountName"],
        "shop-procman-wait"
    );
    object(&objects, "shop-procman-wait.role.yaml");

    let worker = object(&objects, "worker.deployment.yaml");
    assert_eq!(worker["spec"]["replicas"], 3);
    assert_eq!(
        object(&objects, "recovery.job.yaml")["spec"]["suspend"],
        true
    );

    // Kubernetes reads `$$` as `$`; the script's own `$$` must survive.
    let setup = object(&objects, "setup.job.yaml");
    let script = setup["spec"]["template"]["spec"]["containers"][0]["command"][6]
        .as_str()
        .unwrap();
    assert!(script.contains("%i %% $$$$ ;"), "{script}");
    assert!(
        stderr.contains("client: depends[1]: in Kubernetes `web` is reached through the Service"),
        "{stderr}"
    );
}

#[test]
fn what_cannot_be_expressed_is_named_and_strict_makes_it_an_error() {
    let config = r#"
setup:
  once: true
  run: echo "KEY=v" > "$PROCMAN_OUTPUT"
api:
  depends:
    - process_exited: setup
    - output_matches: ready
      process: setup
  env:
    TOKEN: "${{ setup.KEY }}"
  run: ./api
  watch:
    - name: health
      check: {path: /tmp/healthy}
      on_fail: shutdown
"#;
    let sandbox = Sandbox::new(config);
    for format in ["systemd", "compose", "kubernetes"] {
        let image: &[&str] = if format == "systemd" {
            &[]
        } else {
            &["--image", "app:1"]
        };
        let (code, _, stderr) = export(&sandbox, format, format, image);
        assert_eq!(code, 0, "{stderr}");
        for expected in [
            "warning: api: env TOKEN: `${{ setup.KEY }}`",
            "warning: api: depends[1]: output_matches on `setup`",
            "warning: api: watch[0] (health):",
        ] {
            assert!(
                stderr.contains(expected),
                "{format}: {expected} missing:\n{stderr}"
            );
        }
        assert!(
            stderr
                .lines()
                .all(|l| l.starts_with("procman: warning: api: ")),
            "{stderr}"
        );

        let out = format!("{format}-strict");
        let strict = [&["--strict"][..], image].concat();
        let (code, _, stderr) = export(&sandbox, format, &out, &strict);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("error: api: env TOKEN"), "{stderr}");
        assert!(stderr.contains("(--strict); nothing written"), "{stderr}");
        assert!(!sandbox.file(&out).exists());
    }
}

#[test]
fn export_overwrites_only_its_own_files_and_removes_its_stale_ones() {
    let sandbox = Sandbox::new("web: {run: 'true'}\ndb: {run: 'true'}\n");
    let (code, _, stderr) = export(&sandbox, "systemd", "out", &["--app", "a"]);
    assert_eq!(code, 0, "{stderr}");
    let dir = sandbox.file("out");
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();

    std::fs::write(sandbox.file("procman.yaml"), "web: {run: 'exec true'}\n").unwrap();
    let (code, _, stderr) = export(&sandbox, "systemd", "out", &["--app", "a"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(unit(&dir, "a-web.service").contains("exec true"));
    assert!(
        !dir.join("a-db.service").exists(),
        "a stale unit is removed"
    );
    assert!(stderr.contains("removed"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );

    // A file by the same name that export did not write is never replaced.
    std::fs::write(dir.join("a-web.service"), "[Unit]\n# hand-written\n").unwrap();
    let (code, _, stderr) = export(&sandbox, "systemd", "out", &["--app", "a"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("was not written by procman export"),
        "{stderr}"
    );
    assert_eq!(unit(&dir, "a-web.service"), "[Unit]\n# hand-written\n");
    assert!(
        unit(&dir, "a.target").starts_with("# Generated by"),
        "nothing half-written"
    );
}

#[test]
fn bad_input_gets_one_clear_error() {
    let sandbox = Sandbox::new("web: {run: 'true'}\n");
    let (code, _, stderr) = export(&sandbox, "compose", "out", &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no image for process `web`"), "{stderr}");
    let (code, _, stderr) = export(
        &sandbox,
        "compose",
        "out",
        &["--image", "a", "--image", "nope=b"],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("`nope` is not a process"), "{stderr}");
    let (code, _, stderr) = export(&sandbox, "systemd", "out", &["--app", "a/b"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("invalid --app"), "{stderr}");
    std::fs::write(sandbox.file("procman.yaml"), "web: {run: 1, bogus: 2}\n").unwrap();
    let (code, _, stderr) = export(&sandbox, "systemd", "out", &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("procman.yaml:1:"), "{stderr}");
}

/// YAML readers (PyYAML behind docker-compose, go-yaml behind kubectl, libyaml) take
/// U+2028/U+2029 for line breaks: inside a block literal one ends the block, and what
/// follows it on the same line became keys of the service or container.
#[test]
fn line_separators_in_values_cannot_add_keys() {
    let script =
        "echo hi\n\u{2028}    privileged: true\u{2029}        securityContext: {privileged: true}";
    let value = "a\u{2028}  b\u{7f}c\u{85}d\u{9f}e\u{fffe}";
    let config = serde_json::json!({
        "web": {"run": script, "env": {"V": value}}
    });
    let sandbox = Sandbox::new(&config.to_string());
    let image = ["--image", "app:1"];

    let (code, _, stderr) = export(&sandbox, "compose", "compose", &image);
    assert_eq!(code, 0, "{stderr}");
    let web = compose_config(&sandbox.file("compose"))["services"]["web"].clone();
    assert!(web.get("privileged").is_none(), "injected: {web}");
    assert_eq!(web["command"].as_array().unwrap().last().unwrap(), script);
    assert_eq!(web["environment"]["V"], value);

    let (code, _, stderr) = export(&sandbox, "kubernetes", "k8s", &image);
    assert_eq!(code, 0, "{stderr}");
    let objects = kubernetes_validate(&sandbox.file("k8s"));
    let web = object(&objects, "web.deployment.yaml");
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container.get("securityContext").is_none(),
        "injected: {container}"
    );
    assert_eq!(
        container["command"].as_array().unwrap().last().unwrap(),
        script
    );
    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "V" && e["value"] == value),
        "{env:?}"
    );
}

/// The config's path is written into every file's header comment (and the systemd
/// target's description); a directory name with line breaks must not add lines.
#[test]
fn a_config_path_with_line_breaks_stays_in_its_comment() {
    let sandbox = Sandbox::new("");
    let odd = sandbox
        .path()
        .join("a\nBogus=1\nbogus: 1\u{2028}bogus2: 1\n#")
        .join("app");
    std::fs::create_dir_all(&odd).unwrap();
    let config = odd.join("procman.yaml");
    std::fs::write(&config, "web: {run: 'true', cwd: /tmp}\n").unwrap();
    let config = config.to_str().unwrap();
    let export = |args: &[&str]| {
        let (status, _, stderr) = sandbox.run(&[&["export"], args].concat(), LIMIT);
        assert!(status.success(), "{stderr}");
    };

    export(&["systemd", config, "--output", "units"]);
    let dir = sandbox.file("units");
    systemd_verify(&dir);
    for file in files_in(&dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().nth(1), Some("[Unit]"), "{text}");
    }

    export(&["compose", config, "--output", "compose", "--image", "app:1"]);
    let services = compose_config(&sandbox.file("compose"))["services"].clone();
    assert_eq!(services.as_object().unwrap().len(), 1, "{services}");
}

/// Many tools start their files with "# Generated by"; only procman export's own header
/// makes a file one export may replace.
#[test]
fn another_generators_file_is_not_replaced() {
    let sandbox = Sandbox::new("web: {run: 'true'}\n");
    let dir = sandbox.file("out");
    std::fs::create_dir_all(&dir).unwrap();
    let theirs = "# Generated by another tool; do not edit\n[Unit]\n";
    std::fs::write(dir.join("a-web.service"), theirs).unwrap();
    let (code, _, stderr) = export(&sandbox, "systemd", "out", &["--app", "a"]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("was not written by procman export"),
        "{stderr}"
    );
    assert_eq!(unit(&dir, "a-web.service"), theirs);
}

/// systemd joins a line ending in `\` with the next one and strips a value's trailing
/// blanks; neither can be escaped in a path setting, so such a path is refused rather
/// than written as another directory (and with the next setting swallowed).
#[test]
fn a_path_systemd_would_read_differently_is_refused() {
    for dir in ["trailing\\", "trailing "] {
        let sandbox =
            Sandbox::new(&serde_json::json!({"web": {"run": "true", "cwd": dir}}).to_string());
        std::fs::create_dir(sandbox.file(dir)).unwrap();
        let (code, _, stderr) = export(&sandbox, "systemd", "out", &[]);
        assert_ne!(code, 0, "{dir:?}: {stderr}");
        assert!(stderr.contains("cannot write the path"), "{stderr}");
        assert!(!sandbox.file("out").exists(), "{dir:?}: nothing written");
    }
}

/// `--mount` wrote the short `SOURCE:TARGET` form, which splits at every `:`: a config
/// directory `x:/etc` became a mount of `x` at /etc (with the mode `/app`), and
/// `docker-compose config` accepted it.
#[test]
fn a_mounted_directory_with_a_colon_stays_one_path() {
    let sandbox = Sandbox::new("");
    let dir = sandbox.path().join("x:/etc");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("procman.yaml"), "web: {run: 'true'}\n").unwrap();
    let config = dir.join("procman.yaml");
    let args = [
        "export",
        "compose",
        config.to_str().unwrap(),
        "--output",
        "out",
        "--image",
        "app:1",
        "--mount",
    ];
    let (status, _, stderr) = sandbox.run(&args, LIMIT);
    assert!(status.success(), "{stderr}");
    let web = compose_config(&sandbox.file("out"))["services"]["web"].clone();
    let volumes = web["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{web}");
    let volume = &volumes[0];
    assert_eq!(volume["type"], "bind", "{web}");
    assert_eq!(volume["source"], dir.to_str().unwrap(), "{web}");
    assert_eq!(volume["target"], "/app", "{web}");
}

/// Durations and restart counts at the top of what the config accepts: systemd ignored
/// a time span past its microsecond range (falling back to its default: a 100 ms
/// RestartSec for a delay of years), summing the delays overflowed (a panic), and
/// max_restarts near 2^32 summed them one by one (minutes of work).
#[test]
fn extreme_durations_and_restart_counts_give_units_systemd_reads() {
    let configs = [
        "web: {run: 'true', stop_timeout: 1e15, restart: always, restart_delay: 1e15, depends: [{tcp: '127.0.0.1:1', timeout_seconds: 1e15}]}\n",
        "web: {run: 'true', restart: always, restart_delay: 1e12, max_restart_delay: 1e12, max_restarts: 4000000000}\n",
        "web: {run: 'true', restart: on-failure, max_restarts: 4000000000}\n",
    ];
    for config in configs {
        let sandbox = Sandbox::new(config);
        let (code, _, stderr) = export(&sandbox, "systemd", "units", &["--app", "a"]);
        assert_eq!(code, 0, "{config}{stderr}");
        systemd_verify(&sandbox.file("units"));
    }
}
