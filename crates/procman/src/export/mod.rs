//! `procman export`: the loaded config as files an engine runs, one module per engine:
//! [`systemd`] units, a Docker [`compose`] file, [`kubernetes`] objects.
//!
//! Every format works from the loaded [`Config`] (instances expanded, env files read,
//! `$VAR`s expanded), never from the YAML. What a format cannot express is a [`Gap`]:
//! one warning line naming the process and the key, or with `--strict` an error and
//! nothing written.

pub mod compose;
pub mod kubernetes;
mod stack;
pub mod systemd;
mod write;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::{self, Config, ProcessSpec};

pub use stack::{Address, Server, Stack};

/// What to export, where, and how.
#[derive(Debug, Clone)]
pub struct Request {
    /// The config file.
    pub config: PathBuf,
    /// `-e`, `--env-file`, `--no-dotenv`.
    pub load: config::LoadOptions,
    /// Output directory (default `procman-export/FORMAT`).
    pub output: Option<PathBuf>,
    /// Application name (default: the config's directory name).
    pub app: Option<String>,
    /// Make every gap an error.
    pub strict: bool,
    /// The engine and its options.
    pub format: Format,
}

/// The engines.
#[derive(Debug, Clone)]
pub enum Format {
    /// systemd units and a target.
    Systemd(systemd::Options),
    /// A Docker Compose file.
    Compose(compose::Options),
    /// Kubernetes objects.
    Kubernetes(kubernetes::Options),
}

impl Format {
    fn name(&self) -> &'static str {
        match self {
            Format::Systemd(_) => "systemd",
            Format::Compose(_) => "compose",
            Format::Kubernetes(_) => "kubernetes",
        }
    }
}

/// Options shared by the container formats (Compose and Kubernetes).
#[derive(Debug, Clone)]
pub struct Containers {
    /// `--image IMAGE`: the image of every process without its own.
    pub image: Option<String>,
    /// `--image NAME=IMAGE`: a process's (or group's) own image.
    pub images: BTreeMap<String, String>,
    /// `--workdir DIR`: where the config's directory is inside the image.
    pub workdir: String,
    /// `--port NAME=PORT`: which process serves a port that `url`/`tcp` dependencies name.
    pub ports: Vec<(String, u16)>,
    /// `--shell`: the shell that runs `run` inside the image.
    pub shell: String,
    /// `--procman`: the `procman` binary inside the image, for `procman wait`.
    pub procman: String,
}

impl Containers {
    /// The image of a process: its own, its group's, or the default one.
    fn image_of(&self, spec: &ProcessSpec) -> Result<&str> {
        let group = Stack::base_name(spec);
        let own = self.images.get(spec.name.as_str());
        match own.or(self.images.get(group)).or(self.image.as_ref()) {
            Some(image) => Ok(image),
            None => bail!(
                "no image for process `{group}`: pass --image IMAGE for every process, or --image {group}=IMAGE"
            ),
        }
    }

    /// A path of this machine as the containers see it: below the config's directory it
    /// moves to `workdir`; anything else is kept (and only works if the image has it).
    fn map_path(&self, config: &Config, path: &Path) -> String {
        match path.strip_prefix(&config.dir) {
            Ok(rest) if rest.as_os_str().is_empty() => self.workdir.clone(),
            Ok(rest) => format!(
                "{}/{}",
                self.workdir.trim_end_matches('/'),
                rest.to_string_lossy()
            ),
            Err(_) => path.to_string_lossy().into_owned(),
        }
    }

    /// An instance value that is an absolute path below the config's directory, moved the
    /// same way; other values are kept.
    fn map_value(&self, config: &Config, value: &str) -> String {
        let path = Path::new(value);
        if path.is_absolute() && path.starts_with(&config.dir) {
            self.map_path(config, path)
        } else {
            value.to_owned()
        }
    }

    fn check_names(&self, config: &Config) -> Result<()> {
        let known = |name: &str| {
            config.process(name).is_some()
                || config
                    .processes
                    .iter()
                    .any(|p| p.group.as_deref() == Some(name))
        };
        for name in self.images.keys().chain(self.ports.iter().map(|(n, _)| n)) {
            if !known(name) {
                bail!("--image/--port name `{name}` is not a process of the config");
            }
        }
        Ok(())
    }
}

/// One thing a format cannot express: which process, which key, and what happens instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The process (instance) it belongs to.
    pub process: String,
    /// The key, e.g. `watch[0]`, `depends[1]`, `env DB_URL`.
    pub key: String,
    /// What the export does about it.
    pub message: String,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.process, self.key, self.message)
    }
}

/// The gaps found so far, each once, in the order found.
#[derive(Debug, Default)]
pub struct Gaps(Vec<Gap>);

impl Gaps {
    /// Records a gap (a repeat of the same one is dropped).
    pub fn add(&mut self, process: &str, key: impl Into<String>, message: impl Into<String>) {
        let gap = Gap {
            process: process.to_owned(),
            key: key.into(),
            message: message.into(),
        };
        if !self.0.contains(&gap) {
            self.0.push(gap);
        }
    }

    /// The gaps, in the order found.
    pub fn list(&self) -> &[Gap] {
        &self.0
    }
}

/// One file to write: its name in the output directory and its text (without the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// File name (no directories).
    pub name: String,
    /// Contents.
    pub text: String,
}

/// Everything a format produced.
#[derive(Debug, Default)]
pub struct Rendered {
    /// The files.
    pub files: Vec<File>,
    /// What could not be expressed.
    pub gaps: Gaps,
}

/// Renders the config for the requested engine without writing anything.
pub fn render(request: &Request, config: &Config) -> Result<Rendered> {
    let app = app_name(request.app.as_deref(), config)?;
    let ports = match &request.format {
        Format::Compose(options) => options.containers.ports.as_slice(),
        Format::Kubernetes(options) => options.containers.ports.as_slice(),
        Format::Systemd(_) => &[],
    };
    let stack = Stack {
        config,
        app,
        extra_env: &request.load.env,
        ports,
    };
    let mut rendered = Rendered::default();
    rendered.files = match &request.format {
        Format::Systemd(options) => systemd::render(&stack, options, &mut rendered.gaps)?,
        Format::Compose(options) => {
            options.containers.check_names(config)?;
            compose::render(&stack, options, &mut rendered.gaps)?
        }
        Format::Kubernetes(options) => {
            options.containers.check_names(config)?;
            kubernetes::render(&stack, options, &mut rendered.gaps)?
        }
    };
    let mut names = std::collections::BTreeSet::new();
    if let Some(twice) = rendered.files.iter().find(|f| !names.insert(&f.name)) {
        bail!(
            "two objects would be written to {}; rename a process or pass another --app",
            twice.name
        );
    }
    Ok(rendered)
}

/// `procman export`: loads the config, renders it, reports every gap, writes the files.
/// Exit code 1 when the config is invalid or `--strict` found gaps.
pub fn export(request: &Request) -> Result<i32> {
    let config = match config::load(&request.config, &request.load) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    let rendered = render(request, &config)?;
    let level = if request.strict { "error" } else { "warning" };
    for gap in rendered.gaps.list() {
        eprintln!("procman: {level}: {gap}");
    }
    if request.strict && !rendered.gaps.list().is_empty() {
        eprintln!(
            "procman: error: {} item(s) cannot be expressed in {} (--strict); nothing written",
            rendered.gaps.list().len(),
            request.format.name()
        );
        return Ok(1);
    }
    let dir = request
        .output
        .clone()
        .unwrap_or_else(|| Path::new("procman-export").join(request.format.name()));
    let header = format!(
        "{marker}{format}` from {config}: edit that file and export again.\n",
        marker = write::MARKER,
        format = request.format.name(),
        config = one_line(&config.path.to_string_lossy())
    );
    let written = write::write_all(&dir, &rendered.files, &header)
        .with_context(|| format!("writing to {}", dir.display()))?;
    for stale in &written.removed {
        eprintln!("procman: removed {} (no longer exported)", stale.display());
    }
    println!(
        "wrote {} file(s) to {}",
        rendered.files.len(),
        dir.display()
    );
    Ok(0)
}

/// `text` (a path) kept on one line of a comment or description: control characters and
/// what a YAML reader takes for a line break or refuses are written as `\n`, `\u{2028}`.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if yaml::needs_escape(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `--app`, or the config directory's name; must not be empty once cleaned by the formats.
fn app_name(app: Option<&str>, config: &Config) -> Result<String> {
    let name = match app {
        Some(app) => app.to_owned(),
        None => config
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "procman".to_owned()),
    };
    if name.is_empty()
        || name.len() > 64
        || name.contains(['/', '\0'])
        || name.chars().any(char::is_control)
    {
        bail!("invalid --app {name:?}: use 1 to 64 characters, no `/` or control characters");
    }
    Ok(name)
}
