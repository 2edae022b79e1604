//! [`ServiceInfo`]: what clients need to know to use a running service.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a running service is: its pid, its port, and any metadata the starter adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pid: u32,
    port: u16,
    #[serde(default)]
    meta: BTreeMap<String, String>,
}

impl ServiceInfo {
    /// A service process `pid` listening on `port` (0 if it has no port).
    pub fn new(pid: u32, port: u16) -> Self {
        Self {
            pid,
            port,
            meta: BTreeMap::new(),
        }
    }

    /// A service with no port (procref 0.1 name).
    pub fn with_pid(pid: u32) -> Self {
        Self::new(pid, 0)
    }

    /// Adds a metadata entry (builder style).
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta.get(key).map(String::as_str)
    }

    /// All metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.meta
    }

    /// Sets a metadata entry (procref 0.1 name).
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.meta.insert(key.into(), value.into());
    }

    /// A metadata value (procref 0.1 name).
    pub fn get_metadata(&self, key: &str) -> Option<&str> {
        self.meta(key)
    }

    /// The service's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The service's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the service process is running.
    pub fn is_alive(&self) -> bool {
        crate::process::is_alive(self.pid)
    }
}
