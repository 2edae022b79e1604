//! Dependency conditions and waiting for them.
