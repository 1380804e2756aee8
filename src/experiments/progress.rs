//! Progress bars on stderr for work long enough to wait for; never drawn when stderr is not a
//! terminal (logs, pipes, CI) or when the user asked for quiet.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Operator entries streamed below which work is expected to finish within about a second
/// (a pass over the sensing matrix runs at roughly 1–2·10⁹ entries per second).
const ENTRIES_WORTH_A_BAR: f64 = 1e9;

/// Whether bars may be drawn at all: the user did not ask for quiet and stderr is a terminal.
pub fn enabled(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A bar over `len` units labelled `unit` ("step", "t", "η"), drawn only when `show` and the
/// expected work (`entries` streamed from the sensing matrix) is worth it.
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
