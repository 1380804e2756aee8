//! Progress bars on stderr for work long enough to wait for; never drawn when stderr is not a
//! terminal (logs, pipes, CI) or when the user asked for quiet.

#[cfg(feature = "cli")]
use std::io::IsTerminal;

#[cfg(feature = "cli")]
pub use indicatif::ProgressBar;
#[cfg(feature = "cli")]
use indicatif::{ProgressDrawTarget, ProgressStyle};

/// Operator entries streamed below which work is expected to finish within about a second
/// (a pass over the sensing matrix runs at roughly 1–2·10⁹ entries per second).
#[cfg(feature = "cli")]
const ENTRIES_WORTH_A_BAR: f64 = 1e9;

/// Whether bars may be drawn at all: the user did not ask for quiet and stderr is a terminal.
#[cfg(feature = "cli")]
pub fn enabled(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A bar over `len` units labelled `unit` ("step", "t", "η"), drawn only when `show` and the
/// expected work (`entries` streamed from the sensing matrix) is worth it.
#[cfg(feature = "cli")]
pub fn bar(show: bool, entries: f64, len: u64, unit: &str) -> ProgressBar {
    if !enabled(!show) || entries < ENTRIES_WORTH_A_BAR {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{msg}} [{{bar:30}}] {unit} {{pos}}/{{len}} ({{elapsed}}, eta {{eta}})"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Without the `cli` feature (no indicatif) nothing is drawn: a library user has no terminal
/// to draw on. A bar that `show`s publishes its position instead, for whoever polls
/// [`current`] (the Python binding's progress display).
#[cfg(not(feature = "cli"))]
pub fn bar(show: bool, _entries: f64, len: u64, unit: &str) -> ProgressBar {
    if show {
        published::LENGTH.store(len, Ordering::Relaxed);
        published::POSITION.store(0, Ordering::Relaxed);
        *published::UNIT.lock().unwrap_or_else(|e| e.into_inner()) = unit.to_string();
    }
    ProgressBar { show }
}

#[cfg(not(feature = "cli"))]
use std::sync::atomic::Ordering;

#[cfg(not(feature = "cli"))]
mod published {
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;
    pub static POSITION: AtomicU64 = AtomicU64::new(0);
    pub static LENGTH: AtomicU64 = AtomicU64::new(0);
    pub static UNIT: Mutex<String> = Mutex::new(String::new());
    pub static MESSAGE: Mutex<String> = Mutex::new(String::new());
}

/// The last shown bar's (message, unit, position, length).
#[cfg(not(feature = "cli"))]
pub fn current() -> (String, String, u64, u64) {
    let text = |m: &std::sync::Mutex<String>| m.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (
        text(&published::MESSAGE),
        text(&published::UNIT),
        published::POSITION.load(Ordering::Relaxed),
        published::LENGTH.load(Ordering::Relaxed),
    )
}

/// The part of indicatif's bar the experiments use, publishing to [`current`] when shown.
#[cfg(not(feature = "cli"))]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgressBar {
    show: bool,
}

#[cfg(not(feature = "cli"))]
impl ProgressBar {
    pub fn set_message(&self, msg: impl Into<String>) {
        if self.show {
            *published::MESSAGE.lock().unwrap_or_else(|e| e.into_inner()) = msg.into();
        }
    }
    pub fn set_position(&self, pos: u64) {
        if self.show {
            published::POSITION.store(pos, Ordering::Relaxed);
        }
    }
    pub fn inc(&self, delta: u64) {
        if self.show {
            published::POSITION.fetch_add(delta, Ordering::Relaxed);
        }
    }
    pub fn inc_length(&self, delta: u64) {
        if self.show {
            published::LENGTH.fetch_add(delta, Ordering::Relaxed);
        }
    }
    pub fn finish_and_clear(&self) {}
}
