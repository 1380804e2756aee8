//! Writing results: every file appears under its final name only once complete.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Files this process has begun and not finished: temporary outputs and the `--out` lock.
/// A signal handler removes them ([`remove_unfinished`]).
static UNFINISHED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn begin(path: &Path) {
    if let Ok(mut v) = UNFINISHED.lock() {
        v.push(path.to_path_buf());
    }
}

fn end(path: &Path) {
    if let Ok(mut v) = UNFINISHED.lock() {
        v.retain(|p| p != path);
    }
}

/// Remove every file this process began and did not finish (for SIGINT/SIGTERM).
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub fn remove_unfinished() {
    if let Ok(v) = UNFINISHED.lock() {
        // files first, then directories created for this command (removed only if empty)
        for p in v.iter() {
            let _ = std::fs::remove_file(p);
        }
        for p in v.iter() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// Whether a file in an output directory is one gdflow leaves behind only when stopped
/// mid-write: `.NAME.tmp-PID`, or the `--out` lock of a process that no longer runs.
fn is_stale_leftover(name: &str, dir: &Path) -> bool {
    if name.starts_with('.') && name.contains(".tmp-") {
        return true;
    }
    name == LOCK_NAME && !lock_holder_alive(&dir.join(LOCK_NAME))
}

/// The lock file in `--out` while a command writes there.
pub const LOCK_NAME: &str = ".gdflow.lock";

fn lock_holder_alive(lock: &Path) -> bool {
    std::fs::read_to_string(lock)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// The refusal of an output directory another gdflow holds, naming its process.
fn held(dir: &Path) -> Error {
    let holder = std::fs::read_to_string(dir.join(LOCK_NAME)).unwrap_or_default();
    Error::invalid(
        "out",
        dir.display(),
        format!(
            "is being written by another gdflow (process {}): wait for it, or choose another \
             directory",
            holder.trim()
        ),
    )
}

/// An exclusive claim on an output directory: a second command writing there fails fast,
/// naming the first. Released (and the directory removed if it was created for this command
/// and is still empty) when dropped.
#[derive(Debug)]
pub struct OutLock {
    dir: PathBuf,
    created: bool,
}

impl OutLock {
    /// Claim `dir` (creating it if needed); `Err` names the process that holds it.
    pub fn take(dir: &Path) -> Result<Self> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::invalid("out", dir.display(), format!("cannot be created: {e}")))?;
        if created {
            begin(dir);
        }
        let lock = dir.join(LOCK_NAME);
        if lock.exists() && !lock_holder_alive(&lock) {
            let _ = std::fs::remove_file(&lock);
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                begin(&lock);
                Ok(Self {
                    dir: dir.to_path_buf(),
                    created,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(held(dir)),
            Err(e) => Err(Error::io(&lock, e)),
        }
    }
}

impl Drop for OutLock {
    fn drop(&mut self) {
        let lock = self.dir.join(LOCK_NAME);
        let _ = std::fs::remove_file(&lock);
        end(&lock);
        end(&self.dir);
        if self.created {
            // nothing was written (a refusal or a failure after the set-up): leave no trace
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

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
    begin(&tmp);
    let result = File::create(&tmp)
        .and_then(fill)
        .and_then(|_| std::fs::rename(&tmp, path));
    end(&tmp);
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
    if std::fs::symlink_metadata(dir).is_ok() && std::fs::metadata(dir).is_err() {
        return Err(Error::invalid(
            "out",
            shown,
            "is a symbolic link to nothing: remove it or choose another directory",
        ));
    }
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::invalid(
                "out",
                shown,
                "must be a directory, not a file",
            ));
        }
        let entries: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let lock = dir.join(LOCK_NAME);
        if lock.exists() && lock_holder_alive(&lock) {
            return Err(held(dir));
        }
        if force {
            // what a stopped gdflow left half-written goes with --force
            for name in entries.iter().filter(|n| is_stale_leftover(n, dir)) {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
        if !entries.is_empty() && !force {
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
    if path.is_dir() {
        return Err(Error::invalid(
            field,
            path.display(),
            "is a directory, not a file path",
        ));
    }
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
