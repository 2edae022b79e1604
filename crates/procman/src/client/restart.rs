//! `procman restart NAME...`: stop each process and start it again, without the server
//! stopping.

use std::path::Path;

use anyhow::Result;

use super::{client_reference, paths_for, request_each};
use crate::protocol::Message;

/// Restarts each named process, one after the other; each is answered once it runs again.
pub fn restart(config: &Path, processes: &[String]) -> Result<i32> {
    let paths = paths_for(config)?;
    let _reference = client_reference(&paths);
    request_each(&paths, processes, |name| Message::RestartProcess {
        name: name.to_owned(),
    })
}
