//! The central flow (MATH §8; Cohen, Damian, Talwalkar, Kolter, Lee, ICLR 2025): the flow GD's
//! time-averaged trajectory follows past the stability limit, where the sharpness sits at
//! 2/η and GD oscillates along the Hessian's top eigenvectors.
//!
//! With Q = [q_1 … q_p] the eigenvectors whose eigenvalues have reached 2/η,
//!   x' = −∇f − ½ Σ_ab M_ab g_ab,   g_ab = D³f[q_a, q_b, ·] = −D²F[q_a, q_b],
//! and M ⪰ 0 the solution of the small semidefinite problem
//!   minimise ½⟨M, 𝒦(M)⟩ − ⟨ã, M⟩ over M ⪰ 0,  𝒦(M)_cd = ½ Σ_ab ⟨g_cd, g_ab⟩ M_ab,
//!   ã_cd = −⟨g_cd, ∇f⟩ + β(λ_c − 2/η)δ_cd,
//! where the last term (Baumgarte's) pulls active eigenvalues that drifted off 2/η back to it:
//! along the field the restricted Hessian moves by d(QᵀHQ)/dt = a − 𝒦(M), so an active
//! direction (Z = 𝒦(M) − ã vanishing on it) has λ_c' = −β(λ_c − 2/η).
//! [`CentralField`] is that field for a fixed number p of active eigenvalues; the solver in
//! [`super::flow`] integrates it between events, when an eigenvalue reaches 2/η or M lets
//! one go.

use std::sync::{Arc, Mutex};

use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

use super::sharpness::{Carry, EigenOptions, Trail};
use crate::field::{Factors, Field, Workspace};
use crate::operator::SensingOperator;
use crate::vector::dot;

/// A solution of the semidefinite problem for M, with how well it meets its optimality
/// conditions: M ⪰ 0, Z = 𝒦(M) − ã ⪰ 0, ⟨M, Z⟩ = 0.
#[derive(Debug, Clone)]
pub struct SdpSolution {
    pub m: DMatrix<f64>,
    pub iterations: usize,
    /// ‖M − Π_{⪰0}(M − (𝒦(M) − ã))‖_F relative to ‖ã‖_F: zero exactly at the optimum.
    pub residual: f64,
}

/// The linear map 𝒦 on symmetric p×p matrices, from the Gram matrix of the g_ab.
#[derive(Debug, Clone)]
pub struct KMap {
    p: usize,
    /// W[(c·p + d), (a·p + b)] = ½⟨g_cd, g_ab⟩.
    w: DMatrix<f64>,
}

impl KMap {
    /// From the p(p+1)/2 vectors g_ab, a ≤ b, in the order (0,0), (0,1), …, (1,1), …
    pub fn new(p: usize, g: &[Vec<f64>]) -> Self {
        assert_eq!(g.len(), p * (p + 1) / 2, "one g per pair a ≤ b");
        // position of the pair (a, b) in row-major upper order: rows before `lo` hold
        // p + (p − 1) + … + (p − lo + 1) entries, then hi − lo more along row lo
        let pos = |a: usize, b: usize| {
            let (lo, hi) = (a.min(b), a.max(b));
            lo * p - lo * (lo + 1) / 2 + hi
        };
        let w = DMatrix::from_fn(p * p, p * p, |r, c| {
            let (cc, dd) = (r / p, r % p);
            let (aa, bb) = (c / p, c % p);
            0.5 * dot(&g[pos(cc, dd)], &g[pos(aa, bb)])
        });
        Self { p, w }
    }

    /// 𝒦(M).
    pub fn apply(&self, m: &DMatrix<f64>) -> DMatrix<f64> {
        let v = nalgebra::DVector::from_iterator(self.p * self.p, m.transpose().iter().copied());
        let out = &self.w * v;
        DMatrix::from_fn(self.p, self.p, |c, d| out[c * self.p + d])
    }
}

/// The projection onto the positive semidefinite cone (eigenvalues clipped at zero).
pub fn project_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = 0.5 * (m + m.transpose());
    let eig = SymmetricEigen::new(sym);
    let clipped = eig.eigenvalues.map(|l| l.max(0.0));
    &eig.eigenvectors * DMatrix::from_diagonal(&clipped) * eig.eigenvectors.transpose()
}

/// The symmetric basis E_u of svec: E_ii = e_i e_iᵀ, E_ij = (e_i e_jᵀ + e_j e_iᵀ)/√2 (i < j),
/// orthonormal for ⟨A, B⟩ = tr(AᵀB).
fn basis(p: usize) -> Vec<DMatrix<f64>> {
    let mut out = Vec::with_capacity(p * (p + 1) / 2);
    for i in 0..p {
        for j in i..p {
            let mut e = DMatrix::zeros(p, p);
            if i == j {
                e[(i, i)] = 1.0;
            } else {
                e[(i, j)] = std::f64::consts::FRAC_1_SQRT_2;
                e[(j, i)] = std::f64::consts::FRAC_1_SQRT_2;
            }
            out.push(e);
        }
    }
    out
}

/// minimise ½⟨M, 𝒦(M)⟩ − ⟨a, M⟩ over M ⪰ 0 by a primal interior-point method: Newton steps on
/// ½⟨M, 𝒦(M)⟩ − ⟨a, M⟩ − μ log det M in the orthonormal symmetric basis, each kept inside
/// the cone (damped as for a self-concordant function), μ shrinking tenfold until μ·p is below
/// `tol`·‖a‖ (the p × p problem is tiny). Rounding limits the optimality residual to about
/// 1e-9 relative when the solution is rank-deficient; [`SdpSolution::residual`] reports it.
/// For p = 1 the solution is max(0, a/𝒦(1)) exactly.
pub fn solve_sdp(k: &KMap, a: &DMatrix<f64>, tol: f64, max_iterations: usize) -> SdpSolution {
    let p = k.p;
    let a = 0.5 * (a + a.transpose());
    let scale = a.norm().max(f64::MIN_POSITIVE);
    let residual = |m: &DMatrix<f64>| {
        let z = k.apply(m) - &a;
        (m - project_psd(&(m - z))).norm() / scale
    };
    if p == 1 {
        let kk = k.w[(0, 0)];
        let m = if kk > 0.0 {
            (a[(0, 0)] / kk).max(0.0)
        } else {
            0.0
        };
        let m = DMatrix::from_element(1, 1, m);
        return SdpSolution {
            residual: residual(&m),
            m,
            iterations: 1,
        };
    }
    // Interior solutions (every held direction oscillates) solve 𝒦(M) = a exactly: try that
    // first. The barrier's answer is only good to about μ, and that noise in the field costs
    // DOP853 tiny steps (with p = 2 held, 45 steps per unit time instead of 5).
    if let Some(m) = solve_on_range(k, &a, &DMatrix::identity(p, p)) {
        return SdpSolution {
            residual: residual(&m),
            m,
            iterations: 1,
        };
    }
    let reduced = Reduced::new(k, &a, basis(p));
    let (e, s) = (&reduced.e, reduced.e.len());
    let (kmat, avec) = (&reduced.kmat, &reduced.avec);
    let to_mat = |v: &nalgebra::DVector<f64>| reduced.to_mat(v);
    // start at the scaled identity, inside the cone
    let start = scale.max(1.0) * 1e-3 / p as f64;
    let mut v = nalgebra::DVector::from_fn(s, |u, _| {
        let (i, j) = (e[u].iamax_full().0, e[u].iamax_full().1);
        if i == j {
            start
        } else {
            0.0
        }
    });
    let mut mu = scale.max(1.0) * 1e-2;
    let mut iterations = 0;
    while iterations < max_iterations {
        // Newton on the barrier problem at this μ
        for _ in 0..60 {
            iterations += 1;
            let m = to_mat(&v);
            let Some(minv) = m.clone().try_inverse() else {
                break;
            };
            let grad =
                kmat * &v - avec - nalgebra::DVector::from_fn(s, |u, _| mu * e[u].dot(&minv));
            let hb = DMatrix::from_fn(s, s, |u, w| (&minv * &e[u] * &minv).dot(&e[w]));
            let hess = kmat + hb * mu;
            let Some(step) = hess.clone().cholesky().map(|c| c.solve(&(-&grad))) else {
                break;
            };
            // damped Newton for the self-concordant ½⟨M, 𝒦M⟩/μ − ⟨a, M⟩/μ − log det M:
            // the step 1/(1 + λ) stays in the cone and decreases it; full steps once λ < ¼
            let lambda = (-grad.dot(&step) / mu).max(0.0).sqrt();
            let t = if lambda < 0.25 {
                1.0
            } else {
                1.0 / (1.0 + lambda)
            };
            let trial = &v + &step * t;
            if to_mat(&trial).cholesky().is_none() {
                break;
            }
            v = trial;
            if lambda < 1e-10 {
                break;
            }
        }
        if mu * p as f64 <= tol * scale {
            break;
        }
        mu *= 0.1;
    }
    // The barrier keeps directions that should vanish at about μ: drop those that are below
    // a threshold when that meets the optimality conditions better.
    let interior = project_psd(&to_mat(&v));
    let eig = SymmetricEigen::new(interior.clone());
    let mut best = (residual(&interior), interior);
    for threshold in [1e-12, 1e-10, 1e-8] {
        let kept = eig.eigenvalues.map(|l| {
            if l <= threshold * scale.max(1.0) {
                0.0
            } else {
                l
            }
        });
        let m = &eig.eigenvectors * DMatrix::from_diagonal(&kept) * eig.eigenvectors.transpose();
        let r = residual(&m);
        if r < best.0 {
            best = (r, m);
        }
        // the barrier found the support; on it the solution is a linear solve, exact to
        // rounding where the barrier leaves about μ
        let support: Vec<usize> = (0..p).filter(|&i| kept[i] > 0.0).collect();
        if !support.is_empty() && support.len() < p {
            let w = eig.eigenvectors.select_columns(&support);
            if let Some(m) = solve_on_range(k, &a, &w) {
                let r = residual(&m);
                if r < best.0 {
                    best = (r, m);
                }
            }
        }
    }
    SdpSolution {
        residual: best.0,
        m: best.1,
        iterations,
    }
}

/// The minimiser of ½⟨M, 𝒦(M)⟩ − ⟨a, M⟩ over M = W N Wᵀ (W: p × r, orthonormal columns),
/// if it is positive definite on that range: then it meets the optimality conditions there.
fn solve_on_range(k: &KMap, a: &DMatrix<f64>, w: &DMatrix<f64>) -> Option<DMatrix<f64>> {
    let e = basis(w.ncols())
        .iter()
        .map(|eu| w * eu * w.transpose())
        .collect();
    let reduced = Reduced::new(k, a, e);
    let coefficients = reduced.kmat.clone().cholesky()?.solve(&reduced.avec);
    let m = reduced.to_mat(&coefficients);
    let n = w.transpose() * &m * w;
    n.cholesky().map(|_| m)
}

/// ½⟨M, 𝒦(M)⟩ − ⟨a, M⟩ for M = Σ_u v_u E_u in a Frobenius-orthonormal set of symmetric E_u:
/// ½vᵀKv − bᵀv with K_uv = ⟨E_u, 𝒦(E_v)⟩ (symmetrised) and b_u = ⟨E_u, a⟩.
struct Reduced {
    e: Vec<DMatrix<f64>>,
    kmat: DMatrix<f64>,
    avec: nalgebra::DVector<f64>,
}

impl Reduced {
    fn new(k: &KMap, a: &DMatrix<f64>, e: Vec<DMatrix<f64>>) -> Self {
        let s = e.len();
        let ke: Vec<DMatrix<f64>> = e.iter().map(|eu| k.apply(eu)).collect();
        let kmat = DMatrix::from_fn(s, s, |u, v| 0.5 * (e[u].dot(&ke[v]) + e[v].dot(&ke[u])));
        let avec = nalgebra::DVector::from_fn(s, |u, _| e[u].dot(a));
        Self { e, kmat, avec }
    }

    /// M = Σ_u v_u E_u.
    fn to_mat(&self, v: &nalgebra::DVector<f64>) -> DMatrix<f64> {
        let p = self.e[0].nrows();
        self.e
            .iter()
            .zip(v.iter())
            .fold(DMatrix::zeros(p, p), |acc, (eu, c)| acc + eu * *c)
    }
}

/// Work done by the central flow's field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CentralStats {
    /// Evaluations of the central field (each: the plain field, an eigen-solve, the g_ab, M).
    pub evaluations: usize,
    pub hvps: usize,
    pub second_derivatives: usize,
    pub eigen_solves: usize,
    pub sdp_iterations: usize,
    /// The largest SDP optimality residual met.
    pub worst_sdp_residual: f64,
    /// Eigen-solves that missed their tolerance (their best estimate was used).
    pub unconverged_eigen_solves: usize,
}

/// What the central field saw at its last evaluation.
#[derive(Debug, Clone, Default)]
pub struct CentralPoint {
    /// Top eigenvalues of ∇²f (p + 1 of them).
    pub eigenvalues: Vec<f64>,
    /// Their eigenvectors (and a neighbour's), with the top vectors of earlier solves and
    /// the model that predicts the next ones: the next eigen-solve's start.
    pub trail: Trail,
    /// M (p × p), zero-sized while p = 0.
    pub m: DMatrix<f64>,
    /// The state of the last evaluation with eigenvalues held (whose M this is).
    pub at: Vec<f64>,
}

impl CentralPoint {
    /// tr Σ = tr M (Q orthonormal).
    pub fn sigma_trace(&self) -> f64 {
        self.m.trace()
    }
}

/// x' = −∇f − ½ Σ M_ab g_ab with p active eigenvalues, around a gradient field.
pub struct CentralField {
    inner: Arc<dyn Field>,
    eta: f64,
    p: usize,
    beta: f64,
    eig_tol: f64,
    state: Mutex<(CentralPoint, CentralStats)>,
}

/// Ritz vectors kept beyond the held ones as the next eigen-solve's warm start: the next
/// eigenvector, whose eigenvalue is the held one's neighbour (1.89 beside 2 on the default
/// problem at η = 1). More of them bought fewer products only before [`HISTORY`] and
/// [`PREDICTION_POINTS`] (2 beside the prediction: 8% more products on the default problem
/// with the last held vector in the start, 3% more without it).
const WARM_EXTRA: usize = 1;

/// Top vectors of earlier eigen-solves also put in the start of a solve the field does not
/// make (the event tests' and their bisections'; [`Trail`]: the solver's stages lie nearly on
/// a line). Measured with the same tolerance (so with eigenpairs as accurate as
/// before): Hessian–vector products per evaluation 18.9 → 11.1 on the default problem at
/// η = 1 (120 steps), 10.6 → 5.9 on the README's 8 × 7 problem (2000 steps); 2 to 8 earlier
/// vectors with 1 to 3 Ritz neighbours all gave 10.6–12.7 and 5.9–7.4.
const HISTORY: usize = 4;

/// The field's own eigen-solves start from the held vectors predicted at the new state by a model
/// linear in the state through at most this many solves ([`Carry::Predicted`]; 24 to 48 once its
/// window has filled), beside the last solve's neighbour, instead of the earlier vectors
/// themselves. Measured with the same tolerance, Hessian–vector products per evaluation on the
/// default problem at η = 1 (300 steps), at η = 1.2 (two held) and on the README's 8 × 7 problem
/// (2000 steps): 9.15, 35.6 and 5.70 from the earlier vectors; 6.49, 8.9 and 3.87 from the
/// prediction beside the last solve's held vectors (through at most 32 and 64 solves 6.67 and 6.32,
/// –, 3.99 and 3.84); 5.75, 7.30 and 2.95 from the prediction in their place (the counts of
/// evaluations within 1%). The four earlier vectors beside the prediction cost more products than
/// they saved. Tried and not kept: the neighbour only where the prediction alone has not converged
/// (4.9 and 2.2 products, but 4–9% more evaluations: the field, its vector's error along the
/// neighbour not projected out, looks rougher to the error control; 1.13× the 8 × 7 run's time),
/// the ridge pulled towards the nearest state instead of the newest (−3% products on the default
/// problem, +4% on 8 × 7), a window of 64 (−3%, −1%).
const PREDICTION_POINTS: usize = 48;

/// Baumgarte's rate, in units of 1/η: active eigenvalues that drift off 2/η return with rate
/// β = this/η.
pub const DRIFT_RATE: f64 = 0.1;

impl CentralField {
    /// `inner` must be a gradient field (F = −∇f); `p` eigenvalues are held at 2/η.
    pub fn new(inner: Arc<dyn Field>, eta: f64, p: usize, eig_tol: f64) -> Self {
        Self {
            inner,
            eta,
            p,
            beta: DRIFT_RATE / eta,
            eig_tol,
            state: Mutex::new((CentralPoint::default(), CentralStats::default())),
        }
    }

    pub fn active(&self) -> usize {
        self.p
    }

    /// The warm start and counters carried from another field (the previous segment's).
    pub fn carry(&self, point: CentralPoint, stats: CentralStats) {
        *self.state.lock().expect("not poisoned") = (point, stats);
    }

    /// What the last evaluation saw, and the work so far: a copy of the whole warm start
    /// (the prediction's states included), for the next segment's field.
    pub fn last(&self) -> (CentralPoint, CentralStats) {
        self.state.lock().expect("not poisoned").clone()
    }

    /// `look` at what the last evaluation saw, without copying it (every step and output
    /// reads it: a copy of the prediction's states each time would cost about a product).
    pub fn inspect<R>(&self, look: impl FnOnce(&CentralPoint) -> R) -> R {
        look(&self.state.lock().expect("not poisoned").0)
    }

    /// The work so far.
    pub fn stats(&self) -> CentralStats {
        self.state.lock().expect("not poisoned").1.clone()
    }

    /// The top `count` eigenpairs at `x`, warm-started from the last evaluation's vectors
    /// (for the field's own p pairs, from the vectors predicted at `x` in place of the last
    /// held ones, beside the last neighbour); pairs found below `settled_below` need not
    /// converge (see [`EigenOptions::settled_below`]).
    pub fn eigenpairs(
        &self,
        x: &[f64],
        count: usize,
        settled_below: Option<f64>,
    ) -> (Vec<f64>, Vec<Vec<f64>>, bool) {
        let mut guard = self.state.lock().expect("not poisoned");
        let (point, stats) = &mut *guard;
        let eig = point.trail.solve(
            self.inner.as_ref(),
            x,
            &EigenOptions {
                count,
                block: count + 1,
                tol: self.eig_tol,
                max_hvps: 400 * (count + 1),
                max_basis: 12 * (count + 1),
                settled_below,
                warm_extra: WARM_EXTRA,
                history: 0,
            },
            if count == self.p {
                Carry::Predicted(PREDICTION_POINTS)
            } else {
                Carry::History(HISTORY)
            },
            0,
        );
        stats.eigen_solves += 1;
        stats.hvps += eig.hvps;
        if !eig.converged {
            stats.unconverged_eigen_solves += 1;
        }
        point.eigenvalues = eig.values.clone();
        (eig.values, eig.vectors, eig.converged)
    }

    /// out = the central field at x, and the M it used.
    fn evaluate_into(&self, x: &[f64], out: &mut [f64], ws: &mut Workspace) -> f64 {
        let loss = self.inner.rhs(x, out, ws);
        let p = self.p;
        if p == 0 {
            // the gradient flow: no eigen-solve at every stage (events are checked per step)
            let mut guard = self.state.lock().expect("not poisoned");
            guard.0.m = DMatrix::zeros(0, 0);
            guard.1.evaluations += 1;
            return loss;
        }
        // the field needs the p held pairs; the (p+1)-th is asked for where events are checked
        let (values, vectors, _) = self.eigenpairs(x, p, None);
        let n = x.len();
        let mut d2 = Vec::with_capacity(p * (p + 1) / 2);
        for a in 0..p {
            for b in a..p {
                let mut v = vec![0.0; n];
                self.inner
                    .second_derivative(x, &vectors[a], &vectors[b], &mut v, ws);
                d2.push(v);
            }
        }
        // g_ab = −D²F[q_a, q_b]; ∇f = −F; a_cd = −⟨g_cd, ∇f⟩ = −⟨D²F_cd, F⟩
        let g: Vec<Vec<f64>> = d2.iter().map(|v| v.iter().map(|x| -x).collect()).collect();
        let kmap = KMap::new(p, &g);
        let mut pos = 0;
        let mut a = DMatrix::zeros(p, p);
        for c in 0..p {
            for d in c..p {
                let acd = -dot(&d2[pos], out);
                a[(c, d)] = acd;
                a[(d, c)] = acd;
                pos += 1;
            }
        }
        for c in 0..p {
            a[(c, c)] += self.beta * (values[c] - 2.0 / self.eta);
        }
        let sol = solve_sdp(&kmap, &a, 1e-10, 2_000);
        // x' = F − ½ Σ M_ab g_ab = F + ½ Σ M_ab D²F_ab (each pair a ≠ b twice)
        let mut pos = 0;
        for a_ in 0..p {
            for b in a_..p {
                let w = if a_ == b { 0.5 } else { 1.0 } * sol.m[(a_, b)];
                if w != 0.0 {
                    out.iter_mut().zip(&d2[pos]).for_each(|(o, v)| *o += w * v);
                }
                pos += 1;
            }
        }
        let mut guard = self.state.lock().expect("not poisoned");
        let (point, stats) = &mut *guard;
        point.m = sol.m;
        point.at.clear();
        point.at.extend_from_slice(x);
        stats.evaluations += 1;
        stats.second_derivatives += d2.len();
        stats.sdp_iterations += sol.iterations;
        stats.worst_sdp_residual = stats.worst_sdp_residual.max(sol.residual);
        loss
    }
}

impl Field for CentralField {
    fn factors(&self) -> Factors {
        self.inner.factors()
    }
    fn operator(&self) -> &dyn SensingOperator {
        self.inner.operator()
    }
    fn observations(&self) -> &[f64] {
        self.inner.observations()
    }
    fn describe(&self) -> String {
        format!(
            "central (η = {}, {} active) of {}",
            self.eta,
            self.p,
            self.inner.describe()
        )
    }
    fn evaluate(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        self.inner.evaluate(state, ws)
    }
    fn loss(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        self.inner.loss(state, ws)
    }
    fn evaluate_loss(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        self.inner.evaluate_loss(state, ws)
    }
    fn rhs(&self, state: &[f64], out: &mut [f64], ws: &mut Workspace) -> f64 {
        self.evaluate_into(state, out, ws)
    }
    /// By central differences of the field (the explicit solvers never ask for it).
    fn jvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        crate::field::central_difference(state, dir, out, |x, o| {
            self.rhs(x, o, ws);
        });
    }
    /// The Hessian of f itself.
    fn hvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        self.inner.hvp(state, dir, out, ws);
    }
    fn hvp_many(&self, state: &[f64], dirs: &[&[f64]], outs: &mut [Vec<f64>], ws: &mut Workspace) {
        self.inner.hvp_many(state, dirs, outs, ws);
    }
}
