//! A request to stop, from outside the computation (Python's Ctrl-C): every step loop — the
//! driver's, the flow solvers' — looks at it once a step and ends its trajectory as failed,
//! "interrupted", so that a long run returns within a step of being asked. The caller that
//! asked knows the result is not a result.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Ask every running computation in this process to stop.
pub fn request() {
    REQUESTED.store(true, Ordering::Relaxed);
}

/// Withdraw the request (before starting new work).
pub fn clear() {
    REQUESTED.store(false, Ordering::Relaxed);
}

/// Whether a stop has been asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// The reason a trajectory ended on request.
pub const REASON: &str = "interrupted";
