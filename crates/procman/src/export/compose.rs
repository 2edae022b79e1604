//! Docker Compose: one service per process (per instance of a `for_each` or `replicas`
//! template) in one `compose.yaml`. See docs/export-compose.md.
//!
//! - Services share the host's network (`network_mode: host`), so `127.0.0.1:PORT` means
//!   what it meant under `procman run`.
//! - `process_exited` → `depends_on` with `service_completed_successfully`; a `url` or
//!   `tcp` dependency on a port another process serves → a `healthcheck` on that process
//!   (running `procman wait` once) and `service_healthy` on the dependent; every other
//!   condition → `procman wait … --` before the command, in order.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde_norway::Value;

use super::stack::{Address, Server, ceil_secs, duration_arg, shell_command, short_hash};
use super::yaml::{map, number, text, texts, to_text};
use super::{Containers, File, Gaps, Stack};
use crate::config::{Dependency, DependencyKind, ProcessSpec, Restart};

/// The compose file's name.
pub const FILE_NAME: &str = "compose.yaml";

/// `procman export compose` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Images, working directory, ports, shell, procman.
    pub containers: Containers,
    /// `--mount`: bind-mount the config's directory at the working directory.
    pub mount: bool,
}

/// The compose file.
pub fn render(stack: &Stack<'_>, options: &Options, gaps: &mut Gaps) -> Result<Vec<File>> {
    let containers = &options.containers;
    let names = service_names(stack)?;
    // Who serves what: a served process's health check covers every condition its
    // dependents wait for on it.
    let mut health: BTreeMap<&str, Vec<&Dependency>> = BTreeMap::new();
    let mut served: BTreeMap<(&str, usize), Vec<&ProcessSpec>> = BTreeMap::new();
    for spec in &stack.config.processes {
        for (index, dep) in spec.depends.iter().enumerate() {
            let Some(address) = served_address(dep) else {
                continue;
            };
            match stack.server_of(spec, address.port) {
                Server::Found(server) => {
                    let servers = stack.exited_targets(&server);
                    for target in &servers {
                        let entry = health.entry(target.name.as_str()).or_default();
                        if !entry.iter().any(|d| same_check(d, dep)) {
                            entry.push(dep);
                        }
                    }
                    served.insert((spec.name.as_str(), index), servers);
                }
                Server::Ambiguous(candidates) => gaps.add(
                    &spec.name,
                    format!("depends[{index}]"),
                    format!(
                        "port {} is mentioned by {}; waited for before the command instead of a health check (pass --port NAME={} to choose)",
                        address.port,
                        candidates.join(", "),
                        address.port
                    ),
                ),
                Server::None => {}
            }
        }
    }

    let mut services = serde_norway::Mapping::new();
    for spec in &stack.config.processes {
        stack.common_gaps(spec, "Docker Compose", gaps);
        stack.env_file_gaps(spec, "Docker Compose", gaps);
        stack.precedence_gaps(spec, false, "Docker Compose", gaps);
        service_gaps(spec, gaps);
        let map_path = |p: &std::path::Path| containers.map_path(stack.config, p);
        let mut command = Vec::new();
        let mut depends_on = serde_norway::Mapping::new();
        for (index, dep) in spec.depends.iter().enumerate() {
            let condition = |c: &str| map([("condition", Some(text(c)))]);
            match &dep.kind {
                DependencyKind::ProcessExited { name } => {
                    for target in stack.exited_targets(name) {
                        depends_on.insert(
                            text(&names[target.name.as_str()]),
                            condition("service_completed_successfully"),
                        );
                    }
                }
                DependencyKind::OutputMatches { .. } => {}
                _ => match served.get(&(spec.name.as_str(), index)) {
                    Some(servers) => {
                        for target in servers {
                            depends_on.insert(
                                text(&names[target.name.as_str()]),
                                condition("service_healthy"),
                            );
                        }
                    }
                    None => {
                        command.push(containers.procman.clone());
                        command.extend(stack.wait_args(dep, &map_path, false));
                        command.push("--".into());
                    }
                },
            }
        }
        command.extend(shell_command(&containers.shell, &spec.run));

        let cwd = stack.cwd(spec);
        if !cwd.starts_with(&stack.config.dir) {
            gaps.add(
                &spec.name,
                "cwd",
                format!(
                    "{} is outside the config's directory; the image must have it",
                    cwd.display()
                ),
            );
        }
        let mut environment = serde_norway::Mapping::new();
        for (key, value) in stack.inline_env(spec) {
            let value = if spec.instance_env.contains_key(&key) {
                containers.map_value(stack.config, &value)
            } else {
                value
            };
            environment.insert(text(key), text(value));
        }
        environment.insert(text("PROCMAN_OUTPUT"), text("/dev/null"));
        let env_files: Vec<String> = stack
            .env_files(spec)
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        let restart = match (spec.restart.when, spec.restart.max_restarts) {
            (Restart::No, _) => "no".to_owned(),
            (Restart::OnFailure, None) => "on-failure".to_owned(),
            (Restart::OnFailure, Some(max)) => format!("on-failure:{max}"),
            (Restart::Always, _) => "always".to_owned(),
        };
        let service = map([
            ("image", Some(text(containers.image_of(spec)?))),
            ("command", Some(texts(command))),
            ("working_dir", Some(text(map_path(&cwd)))),
            (
                "env_file",
                (!env_files.is_empty()).then(|| texts(env_files)),
            ),
            ("environment", Some(Value::Mapping(environment))),
            ("network_mode", Some(text("host"))),
            // The long form: the short `SOURCE:TARGET` splits at every `:` of a path.
            (
                "volumes",
                options.mount.then(|| {
                    Value::Sequence(vec![map([
                        ("type", Some(text("bind"))),
                        ("source", Some(text(stack.config.dir.to_string_lossy()))),
                        ("target", Some(text(&containers.workdir))),
                    ])])
                }),
            ),
            (
                "stop_grace_period",
                Some(text(duration_arg(spec.stop_timeout))),
            ),
            ("restart", Some(text(restart))),
            (
                "depends_on",
                (!depends_on.is_empty()).then_some(Value::Mapping(depends_on)),
            ),
            (
                "healthcheck",
                health
                    .get(spec.name.as_str())
                    .map(|h| healthcheck(stack, containers, h)),
            ),
            ("profiles", (!spec.autostart).then(|| texts(["manual"]))),
        ]);
        services.insert(text(&names[spec.name.as_str()]), service);
    }
    let mut document = map([("services", Some(Value::Mapping(services)))]);
    escape_dollars(&mut document);
    Ok(vec![File {
        name: FILE_NAME.to_owned(),
        text: to_text(&document),
    }])
}

/// The address of a `url` or `tcp` dependency on this machine, which a process of the
/// config may serve.
fn served_address(dep: &Dependency) -> Option<Address> {
    match dep.kind {
        DependencyKind::Http { .. } | DependencyKind::Tcp { .. } => {
            Address::of(&dep.kind).filter(Address::is_local)
        }
        _ => None,
    }
}

fn same_check(a: &Dependency, b: &Dependency) -> bool {
    crate::deps::describe(&a.kind) == crate::deps::describe(&b.kind)
}

/// A health check that runs `procman wait` once per condition, chained; it may count as
/// failing for the longest timeout dependents allow before it counts.
fn healthcheck(stack: &Stack<'_>, containers: &Containers, checks: &[&Dependency]) -> Value {
    let mut test = vec!["CMD".to_owned()];
    for (index, dep) in checks.iter().enumerate() {
        if index > 0 {
            test.push("--".into());
        }
        test.push(containers.procman.clone());
        test.extend(stack.wait_args(dep, &|p| p.to_string_lossy().into_owned(), true));
    }
    let interval = checks
        .iter()
        .map(|d| d.poll_interval)
        .min()
        .unwrap_or_default()
        .max(std::time::Duration::from_secs(1));
    let start_period = checks.iter().map(|d| d.timeout).max().unwrap_or_default();
    map([
        ("test", Some(texts(test))),
        ("interval", Some(text(duration_arg(interval)))),
        ("timeout", Some(text("10s"))),
        (
            "start_period",
            Some(text(format!("{}s", ceil_secs(start_period)))),
        ),
        ("retries", Some(number(3))),
    ])
}

/// What Compose cannot express for one process.
fn service_gaps(spec: &ProcessSpec, gaps: &mut Gaps) {
    for (index, watch) in spec.watch.iter().enumerate() {
        gaps.add(
            &spec.name,
            format!("watch[{index}] ({})", watch.name),
            "Docker does not act on a running container's health; left out",
        );
    }
    if spec.restart.when != Restart::No {
        gaps.add(
            &spec.name,
            "restart_delay",
            "Docker restarts with its own delay (100 ms, doubling); restart_delay and max_restart_delay are not kept",
        );
    }
    for (index, dep) in spec.depends.iter().enumerate() {
        if let DependencyKind::NotRunning { .. } = dep.kind {
            gaps.add(
                &spec.name,
                format!("depends[{index}]"),
                "not_running is checked inside the container, which sees only its own processes",
            );
        }
    }
}

/// Compose service names (`[A-Za-z0-9._-]`): a process name as is when it fits, else
/// cleaned and made unique with a hash of the original.
fn service_names<'a>(stack: &Stack<'a>) -> Result<BTreeMap<&'a str, String>> {
    let mut names = BTreeMap::new();
    let mut taken = std::collections::BTreeSet::new();
    for spec in &stack.config.processes {
        let clean: String = spec
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // Compose wants an alphanumeric first character too.
        let name = if clean == spec.name.as_str()
            && clean.starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            clean
        } else {
            format!("p{clean}-{}", short_hash(&spec.name))
        };
        if !taken.insert(name.clone()) {
            bail!("two processes map to the Compose service name `{name}`; rename one");
        }
        names.insert(spec.name.as_str(), name);
    }
    Ok(names)
}

/// Compose replaces `$VAR` everywhere in the file; `$$` is a literal `$`.
fn escape_dollars(value: &mut Value) {
    match value {
        Value::String(s) => *s = s.replace('$', "$$"),
        Value::Sequence(items) => items.iter_mut().for_each(escape_dollars),
        Value::Mapping(mapping) => mapping.values_mut().for_each(escape_dollars),
        _ => {}
    }
}
