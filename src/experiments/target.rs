//! `sweep --target-deviation δ`: the largest η at which the method stays within δ·‖X*‖ of its
//! plain limit over the whole horizon, max_j ‖X_j − X(jη)‖/‖X*‖ ≤ δ — found by bisection in
//! log η from the bracket the sweep's own step sizes give, each trial a `run` against the plain
//! limit to the sweep's horizon.
//!
//! The deviation grows with η (order 1, MATH §2) but need not be monotone far past the
//! stability limit: the answer is the crossing inside the bracket, and the bracket is reported
//! with the deviations at its ends, so that a reader sees what was established.

use crate::error::Result;
use crate::results::sweep::{SweepPoint, SweepSettings, TargetDeviation};

use super::{run, RunExtras, Setup};
use crate::Status;

/// The bracket [lo, hi] is narrowed until hi/lo ≤ 1 + this.
pub const TARGET_TOLERANCE: f64 = 1e-2;
/// Halvings or doublings of η tried when the swept step sizes do not bracket the target.
const MAX_WIDENINGS: usize = 20;

/// The largest relative deviation at `eta`, infinite when the method diverged or the limit
/// failed before the horizon (it then does not stay within any δ).
fn deviation_of(point: &SweepPoint) -> f64 {
    let complete = point.gd_status == Status::Completed && point.compared_steps == point.steps;
    if complete && point.max_dev_rel.is_finite() {
        point.max_dev_rel
    } else {
        f64::INFINITY
    }
}

/// The search, from the points the sweep measured.
pub fn target_deviation(
    setup: &Setup,
    settings: &SweepSettings,
    points: &[SweepPoint],
    target: f64,
) -> Result<TargetDeviation> {
    let start = std::time::Instant::now();
    let mut evaluations = 0;
    // a trial is `run` against the plain limit to the sweep's horizon: the same maximum over
    // every step, without the sweep's modified and central flows
    let mut measure = |eta: f64| -> Result<f64> {
        evaluations += 1;
        let mut trial = setup.with_plain_flow();
        let steps = settings.steps_for(eta);
        trial.config.eta = eta;
        trial.config.steps = steps;
        trial.config.record_every = steps.max(1);
        trial.config.sharpness_every = 0;
        let s = run(&trial, &RunExtras::default())?.summary;
        let complete = s.gd.status == Status::Completed && s.flow.status == Status::Completed;
        Ok(match s.distance {
            Some(d) if complete && d.max_relative.is_finite() => d.max_relative,
            _ => f64::INFINITY,
        })
    };
    let mut measured: Vec<(f64, f64)> = points.iter().map(|p| (p.eta, deviation_of(p))).collect();
    measured.sort_by(|a, b| a.0.total_cmp(&b.0));
    let first_above = measured.iter().position(|&(_, d)| d > target);
    let (mut lo, mut hi) = match first_above {
        Some(0) => {
            // even the smallest swept η deviates too much: halve until one does not
            let mut hi = measured[0];
            let mut found = None;
            for _ in 0..MAX_WIDENINGS {
                let eta = hi.0 / 2.0;
                let d = measure(eta)?;
                if d <= target {
                    found = Some((eta, d));
                    break;
                }
                hi = (eta, d);
            }
            (found.unwrap_or((f64::NAN, f64::NAN)), hi)
        }
        Some(i) => (measured[i - 1], measured[i]),
        None => {
            // every swept η stays within δ: double until one does not
            let mut lo = *measured.last().expect("a sweep has step sizes");
            let mut found = None;
            for _ in 0..MAX_WIDENINGS {
                let eta = lo.0 * 2.0;
                let d = measure(eta)?;
                if d > target {
                    found = Some((eta, d));
                    break;
                }
                lo = (eta, d);
            }
            (lo, found.unwrap_or((f64::NAN, f64::NAN)))
        }
    };
    if lo.0.is_finite() && hi.0.is_finite() {
        while hi.0 / lo.0 > 1.0 + TARGET_TOLERANCE {
            let eta = (lo.0 * hi.0).sqrt();
            let d = measure(eta)?;
            if d <= target {
                lo = (eta, d);
            } else {
                hi = (eta, d);
            }
        }
    }
    let finite = |d: f64| d.is_finite().then_some(d);
    Ok(TargetDeviation {
        target,
        eta: lo.0.is_finite().then_some(lo.0),
        bracket: [lo.0, hi.0].map(|e| e.is_finite().then_some(e)),
        deviation: [finite(lo.1), finite(hi.1)],
        tolerance: TARGET_TOLERANCE,
        evaluations,
        seconds: start.elapsed().as_secs_f64(),
    })
}
