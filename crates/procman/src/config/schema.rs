//! `procman schema`: a JSON Schema (draft 2020-12) of `procman.yaml`, for editors
//! (`# yaml-language-server: $schema=…`) and for checking example configs.
//!
//! The loader stays the authority (it reports positions and cross-process problems a schema
//! cannot express); the schema describes the same keys and types, so an editor flags an
//! unknown key or a wrong type as it is typed.

/// The schema, as JSON text.
pub const SCHEMA: &str = include_str!("schema.json");

/// Prints the schema.
pub fn print() -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(SCHEMA.as_bytes())?;
    out.flush()
}
