//! Spawning, the process table, and shutdown.
