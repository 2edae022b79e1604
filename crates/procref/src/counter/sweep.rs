//! Removing this user's abandoned semaphore sets.
//!
//! A set outlives its users only when all of them were killed (or ended without dropping
//! their counter objects): the kernel gives their references and presence back (`SEM_UNDO`)
//! but cannot remove the set. The next user of the name removes it when done;
//! [`sweep_abandoned`] removes every such set at once, for names that may never be used
//! again.

use crate::{Error, Result};

use super::sysv;

/// The kernel's table of semaphore sets: one header line, then one set per line starting
/// with its key and id (both decimal).
const TABLE: &str = "/proc/sysvipc/sem";

/// Removes this user's procref semaphore sets that no one uses: count 0, no counter object
/// or keeper present, startup lock free. A set qualifies only if it has procref's shape and
/// is owned and was created by this user, and if its magic value matches its key (so sets
/// of other programs are left alone). Returns how many sets it removed.
///
/// Safe to run at any time, from any process: for each set, "no one uses it" is checked
/// in the same atomic operation that marks it for removal, and a process that opens the
/// name afterwards creates a fresh set. It does not stop services: a service whose keeper
/// was killed is adopted by the next client that acquires it (see the README).
pub fn sweep_abandoned() -> Result<usize> {
    let table =
        std::fs::read_to_string(TABLE).map_err(|e| Error::io(format!("reading {TABLE}"), e))?;
    let mut removed = 0;
    for line in table.lines().skip(1) {
        let mut fields = line.split_ascii_whitespace().map(str::parse::<i32>);
        let (Some(Ok(key)), Some(Ok(id))) = (fields.next(), fields.next()) else {
            continue;
        };
        let gone = sysv::remove_if_abandoned(key, id).map_err(|errno| {
            Error::io(
                format!("sweeping semaphore set {id} (key {key:#010x})"),
                std::io::Error::from_raw_os_error(errno),
            )
        })?;
        removed += usize::from(gone);
    }
    Ok(removed)
}
