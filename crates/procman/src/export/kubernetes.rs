//! Kubernetes: a directory for `kubectl apply -f DIR`, one object per file. See
//! docs/export-kubernetes.md.
//!
//! - long-running process → Deployment (`replicas` kept); `once` → Job (`replicas` → an
//!   Indexed Job whose completion index is `PROCMAN_REPLICA`); `autostart: false` →
//!   `replicas: 0` or a suspended Job;
//! - env files → a ConfigMap each for the global ones and for a process's own (`envFrom`,
//!   below `env`, as procman layers them);
//! - a `url`/`tcp` dependency on a port another process serves → a readiness probe on that
//!   process, a Service in front of it, and on the dependent an init container running
//!   `procman wait` against the Service;
//! - `process_exited` → an init container running `kubectl wait --for=condition=complete`
//!   on the Job(s), with a ServiceAccount allowed to read Jobs;
//! - a watch with `on_fail: restart` on a local `url`/`tcp` → a liveness probe.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde_norway::Value;

use super::stack::{Address, Server, ceil_secs, shell_command, short_hash};
use super::yaml::{map, number, text, texts, to_text};
use super::{File, Gaps, Stack};
use crate::config::{Dependency, DependencyKind, OnFail, ProcessSpec, REPLICA_VAR, Restart};

/// `procman export kubernetes` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Images, working directory, ports, shell, procman.
    pub containers: super::Containers,
    /// Image with `kubectl`, for init containers that wait for Jobs.
    pub kubectl_image: String,
}

/// One Deployment or Job: a process, or a `replicas` group folded into one object.
struct Workload<'a> {
    /// Object name (a DNS label).
    name: String,
    /// The process (the first instance of a folded group).
    spec: &'a ProcessSpec,
    /// Instances folded into this object (1 for a plain process).
    count: u32,
}

/// The objects.
pub fn render(stack: &Stack<'_>, options: &Options, gaps: &mut Gaps) -> Result<Vec<File>> {
    let app = Labels::new(stack);
    let workloads = workloads(stack)?;
    let by_process: BTreeMap<&str, &Workload<'_>> = workloads
        .iter()
        .flat_map(|w| {
            stack
                .exited_targets(Stack::base_name(w.spec))
                .into_iter()
                .filter(move |p| w.count > 1 || p.name == w.spec.name)
                .map(move |p| (p.name.as_str(), w))
        })
        .collect();

    // Who serves what: Services and readiness probes on the servers.
    let mut services: BTreeMap<String, (Vec<u16>, &Dependency)> = BTreeMap::new();
    for spec in &stack.config.processes {
        for dep in &spec.depends {
            if let Some((address, Server::Found(server))) = served(stack, spec, dep) {
                for target in stack.exited_targets(&server) {
                    let name = by_process[target.name.as_str()].name.clone();
                    let entry = services.entry(name).or_insert((Vec::new(), dep));
                    if !entry.0.contains(&address.port) {
                        entry.0.push(address.port);
                    }
                }
            }
        }
    }

    let mut files = Vec::new();
    let mut needs_kubectl = false;
    if !stack.config.file_env.is_empty() {
        files.push(config_map(&app, &app.global_env(), &stack.config.file_env));
    }
    for workload in &workloads {
        let spec = workload.spec;
        stack.common_gaps(spec, "Kubernetes", gaps);
        stack.precedence_gaps(spec, false, "Kubernetes", gaps);
        let init = init_containers(stack, options, spec, &by_process, gaps);
        let waits_for_jobs = init.iter().any(|(kubectl, _)| *kubectl);
        needs_kubectl |= waits_for_jobs;
        let init: Vec<Value> = init.into_iter().map(|(_, c)| c).collect();
        let env_map = (!spec.file_env.is_empty()).then(|| format!("{}-env", workload.name));
        if let Some(name) = &env_map {
            files.push(config_map(&app, name, &spec.file_env));
        }
        let container = container(
            stack,
            options,
            workload,
            env_map.as_deref(),
            &services,
            gaps,
        )?;
        let labels = app.of(&workload.name);
        let restart_policy = match (spec.once, spec.restart.when) {
            (false, _) => None,
            (true, Restart::No) => Some("Never"),
            (true, _) => Some("OnFailure"),
        };
        let pod = map([
            (
                "serviceAccountName",
                waits_for_jobs.then(|| text(app.wait_account())),
            ),
            (
                "terminationGracePeriodSeconds",
                Some(number(
                    ceil_secs(spec.stop_timeout).min(i64::MAX as u64) as i64
                )),
            ),
            ("restartPolicy", restart_policy.map(text)),
            (
                "initContainers",
                (!init.is_empty()).then(|| Value::Sequence(init)),
            ),
            ("containers", Some(Value::Sequence(vec![container]))),
        ]);
        let pod_template = map([
            ("metadata", Some(map([("labels", Some(labels.clone()))]))),
            ("spec", Some(pod)),
        ]);
        restart_gaps(spec, gaps);
        let object = if spec.once {
            let backoff = match (spec.restart.when, spec.restart.max_restarts) {
                (Restart::No, _) => 0,
                (_, Some(max)) => i64::from(max),
                (_, None) => i64::from(i32::MAX),
            };
            let indexed = workload.count > 1;
            map([
                ("apiVersion", Some(text("batch/v1"))),
                ("kind", Some(text("Job"))),
                ("metadata", Some(app.metadata(&workload.name))),
                (
                    "spec",
                    Some(map([
                        ("completionMode", indexed.then(|| text("Indexed"))),
                        ("completions", indexed.then(|| number(workload.count))),
                        ("parallelism", indexed.then(|| number(workload.count))),
                        ("backoffLimit", Some(number(backoff))),
                        ("suspend", (!spec.autostart).then_some(Value::Bool(true))),
                        ("template", Some(pod_template)),
                    ])),
                ),
            ])
        } else {
            let replicas = if spec.autostart { workload.count } else { 0 };
            map([
                ("apiVersion", Some(text("apps/v1"))),
                ("kind", Some(text("Deployment"))),
                ("metadata", Some(app.metadata(&workload.name))),
                (
                    "spec",
                    Some(map([
                        ("replicas", Some(number(replicas))),
                        ("selector", Some(map([("matchLabels", Some(labels))]))),
                        ("template", Some(pod_template)),
                    ])),
                ),
            ])
        };
        let kind = if spec.once { "job" } else { "deployment" };
        files.push(File {
            name: format!("{}.{kind}.yaml", workload.name),
            text: to_text(&object),
        });
    }
    for (name, (ports, _)) in &services {
        let ports = ports
            .iter()
            .map(|port| {
                map([
                    ("name", Some(text(format!("port-{port}")))),
                    ("port", Some(number(*port))),
                    ("targetPort", Some(number(*port))),
                ])
            })
            .collect();
        let service = map([
            ("apiVersion", Some(text("v1"))),
            ("kind", Some(text("Service"))),
            ("metadata", Some(app.metadata(name))),
            (
                "spec",
                Some(map([
                    ("selector", Some(app.of(name))),
                    ("ports", Some(Value::Sequence(ports))),
                ])),
            ),
        ]);
        files.push(File {
            name: format!("{name}.service.yaml"),
            text: to_text(&service),
        });
    }
    if needs_kubectl {
        files.extend(wait_account(&app));
    }
    Ok(files)
}

/// The address of a `url`/`tcp` dependency and who serves it, for local addresses.
fn served(stack: &Stack<'_>, spec: &ProcessSpec, dep: &Dependency) -> Option<(Address, Server)> {
    match dep.kind {
        DependencyKind::Http { .. } | DependencyKind::Tcp { .. } => {
            let address = Address::of(&dep.kind).filter(Address::is_local)?;
            let server = stack.server_of(spec, address.port);
            Some((address, server))
        }
        _ => None,
    }
}

/// Processes as objects: a `replicas` group whose instances differ only in their index
/// is one object; everything else one object per process.
fn workloads<'a>(stack: &Stack<'a>) -> Result<Vec<Workload<'a>>> {
    let mut workloads: Vec<Workload<'a>> = Vec::new();
    let mut taken = BTreeMap::new();
    let mut seen_groups = Vec::new();
    for spec in &stack.config.processes {
        let folded = match (spec.replicas, spec.group.as_deref()) {
            (Some(_), Some(group)) => {
                if seen_groups.contains(&group) {
                    continue;
                }
                let instances = stack.exited_targets(group);
                let alike = instances.iter().all(|i| same_but_index(spec, i));
                if alike {
                    seen_groups.push(group);
                    Some((group, instances.len() as u32))
                } else {
                    None
                }
            }
            _ => None,
        };
        let (shown, count) = folded.unwrap_or((spec.name.as_str(), 1));
        let name = dns_label(shown);
        if let Some(other) = taken.insert(name.clone(), shown) {
            bail!(
                "processes `{other}` and `{shown}` both map to the Kubernetes name `{name}`; rename one"
            );
        }
        workloads.push(Workload { name, spec, count });
    }
    Ok(workloads)
}

/// Whether two instances of a group differ only in their instance variable.
fn same_but_index(a: &ProcessSpec, b: &ProcessSpec) -> bool {
    let deps = |p: &ProcessSpec| -> Vec<String> {
        p.depends
            .iter()
            .map(|d| crate::deps::describe(&d.kind))
            .collect()
    };
    a.env == b.env && a.cwd == b.cwd && deps(a) == deps(b)
}

/// The main container.
fn container(
    stack: &Stack<'_>,
    options: &Options,
    workload: &Workload<'_>,
    env_map: Option<&str>,
    services: &BTreeMap<String, (Vec<u16>, &Dependency)>,
    gaps: &mut Gaps,
) -> Result<Value> {
    let spec = workload.spec;
    let containers = &options.containers;
    let cwd = stack.cwd(spec);
    let mut env = Vec::new();
    for (key, value) in stack.inline_env(spec) {
        if workload.count > 1 && key == REPLICA_VAR {
            continue;
        }
        let value = if spec.instance_env.contains_key(&key) {
            containers.map_value(stack.config, &value)
        } else {
            value
        };
        env.push(map([
            ("name", Some(text(key))),
            ("value", Some(text(dollars(&value)))),
        ]));
    }
    env.push(map([
        ("name", Some(text("PROCMAN_OUTPUT"))),
        ("value", Some(text("/dev/null"))),
    ]));
    if workload.count > 1 {
        // An Indexed Job's pods know their index; a Deployment's pods only their names.
        let field = if spec.once {
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        } else {
            let mentioned = spec.run.contains(REPLICA_VAR)
                || spec.env.values().any(|v| v.contains(REPLICA_VAR));
            if mentioned {
                gaps.add(
                    &spec.name,
                    REPLICA_VAR,
                    "a Deployment's pods have no index; it is set to the pod's name",
                );
            }
            "metadata.name"
        };
        env.push(map([
            ("name", Some(text(REPLICA_VAR))),
            (
                "valueFrom",
                Some(map([(
                    "fieldRef",
                    Some(map([("fieldPath", Some(text(field)))])),
                )])),
            ),
        ]));
    }
    let mut env_from = Vec::new();
    let labels = Labels::new(stack);
    if !stack.config.file_env.is_empty() {
        env_from.push(labels.global_env());
    }
    env_from.extend(env_map.map(str::to_owned));
    let env_from: Vec<Value> = env_from
        .into_iter()
        .map(|name| map([("configMapRef", Some(map([("name", Some(text(name)))])))]))
        .collect();
    let command: Vec<String> = shell_command(&containers.shell, &spec.run)
        .iter()
        .map(|w| dollars(w))
        .collect();
    let readiness = services
        .get(&workload.name)
        .and_then(|(_, dep)| Some(probe(dep, &Address::of(&dep.kind)?)));
    let liveness = liveness(spec, gaps);
    Ok(map([
        ("name", Some(text(&workload.name))),
        ("image", Some(text(containers.image_of(spec)?))),
        ("command", Some(texts(command))),
        (
            "workingDir",
            Some(text(containers.map_path(stack.config, &cwd))),
        ),
        (
            "envFrom",
            (!env_from.is_empty()).then(|| Value::Sequence(env_from)),
        ),
        ("env", Some(Value::Sequence(env))),
        ("readinessProbe", readiness),
        ("livenessProbe", liveness),
    ]))
}

/// A probe checking what `dep` waits for: `httpGet` for a URL, `tcpSocket` for tcp.
fn probe(dep: &Dependency, address: &Address) -> Value {
    let action = match &address.path {
        Some(path) => (
            "httpGet",
            map([
                ("path", Some(text(path))),
                ("port", Some(number(address.port))),
            ]),
        ),
        None => ("tcpSocket", map([("port", Some(number(address.port)))])),
    };
    map([
        (action.0, Some(action.1)),
        (
            "periodSeconds",
            Some(number(ceil_secs(dep.poll_interval).clamp(1, 3600) as i64)),
        ),
    ])
}

/// A liveness probe for the first watch that restarts its process on a local url/tcp
/// check; every other watch is a gap.
fn liveness(spec: &ProcessSpec, gaps: &mut Gaps) -> Option<Value> {
    let mut probe_value = None;
    for (index, watch) in spec.watch.iter().enumerate() {
        let local = match watch.check.kind {
            DependencyKind::Http { .. } | DependencyKind::Tcp { .. } => {
                Address::of(&watch.check.kind).filter(Address::is_local)
            }
            _ => None,
        };
        if let (None, OnFail::Restart, Some(address)) = (&probe_value, &watch.on_fail, local)
            && let Value::Mapping(mut mapping) = probe(&watch.check, &address)
        {
            let secs = |d: std::time::Duration| number(ceil_secs(d).min(i32::MAX as u64) as i64);
            mapping.insert(text("initialDelaySeconds"), secs(watch.initial_delay));
            mapping.insert(
                text("periodSeconds"),
                secs(watch.poll_interval.max(std::time::Duration::from_secs(1))),
            );
            mapping.insert(
                text("failureThreshold"),
                number(i64::from(watch.failure_threshold)),
            );
            probe_value = Some(Value::Mapping(mapping));
            continue;
        }
        gaps.add(
            &spec.name,
            format!("watch[{index}] ({})", watch.name),
            "only a watch with on_fail: restart on a local url or tcp check becomes a liveness probe (one per process); left out",
        );
    }
    probe_value
}

/// Init containers, in `depends` order; `true` marks a `kubectl wait`.
fn init_containers(
    stack: &Stack<'_>,
    options: &Options,
    spec: &ProcessSpec,
    by_process: &BTreeMap<&str, &Workload<'_>>,
    gaps: &mut Gaps,
) -> Vec<(bool, Value)> {
    let containers = &options.containers;
    let image = containers.image_of(spec).unwrap_or_default().to_owned();
    let map_path = |p: &std::path::Path| containers.map_path(stack.config, p);
    let mut init = Vec::new();
    for (index, dep) in spec.depends.iter().enumerate() {
        let key = format!("depends[{index}]");
        let name = format!("wait-{index}");
        let procman_wait = |args: Vec<String>| {
            let mut command = vec![containers.procman.clone()];
            command.extend(args);
            let command: Vec<String> = command.iter().map(|w| dollars(w)).collect();
            map([
                ("name", Some(text(&name))),
                ("image", Some(text(&image))),
                ("command", Some(texts(command))),
                ("workingDir", Some(text(map_path(&stack.cwd(spec))))),
            ])
        };
        match &dep.kind {
            DependencyKind::ProcessExited { name: target } => {
                let mut jobs: Vec<String> = stack
                    .exited_targets(target)
                    .iter()
                    .map(|p| format!("job/{}", by_process[p.name.as_str()].name))
                    .collect();
                jobs.dedup();
                let mut command = vec![
                    "kubectl".to_owned(),
                    "wait".to_owned(),
                    "--for=condition=complete".to_owned(),
                    format!("--timeout={}s", ceil_secs(dep.timeout)),
                ];
                command.extend(jobs);
                init.push((
                    true,
                    map([
                        ("name", Some(text(&name))),
                        ("image", Some(text(&options.kubectl_image))),
                        ("command", Some(texts(command))),
                    ]),
                ));
            }
            DependencyKind::OutputMatches { .. } => {}
            DependencyKind::Http { .. } | DependencyKind::Tcp { .. } => {
                match served(stack, spec, dep) {
                    None => {
                        init.push((false, procman_wait(stack.wait_args(dep, &map_path, false))))
                    }
                    Some((address, Server::Found(server))) => {
                        let service = by_process[stack.exited_targets(&server)[0].name.as_str()]
                            .name
                            .clone();
                        let moved = moved_to(dep, &service, &address);
                        init.push((
                            false,
                            procman_wait(stack.wait_args(&moved, &map_path, false)),
                        ));
                        gaps.add(
                            &spec.name,
                            key,
                            format!(
                                "in Kubernetes `{server}` is reached through the Service `{service}` ({service}:{}), not {}:{}; the wait uses the Service, the process's own connections must too",
                                address.port, address.host, address.port
                            ),
                        );
                    }
                    Some((address, server)) => {
                        let why = match server {
                            Server::Ambiguous(names) => format!(
                                "port {} is mentioned by {}; pass --port NAME={} to choose",
                                address.port,
                                names.join(", "),
                                address.port
                            ),
                            _ => format!(
                                "no process of the config serves port {}, and a pod's {} is the pod itself; pass --port NAME={} or use a host name",
                                address.port, address.host, address.port
                            ),
                        };
                        gaps.add(&spec.name, key, format!("{why}; left out"));
                    }
                }
            }
            _ => {
                init.push((false, procman_wait(stack.wait_args(dep, &map_path, false))));
                gaps.add(
                    &spec.name,
                    key,
                    "checked in an init container: it sees the image's files and processes and the pod's network, not another pod's",
                );
            }
        }
    }
    init
}

/// `dep` with its host replaced by a Service name.
fn moved_to(dep: &Dependency, service: &str, address: &Address) -> Dependency {
    let mut moved = dep.clone();
    moved.kind = match &dep.kind {
        DependencyKind::Http { code, .. } => DependencyKind::Http {
            url: format!(
                "http://{service}:{}{}",
                address.port,
                address.path.as_deref().unwrap_or("/")
            ),
            code: *code,
        },
        _ => DependencyKind::Tcp {
            address: format!("{service}:{}", address.port),
        },
    };
    moved
}

/// What Kubernetes cannot express of a restart policy.
fn restart_gaps(spec: &ProcessSpec, gaps: &mut Gaps) {
    if spec.restart.when != Restart::No {
        gaps.add(
            &spec.name,
            "restart_delay",
            "Kubernetes restarts with its own back-off (10 s, doubling to 5 min); restart_delay and max_restart_delay are not kept",
        );
    }
    if !spec.once && spec.restart.max_restarts.is_some() {
        gaps.add(
            &spec.name,
            "max_restarts",
            "a Deployment restarts its pods without limit",
        );
    }
}

/// Kubernetes expands `$(VAR)` in commands and env values and reads `$$` as `$`.
fn dollars(text: &str) -> String {
    text.replace('$', "$$")
}

/// A ConfigMap holding env file values.
fn config_map(app: &Labels, name: &str, values: &BTreeMap<String, String>) -> File {
    let data = map(values.iter().map(|(k, v)| (k.as_str(), Some(text(v)))));
    let object = map([
        ("apiVersion", Some(text("v1"))),
        ("kind", Some(text("ConfigMap"))),
        ("metadata", Some(app.metadata(name))),
        ("data", Some(data)),
    ]);
    File {
        name: format!("{name}.configmap.yaml"),
        text: to_text(&object),
    }
}

/// The ServiceAccount, Role and RoleBinding that let `kubectl wait` read Jobs.
fn wait_account(app: &Labels) -> Vec<File> {
    let name = app.wait_account();
    let account = map([
        ("apiVersion", Some(text("v1"))),
        ("kind", Some(text("ServiceAccount"))),
        ("metadata", Some(app.metadata(&name))),
    ]);
    let role = map([
        ("apiVersion", Some(text("rbac.authorization.k8s.io/v1"))),
        ("kind", Some(text("Role"))),
        ("metadata", Some(app.metadata(&name))),
        (
            "rules",
            Some(Value::Sequence(vec![map([
                ("apiGroups", Some(texts(["batch"]))),
                ("resources", Some(texts(["jobs"]))),
                ("verbs", Some(texts(["get", "list", "watch"]))),
            ])])),
        ),
    ]);
    let binding = map([
        ("apiVersion", Some(text("rbac.authorization.k8s.io/v1"))),
        ("kind", Some(text("RoleBinding"))),
        ("metadata", Some(app.metadata(&name))),
        (
            "subjects",
            Some(Value::Sequence(vec![map([
                ("kind", Some(text("ServiceAccount"))),
                ("name", Some(text(&name))),
            ])])),
        ),
        (
            "roleRef",
            Some(map([
                ("apiGroup", Some(text("rbac.authorization.k8s.io"))),
                ("kind", Some(text("Role"))),
                ("name", Some(text(&name))),
            ])),
        ),
    ]);
    vec![
        File {
            name: format!("{name}.serviceaccount.yaml"),
            text: to_text(&account),
        },
        File {
            name: format!("{name}.role.yaml"),
            text: to_text(&role),
        },
        File {
            name: format!("{name}.rolebinding.yaml"),
            text: to_text(&binding),
        },
    ]
}

/// The app's name as a label value, and the labels and metadata of its objects.
struct Labels {
    app: String,
}

impl Labels {
    fn new(stack: &Stack<'_>) -> Labels {
        Labels {
            app: dns_label(&stack.app),
        }
    }

    fn global_env(&self) -> String {
        format!("{}-env", self.app)
    }

    fn wait_account(&self) -> String {
        format!("{}-procman-wait", self.app)
    }

    fn of(&self, name: &str) -> Value {
        map([
            ("app.kubernetes.io/name", Some(text(name))),
            ("app.kubernetes.io/part-of", Some(text(&self.app))),
        ])
    }

    fn metadata(&self, name: &str) -> Value {
        let Value::Mapping(mut labels) = self.of(name) else {
            unreachable!("labels are a mapping")
        };
        labels.insert(text("app.kubernetes.io/managed-by"), text("procman"));
        map([
            ("name", Some(text(name))),
            ("labels", Some(Value::Mapping(labels))),
        ])
    }
}

/// A DNS-1035 label (`[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63): a name as is when it
/// is one, else lowered and cleaned, with a hash of the original to keep it unique.
pub fn dns_label(name: &str) -> String {
    let is_label = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if is_label {
        return name.to_owned();
    }
    let mut clean = String::new();
    for c in name.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && clean.ends_with('-')) {
            clean.push(c);
        }
    }
    let clean = clean.trim_matches('-');
    let hash = short_hash(name);
    let prefix = if clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        ""
    } else {
        "p-"
    };
    let room = 63 - hash.len() - 1 - prefix.len();
    let stem = clean[..clean.len().min(room)].trim_end_matches('-');
    if stem.is_empty() {
        format!("p-{hash}")
    } else {
        format!("{prefix}{stem}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert_eq!(dns_label("web"), "web");
        assert_eq!(dns_label("web-1"), "web-1");
        let odd = dns_label("Web_Server");
        assert!(odd.starts_with("web-server-"), "{odd}");
        assert!(dns_label("9lives").starts_with("p-9lives-"));
        assert!(dns_label(&"x".repeat(80)).len() <= 63);
        assert_ne!(dns_label("a b"), dns_label("a_b"));
        assert!(dns_label("é").starts_with("p-"));
    }
}
