//! Writing results: every file appears under its final name only once complete.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Write through `fill` into a temporary file beside `path`, then rename it into place.
pub fn write_atomically(path: &Path, fill: impl FnOnce(File) -> std::io::Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = File::create(&tmp)
        .and_then(fill)
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// [`write_atomically`] for bytes already in memory.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    })
}

/// A number as CSV cells carry it: the shortest text that parses back to the same f64, in
/// exponent form outside [1e-5, 1e16) (Rust's `Debug`); NaN and inf as NumPy reads them.
pub fn num(x: f64) -> String {
    format!("{x:?}")
}
