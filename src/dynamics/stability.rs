//! The largest step size at which GD converges from a start, found by bisection.

use serde::{Deserialize, Serialize};

use super::{Driver, Gd, Iterate, RunOptions, SaveAt, Status};
use crate::field::Field;

/// How one GD run used by the bisection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GdOutcome {
    /// Reached loss ≤ tol·f(x_0) and was still non-increasing over its last steps.
    Converged,
    /// Non-finite values, or the loss passed the divergence bound.
    Diverged,
    /// Neither within the step budget (an oscillation, or too slow to tell).
    Undecided,
}

/// What the bisection for the stability limit asks of each GD run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StabilityOptions {
    /// GD steps per trial step size.
    pub steps: usize,
    /// "Converged" means f ≤ tol·f(x_0) at the end of the budget.
    pub tol: f64,
    /// Stop when the bracket is narrower than this fraction of its lower end.
    pub rel_width: f64,
}

/// The final window over which a converging run's loss must not grow: period-2 oscillations
/// (the way GD leaves a minimum whose sharpness exceeds 2/η) grow over it.
const WINDOW: usize = 10;

/// Run GD at step `eta` for the budget and classify the end (divergence by the driver's one
/// rule, [`super::Divergence`]).
pub fn gd_outcome(field: &dyn Field, x0: &[f64], eta: f64, opts: &StabilityOptions) -> GdOutcome {
    let mut losses: Vec<f64> = Vec::with_capacity(2 * WINDOW);
    let mut loss0 = f64::NAN;
    let run = RunOptions {
        save: SaveAt::Nothing,
        ..RunOptions::new(eta, opts.steps, 1)
    };
    let mut watch = |it: &Iterate<'_>| {
        if it.step == 0 {
            loss0 = it.loss;
        }
        if losses.len() == 2 * WINDOW {
            losses.remove(0);
        }
        losses.push(it.loss);
    };
    let traj = Driver::new(field, Gd::new(), x0, run)
        .run(&mut watch)
        .pop()
        .expect("one run");
    if matches!(traj.status, Status::Diverged { .. }) {
        return GdOutcome::Diverged;
    }
    let last = *losses.last().expect("at least one step");
    let (before, recent) = losses.split_at(losses.len() / 2);
    let peak = |w: &[f64]| w.iter().copied().fold(0.0, f64::max);
    let settling = before.is_empty() || peak(recent) <= peak(before);
    if last <= opts.tol * loss0 && settling {
        GdOutcome::Converged
    } else {
        GdOutcome::Undecided
    }
}

/// One trial of the bisection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StabilityTrial {
    pub eta: f64,
    pub outcome: GdOutcome,
}

/// The largest η at which GD converges, bracketed by bisection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StabilityLimit {
    /// The largest step size found converging (the lower end of the final bracket); `None` when
    /// no trial converged.
    pub limit: Option<f64>,
    /// The smallest step size found not converging; `None` when every trial converged.
    pub upper: Option<f64>,
    pub trials: Vec<StabilityTrial>,
}

/// Bisection for the stability limit, starting from the guess `eta0` (e.g. 2/λ_max): double or
/// halve until the limit is bracketed (at most 20 times each way), then halve the bracket until
/// it is narrower than `rel_width`.
pub fn stability_limit(
    field: &dyn Field,
    x0: &[f64],
    eta0: f64,
    opts: &StabilityOptions,
) -> StabilityLimit {
    let mut trials = Vec::new();
    let mut converges = |eta: f64| {
        let outcome = gd_outcome(field, x0, eta, opts);
        trials.push(StabilityTrial { eta, outcome });
        outcome == GdOutcome::Converged
    };
    let (mut lo, mut hi) = (None, None);
    let mut eta = eta0;
    for _ in 0..=20 {
        if converges(eta) {
            lo = Some(eta);
            if hi.is_some() {
                break;
            }
            eta *= 2.0;
        } else {
            hi = Some(eta);
            if lo.is_some() {
                break;
            }
            eta /= 2.0;
        }
    }
    if let (Some(mut l), Some(mut h)) = (lo, hi) {
        while h - l > opts.rel_width * l {
            let mid = 0.5 * (l + h);
            if converges(mid) {
                l = mid;
            } else {
                h = mid;
            }
        }
        lo = Some(l);
        hi = Some(h);
    }
    StabilityLimit {
        limit: lo,
        upper: hi,
        trials,
    }
}
