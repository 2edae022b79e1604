//! systemd: one service unit per process (a template unit for `replicas` when every
//! instance is the same but for its index) and a target that wants every `autostart`
//! process. See docs/export-systemd.md.
//!
//! - `once` → `Type=oneshot` + `RemainAfterExit=yes` (so `After=` waits for its exit and
//!   `Requires=` fails dependents when it fails); others `Type=exec`.
//! - `run` → `ExecStart=` the shell procman uses, with its flags, the script one quoted word.
//! - `process_exited` → `After=` + `Requires=`; other conditions → `ExecStartPre=procman wait`.
//! - restart policy → `Restart=`, `RestartSec=`, `StartLimitBurst=`/`StartLimitIntervalSec=`,
//!   and from systemd 254 `RestartSteps=`/`RestartMaxDelaySec=` for the doubling delay.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use super::stack::{ceil_secs, duration_arg, shell_command, short_hash};
use super::{File, Gaps, Stack};
use crate::config::{DependencyKind, ProcessSpec, REPLICA_VAR, Restart, RestartPolicy};

/// The first systemd with `RestartSteps=` and `RestartMaxDelaySec=`.
pub const RESTART_STEPS_SINCE: u32 = 254;
/// Assumed when `--systemd-version` is not given and no local systemd answers (Debian 12's).
pub const DEFAULT_VERSION: u32 = 252;
/// Longest unit name systemd accepts.
const UNIT_NAME_MAX: usize = 255;
/// Added to the sum of a unit's wait timeouts for its start timeout.
const START_SLACK: Duration = Duration::from_secs(30);
/// Time spans from here on are `infinity`: systemd counts microseconds in 64 bits and
/// ignores a setting past that (falling back to its default); 2^63 µs is 292 000 years.
const INFINITE_SPAN: Duration = Duration::from_micros(1 << 63);

/// `procman export systemd` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--user`: units for the user's manager (the target is wanted by `default.target`).
    pub user: bool,
    /// The systemd version the units are for (decides `RestartSteps=`).
    pub version: u32,
    /// The procman binary that `ExecStartPre=` runs (`procman wait`).
    pub procman: PathBuf,
    /// The shell that runs `run` (an absolute path).
    pub shell: PathBuf,
}

/// The version of the local systemd (`systemctl --version`), if any.
pub fn local_version() -> Option<u32> {
    let output = std::process::Command::new("systemctl")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The units and the target.
pub fn render(stack: &Stack<'_>, options: &Options, gaps: &mut Gaps) -> Result<Vec<File>> {
    for (what, path) in [("--procman", &options.procman), ("--shell", &options.shell)] {
        if !path.is_absolute() {
            bail!("{what} must be an absolute path, got {}", path.display());
        }
    }
    let names = Names { app: &stack.app };
    let mut files = Vec::new();
    let mut wanted = Vec::new();
    let mut done_groups: Vec<&str> = Vec::new();
    for spec in &stack.config.processes {
        stack.common_gaps(spec, "systemd", gaps);
        stack.env_file_gaps(spec, "systemd", gaps);
        stack.precedence_gaps(spec, true, "systemd", gaps);
        unit_gaps(spec, options, gaps);
        if let (Some(group), Some(_)) = (spec.group.as_deref(), spec.replicas) {
            if done_groups.contains(&group) {
                continue;
            }
            done_groups.push(group);
            let instances = stack.exited_targets(group);
            let texts: Vec<String> = instances
                .iter()
                .map(|i| unit_text(stack, i, options, &names, true))
                .collect::<Result<_>>()?;
            if texts.windows(2).all(|w| w[0] == w[1]) {
                files.push(File {
                    name: names.template(group),
                    text: texts[0].clone(),
                });
                if spec.autostart {
                    wanted.extend(instances.iter().map(|i| names.unit(i)));
                }
                continue;
            }
            for instance in instances {
                files.push(File {
                    name: names.unit(instance),
                    text: unit_text(stack, instance, options, &names, false)?,
                });
                if instance.autostart {
                    wanted.push(names.unit(instance));
                }
            }
            continue;
        }
        files.push(File {
            name: names.unit(spec),
            text: unit_text(stack, spec, options, &names, false)?,
        });
        if spec.autostart {
            wanted.push(names.unit(spec));
        }
    }
    let mut target = String::new();
    let _ = writeln!(target, "[Unit]");
    let _ = writeln!(
        target,
        "Description={}",
        specifiers(&format!(
            "{} (procman.yaml {})",
            stack.app,
            super::one_line(&stack.config.path.to_string_lossy())
        ))
    );
    for unit in &wanted {
        let _ = writeln!(target, "Wants={unit}");
    }
    let _ = writeln!(target, "\n[Install]");
    let _ = writeln!(
        target,
        "WantedBy={}",
        if options.user {
            "default.target"
        } else {
            "multi-user.target"
        }
    );
    files.push(File {
        name: names.target(),
        text: target,
    });
    Ok(files)
}

/// What systemd cannot express for one process.
fn unit_gaps(spec: &ProcessSpec, options: &Options, gaps: &mut Gaps) {
    for (index, watch) in spec.watch.iter().enumerate() {
        gaps.add(
            &spec.name,
            format!("watch[{index}] ({})", watch.name),
            "systemd does not check a running service's health; left out",
        );
    }
    let policy = spec.restart;
    if policy.when != Restart::No
        && policy.max_delay > policy.delay
        && options.version < RESTART_STEPS_SINCE
    {
        gaps.add(
            &spec.name,
            "restart_delay",
            format!(
                "systemd {} waits RestartSec= before every restart; doubling it up to max_restart_delay needs systemd {RESTART_STEPS_SINCE} (--systemd-version {RESTART_STEPS_SINCE})",
                options.version
            ),
        );
    }
}

/// One service unit. With `template`, the replica index is `%i` and the description names
/// the group, so identical texts mean one template unit fits every instance.
fn unit_text(
    stack: &Stack<'_>,
    spec: &ProcessSpec,
    options: &Options,
    names: &Names<'_>,
    template: bool,
) -> Result<String> {
    let mut unit = String::new();
    let shown = if template {
        Stack::base_name(spec)
    } else {
        &spec.name
    };
    let _ = writeln!(unit, "[Unit]");
    let _ = writeln!(
        unit,
        "Description={}",
        specifiers(&format!("{} (procman process of {})", shown, stack.app))
    );
    let _ = writeln!(unit, "PartOf={}", names.target());
    let mut waits = Vec::new();
    let mut waited = Duration::ZERO;
    for dep in &spec.depends {
        waited = waited.saturating_add(dep.timeout);
        match &dep.kind {
            DependencyKind::ProcessExited { name } => {
                for target in stack.exited_targets(name) {
                    let unit_name = names.unit(target);
                    let _ = writeln!(unit, "After={unit_name}");
                    let _ = writeln!(unit, "Requires={unit_name}");
                }
            }
            DependencyKind::OutputMatches { .. } => {}
            _ => {
                waits.push(stack.wait_args(dep, &|p| p.to_string_lossy().into_owned(), false));
            }
        }
    }
    // Waiting is part of starting: allow every dependency its timeout (a oneshot's start
    // is its whole run, which must stay unbounded).
    let start_bound = (!spec.once && !spec.depends.is_empty())
        .then(|| Duration::from_secs(ceil_secs(waited.saturating_add(START_SLACK))));
    if let Some(bound) = start_bound {
        let _ = writeln!(unit, "JobTimeoutSec={}", span(bound));
    }
    let policy = spec.restart;
    if policy.when != Restart::No {
        match policy.max_restarts {
            // A failing streak of max_restarts + 1 starts lasts less than this: each run
            // shorter than max_delay (a longer one ends the streak) plus each delay.
            Some(max) => {
                let runs = policy.max_delay.saturating_mul(max.saturating_add(1));
                let interval = total_delay(&policy, max).saturating_add(runs);
                let _ = writeln!(
                    unit,
                    "StartLimitIntervalSec={}",
                    span(Duration::from_secs(ceil_secs(interval)))
                );
                let _ = writeln!(unit, "StartLimitBurst={}", max.saturating_add(1));
            }
            None => {
                let _ = writeln!(unit, "StartLimitIntervalSec=0");
            }
        }
    }

    let _ = writeln!(unit, "\n[Service]");
    if spec.once {
        let _ = writeln!(unit, "Type=oneshot\nRemainAfterExit=yes");
    } else {
        let _ = writeln!(unit, "Type=exec");
    }
    let cwd = stack.cwd(spec);
    let _ = writeln!(unit, "WorkingDirectory={}", path_value(&cwd)?);
    for file in stack.env_files(spec) {
        let _ = writeln!(unit, "EnvironmentFile={}", path_value(file)?);
    }
    let mut env = stack.inline_env(spec);
    if template {
        env.remove(REPLICA_VAR);
        let _ = writeln!(unit, "Environment={REPLICA_VAR}=%i");
    }
    env.insert("PROCMAN_OUTPUT".into(), "/dev/null".into());
    for (key, value) in &env {
        let _ = writeln!(
            unit,
            "Environment={}",
            word(&format!("{key}={value}"), false)
        );
    }
    for args in &waits {
        let mut line = word(&options.procman.to_string_lossy(), true);
        for arg in args {
            line.push(' ');
            line.push_str(&word(arg, true));
        }
        let _ = writeln!(unit, "ExecStartPre={line}");
    }
    let command = shell_command(&options.shell.to_string_lossy(), &spec.run);
    let words: Vec<String> = command.iter().map(|w| word(w, true)).collect();
    let _ = writeln!(unit, "ExecStart={}", words.join(" "));
    if let Some(bound) = start_bound
        && !waits.is_empty()
    {
        let _ = writeln!(unit, "TimeoutStartSec={}", span(bound));
    }
    let _ = writeln!(unit, "TimeoutStopSec={}", span(spec.stop_timeout));
    let restart = match policy.when {
        Restart::No => "no",
        Restart::OnFailure => "on-failure",
        Restart::Always => "always",
    };
    let _ = writeln!(unit, "Restart={restart}");
    if policy.when != Restart::No {
        let _ = writeln!(unit, "RestartSec={}", span(policy.delay));
        if policy.max_delay > policy.delay && options.version >= RESTART_STEPS_SINCE {
            // Steps from RestartSec to RestartMaxDelaySec grow geometrically: log2(max/delay)
            // steps double the delay each time, as procman does.
            let ratio = policy.max_delay.as_secs_f64() / policy.delay.as_secs_f64().max(1e-3);
            let steps = ratio.log2().ceil().clamp(1.0, 3600.0) as u32;
            let _ = writeln!(unit, "RestartSteps={steps}");
            let _ = writeln!(unit, "RestartMaxDelaySec={}", span(policy.max_delay));
        }
    }
    Ok(unit)
}

/// A time span setting, or `infinity` from [`INFINITE_SPAN`] on.
fn span(duration: Duration) -> String {
    if duration >= INFINITE_SPAN {
        "infinity".to_owned()
    } else {
        duration_arg(duration)
    }
}

/// The delays before restarts 1 to `max`, summed without overflow. The delay stops
/// doubling by restart 32, so the rest are one product instead of up to 2^32 terms.
fn total_delay(policy: &RestartPolicy, max: u32) -> Duration {
    let doubling = max.min(32);
    let first = (1..=doubling).fold(Duration::ZERO, |sum, n| {
        sum.saturating_add(policy.delay_before(n))
    });
    let rest = policy.delay_before(32).saturating_mul(max - doubling);
    first.saturating_add(rest)
}

/// Unit names: `{app}-{process}.service`, escaped as `systemd-escape` does.
struct Names<'a> {
    app: &'a str,
}

impl Names<'_> {
    fn unit(&self, spec: &ProcessSpec) -> String {
        match (spec.replicas, spec.group.as_deref()) {
            (Some(_), Some(group)) => {
                let index = spec
                    .instance_env
                    .get(REPLICA_VAR)
                    .map_or("0", String::as_str);
                self.name(group, &format!("@{index}.service"))
            }
            _ => self.name(&spec.name, ".service"),
        }
    }

    fn template(&self, group: &str) -> String {
        self.name(group, "@.service")
    }

    fn target(&self) -> String {
        let app = escape(self.app);
        fit(&app, ".target")
    }

    fn name(&self, process: &str, suffix: &str) -> String {
        fit(&format!("{}-{}", escape(self.app), escape(process)), suffix)
    }
}

/// `stem` + `suffix`, the stem shortened (and made unique by a hash) when the whole would
/// exceed systemd's limit.
fn fit(stem: &str, suffix: &str) -> String {
    if stem.len() + suffix.len() <= UNIT_NAME_MAX {
        return format!("{stem}{suffix}");
    }
    let hash = short_hash(stem);
    let mut keep = UNIT_NAME_MAX - suffix.len() - hash.len() - 1;
    // Never cut an escape sequence (`\xNN`) in half.
    while let Some(at) = stem[..keep].rfind('\\') {
        if keep - at >= 4 {
            break;
        }
        keep = at;
    }
    format!("{}-{hash}{suffix}", &stem[..keep])
}

/// Escapes a name for a unit name as `systemd-escape` does (`\xNN` for every byte outside
/// `[A-Za-z0-9:_.]`, and a leading `.`), except that `-` is kept: it only means `/` in
/// escaped paths, and `my-app-web.service` is the name a person writes.
pub fn escape(name: &str) -> String {
    let mut out = String::new();
    for (index, byte) in name.bytes().enumerate() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(byte, b':' | b'_' | b'-')
            || (byte == b'.' && index > 0);
        if keep {
            out.push(byte as char);
        } else {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// One word of a command line or `Environment=` assignment: as is when it holds nothing
/// systemd reads specially, else double-quoted with C escapes. `%` becomes `%%`
/// (specifiers) and, with `dollars` (command lines), `$` becomes `$$` (variables).
pub fn word(text: &str, dollars: bool) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=,+@-".contains(&b));
    if plain {
        return text.to_owned();
    }
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '%' => out.push_str("%%"),
            '$' if dollars => out.push_str("$$"),
            c if c.is_control() => {
                let mut buf = [0; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{byte:02x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text where systemd expands specifiers only.
fn specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// A path setting (`WorkingDirectory=`, `EnvironmentFile=`): specifiers escaped; a path
/// with control characters or one not absolute cannot be written, nor one ending in `\`
/// (systemd joins the next line to it) or a blank (systemd strips it): such settings
/// take no quotes or escapes.
fn path_value(path: &Path) -> Result<String> {
    let text = path.to_string_lossy();
    if !path.is_absolute()
        || text.chars().any(char::is_control)
        || text.ends_with(|c: char| c == '\\' || c.is_ascii_whitespace())
    {
        bail!(
            "cannot write the path {text:?} into a unit: it must be absolute, free of control characters and not end in `\\` or a blank"
        );
    }
    Ok(specifiers(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_systemd() {
        assert_eq!(word("/usr/bin/bash", true), "/usr/bin/bash");
        assert_eq!(word("", true), "\"\"");
        assert_eq!(
            word("echo \"$HOME\" 100%\nls\\", true),
            r#""echo \"$$HOME\" 100%%\nls\\""#
        );
        assert_eq!(word("A=$x y", false), r#""A=$x y""#);
        assert_eq!(word("bell\u{7}", true), r#""bell\x07""#);
        assert_eq!(word(";", true), "\";\"");
    }

    #[test]
    fn names_are_escaped_and_bounded() {
        assert_eq!(escape("web-1"), "web-1");
        assert_eq!(escape("a b/c@d"), r"a\x20b\x2fc\x40d");
        assert_eq!(escape(".hidden"), r"\x2ehidden");
        assert_eq!(escape("é"), r"\xc3\xa9");
        let long = fit(&escape(&"é".repeat(64)), ".service");
        assert!(long.len() <= UNIT_NAME_MAX, "{long}");
        assert!(long.ends_with(".service"));
        let stem = long.trim_end_matches(".service");
        let before_hash = stem.rsplit_once('-').unwrap().0;
        assert_eq!(before_hash.len() % 8, 0, "an escape was cut: {long}");
    }
}
