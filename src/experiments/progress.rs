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
/// to draw on, and the bar's calls cost nothing.
#[cfg(not(feature = "cli"))]
pub fn bar(_show: bool, _entries: f64, _len: u64, _unit: &str) -> ProgressBar {
    ProgressBar
}

/// The part of indicatif's bar the experiments use, doing nothing.
#[cfg(not(feature = "cli"))]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgressBar;

#[cfg(not(feature = "cli"))]
impl ProgressBar {
    pub fn set_message(&self, _msg: impl Into<String>) {}
    pub fn set_position(&self, _pos: u64) {}
    pub fn inc(&self, _delta: u64) {}
    pub fn finish_and_clear(&self) {}
}
