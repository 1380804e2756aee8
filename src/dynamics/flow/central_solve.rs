//! The central flow solved adaptively (MATH §8): DOP853 on [`CentralField`] with a fixed
//! number p of active eigenvalues between events. p = 0 is the gradient flow; an eigenvalue of
//! ∇²f reaching 2/η (located by bisection on the dense output) adds one; M letting one go (a
//! zero eigenvalue of M while that Hessian eigenvalue has fallen below 2/η) removes one.

use std::sync::Arc;

use nalgebra::SymmetricEigen;
use serde::{Deserialize, Serialize};

use super::dop853::Dop853;
use super::{FlowOptions, Method, SolverStats, Times};
use crate::dynamics::central::{CentralField, CentralPoint, CentralStats};
use crate::dynamics::Status;
use crate::field::Field;

/// One change of the active set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentralEvent {
    pub t: f64,
    /// "enter" (an eigenvalue reached 2/η) or "leave" (M released one).
    pub kind: String,
    /// The number of active eigenvalues after the event.
    pub active: usize,
    /// The eigenvalue concerned.
    pub eigenvalue: f64,
}

/// What the central flow did, for `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CentralReport {
    pub eta: f64,
    /// 2/η.
    pub threshold: f64,
    /// When the sharpness first reached 2/η (`None`: never, and the flow was the gradient
    /// flow throughout).
    pub first_reached: Option<f64>,
    pub max_active: usize,
    pub events: Vec<CentralEvent>,
    pub work: CentralStats,
}

/// What is known at an output of the central flow.
#[derive(Debug, Clone)]
pub struct CentralOutput {
    /// λ_max(∇²f) (NaN where not measured).
    pub sharpness: f64,
    /// tr Σ (0 while no eigenvalue is active; NaN at an output not measured, see
    /// [`CentralColumns::every`]).
    pub sigma_trace: f64,
    /// How many eigenvalues are held (at every output, measured or not).
    pub active: usize,
    /// The active eigenvectors (p of them), an orthonormal basis of Σ's range; none at an
    /// output not measured.
    pub vectors: Vec<Vec<f64>>,
}

/// The smallest residual (relative to the sharpness) the central flow's eigen-solves ask for,
/// whatever rtol: rounding leaves residuals near 1e-15 of it, and a test below that is never
/// met — each solve then spent its whole budget of products, and a run at rtol 1e-13 on the
/// default problem had not made 100 steps in two minutes (11.6 s at rtol 1e-12, whose
/// rtol/100 this is).
pub const EIG_TOL_FLOOR: f64 = 1e-14;

/// The central flow fails (a result, never a hang) when more eigenvalues than this are held.
const MAX_HELD: usize = 8;

/// Far past the stability limit every direction reaches 2/η: the p×p semidefinite problem
/// and p eigenvectors per evaluation would not end. A failure at `t`, a result.
fn too_many_held(t: f64) -> Status {
    Status::Failed {
        t,
        reason: format!(
            "more than {MAX_HELD} eigenvalues reached 2/η: η is far past the stability limit, \
             where the central flow (MATH §8) is not a useful description; lower --eta"
        ),
    }
}

/// Hessian eigenvalues within this fraction of 2/η count as having reached it (an event).
const REACHED: f64 = 1e-7;
/// The same once p ≥ 1 are held. Not smaller: as λ_{p+1} closes in on the held ones, the held
/// eigenvectors turn at a rate ∝ 1/gap, the field's Jacobian grows like it and DOP853's steps
/// shrink like the gap (2196 of 3058 steps went into the last approach to 1e-7 on a κ = 1
/// problem; 1255 steps in all at 1e-5). Baumgarte's term brings the new eigenvalue the rest
/// of the way; a release needs it 1e-4 below, so the two cannot chatter.
const REACHED_BESIDE_HELD: f64 = 1e-5;
/// M's eigenvalues below this fraction of its trace count as zero (a released direction).
const RELEASED: f64 = 1e-8;

/// What a central solve reports at each output: (index, t, state, what was found there).
pub type OnCentralOutput<'a> = dyn FnMut(usize, f64, &[f64], &CentralOutput) + 'a;

/// What a central solve measures at its outputs beside the state, each measurement an
/// evaluation of the central field or an eigen-solve of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CentralColumns {
    /// The sharpness also while no eigenvalue is held (NaN otherwise: an eigen-solve per
    /// output is most of the cost of a solve on a fine output grid).
    pub sharpness_unheld: bool,
    /// Only the outputs whose index is a multiple of this are measured (0: none); the others
    /// carry their state and the held count alone (NaN columns, no directions): a run
    /// compares GD's two-step average with the flow's state at the half steps between its
    /// whole steps t_j, and a sweep compares states only, so M and the held pairs there, an
    /// evaluation of the central field each, would go unread.
    pub every: usize,
}

impl CentralColumns {
    /// Every column at every output.
    pub const ALL: Self = Self {
        sharpness_unheld: true,
        every: 1,
    };
}

/// Solve the central flow of `field` (a gradient field) for GD's step `eta` at `times`;
/// `on_output(i, t, state, what)` for each output reached, `what` measured as `columns`
/// says. A failure (a step size too small, an eigen-solve or semidefinite problem that cannot
/// be met) ends the solve as [`Status::Failed`] with t and the reason.
#[allow(clippy::too_many_arguments)]
pub fn solve_central_flow_with(
    field: Arc<dyn Field>,
    eta: f64,
    x0: &[f64],
    times: Times<'_>,
    opts: &FlowOptions,
    columns: CentralColumns,
    on_output: &mut OnCentralOutput<'_>,
    on_step: &mut dyn FnMut(f64),
) -> (Status, SolverStats, CentralReport) {
    let threshold = 2.0 / eta;
    // Eigenvectors resolved to a tenth of rtol make the field look rough to the error
    // control (86 → 157 steps on the default problem at η = 1); a thousandth buys no steps
    // and costs 13% more Hessian–vector products.
    let eig_tol = (opts.rtol * 1e-2).clamp(EIG_TOL_FLOOR, 1e-9);
    let t_end = times.last();
    let mut report = CentralReport {
        eta,
        threshold,
        ..CentralReport::default()
    };
    let mut stats = SolverStats {
        method: format!("{} (central)", Method::Dop853.name()),
        ..SolverStats::default()
    };
    let mut next = 0;
    let (mut t0, mut y0, mut p) = (0.0, x0.to_vec(), 0usize);
    let (mut point, mut work) = (CentralPoint::default(), CentralStats::default());
    let mut status = Status::Completed;
    let mut buf = vec![0.0; x0.len()];
    // event tests whose eigen-solve could not tell where λ_{p+1} is against 2/η
    let mut undecided = 0;
    'segments: loop {
        let central = CentralField::new(field.clone(), eta, p, eig_tol);
        central.carry(point.clone(), work.clone());
        // how many eigenvalues have reached 2/η here (at the start, or after an event)
        let (values, _, _) = central.eigenpairs(&y0, p + 1, Some(threshold * (1.0 - REACHED)));
        let reached = values
            .iter()
            .take_while(|l| **l >= threshold * (1.0 - REACHED))
            .count();
        if reached > p {
            report.first_reached.get_or_insert(t0);
            p = reached;
            report.max_active = report.max_active.max(p);
            report.events.push(CentralEvent {
                t: t0,
                kind: "enter".into(),
                active: p,
                eigenvalue: values[p - 1],
            });
            (point, work) = central.last();
            if p > MAX_HELD {
                status = too_many_held(t0);
                break 'segments;
            }
            continue 'segments;
        }
        let output = |central: &CentralField, i: usize, y: &[f64]| -> CentralOutput {
            if columns.every == 0 || !i.is_multiple_of(columns.every) {
                return CentralOutput {
                    sharpness: f64::NAN,
                    sigma_trace: f64::NAN,
                    active: p,
                    vectors: vec![],
                };
            }
            // M and the held eigenpairs at y (nothing to solve for while none is held)
            if p > 0 {
                let mut out = vec![0.0; y.len()];
                central.rhs(y, &mut out, &mut central.workspace());
            } else if columns.sharpness_unheld {
                central.eigenpairs(y, 1, None);
            }
            let known = p > 0 || columns.sharpness_unheld;
            central.inspect(|pt| CentralOutput {
                sharpness: pt
                    .eigenvalues
                    .first()
                    .copied()
                    .filter(|_| known)
                    .unwrap_or(f64::NAN),
                sigma_trace: if p == 0 { 0.0 } else { pt.sigma_trace() },
                active: p,
                vectors: pt.trail.vectors.iter().take(p).cloned().collect(),
            })
        };
        while next < times.len() && times.at(next) <= t0 {
            let what = output(&central, next, &y0);
            on_output(next, times.at(next), &y0, &what);
            next += 1;
        }
        if next == times.len() {
            work = central.stats();
            break;
        }
        let mut s = Dop853::new(&central, t0, &y0, opts.rtol, opts.atol, opts.scale, t_end);
        loop {
            if crate::dynamics::stop::requested() {
                status = Status::Failed {
                    t: s.t(),
                    reason: crate::dynamics::stop::REASON.into(),
                };
                work = central.stats();
                break 'segments;
            }
            if stats.steps >= opts.max_steps {
                status = Status::Failed {
                    t: s.t(),
                    reason: format!("step budget of {} steps exhausted", opts.max_steps),
                };
                work = central.stats();
                break 'segments;
            }
            let (t_old, steps_before, rejected_before) = (s.t(), s.steps, s.rejected);
            if let Err(reason) = s.step(t_end) {
                status = Status::Failed { t: s.t(), reason };
                work = central.stats();
                break 'segments;
            }
            stats.steps += s.steps - steps_before;
            stats.rejected_steps += s.rejected - rejected_before;
            let t = s.t();
            // the step's last evaluation was at its end (DOP853's first stage of the next
            // step): M and the held eigenvalues there, before outputs evaluate elsewhere
            let same = |a: &[f64], b: &[f64]| {
                a.iter()
                    .map(|v| v.to_bits())
                    .eq(b.iter().map(|v| v.to_bits()))
            };
            let held = |pt: &CentralPoint| (pt.m.clone(), pt.eigenvalues.clone());
            let at_end = central.inspect(|pt| (p > 0 && same(&pt.at, s.y())).then(|| held(pt)));
            on_step(t);
            if s.y().iter().any(|v| !v.is_finite()) {
                status = Status::Failed {
                    t,
                    reason: "non-finite state".into(),
                };
                work = central.stats();
                break 'segments;
            }
            // an eigenvalue beyond the active ones reaching 2/η?
            let enter = threshold * (1.0 - if p == 0 { REACHED } else { REACHED_BESIDE_HELD });
            let (values, _, converged) = central.eigenpairs(s.y(), p + 1, Some(enter));
            if !converged {
                undecided += 1;
                if undecided > 20 {
                    status = Status::Failed {
                        t,
                        reason: "the Hessian's top eigenvalues did not converge".into(),
                    };
                    work = central.stats();
                    break 'segments;
                }
            }
            let mut event_at = None;
            if values.get(p).is_some_and(|l| *l >= enter) {
                // bisection on the dense output for λ_{p+1}(y(τ)) = 2/η (to REACHED)
                let (mut lo, mut hi) = (t_old, t);
                for _ in 0..60 {
                    if hi - lo <= 1e-12 * t.abs().max(1.0) {
                        break;
                    }
                    let mid = 0.5 * (lo + hi);
                    s.interpolate(mid, &mut buf);
                    let (vals, _, _) = central.eigenpairs(&buf, p + 1, Some(enter));
                    if vals.get(p).is_some_and(|l| *l >= enter) {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                event_at = Some(hi);
            }
            // outputs up to the event (or the step's end)
            let until = event_at.unwrap_or(t);
            while next < times.len() && times.at(next) <= until {
                let at = times.at(next);
                if at == t {
                    buf.copy_from_slice(s.y());
                } else {
                    s.interpolate(at, &mut buf);
                }
                let what = output(&central, next, &buf);
                on_output(next, at, &buf, &what);
                next += 1;
            }
            if let Some(te) = event_at {
                if te == t {
                    y0 = s.y().to_vec();
                } else {
                    s.interpolate(te, &mut buf);
                    y0 = buf.clone();
                }
                t0 = te;
                (point, work) = central.last();
                report.first_reached.get_or_insert(te);
                report.events.push(CentralEvent {
                    t: te,
                    kind: "enter".into(),
                    active: p + 1,
                    eigenvalue: enter,
                });
                p += 1;
                report.max_active = report.max_active.max(p);
                if p > MAX_HELD {
                    status = too_many_held(te);
                    work = central.stats();
                    break 'segments;
                }
                continue 'segments;
            }
            if next == times.len() {
                work = central.stats();
                break 'segments;
            }
            // M releasing a direction whose eigenvalue has fallen below 2/η?
            if p > 0 {
                let (m, eigenvalues) = at_end.unwrap_or_else(|| {
                    let mut out = vec![0.0; buf.len()];
                    central.rhs(s.y(), &mut out, &mut central.workspace());
                    central.inspect(held)
                });
                let trace = m.trace().max(f64::MIN_POSITIVE);
                let released = SymmetricEigen::new(m).eigenvalues.min() <= RELEASED * trace;
                if released
                    && eigenvalues
                        .get(p - 1)
                        .is_some_and(|l| *l < threshold * (1.0 - 1e-4))
                {
                    y0 = s.y().to_vec();
                    t0 = t;
                    (point, work) = central.last();
                    p -= 1;
                    report.events.push(CentralEvent {
                        t,
                        kind: "leave".into(),
                        active: p,
                        eigenvalue: eigenvalues[p],
                    });
                    continue 'segments;
                }
            }
            let w = central.stats();
            if w.worst_sdp_residual > 1e-6 {
                status = Status::Failed {
                    t,
                    reason: format!(
                        "the semidefinite problem for M could not be solved (residual {:.1e})",
                        w.worst_sdp_residual
                    ),
                };
                work = w;
                break 'segments;
            }
        }
    }
    // every evaluation of the central field (steps, outputs, event checks) is one rhs; its
    // Hessian–vector products count as jvps
    stats.rhs_evals = work.evaluations;
    stats.jvp_evals = work.hvps;
    report.work = work;
    (status, stats, report)
}
