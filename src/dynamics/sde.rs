//! The stochastic modified equations of mini-batch SGD (Li, Tai and E; MATH §10),
//! dX = drift(X) dt + √(η c_b) D(X) dW with W an m-dimensional Brownian motion, integrated by
//! Euler–Maruyama on `substeps` substeps per output interval (weak order 1 in the substep; the
//! noise is not commutative, so no Milstein). D(X) is applied to each increment through one
//! adjoint pass ([`crate::field::gradient_noise`]), never assembled.
//!
//! The increments of replica ρ come from a counter-based ChaCha20 stream keyed by the seed's
//! SME sub-seed, stream ρ, block position (substep)·2³²: a path depends on (seed, ρ) alone.
//!
//! Why our own stepper: the maintained Rust SDE crates we found integrate fixed-size
//! (const-generic) states or store whole paths, and none applies a diffusion matrix through a
//! user's adjoint; Euler–Maruyama is ten lines on top of the field.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;

use super::flow::{SolverStats, Times, DIVERGED_FACTOR};
use super::Status;
use crate::field::{gradient_noise, residual_jacobian_t, Field};

/// The sub-seed stream of the SMEs' Brownian increments.
pub const STREAM_BROWNIAN: u64 = 6;

/// One SME path's noise: the field whose gradient noise it is, its scale and its stream.
#[derive(Clone)]
pub struct Sme {
    /// The sensing field whose per-measurement gradients make D(X).
    pub noise: Arc<dyn Field>,
    /// η of the method (the noise scale is √(η c_b)).
    pub eta: f64,
    /// c_b: 1/b with replacement, (m − b)/(b(m − 1)) without.
    pub c_b: f64,
    /// σ√(m/b) of label noise (0 without): the term √η·label_scale·J dW' with its own
    /// Brownian motion W'.
    pub label_scale: f64,
    /// Euler–Maruyama substeps per output interval.
    pub substeps: usize,
    pub seed: u64,
    pub replica: u64,
}

impl std::fmt::Debug for Sme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sme")
            .field("eta", &self.eta)
            .field("c_b", &self.c_b)
            .field("substeps", &self.substeps)
            .field("replica", &self.replica)
            .finish()
    }
}

/// One Euler–Maruyama substep: given the state, the substep h and `normals` (independent
/// N(0, h) increments, as many as the equation has Brownian dimensions), write the increment
/// into `delta`.
pub type Increment<'a> = dyn FnMut(&[f64], f64, &[f64], &mut [f64]) + 'a;

/// Euler–Maruyama from `x0` on `times` (a grid of `count` outputs dt apart), `substeps`
/// substeps per output interval, the increments of Brownian dimension `dims` from the
/// counter-based stream (`key`, `stream`) at block position (substep)·2³². Every output
/// (index, t, state) goes to `on_output`, every substep's time to `on_step`. Ends as failed
/// when the state grows past DIVERGED_FACTOR times its start or a stop is requested.
#[allow(clippy::too_many_arguments)]
pub fn euler_maruyama(
    x0: &[f64],
    times: Times<'_>,
    substeps: usize,
    dims: usize,
    (key, stream): (u64, u64),
    increment: &mut Increment<'_>,
    on_output: &mut dyn FnMut(usize, f64, &[f64]),
    on_step: &mut dyn FnMut(f64),
) -> (Status, SolverStats) {
    let mut stats = SolverStats {
        method: format!("euler-maruyama ({substeps} substeps per output)"),
        ..SolverStats::default()
    };
    let Times::Grid { dt, count } = times else {
        return (
            Status::Failed {
                t: 0.0,
                reason: "the SMEs are solved on a grid of output times".into(),
            },
            stats,
        );
    };
    let h = dt / substeps.max(1) as f64;
    let mut rng = ChaCha20Rng::seed_from_u64(key);
    rng.set_stream(stream);
    let mut x = x0.to_vec();
    let (mut delta, mut normals) = (vec![0.0; x.len()], vec![0.0; dims]);
    let bound = DIVERGED_FACTOR * crate::vector::norm(x0).max(1.0);
    let mut substep: u64 = 0;
    for i in 0..count {
        on_output(i, i as f64 * dt, &x);
        if i + 1 == count {
            break;
        }
        for s in 0..substeps {
            let t = i as f64 * dt + (s + 1) as f64 * h;
            if super::stop::requested() {
                return (
                    Status::Failed {
                        t,
                        reason: super::stop::REASON.into(),
                    },
                    stats,
                );
            }
            rng.set_word_pos(u128::from(substep) << 32);
            substep += 1;
            normals
                .iter_mut()
                .for_each(|v| *v = h.sqrt() * rng.sample::<f64, _>(StandardNormal));
            increment(&x, h, &normals, &mut delta);
            x.iter_mut().zip(&delta).for_each(|(x, d)| *x += d);
            stats.steps += 1;
            stats.rhs_evals += 1;
            on_step(t);
            if x.iter().any(|v| !v.is_finite()) || crate::vector::norm(&x) > bound {
                return (
                    Status::Failed {
                        t,
                        reason: format!(
                            "diverged: the state grew past {DIVERGED_FACTOR:e} times its start's \
                             size (or became non-finite)"
                        ),
                    },
                    stats,
                );
            }
        }
    }
    (Status::Completed, stats)
}

/// Solve dX = drift(X)dt + √(η c_b)D(X)dW (+ √η·label_scale·J dW') from `x0` at `times` (a
/// grid), handing each output (index, t, state) to `on_output` and each substep's time to
/// `on_step`.
pub fn solve_sme(
    drift: &dyn Field,
    sme: &Sme,
    x0: &[f64],
    times: Times<'_>,
    on_output: &mut dyn FnMut(usize, f64, &[f64]),
    on_step: &mut dyn FnMut(f64),
) -> (Status, SolverStats) {
    let scale = (sme.eta * sme.c_b).sqrt();
    let m = sme.noise.observations().len();
    let key: u64 = crate::problem::sub_rng(sme.seed, STREAM_BROWNIAN).gen();
    let (mut ws_drift, mut ws_noise) = (drift.workspace(), sme.noise.workspace());
    let mut f = vec![0.0; x0.len()];
    // the batch noise's m dimensions, then the labels' m
    let dims = if sme.label_scale > 0.0 { 2 * m } else { m };
    let mut increment = |x: &[f64], h: f64, normals: &[f64], delta: &mut [f64]| {
        drift.rhs(x, &mut f, &mut ws_drift);
        delta.iter_mut().zip(&f).for_each(|(d, f)| *d = h * f);
        if sme.c_b > 0.0 {
            // the drift (the noise's field, or its modified field) has just evaluated that
            // field at x: its workspace holds r and G there, the noise's one pass needs no other
            let ws = if ws_drift.holds(x) {
                &mut ws_drift
            } else {
                sme.noise.evaluate(x, &mut ws_noise);
                &mut ws_noise
            };
            gradient_noise(sme.noise.as_ref(), x, &normals[..m], scale, delta, ws);
        }
        if sme.label_scale > 0.0 {
            let s = sme.eta.sqrt() * sme.label_scale;
            residual_jacobian_t(sme.noise.as_ref(), x, &normals[m..], s, delta);
        }
    };
    euler_maruyama(
        x0,
        times,
        sme.substeps,
        dims,
        (key, sme.replica),
        &mut increment,
        on_output,
        on_step,
    )
}
