//! What every format needs to know about a loaded config beyond one process: groups of
//! instances, which process serves a `url` or `tcp` dependency, the environment layers,
//! the `procman wait` arguments of a condition, and what no format can express.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, Dependency, DependencyKind, FileFormat, ProcessSpec, template};

use super::Gaps;

/// A loaded config with the command line's additions, as the formats see it.
pub struct Stack<'a> {
    /// The loaded config.
    pub config: &'a Config,
    /// The application's name (`--app`, default: the config's directory).
    pub app: String,
    /// `-e KEY=VALUE` flags: every process gets them, above the global env files.
    pub extra_env: &'a BTreeMap<String, String>,
    /// `--port NAME=PORT`: NAME serves PORT, whatever the processes mention.
    pub ports: &'a [(String, u16)],
}

/// A `url` or `tcp` dependency's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Host as written (IPv6 without brackets).
    pub host: String,
    /// Port (80 for an `http://` URL without one).
    pub port: u16,
    /// For a URL: path and query (`/` when empty).
    pub path: Option<String>,
}

impl Address {
    /// The address of a `url` or `tcp` dependency.
    pub fn of(kind: &DependencyKind) -> Option<Address> {
        match kind {
            DependencyKind::Http { url, .. } => {
                let uri = ureq::http::Uri::try_from(url.as_str()).ok()?;
                let default_port = match uri.scheme_str() {
                    Some("https") => 443,
                    _ => 80,
                };
                Some(Address {
                    host: uri.host()?.trim_matches(['[', ']']).to_owned(),
                    port: uri.port_u16().unwrap_or(default_port),
                    path: Some(
                        uri.path_and_query()
                            .map_or("/".to_owned(), |p| p.as_str().to_owned()),
                    ),
                })
            }
            DependencyKind::Tcp { address } => {
                let (host, port) = address.rsplit_once(':')?;
                Some(Address {
                    host: host.trim_matches(['[', ']']).to_owned(),
                    port: port.parse().ok()?,
                    path: None,
                })
            }
            _ => None,
        }
    }

    /// Whether the host is this machine (where `procman run` would find the server).
    pub fn is_local(&self) -> bool {
        let host = self.host.to_ascii_lowercase();
        host == "localhost"
            || host.ends_with(".localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
    }
}

/// Who serves a local address, as far as the config tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// This process or group (by its template name).
    Found(String),
    /// No process of the config mentions the port.
    None,
    /// Several do; `--port NAME=PORT` decides.
    Ambiguous(Vec<String>),
}

impl<'a> Stack<'a> {
    /// The processes a `process_exited: name` waits for: the process, or every instance
    /// of the group `name`.
    pub fn exited_targets(&self, name: &str) -> Vec<&'a ProcessSpec> {
        match self.config.process(name) {
            Some(spec) => vec![spec],
            None => self
                .config
                .processes
                .iter()
                .filter(|p| p.group.as_deref() == Some(name))
                .collect(),
        }
    }

    /// The name a process is known by once groups are folded: its template's for an
    /// instance, its own otherwise.
    pub fn base_name(spec: &ProcessSpec) -> &str {
        spec.group.as_deref().unwrap_or(&spec.name)
    }

    /// Which process serves `port` for `dependent`: the `--port` flags decide when one
    /// names the port; otherwise the one other process (or group) whose `env` has the port
    /// as a whole value, or whose `run` has it as a whole number.
    pub fn server_of(&self, dependent: &ProcessSpec, port: u16) -> Server {
        let named: Vec<&String> = self
            .ports
            .iter()
            .filter(|(_, p)| *p == port)
            .map(|(name, _)| name)
            .collect();
        if let [name, ..] = named.as_slice() {
            return if name.as_str() == Self::base_name(dependent) {
                Server::None
            } else {
                Server::Found((*name).clone())
            };
        }
        let port_text = port.to_string();
        let mut found: Vec<String> = Vec::new();
        for spec in &self.config.processes {
            let name = Self::base_name(spec);
            if name == Self::base_name(dependent) || found.iter().any(|f| f == name) {
                continue;
            }
            let in_env = spec.env.values().any(|v| v.trim() == port_text);
            if in_env || mentions_number(&spec.run, &port_text) {
                found.push(name.to_owned());
            }
        }
        match found.len() {
            0 => Server::None,
            1 => Server::Found(found.remove(0)),
            _ => Server::Ambiguous(found),
        }
    }

    /// The environment a process gets from procman, beyond the inherited one: global env
    /// files, `-e`, its env files, `env`, its instance variable, in procman's order.
    pub fn environment(&self, spec: &ProcessSpec) -> BTreeMap<String, String> {
        let mut env = self.config.file_env.clone();
        env.extend(self.extra_env.clone());
        env.extend(spec.file_env.clone());
        env.extend(spec.env.clone());
        env.extend(spec.instance_env.clone());
        env
    }

    /// What a process sets itself (`-e`, `env`, its instance variable): what a format writes
    /// inline, while env files are referenced.
    pub fn inline_env(&self, spec: &ProcessSpec) -> BTreeMap<String, String> {
        let mut env = self.extra_env.clone();
        env.extend(spec.env.clone());
        env.extend(spec.instance_env.clone());
        env
    }

    /// Reports the keys an engine would resolve differently from procman: `files_win` for
    /// systemd (`EnvironmentFile=` beats `Environment=`), else inline values beat files
    /// (Compose, Kubernetes).
    pub fn precedence_gaps(
        &self,
        spec: &ProcessSpec,
        files_win: bool,
        engine: &str,
        gaps: &mut Gaps,
    ) {
        let wanted = self.environment(spec);
        let mut files = self.config.file_env.clone();
        files.extend(spec.file_env.clone());
        let inline = self.inline_env(spec);
        let mut got = BTreeMap::new();
        if files_win {
            got.extend(inline.clone());
            got.extend(files);
        } else {
            got.extend(files);
            got.extend(inline);
        }
        for (key, value) in &wanted {
            if got.get(key) != Some(value) {
                gaps.add(
                    &spec.name,
                    format!("env {key}"),
                    format!("{engine} would take another value than procman does (an env file and an inline value both set it, in the opposite precedence); set it in one place"),
                );
            }
        }
    }

    /// The env files a process reads: the global ones, then its own.
    pub fn env_files(&self, spec: &'a ProcessSpec) -> impl Iterator<Item = &'a PathBuf> {
        self.config.env_files.iter().chain(&spec.env_files)
    }

    /// What no format expresses: templates, `output_matches`, values `file_contains`
    /// exports.
    pub fn common_gaps(&self, spec: &'a ProcessSpec, engine: &str, gaps: &mut Gaps) {
        let template_gap = |gaps: &mut Gaps, key: &str, text: &str| {
            for (process, name) in template::references(text) {
                gaps.add(
                    &spec.name,
                    key,
                    format!("`${{{{ {process}.{name} }}}}` is filled from procman's $PROCMAN_OUTPUT files, which {engine} does not have; it is written as is"),
                );
            }
        };
        template_gap(gaps, "run", &spec.run);
        for (key, value) in &spec.env {
            template_gap(gaps, &format!("env {key}"), value);
        }
        for (index, dep) in spec.depends.iter().enumerate() {
            match &dep.kind {
                DependencyKind::OutputMatches { process, .. } => gaps.add(
                    &spec.name,
                    format!("depends[{index}]"),
                    format!("output_matches on `{process}` has no {engine} equivalent; left out"),
                ),
                DependencyKind::FileContains { env: Some(var), .. } => gaps.add(
                    &spec.name,
                    format!("depends[{index}]"),
                    format!("file_contains is waited for, but the value is not exported as ${var}: {engine} cannot pass it to the process"),
                ),
                _ => {}
            }
        }
    }

    /// Env files the engine reads itself (systemd, Compose) in a syntax it reads
    /// differently from procman.
    pub fn env_file_gaps(&self, spec: &'a ProcessSpec, engine: &str, gaps: &mut Gaps) {
        for file in self.env_files(spec) {
            if let Some(line) = unportable_env_line(file) {
                gaps.add(
                    &spec.name,
                    format!("env_file {}", file.display()),
                    format!("line {line} uses quotes, `export` or escapes, which {engine} reads differently from procman; keep to plain KEY=VALUE lines"),
                );
            }
        }
    }

    /// Relative dependency paths resolved against the config's directory (procman runs
    /// there, while an engine runs checks in the process's working directory).
    pub fn absolute(&self, path: &Path) -> PathBuf {
        clean(&self.config.dir.join(path))
    }

    /// A process's working directory: its `cwd`, else the config's directory (where
    /// `procman run` is normally started).
    pub fn cwd(&self, spec: &ProcessSpec) -> PathBuf {
        clean(spec.cwd.as_deref().unwrap_or(&self.config.dir))
    }

    /// The arguments after `procman` that wait for `dep`, as procman itself would; `map`
    /// turns this machine's paths into the engine's. With `check_once`, one check without
    /// retrying (a health check).
    pub fn wait_args(
        &self,
        dep: &Dependency,
        map: &dyn Fn(&Path) -> String,
        check_once: bool,
    ) -> Vec<String> {
        // `procman wait` expands `$VAR` as the config does; the config already did.
        let literal = |s: &str| s.replace('$', "$$");
        let path = |p: &Path| literal(&map(&self.absolute(p)));
        let mut args = vec!["wait".to_owned()];
        let mut push = |flag: &str, value: String| {
            args.push(flag.to_owned());
            args.push(value);
        };
        match &dep.kind {
            DependencyKind::Http { url, code } => {
                push("--url", literal(url));
                push("--code", code.to_string());
            }
            DependencyKind::Tcp { address } => push("--tcp", literal(address)),
            DependencyKind::PathExists { path: p } => push("--path", path(p)),
            DependencyKind::FileContains {
                path: p,
                format,
                key,
                ..
            } => {
                push("--file-contains", path(p));
                push(
                    "--format",
                    match format {
                        FileFormat::Json => "json",
                        FileFormat::Yaml => "yaml",
                    }
                    .into(),
                );
                push("--key", literal(key));
            }
            DependencyKind::NotListening { address } => push("--not-listening", literal(address)),
            DependencyKind::NotExists { path: p } => push("--not-exists", path(p)),
            DependencyKind::NotRunning { pattern } => push("--not-running", literal(pattern)),
            DependencyKind::ProcessExited { .. } | DependencyKind::OutputMatches { .. } => {
                return Vec::new();
            }
        }
        if check_once {
            args.push("--no-retry".into());
            return args;
        }
        push("--timeout", duration_arg(dep.timeout));
        push("--poll-interval", duration_arg(dep.poll_interval));
        if !dep.retry {
            args.push("--no-retry".into());
        }
        args
    }
}

/// `path` without `.` components (`/srv/app/.` is `/srv/app`).
pub fn clean(path: &Path) -> PathBuf {
    path.components().collect()
}

/// The shell command procman runs `script` with: `shell` with its flags (bash gets
/// `pipefail`, any other shell the POSIX `-e -u`).
pub fn shell_command(shell: &str, script: &str) -> Vec<String> {
    let is_bash = Path::new(shell).file_name().is_some_and(|n| n == "bash");
    let flags: &[&str] = if is_bash {
        &["-e", "-u", "-o", "pipefail", "-c"]
    } else {
        &["-e", "-u", "-c"]
    };
    std::iter::once(shell)
        .chain(flags.iter().copied())
        .chain(std::iter::once(script))
        .map(str::to_owned)
        .collect()
}

/// A duration as `procman wait` and engines read it: `1500ms`, `2s`.
pub fn duration_arg(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// Whole seconds, rounded up (engines that count in seconds must not cut a grace short).
pub fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

/// Whether `number` appears in `text` with no digit on either side.
fn mentions_number(text: &str, number: &str) -> bool {
    text.match_indices(number).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + number.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// The first line (1-based) of an env file that engines read differently from procman:
/// quoted values, `export`, backslashes, or a ` #` comment after a value. `None` when the
/// file is plain (or unreadable: the loader already read it).
fn unportable_env_line(path: &Path) -> Option<usize> {
    let text = crate::config::read_text(path).ok()?;
    text.lines().enumerate().find_map(|(index, line)| {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let value = line.split_once('=').map_or("", |(_, v)| v);
        let plain = !line.starts_with("export ")
            && !value.starts_with(['"', '\''])
            && !value.contains(['\\', '$'])
            && !value.contains(" #")
            && value.trim() == value;
        (!plain).then_some(index + 1)
    })
}

/// A short stable hash of `text` (hex), to keep names unique after cleaning them.
pub fn short_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest[..3].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_urls_and_tcp() {
        let url = DependencyKind::Http {
            url: "http://127.0.0.1:8765/health?x=1".into(),
            code: 200,
        };
        let address = Address::of(&url).unwrap();
        assert_eq!(
            (address.host.as_str(), address.port, address.path.as_deref()),
            ("127.0.0.1", 8765, Some("/health?x=1"))
        );
        assert!(address.is_local());
        let tcp = DependencyKind::Tcp {
            address: "[::1]:5432".into(),
        };
        assert_eq!(Address::of(&tcp).unwrap().host, "::1");
        let remote = DependencyKind::Http {
            url: "http://db.example:80".into(),
            code: 200,
        };
        assert!(!Address::of(&remote).unwrap().is_local());
    }

    #[test]
    fn numbers_are_matched_whole() {
        assert!(mentions_number("serve --port 8080", "8080"));
        assert!(mentions_number("x=8080;", "8080"));
        assert!(!mentions_number("serve --port 18080", "8080"));
        assert!(!mentions_number("serve --port 80801", "8080"));
    }

    #[test]
    fn shells_and_durations() {
        assert_eq!(
            shell_command("/usr/bin/bash", "true"),
            ["/usr/bin/bash", "-e", "-u", "-o", "pipefail", "-c", "true"]
        );
        assert_eq!(
            shell_command("sh", "true"),
            ["sh", "-e", "-u", "-c", "true"]
        );
        assert_eq!(duration_arg(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_arg(Duration::from_secs(60)), "60s");
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::MAX), u64::MAX);
    }
}
