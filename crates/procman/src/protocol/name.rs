//! [`ProcessName`]: the one type for a process's name, checked once where it is made.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest name a user may give, in characters. Derived names (`web-3`, `web.2`) may add
/// a short suffix.
pub const MAX_NAME: usize = 64;

/// The name the supervisor's own lines appear under; no process may take it.
pub const SUPERVISOR_NAME: &str = "procman";

/// A process's name: a top-level key of `procman.yaml`, the name of a `run` request, or one
/// derived from those (`for_each` and replica instances, deduplicated runtime names).
///
/// Valid names are non-empty, at most [`MAX_NAME`] characters, contain no control
/// character, no bidirectional or invisible formatting character and no `/`, and are not
/// [`SUPERVISOR_NAME`]. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcessName(Arc<str>);

/// Why a string is not a valid [`ProcessName`]; its `Display` is one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// Empty or only whitespace.
    #[error("a process name must not be empty")]
    Empty,
    /// Longer than [`MAX_NAME`] characters.
    #[error("process name `{shown}…` is {len} characters long; names are limited to {MAX_NAME}")]
    TooLong {
        /// The first characters of the name.
        shown: String,
        /// Its length in characters.
        len: usize,
    },
    /// Contains a control character, a bidirectional or invisible formatting character,
    /// or `/`.
    #[error(
        "process name {0:?} contains {1}; names may not contain `/`, control characters or bidirectional/invisible formatting characters"
    )]
    BadCharacter(String, &'static str),
    /// The supervisor's own name.
    #[error("`{SUPERVISOR_NAME}` is reserved for the supervisor's own lines; choose another name")]
    Reserved,
}

/// Bidirectional overrides, isolates and marks, and zero-width characters: printed in a
/// lifecycle line or a prefix, they reorder or hide the text around them (`web\u{202E}…`
/// would show another process's name).
fn reorders_text(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

impl ProcessName {
    /// Checks `name` and makes it a process name.
    pub fn new(name: &str) -> Result<ProcessName, InvalidName> {
        if name.trim().is_empty() {
            return Err(InvalidName::Empty);
        }
        let len = name.chars().count();
        if len > MAX_NAME {
            return Err(InvalidName::TooLong {
                shown: name.chars().take(24).collect(),
                len,
            });
        }
        if let Some(c) = name
            .chars()
            .find(|&c| c.is_control() || c == '/' || reorders_text(c))
        {
            let what = match c {
                '/' => "`/`",
                c if c.is_control() => "a control character",
                _ => "a bidirectional or invisible formatting character",
            };
            return Err(InvalidName::BadCharacter(name.to_owned(), what));
        }
        if name == SUPERVISOR_NAME {
            return Err(InvalidName::Reserved);
        }
        Ok(ProcessName(name.into()))
    }

    /// `{self}{separator}{n}`: an instance or deduplicated name (`web-0`, `web.1`). The
    /// suffix may take it past [`MAX_NAME`]; it stays valid otherwise.
    pub fn with_suffix(&self, separator: char, n: impl fmt::Display) -> ProcessName {
        ProcessName(format!("{self}{separator}{n}").into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProcessName {
    type Error = InvalidName;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        ProcessName::new(&name)
    }
}

impl From<ProcessName> for String {
    fn from(name: ProcessName) -> String {
        name.0.to_string()
    }
}

impl std::ops::Deref for ProcessName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ProcessName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ProcessName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ProcessName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for ProcessName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for ProcessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProcessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_and_each_refusal() {
        assert_eq!(ProcessName::new("web").unwrap(), "web");
        assert_eq!(
            ProcessName::new("redis-server.1").unwrap().as_str(),
            "redis-server.1"
        );
        assert_eq!(
            ProcessName::new(&"x".repeat(MAX_NAME)).unwrap().len(),
            MAX_NAME
        );
        assert_eq!(ProcessName::new(""), Err(InvalidName::Empty));
        assert_eq!(ProcessName::new("  "), Err(InvalidName::Empty));
        assert!(matches!(
            ProcessName::new(&"x".repeat(MAX_NAME + 1)),
            Err(InvalidName::TooLong { len: 65, .. })
        ));
        assert!(matches!(
            ProcessName::new("a/b"),
            Err(InvalidName::BadCharacter(_, "`/`"))
        ));
        assert!(matches!(
            ProcessName::new("a\nb"),
            Err(InvalidName::BadCharacter(_, "a control character"))
        ));
        assert!(matches!(
            ProcessName::new("web\u{202E}nimda"),
            Err(InvalidName::BadCharacter(
                _,
                "a bidirectional or invisible formatting character"
            ))
        ));
        assert!(ProcessName::new("数据库-é").is_ok());
        assert_eq!(ProcessName::new("procman"), Err(InvalidName::Reserved));
        let e = ProcessName::new("procman").unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn derived_names_and_serde() {
        let web = ProcessName::new("web").unwrap();
        assert_eq!(web.with_suffix('-', 0), "web-0");
        assert_eq!(web.with_suffix('.', 2), "web.2");
        assert_eq!(serde_json::to_string(&web).unwrap(), "\"web\"");
        let back: ProcessName = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(back, web);
        assert!(serde_json::from_str::<ProcessName>("\"procman\"").is_err());
    }
}
