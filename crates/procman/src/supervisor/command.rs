//! Skipping the shell when it cannot matter (GNU make's rule).
//!
//! A `run` script that is one simple command (words of plain characters: no quotes,
//! expansions, globs, redirections, operators, comments or assignments) whose command is
//! not a shell builtin or keyword means the same with and without the shell. Such a script
//! is executed directly, found on the `PATH` of the process's environment as the shell
//! would find it; anything else, and anything in doubt, goes to the shell.
//!
//! The process the user sees is the command itself, which is also what the shell gave:
//! bash and dash execute the last simple command of `-c` in place (as `exec cmd` would),
//! so the command kept the shell's pid there too.
//!
//! Errors keep the shell's exit codes: 127 for a command that is not found, 126 for one
//! that is found but cannot be executed, each with a line on the process's stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How to run a script.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'s> {
    /// Through the shell.
    Shell,
    /// `words` (the command as written, then its arguments) executed from `path`.
    Exec { path: PathBuf, words: Vec<&'s str> },
    /// The command cannot run: `reason` on its stderr, then exit `code`.
    Fail {
        code: i32,
        reason: &'static str,
        command: &'s str,
    },
}

/// Builtins and keywords of bash and POSIX sh, which the shell runs itself or which
/// change its state. `true` and `false` without arguments are exempt (see [`decide`]).
const SHELL_WORDS: &[&str] = &[
    // POSIX special builtins and keywords.
    ".",
    ":",
    "break",
    "case",
    "continue",
    "do",
    "done",
    "elif",
    "else",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "fi",
    "for",
    "if",
    "in",
    "readonly",
    "return",
    "set",
    "shift",
    "then",
    "times",
    "trap",
    "unset",
    "until",
    "while",
    "function",
    "select",
    "time",
    "coproc",
    // Regular builtins of bash and dash.
    "alias",
    "bg",
    "bind",
    "builtin",
    "caller",
    "cd",
    "command",
    "compgen",
    "complete",
    "compopt",
    "declare",
    "dirs",
    "disown",
    "echo",
    "enable",
    "false",
    "fc",
    "fg",
    "getopts",
    "hash",
    "help",
    "history",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "source",
    "suspend",
    "test",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "wait",
    "login",
    "newgrp",
];

/// Environment variables that make the shell run more than the script (a startup file,
/// options such as `xtrace`, exported functions that may shadow the command).
fn env_changes_shell(env: &BTreeMap<String, String>) -> bool {
    ["BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS"]
        .iter()
        .any(|k| env.contains_key(*k))
        || env.keys().any(|k| k.starts_with("BASH_FUNC_"))
}

/// Characters that mean nothing to the shell inside a word.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-./,:+@%=".contains(&b)
}

/// The words of `script` if it is one simple command of plain words.
fn simple_words(script: &str) -> Option<Vec<&str>> {
    let script = script
        .trim_end_matches(['\n', ' ', '\t'])
        .trim_start_matches([' ', '\t']);
    if script.is_empty() || !script.bytes().all(|b| plain(b) || b == b' ' || b == b'\t') {
        return None;
    }
    let mut words: Vec<&str> = script
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect();
    // `exec CMD ARGS` (no options) is CMD ARGS in the shell's place.
    if words.len() > 1 && words[0] == "exec" && !words[1].starts_with('-') {
        words.remove(0);
    }
    let command = words[0];
    let no_arguments = words.len() == 1;
    let exempt = no_arguments && (command == "true" || command == "false");
    let is_word = |w: &&str| *w == command;
    if command.contains(['=', '%']) || command.starts_with('-') {
        return None;
    }
    if SHELL_WORDS.iter().any(is_word) && !exempt {
        return None;
    }
    Some(words)
}

/// Whether `script` can run without the shell, and from where. `env` is the process's
/// complete environment (its `PATH` is searched); `cwd` its working directory.
///
/// `true` and `false` without arguments run as `/usr/bin/true` and `false` when found:
/// they print nothing and exit 0 and 1 like the builtins. Not found, they go to the shell.
pub fn decide<'s>(
    script: &'s str,
    env: &BTreeMap<String, String>,
    cwd: Option<&Path>,
) -> Decision<'s> {
    if env_changes_shell(env) {
        return Decision::Shell;
    }
    let Some(words) = simple_words(script) else {
        return Decision::Shell;
    };
    let command = words[0];
    let at = |path: &Path| match cwd {
        Some(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_owned(),
    };
    if command.contains('/') {
        let path = PathBuf::from(command);
        if at(&path).is_dir() {
            return Decision::Fail {
                code: 126,
                reason: "is a directory",
                command,
            };
        }
        // Missing or not executable: exec says so, with the shell's codes.
        return Decision::Exec { path, words };
    }
    // Without PATH the shell searches its own default list: leave that to it.
    let Some(search) = env.get("PATH") else {
        return Decision::Shell;
    };
    let mut not_executable = None;
    for dir in search.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(command);
        let Ok(meta) = std::fs::metadata(at(&candidate)) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if executable(&at(&candidate)) {
            return Decision::Exec {
                path: candidate,
                words,
            };
        }
        // The shell executes the first such file if nothing executable comes later
        // (and fails with "permission denied").
        not_executable.get_or_insert(candidate);
    }
    match not_executable {
        Some(path) => Decision::Exec { path, words },
        None if command == "true" || command == "false" => Decision::Shell,
        None => Decision::Fail {
            code: 127,
            reason: "command not found",
            command,
        },
    }
}

/// Whether this process may execute `path` (effective ids, as the shell checks).
fn executable(path: &Path) -> bool {
    rustix::fs::accessat(
        rustix::fs::CWD,
        path,
        rustix::fs::Access::EXEC_OK,
        rustix::fs::AtFlags::EACCESS,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(path: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("PATH".to_owned(), path.to_owned())])
    }

    #[test]
    fn only_plain_simple_commands_skip_the_shell() {
        for script in [
            "sleep 10",
            "  sleep\t10\n",
            "exec sleep 10",
            "sleep --for=10 a,b:c+d@e%f",
            "true",
            "./x",
        ] {
            assert!(simple_words(script).is_some(), "{script:?}");
        }
        for script in [
            "",
            "\n",
            "echo hi",
            "cd /tmp",
            "true x",
            "exec",
            "exec -a x sleep 1",
            "FOO=1 sleep 1",
            "sleep $X",
            "sleep ~",
            "sleep 1; sleep 2",
            "sleep 1\nsleep 2",
            "sleep 1 &",
            "sleep 1 | cat",
            "sleep 1 > x",
            "sleep 'a b'",
            "sleep \"a\"",
            "sleep a\\ b",
            "sleep *",
            "sleep ?",
            "sleep [ab]",
            "sleep {1,2}",
            "sleep `x`",
            "sleep #x",
            "(sleep 1)",
            "! sleep",
            "%1",
            "-x",
            ". ./env",
            ": x",
            "[ -f x ]",
            "test -f x",
            "sleep é",
        ] {
            assert!(simple_words(script).is_none(), "{script:?}");
        }
        assert_eq!(simple_words("exec sleep 1"), Some(vec!["sleep", "1"]));
    }

    #[test]
    fn the_environment_can_force_the_shell() {
        for key in [
            "BASH_ENV",
            "ENV",
            "SHELLOPTS",
            "BASHOPTS",
            "BASH_FUNC_sleep%%",
        ] {
            let mut env = env("/usr/bin:/bin");
            env.insert(key.into(), "x".into());
            assert_eq!(decide("sleep 1", &env, None), Decision::Shell, "{key}");
        }
        assert_eq!(decide("sleep 1", &BTreeMap::new(), None), Decision::Shell);
    }

    #[test]
    fn the_path_is_searched_like_the_shell() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(a.join("tool")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("plain"), "").unwrap();
        for (dir, mode) in [(&a, 0o644), (&b, 0o755)] {
            std::fs::write(dir.join("both"), "").unwrap();
            std::fs::set_permissions(dir.join("both"), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        std::fs::write(b.join("tool"), "").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = env(&format!("{}:{}", a.display(), b.display()));
        let exec = |script| match decide(script, &path, None) {
            Decision::Exec { path, .. } => Some(path),
            _ => None,
        };
        // A directory on the way is passed over; an executable file later wins over a
        // plain one earlier; a plain one alone is executed (and fails as the shell does).
        assert_eq!(exec("tool"), Some(b.join("tool")));
        assert_eq!(exec("both x"), Some(b.join("both")));
        assert_eq!(exec("plain"), Some(a.join("plain")));
        assert!(matches!(
            decide("missing", &path, None),
            Decision::Fail { code: 127, .. }
        ));
        assert!(matches!(
            decide("./a", &path, Some(dir.path())),
            Decision::Fail { code: 126, .. }
        ));
        // Relative PATH entries are relative to the process's cwd.
        let relative = env("b");
        assert_eq!(
            decide("tool", &relative, Some(dir.path())),
            Decision::Exec {
                path: PathBuf::from("b/tool"),
                words: vec!["tool"]
            }
        );
        assert_eq!(decide("true", &env(""), Some(dir.path())), Decision::Shell);
    }
}
