//! The algebraically largest eigenvalues of the Hessian ∇²f and their eigenvectors, from
//! Hessian–vector products (MATH §8): block Lanczos with full reorthogonalisation, i.e.
//! Rayleigh–Ritz on a growing block Krylov space, with a residual test on every Ritz pair.
//!
//! Not power iteration: that finds the eigenvalue of largest *modulus*, and near the saddle at
//! the origin the Hessian has pairs ±σ_i(𝒜*y) where the negative one can win. The block (of
//! size ≥ the multiplicity) finds repeated top eigenvalues, which the factorisation's Hessian
//! has. A start from the previous call's vectors (warm start) makes a call along a trajectory
//! cheap.
//!
//! Written here rather than taken from a crate: the Lanczos crates on crates.io take stored
//! matrices (not a Hessian–vector product), run a fixed number of steps without a residual
//! test, or build on another nalgebra version.

use nalgebra::{DMatrix, SymmetricEigen};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::field::{Field, Workspace};
use crate::problem::sub_rng;
use crate::vector::{dot, norm, orthogonalise};

mod prediction;
use prediction::Prediction;

/// Stream of the random start vectors (after the problem's streams 1–4).
pub const STREAM_POWER: u64 = 5;

/// What to compute and when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EigenOptions {
    /// How many of the top eigenpairs must converge.
    pub count: usize,
    /// Vectors added to the Krylov space per step (≥ the multiplicity to be resolved) when
    /// the call has no warm start; a warm start holding `count` vectors or more already spans
    /// the pairs sought, and is extended by `count` a step.
    pub block: usize,
    /// A Ritz pair (θ, y) has converged when ‖Hy − θy‖ ≤ tol·max_i |θ_i|.
    pub tol: f64,
    /// Budget of Hessian–vector products.
    pub max_hvps: usize,
    /// Restart (keeping the best Ritz vectors) when the basis reaches this size.
    pub max_basis: usize,
    /// A pair also counts as settled when θ + ‖Hy − θy‖ is below this: whoever asks only needs
    /// to know the eigenvalue is below a threshold (an event test far from its event), and
    /// resolving a tight cluster (the k-fold top eigenvalue near the origin) would cost the
    /// whole budget for nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_below: Option<f64>,
    /// Ritz vectors beyond the `count` wanted to hand back as the next call's warm start
    /// ([`TopEigen::warm`]): where the top eigenvalue has a close neighbour, its eigenvector
    /// turns mostly towards the neighbours' from one state to the next, and a start that
    /// spans them is far closer than the top vector alone.
    #[serde(default)]
    pub warm_extra: usize,
    /// Start vectors beyond `count + warm_extra` to put in the first block: earlier calls'
    /// top vectors along a trajectory, whose differences span the directions the
    /// eigenvectors have been turning in.
    #[serde(default)]
    pub history: usize,
}

impl Default for EigenOptions {
    fn default() -> Self {
        Self {
            count: 1,
            block: 2,
            tol: 1e-6,
            max_hvps: 2000,
            max_basis: 60,
            settled_below: None,
            warm_extra: 0,
            history: 0,
        }
    }
}

/// The top eigenpairs found, largest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopEigen {
    /// Ritz values, largest first (`count` of them, or fewer if the space was smaller).
    pub values: Vec<f64>,
    /// ‖Hy − θy‖ of each (an eigenvalue lies within it of θ).
    pub residuals: Vec<f64>,
    /// Unit Ritz vectors.
    #[serde(skip)]
    pub vectors: Vec<Vec<f64>>,
    /// The top `count + warm_extra` Ritz vectors: the next call's warm start.
    #[serde(skip)]
    pub warm: Vec<Vec<f64>>,
    /// Every requested pair passed the residual test (or settled below
    /// [`EigenOptions::settled_below`]).
    pub converged: bool,
    pub hvps: usize,
    /// The scale the tolerance was relative to (largest |Ritz value|).
    pub scale: f64,
}

impl TopEigen {
    /// λ_max, if it converged.
    pub fn lambda_max(&self) -> Option<f64> {
        self.values.first().copied().filter(|_| self.converged)
    }
}

/// Orthonormalise `v` against `basis` (see [`orthogonalise`]); `None` when nothing of it is
/// left.
fn orthonormalise(basis: &[Vec<f64>], mut v: Vec<f64>) -> Option<Vec<f64>> {
    let before = norm(&v);
    if before == 0.0 || !before.is_finite() {
        return None;
    }
    orthogonalise(basis, &mut v);
    let after = norm(&v);
    if after <= 1e-10 * before {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= after);
    Some(v)
}

/// Combination Σ_j c_j·vs_j.
fn combine(vs: &[Vec<f64>], c: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut out = vec![0.0; vs[0].len()];
    for (v, cj) in vs.iter().zip(c) {
        out.iter_mut().zip(v).for_each(|(o, x)| *o += cj * x);
    }
    out
}

/// The top `opts.count` eigenpairs of ∇²f at `state`. `start` (e.g. the previous call's
/// vectors) seeds the first block; random vectors from `seed` fill it up.
pub fn top_eigenpairs(
    field: &dyn Field,
    state: &[f64],
    start: &[Vec<f64>],
    opts: &EigenOptions,
    seed: u64,
) -> TopEigen {
    let n = field.state_len();
    let count = opts.count.max(1).min(n);
    let block = if start.len() >= count {
        count
    } else {
        opts.block.max(1).min(n)
    };
    let mut ws: Workspace = field.workspace();
    let mut rng = sub_rng(seed, STREAM_POWER);
    let mut random =
        move || -> Vec<f64> { (0..n).map(|_| StandardNormal.sample(&mut rng)).collect() };
    let mut q: Vec<Vec<f64>> = Vec::new();
    let mut hq: Vec<Vec<f64>> = Vec::new();
    let mut hvps = 0;
    // the whole warm start goes in first (its images are what the first Rayleigh–Ritz needs)
    let first = block
        .max(count)
        .max(start.len().min(count + opts.warm_extra + opts.history));
    let mut pending: Vec<Vec<f64>> = start.iter().take(first).cloned().collect();
    let mut result = TopEigen {
        values: vec![],
        residuals: vec![],
        vectors: vec![],
        warm: vec![],
        converged: false,
        hvps: 0,
        scale: 0.0,
    };
    let mut fills = 0;
    // T = QᵀHQ, symmetrised, row by row
    let mut projected: Vec<Vec<f64>> = Vec::new();
    loop {
        // Extend the basis by the pending block (filled up with random vectors).
        while pending.len() < block && fills < 4 * block {
            pending.push(random());
            fills += 1;
        }
        // orthonormalised one by one, then their products as one block (shared passes)
        let from = q.len();
        for v in pending.drain(..) {
            if q.len() >= n {
                break;
            }
            if let Some(v) = orthonormalise(&q, v) {
                q.push(v);
            }
        }
        let added = q.len() - from;
        if added > 0 {
            let dirs: Vec<&[f64]> = q[from..].iter().map(|v| v.as_slice()).collect();
            let mut images = vec![vec![0.0; n]; added];
            field.hvp_many(state, &dirs, &mut images, &mut ws);
            hvps += added;
            hq.extend(images);
        }
        // Rayleigh–Ritz on span(q).
        let d = q.len();
        if d == 0 {
            break;
        }
        // the entries of the last Rayleigh–Ritz stand while q does: only the new rows are
        // computed (each entry by the same formula, so T is what a full computation gives)
        let entry = |i: usize, j: usize| 0.5 * (dot(&q[i], &hq[j]) + dot(&q[j], &hq[i]));
        projected.truncate(d);
        projected.resize(d, Vec::new());
        for (i, row) in projected.iter_mut().enumerate() {
            let known = row.len();
            row.extend((known..d).map(|j| entry(i, j)));
        }
        let t = DMatrix::from_fn(d, d, |i, j| projected[i][j]);
        let eig = SymmetricEigen::new(t);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let scale = eig.eigenvalues.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let keep = (count + block.max(opts.warm_extra)).min(d);
        let mut ritz = Vec::with_capacity(keep);
        for &i in order.iter().take(keep) {
            let s = eig.eigenvectors.column(i);
            let y = combine(&q, s.iter().copied());
            let hy = combine(&hq, s.iter().copied());
            let theta = eig.eigenvalues[i];
            let r: Vec<f64> = hy.iter().zip(&y).map(|(h, yy)| h - theta * yy).collect();
            ritz.push((theta, y, hy, r));
        }
        let tol = opts.tol * scale.max(f64::MIN_POSITIVE);
        let top = count.min(ritz.len());
        // θ + ‖r‖ bounds *an* eigenvalue near θ, not λ_max: a warm start can sit on an
        // eigenvector that another has overtaken. Two block steps of Krylov space beyond the
        // first block (the warm start, however many vectors it has) first.
        let explored = q.len() >= first + 2 * block;
        let settled = |theta: f64, r: &[f64]| {
            let r = norm(r);
            r <= tol || (explored && opts.settled_below.is_some_and(|b| theta + r < b))
        };
        let converged = top == count && ritz[..top].iter().all(|(th, _, _, r)| settled(*th, r));
        result = TopEigen {
            values: ritz[..top].iter().map(|p| p.0).collect(),
            residuals: ritz[..top].iter().map(|p| norm(&p.3)).collect(),
            vectors: ritz[..top].iter().map(|p| p.1.clone()).collect(),
            warm: ritz
                .iter()
                .take(count + opts.warm_extra)
                .map(|p| p.1.clone())
                .collect(),
            converged,
            hvps,
            scale,
        };
        if converged || hvps >= opts.max_hvps || d >= n || (added == 0 && fills >= 4 * block) {
            // A space that is the whole of R^N is exact: its Ritz pairs are eigenpairs.
            if d >= n {
                result.converged = top == count;
            }
            break;
        }
        // Next block: the residuals of the best unconverged Ritz pairs.
        pending = ritz
            .iter()
            .filter(|(th, _, _, r)| !settled(*th, r))
            .take(block)
            .map(|p| p.3.clone())
            .collect();
        if q.len() + block > opts.max_basis.max(count + 2 * block) {
            // Thick restart: keep the best Ritz vectors and their images (no new products).
            // They are orthonormal to rounding, as Rayleigh–Ritz needs.
            q = ritz.iter().map(|p| p.1.clone()).collect();
            hq = ritz.iter().map(|p| p.2.clone()).collect();
            projected.clear();
        }
    }
    result
}

/// How a [`Trail`] starts a solve from the solves before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// The last solve's vectors and the top vectors of at most this many solves before it,
    /// newest first.
    History(usize),
    /// The top vectors predicted at the new state by a model linear in the state through at
    /// most this many solves before it (for solves along a smooth path, where the states span
    /// the directions the next one moves in; see `prediction.rs`), in place of the last
    /// solve's, beside its other vectors (the `warm_extra` neighbours). Without a prediction,
    /// the last solve's vectors. A solve for another number of pairs, or at a state outside
    /// the span of the last ones, starts the model again.
    Predicted(usize),
}

/// What eigen-solves along a trajectory carry from one to the next (the central flow's, the
/// sharpness column's): the last solve's top Ritz vectors, the pairs it sought and
/// `warm_extra` more, and the top vectors of the solves before it, newest first. Along a
/// trajectory the states lie nearly on a line, so the eigenvector turns in nearly one
/// direction, which the differences of its last few values span: Rayleigh–Ritz on them starts
/// from an extrapolation of the turning rather than from the last vector. Along a smooth path
/// ([`Carry::Predicted`]) the extrapolation is made before the solve, from the states, and
/// its vectors replace the earlier ones and the last solve's top ones.
#[derive(Debug, Clone, Default)]
pub struct Trail {
    /// The last solve's top Ritz vectors, largest first.
    pub vectors: Vec<Vec<f64>>,
    /// The top vectors of the solves before it, newest first.
    earlier: Vec<Vec<f64>>,
    /// How many earlier vectors the last [`Carry::History`] solve kept: solves with
    /// [`Carry::Predicted`] keep as many for the next such solve (the central flow's event
    /// tests between the field's solves).
    keep: usize,
    /// The states and top vectors of the last solves made with [`Carry::Predicted`].
    prediction: Option<Prediction>,
}

impl Trail {
    /// [`top_eigenpairs`] at `state` started from the trail as `carry` says (`opts.history`
    /// is set here), which then holds this solve's vectors and the earlier ones. The earlier
    /// or predicted vectors are used only with a whole warm start: not when a solve asks for
    /// more pairs than the last one kept (the central flow's event tests, after the field's
    /// solve).
    pub fn solve(
        &mut self,
        field: &dyn Field,
        state: &[f64],
        opts: &EigenOptions,
        carry: Carry,
        seed: u64,
    ) -> TopEigen {
        let warm = opts.count + opts.warm_extra;
        let whole = self.vectors.len() >= warm;
        let (keep, mut predicted, displacement) = match carry {
            Carry::History(keep) => {
                self.keep = keep;
                (keep, vec![], None)
            }
            Carry::Predicted(points) => {
                let model = self
                    .prediction
                    .get_or_insert_with(|| Prediction::new(points));
                if model.capacity() != points {
                    *model = Prediction::new(points);
                }
                let (predicted, displacement) = model.predict(state, opts.count);
                (self.keep, predicted, displacement)
            }
        };
        if !whole {
            predicted.clear();
        }
        let history = match carry {
            Carry::History(_) if whole => self.earlier.len().min(keep),
            _ => 0,
        };
        // the predicted vectors stand in for the last solve's top ones: those are wrong at
        // first order in the move where the predicted ones are wrong at second, and beside
        // the prediction they cost a product each and saved less (see `central.rs`); the last
        // solve's other vectors, the neighbours the top ones turn towards, stay
        let replaced = predicted.len();
        let start: Vec<Vec<f64>> = predicted
            .into_iter()
            .chain(self.vectors.iter().take(warm).skip(replaced).cloned())
            .chain(self.earlier.iter().take(history).cloned())
            .collect();
        let eig = top_eigenpairs(
            field,
            state,
            &start,
            &EigenOptions { history, ..*opts },
            seed,
        );
        if let Some(top) = self.vectors.first() {
            self.earlier.insert(0, top.clone());
            self.earlier.truncate(keep);
        }
        self.vectors = eig.warm.clone();
        if let (Carry::Predicted(_), Some(model)) = (carry, self.prediction.as_mut()) {
            // an unconverged solve's vectors would mislead the next predictions
            if eig.converged && eig.vectors.len() == opts.count {
                model.record(state, eig.vectors.clone(), displacement);
            }
        }
        eig
    }
}

/// λ_max of the Hessian at a state (the top Ritz value; see [`TopEigen::lambda_max`] for
/// whether it may be used).
pub fn sharpness(
    field: &dyn Field,
    state: &[f64],
    seed: u64,
    tol: f64,
    max_hvps: usize,
) -> TopEigen {
    top_eigenpairs(
        field,
        state,
        &[],
        &EigenOptions {
            tol,
            max_hvps,
            ..EigenOptions::default()
        },
        seed,
    )
}
