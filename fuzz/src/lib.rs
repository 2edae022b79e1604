//! What the fuzz targets share.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A directory for configs "in" it, holding a few files for `for_each` globs and
/// `env_file`s to find. Under `fuzz/target`, so nothing is left elsewhere.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/scratch");
        for (file, text) in [
            ("a.yaml", "x: 1\n"),
            ("configs/b.yaml", ""),
            ("vars.env", "A=1\nexport B='two'\n"),
            ("bad.env", "not a line\n"),
        ] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::canonicalize(dir).unwrap()
    })
}
