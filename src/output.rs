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

/// Check, before any work, that results can be written to `dir`: it is a directory or can be
/// created as one, it is writable, and it is empty unless `force` (so that a typo in a command
/// cannot overwrite last week's results). Nothing is created.
pub fn check_out_dir(dir: &Path, force: bool) -> Result<()> {
    let shown = dir.display();
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::invalid(
                "out",
                shown,
                "must be a directory, not a file",
            ));
        }
        let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        if entries.next().is_some() && !force {
            return Err(Error::invalid(
                "out",
                shown,
                "is a directory with files in it; choose a new directory or pass --force to \
                 overwrite the files gdflow writes there",
            ));
        }
        return probe_writable(dir, dir);
    }
    let mut ancestor = dir.parent();
    while let Some(a) = ancestor {
        let a = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        if a.exists() {
            if !a.is_dir() {
                return Err(Error::invalid(
                    "out",
                    shown,
                    format!("cannot be created: {} is not a directory", a.display()),
                ));
            }
            return probe_writable(a, dir);
        }
        ancestor = a.parent();
    }
    Ok(())
}

/// Check, before any work, that a file can be written at `path` (its directory exists and is
/// writable, and no file is there unless `force`); `field` names the option in the error.
pub fn check_file_target(field: &str, path: &Path, force: bool) -> Result<()> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::invalid(
            field,
            path.display(),
            "already exists: choose a new name, or pass --force to replace it",
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.is_dir() {
        return Err(Error::invalid(
            field,
            path.display(),
            "is a directory, not a file path",
        ));
    }
    if !dir.is_dir() {
        return Err(Error::invalid(
            field,
            path.display(),
            format!(
                "cannot be written: directory {} does not exist",
                dir.display()
            ),
        ));
    }
    probe_writable(dir, path).map_err(|_| {
        Error::invalid(
            field,
            path.display(),
            format!("cannot be written in {}", dir.display()),
        )
    })
}

/// Refuse an input path that is not a regular file (a FIFO or a device would block or never
/// end), naming the option it came from.
pub fn check_input_file(field: &str, path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::invalid(
            field,
            path.display(),
            "is not a regular file (a directory, FIFO or device): give a file",
        )),
        Err(e) => Err(Error::invalid(
            field,
            path.display(),
            format!("cannot be read: {e}"),
        )),
    }
}

/// Whether two paths name the same existing file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Create and remove a file in `existing` to learn whether `target` can be written.
fn probe_writable(existing: &Path, target: &Path) -> Result<()> {
    let probe = existing.join(format!(".gdflow-probe-{}", std::process::id()));
    match File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::invalid(
            "out",
            target.display(),
            format!("is not writable: {e}"),
        )),
    }
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
