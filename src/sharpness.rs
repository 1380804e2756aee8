//! Sharpness λ_max(∇²f) by power iteration on Hessian–vector products (MATH §2), and the
//! step size at which GD stops converging, found by bisection.

use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::field::VectorField;
use crate::problem::sub_rng;

/// Stream of the power iteration's start vector (after the problem's streams 1–4).
pub const STREAM_POWER: u64 = 5;

/// λ_max of the Hessian at a state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sharpness {
    pub lambda_max: f64,
    pub iterations: usize,
    /// ‖Hv − λv‖ / |λ| at the last iterate; the eigenvalue's own error is of order its square
    /// times λ/gap.
    pub residual: f64,
    pub converged: bool,
}

/// Power iteration v ← Hv/‖Hv‖ from a seeded Gaussian vector, stopped when the eigen-residual
/// ‖Hv − λv‖ drops below `tol`·|λ|. It finds the eigenvalue of largest modulus, which is
/// λ_max at (or near) a minimiser, where H is positive semidefinite.
pub fn sharpness(
    field: &VectorField,
    state: &[f64],
    seed: u64,
    tol: f64,
    max_iterations: usize,
) -> Sharpness {
    let n = field.state_len();
    let mut rng = sub_rng(seed, STREAM_POWER);
    let mut v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    normalise(&mut v);
    let mut hv = vec![0.0; n];
    let mut ws = field.workspace();
    let mut result = Sharpness {
        lambda_max: 0.0,
        iterations: 0,
        residual: f64::INFINITY,
        converged: false,
    };
    for it in 1..=max_iterations {
        field.hvp(state, &v, &mut hv, &mut ws);
        let lambda: f64 = v.iter().zip(&hv).map(|(a, b)| a * b).sum();
        let residual = v
            .iter()
            .zip(&hv)
            .map(|(a, b)| (b - lambda * a).powi(2))
            .sum::<f64>()
            .sqrt()
            / lambda.abs().max(f64::MIN_POSITIVE);
        result = Sharpness {
            lambda_max: lambda,
            iterations: it,
            residual,
            converged: residual <= tol,
        };
        if result.converged || hv.iter().all(|x| *x == 0.0) {
            break;
        }
        v.copy_from_slice(&hv);
        normalise(&mut v);
    }
    result
}

fn normalise(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

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

/// Run GD at step `eta` for the budget and classify the end.
pub fn gd_outcome(field: &VectorField, x0: &[f64], eta: f64, opts: &StabilityOptions) -> GdOutcome {
    let mut ws = field.workspace();
    let mut x = x0.to_vec();
    let mut f = vec![0.0; x.len()];
    let mut losses = Vec::with_capacity(2 * WINDOW);
    let mut loss0 = f64::NAN;
    let mut bound = f64::INFINITY;
    let y_norm2: f64 = 0.5 * field.observations().iter().map(|v| v * v).sum::<f64>();
    for j in 0..=opts.steps {
        let loss = field.rhs(&x, &mut f, &mut ws);
        if j == 0 {
            loss0 = loss;
            bound = 1e6 * loss.max(y_norm2).max(f64::MIN_POSITIVE);
        }
        if !loss.is_finite() || loss > bound || x.iter().any(|v| !v.is_finite()) {
            return GdOutcome::Diverged;
        }
        if losses.len() == 2 * WINDOW {
            losses.remove(0);
        }
        losses.push(loss);
        if j == opts.steps {
            break;
        }
        for (xi, fi) in x.iter_mut().zip(&f) {
            *xi += eta * fi;
        }
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
    field: &VectorField,
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
