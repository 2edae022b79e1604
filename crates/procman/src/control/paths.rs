//! Where the server for a config lives: one deterministic name per canonical config path.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ControlError;

/// Environment variable that overrides the runtime directory.
pub const RUNTIME_DIR_ENV: &str = "PROCMAN_RUNTIME_DIR";

/// Longest kept prefix of the sanitized parent directory name.
const MAX_SANITIZED: usize = 32;

/// Where a config's server lives: `{RUNTIME}/procman-{sanitize(D)}-{hash(P)}.{fifo|sock|json}`,
/// so `start`/`stop`/`status` find the server from the config path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePaths {
    /// The canonical config path.
    pub config: PathBuf,
    /// The FIFO that accepts 0.12-compatible one-way messages.
    pub fifo: PathBuf,
    /// The Unix socket that accepts requests with replies.
    pub socket: PathBuf,
    /// The discovery file ([`super::ServerInfo`]) written by the running server.
    pub discovery: PathBuf,
}

impl RuntimePaths {
    /// The paths for `config` in [`RuntimePaths::runtime_dir`]. The config must exist: it
    /// is canonicalized so that every spelling of its path finds the same server.
    pub fn for_config(config: &Path) -> Result<RuntimePaths, ControlError> {
        Self::in_dir(config, &Self::runtime_dir()?)
    }

    /// The paths for `config` in an explicit runtime directory (tests, embedding).
    pub fn in_dir(config: &Path, runtime_dir: &Path) -> Result<RuntimePaths, ControlError> {
        let canonical = canonical(config)?;
        let stem = stem(&canonical);
        Ok(RuntimePaths {
            fifo: runtime_dir.join(format!("{stem}.fifo")),
            socket: runtime_dir.join(format!("{stem}.sock")),
            discovery: runtime_dir.join(format!("{stem}.json")),
            config: canonical,
        })
    }

    /// The private directory of this user's servers, created (mode 0700) if missing and
    /// verified before use (a real directory, not a symlink, owned by this user, writable
    /// by no one else): `$PROCMAN_RUNTIME_DIR` if set and non-empty, else
    /// `$XDG_RUNTIME_DIR/procman`, else `procman-{uid}` in the system temp dir.
    pub fn runtime_dir() -> Result<PathBuf, ControlError> {
        let dir = runtime_dir_path(|name| std::env::var_os(name));
        ensure_private(&dir)?;
        Ok(dir)
    }

    /// The procref service name for this config (`procman-{sanitized}-{hash}`, at most 57
    /// bytes of `[A-Za-z0-9_-]`), so shared mode keys its reference count per config.
    pub fn service_name(&self) -> String {
        stem(&self.config)
    }
}

/// Where [`RuntimePaths::runtime_dir`] is, given the environment.
fn runtime_dir_path(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name| var(name).filter(|d| !d.is_empty()).map(PathBuf::from);
    set(RUNTIME_DIR_ENV)
        .or_else(|| set("XDG_RUNTIME_DIR").map(|d| d.join("procman")))
        .unwrap_or_else(|| {
            let uid = rustix::process::geteuid().as_raw();
            std::env::temp_dir().join(format!("procman-{uid}"))
        })
}

fn ensure_private(dir: &Path) -> Result<(), ControlError> {
    procref::discovery::ensure_private_dir(dir).map_err(|e| ControlError::RuntimeDir {
        path: dir.to_owned(),
        message: e.to_string(),
    })
}

fn canonical(config: &Path) -> Result<PathBuf, ControlError> {
    std::fs::canonicalize(config).map_err(|source| ControlError::Config {
        path: config.to_owned(),
        source,
    })
}

/// `procman-{sanitize(D)}-{hash(P)}` for a canonical config path `P` in directory `D`.
fn stem(canonical: &Path) -> String {
    let dir_name = canonical
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("procman-{}-{}", sanitize(&dir_name), path_hash(canonical))
}

/// Keeps up to 32 characters of `[A-Za-z0-9_-]`; an empty result becomes `procman`.
pub(crate) fn sanitize(name: &str) -> String {
    let kept: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(MAX_SANITIZED)
        .collect();
    if kept.is_empty() {
        "procman".to_owned()
    } else {
        kept
    }
}

/// First 8 bytes of SHA-256 over the path's bytes, as 16 lowercase hex digits: unlike
/// 0.12's `DefaultHasher`, stable across builds, platforms and versions.
pub(crate) fn path_hash(path: &Path) -> String {
    let digest = Sha256::digest(path.as_os_str().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_pinned() {
        assert_eq!(
            path_hash(Path::new("/home/alice/project/procman.yaml")),
            "e899e81fa70aed03"
        );
    }

    #[test]
    fn sanitize_rules() {
        assert_eq!(sanitize("my-app_2"), "my-app_2");
        assert_eq!(sanitize("a b.c/d é"), "abcd");
        assert_eq!(sanitize(""), "procman");
        assert_eq!(sanitize("..."), "procman");
        let long = "x".repeat(40);
        assert_eq!(sanitize(&long), "x".repeat(32));
    }

    #[test]
    fn deterministic_and_distinct() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("alpha");
        let b = tmp.path().join("beta");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        for f in [
            a.join("procman.yaml"),
            a.join("other.yaml"),
            b.join("procman.yaml"),
        ] {
            std::fs::write(&f, "x: true\n").unwrap();
        }
        let rt = tmp.path().join("rt");
        let p1 = RuntimePaths::in_dir(&a.join("procman.yaml"), &rt).unwrap();
        let again = RuntimePaths::in_dir(&a.join("../alpha/./procman.yaml"), &rt).unwrap();
        assert_eq!(p1, again);
        let p2 = RuntimePaths::in_dir(&a.join("other.yaml"), &rt).unwrap();
        let p3 = RuntimePaths::in_dir(&b.join("procman.yaml"), &rt).unwrap();
        assert_ne!(p1.fifo, p2.fifo);
        assert_ne!(p1.fifo, p3.fifo);
        assert_ne!(p2.socket, p3.socket);

        let name = p1.fifo.file_name().unwrap().to_str().unwrap();
        let hash = path_hash(&p1.config);
        assert_eq!(name, format!("procman-alpha-{hash}.fifo"));
        assert_eq!(p1.socket, rt.join(format!("procman-alpha-{hash}.sock")));
        assert_eq!(p1.discovery, rt.join(format!("procman-alpha-{hash}.json")));
        assert_eq!(p1.service_name(), format!("procman-alpha-{hash}"));
        assert!(p1.service_name().len() <= 100);
    }

    #[test]
    fn runtime_dir_is_the_override_else_xdg_else_per_user_temp() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let path = |vars| runtime_dir_path(env(vars));
        assert_eq!(
            path(&[(RUNTIME_DIR_ENV, "/r"), ("XDG_RUNTIME_DIR", "/x")]),
            PathBuf::from("/r")
        );
        assert_eq!(
            path(&[(RUNTIME_DIR_ENV, ""), ("XDG_RUNTIME_DIR", "/x")]),
            PathBuf::from("/x/procman")
        );
        let uid = rustix::process::geteuid().as_raw();
        assert_eq!(
            path(&[("XDG_RUNTIME_DIR", "")]),
            std::env::temp_dir().join(format!("procman-{uid}"))
        );
    }

    #[test]
    fn runtime_dir_is_created_private_and_planted_ones_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("fresh");
        ensure_private(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let target = tmp.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        for (dir, why) in [(&link, "symlink"), (&open, "write to it")] {
            let err = ensure_private(dir).unwrap_err().to_string();
            assert!(err.contains("cannot use runtime directory"), "{err}");
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn missing_config_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope.yaml");
        let err = RuntimePaths::in_dir(&missing, tmp.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&missing.display().to_string()), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }
}
