//! The vector field shared by GD and the gradient flow (MATH §2).
//!
//! A state is one vector (vec U, vec V) of length N = (n1 + n2)·k, both factors column-major.
//!
//! | quantity | formula | operator passes |
//! |---|---|---|
//! | loss | f = ½‖𝒜(UVᵀ) − y‖² | 1 |
//! | G | 𝒜*(𝒜(UVᵀ) − y) | 2 |
//! | field | F = (−GV, −GᵀU) = −∇f | 2 |
//! | jvp | J(Ů, V̊) = −(ĠV + GV̊, ĠᵀU + GᵀŮ), Ġ = 𝒜*𝒜(ŮVᵀ + UV̊ᵀ) | 2 (G cached) |
//! | Jacobian | J = −(CᵀC + S(G)), one GEMM | 2 + one pass building C |
//! | modified field | F̃ = F − (η/2)·J·F = −∇f̃, f̃ = f + (η/4)‖∇f‖² | 4 |

use std::sync::Arc;

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut};

use crate::config::PerturbationModel;
use crate::operator::SensingOperator;
use crate::problem::{sub_rng, Problem};

/// Stream of the seeded direction W of the `relative` and `absolute` perturbations.
pub const STREAM_PERTURBATION: u64 = 6;

/// The perturbed gradient flow of MATH §5: −G = (X* − UVᵀ) + E with E from a model.
#[derive(Clone, Debug)]
pub struct Perturbation {
    pub model: PerturbationModel,
    /// ε for `relative` and `absolute`.
    pub size: f64,
    x_star: DMatrix<f64>,
    /// W/‖W‖_F, W Gaussian from the seed's perturbation stream.
    direction: DMatrix<f64>,
    /// 𝒜*ξ for `noise` (ξ the problem's measurement noise: y − 𝒜(X*)).
    adjoint_noise: DMatrix<f64>,
}

impl Perturbation {
    pub fn new(model: PerturbationModel, size: f64, problem: &Problem, seed: u64) -> Self {
        use rand_distr::{Distribution, StandardNormal};
        let (n1, n2) = (problem.n1(), problem.n2());
        let mut rng = sub_rng(seed, STREAM_PERTURBATION);
        let mut w = DMatrix::<f64>::from_fn(n1, n2, |_, _| StandardNormal.sample(&mut rng));
        let norm = w.norm();
        w /= norm;
        let mut clean = vec![0.0; problem.m()];
        problem.op.apply(problem.x_star.as_slice(), &mut clean);
        let xi: Vec<f64> = problem.y.iter().zip(&clean).map(|(y, c)| y - c).collect();
        let mut adjoint_noise = DMatrix::zeros(n1, n2);
        problem.op.adjoint(&xi, adjoint_noise.as_mut_slice());
        Self {
            model,
            size,
            x_star: problem.x_star.clone(),
            direction: w,
            adjoint_noise,
        }
    }
}

/// f(U, V) = ½‖𝒜(UVᵀ) − y‖² and its negative gradient field.
#[derive(Clone)]
pub struct VectorField {
    op: Arc<dyn SensingOperator>,
    y: Vec<f64>,
    n1: usize,
    n2: usize,
    k: usize,
    /// `Some`: the perturbed flow's G = −(X* − UVᵀ + E) replaces 𝒜*(𝒜(UVᵀ) − y).
    perturbation: Option<Arc<Perturbation>>,
    /// The symmetric PSD case (MATH §3): the state is vec U alone, V = U, f = ¼‖𝒜(UUᵀ) − y‖²
    /// and U' = −GU.
    symmetric: bool,
}

/// Scratch buffers, and the residual of the last state seen so that a jvp at the state of
/// the preceding rhs evaluation (what Newton iterations do) costs two passes, not four.
#[derive(Clone, Debug)]
pub struct Workspace {
    x: DMatrix<f64>,
    r: Vec<f64>,
    g: DMatrix<f64>,
    loss: f64,
    cached: Option<Vec<f64>>,
    xdot: DMatrix<f64>,
    rdot: Vec<f64>,
    gdot: DMatrix<f64>,
    /// The plain field while the modified one is assembled.
    plain: Vec<f64>,
    /// R = X* − UVᵀ of the cached state (perturbed fields only).
    resid: DMatrix<f64>,
    scratch: DMatrix<f64>,
}

impl Workspace {
    /// G at the state of the last evaluation.
    pub fn g(&self) -> &DMatrix<f64> {
        &self.g
    }
}

impl VectorField {
    pub fn new(op: Arc<dyn SensingOperator>, y: Vec<f64>, k: usize) -> Self {
        assert_eq!(op.m(), y.len(), "one observation per measurement");
        let (n1, n2) = (op.n1(), op.n2());
        Self {
            op,
            y,
            n1,
            n2,
            k,
            perturbation: None,
            symmetric: false,
        }
    }

    /// The symmetric flow U' = −GU of f = ¼‖𝒜(UUᵀ) − y‖² (needs n1 = n2 and symmetric A_i).
    pub fn symmetric(mut self) -> Self {
        assert_eq!(self.n1, self.n2, "the symmetric case needs n1 = n2");
        self.symmetric = true;
        self
    }

    pub fn is_symmetric(&self) -> bool {
        self.symmetric
    }

    /// The perturbed flow of MATH §5 on the same problem: U' = (X* − UVᵀ + E)V,
    /// V' = (X* − UVᵀ + E)ᵀU. Its loss is reported as ½‖X* − UVᵀ‖² (not every model is a
    /// gradient flow).
    pub fn perturbed(mut self, p: Perturbation) -> Self {
        self.perturbation = Some(Arc::new(p));
        self
    }

    pub fn perturbation(&self) -> Option<&Perturbation> {
        self.perturbation.as_deref()
    }

    pub fn from_problem(p: &Problem) -> Self {
        let f = Self::new(p.op.clone(), p.y.clone(), p.width());
        if p.symmetric {
            f.symmetric()
        } else {
            f
        }
    }

    pub fn n1(&self) -> usize {
        self.n1
    }
    pub fn n2(&self) -> usize {
        self.n2
    }
    pub fn k(&self) -> usize {
        self.k
    }
    pub fn operator(&self) -> &dyn SensingOperator {
        self.op.as_ref()
    }
    pub fn observations(&self) -> &[f64] {
        &self.y
    }
    /// N = (n1 + n2)·k (n1·k in the symmetric case).
    pub fn state_len(&self) -> usize {
        if self.symmetric {
            self.n1 * self.k
        } else {
            (self.n1 + self.n2) * self.k
        }
    }

    pub fn workspace(&self) -> Workspace {
        let (n1, n2, m) = (self.n1, self.n2, self.y.len());
        Workspace {
            x: DMatrix::zeros(n1, n2),
            r: vec![0.0; m],
            g: DMatrix::zeros(n1, n2),
            loss: f64::NAN,
            cached: None,
            xdot: DMatrix::zeros(n1, n2),
            rdot: vec![0.0; m],
            gdot: DMatrix::zeros(n1, n2),
            plain: vec![0.0; self.state_len()],
            resid: DMatrix::zeros(n1, n2),
            scratch: DMatrix::zeros(n1, n2),
        }
    }

    /// Views of U (n1×k) and V (n2×k) inside a state (both U in the symmetric case).
    pub fn split<'s>(&self, state: &'s [f64]) -> (DMatrixView<'s, f64>, DMatrixView<'s, f64>) {
        let nu = self.n1 * self.k;
        if self.symmetric {
            let u = DMatrixView::from_slice(&state[..nu], self.n1, self.k);
            return (u, u);
        }
        (
            DMatrixView::from_slice(&state[..nu], self.n1, self.k),
            DMatrixView::from_slice(&state[nu..], self.n2, self.k),
        )
    }

    fn split_mut<'s>(
        &self,
        state: &'s mut [f64],
    ) -> (DMatrixViewMut<'s, f64>, DMatrixViewMut<'s, f64>) {
        let nu = self.n1 * self.k;
        let (a, b) = state.split_at_mut(nu);
        (
            DMatrixViewMut::from_slice(a, self.n1, self.k),
            DMatrixViewMut::from_slice(b, self.n2, self.k),
        )
    }

    /// UVᵀ of a state.
    pub fn product(&self, state: &[f64]) -> DMatrix<f64> {
        let (u, v) = self.split(state);
        u * v.transpose()
    }

    /// Residual r = 𝒜(UVᵀ) − y and G = 𝒜*(r) into the workspace; returns the loss.
    pub fn evaluate(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        assert_eq!(state.len(), self.state_len(), "state length");
        if ws.cached.as_deref() == Some(state) {
            return ws.loss;
        }
        let (u, v) = self.split(state);
        ws.x.gemm(1.0, &u, &v.transpose(), 0.0);
        if let Some(p) = &self.perturbation {
            ws.loss = self.evaluate_perturbed(p, ws);
        } else {
            self.op.apply(ws.x.as_slice(), &mut ws.r);
            for (ri, yi) in ws.r.iter_mut().zip(&self.y) {
                *ri -= yi;
            }
            self.op.adjoint(&ws.r, ws.g.as_mut_slice());
            ws.loss = self.loss_factor() * ws.r.iter().map(|r| r * r).sum::<f64>();
        }
        match &mut ws.cached {
            Some(c) => c.copy_from_slice(state),
            None => ws.cached = Some(state.to_vec()),
        }
        ws.loss
    }

    /// G = −(R + E) with R = X* − UVᵀ (ws.x holds UVᵀ); returns ½‖R‖².
    fn evaluate_perturbed(&self, p: &Perturbation, ws: &mut Workspace) -> f64 {
        ws.resid.copy_from(&p.x_star);
        ws.resid -= &ws.x;
        let e = &mut ws.scratch;
        match p.model {
            PerturbationModel::None => e.fill(0.0),
            PerturbationModel::Sensing | PerturbationModel::Noise => {
                // E = (𝒜*𝒜 − I)R (+ 𝒜*ξ), spelled out rather than folded into 𝒜*(𝒜X − y)
                self.op.apply(ws.resid.as_slice(), &mut ws.r);
                self.op.adjoint(&ws.r, e.as_mut_slice());
                *e -= &ws.resid;
                if p.model == PerturbationModel::Noise {
                    *e += &p.adjoint_noise;
                }
            }
            PerturbationModel::Relative => {
                e.copy_from(&p.direction);
                *e *= p.size * ws.resid.norm();
            }
            PerturbationModel::Absolute => {
                e.copy_from(&p.direction);
                *e *= p.size;
            }
        }
        ws.g.copy_from(&ws.resid);
        ws.g += &ws.scratch;
        ws.g.neg_mut();
        0.5 * ws.resid.norm_squared()
    }

    /// Ġ for a direction with Ẋ = ŮVᵀ + UV̊ᵀ in ws.xdot (perturbed fields; R cached).
    fn gdot_perturbed(&self, p: &Perturbation, ws: &mut Workspace) {
        // Ṙ = −Ẋ; Ġ = −(Ṙ + Ė) = Ẋ − Ė
        ws.gdot.copy_from(&ws.xdot);
        match p.model {
            PerturbationModel::None | PerturbationModel::Absolute => {}
            PerturbationModel::Sensing | PerturbationModel::Noise => {
                // Ė = (𝒜*𝒜 − I)Ṙ = −𝒜*𝒜Ẋ + Ẋ, so Ġ = 𝒜*𝒜Ẋ
                self.op.apply(ws.xdot.as_slice(), &mut ws.rdot);
                self.op.adjoint(&ws.rdot, ws.gdot.as_mut_slice());
            }
            PerturbationModel::Relative => {
                // Ė = ε⟨R, Ṙ⟩/‖R‖ · W = −ε⟨R, Ẋ⟩/‖R‖ · W
                let norm = ws.resid.norm();
                if norm > 0.0 {
                    let c = -p.size * ws.resid.dot(&ws.xdot) / norm;
                    for (g, w) in ws.gdot.iter_mut().zip(p.direction.iter()) {
                        *g -= c * w;
                    }
                }
            }
        }
    }

    /// f(U, V) alone: one operator pass (none for perturbed fields).
    pub fn loss(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        let (u, v) = self.split(state);
        ws.xdot.gemm(1.0, &u, &v.transpose(), 0.0);
        if let Some(p) = &self.perturbation {
            return 0.5 * (&p.x_star - &ws.xdot).norm_squared();
        }
        self.op.apply(ws.xdot.as_slice(), &mut ws.rdot);
        self.loss_factor()
            * ws.rdot
                .iter()
                .zip(&self.y)
                .map(|(a, y)| (a - y) * (a - y))
                .sum::<f64>()
    }

    /// ½ in f = ½‖𝒜(UVᵀ) − y‖², ¼ in the symmetric f = ¼‖𝒜(UUᵀ) − y‖².
    fn loss_factor(&self) -> f64 {
        if self.symmetric {
            0.25
        } else {
            0.5
        }
    }

    /// out = F(U, V) = (−GV, −GᵀU) (−GU in the symmetric case); returns the loss.
    pub fn rhs(&self, state: &[f64], out: &mut [f64], ws: &mut Workspace) -> f64 {
        let loss = self.evaluate(state, ws);
        let (u, v) = self.split(state);
        if self.symmetric {
            DMatrixViewMut::from_slice(out, self.n1, self.k).gemm(-1.0, &ws.g, &u, 0.0);
            return loss;
        }
        let (mut fu, mut fv) = self.split_mut(out);
        fu.gemm(-1.0, &ws.g, &v, 0.0);
        fv.gemm_tr(-1.0, &ws.g, &u, 0.0);
        loss
    }

    /// [`Self::rhs`] for several states sharing this field, with 𝒜 and 𝒜* applied to eight of
    /// them per pass over the sensing matrix ([`SensingOperator::apply_block`]). Outputs and
    /// losses equal [`Self::rhs`]'s to rounding.
    pub fn rhs_batch(&self, states: &[&[f64]], outs: &mut [Vec<f64>]) -> Vec<f64> {
        if self.perturbation.is_some() || self.symmetric || states.len() < 2 {
            let mut ws = self.workspace();
            return states
                .iter()
                .zip(outs.iter_mut())
                .map(|(x, o)| self.rhs(x, o, &mut ws))
                .collect();
        }
        let (n1, n2, m) = (self.n1, self.n2, self.y.len());
        let xs: Vec<DMatrix<f64>> = states
            .iter()
            .map(|s| {
                let (u, v) = self.split(s);
                let mut x = DMatrix::zeros(n1, n2);
                x.gemm(1.0, &u, &v.transpose(), 0.0);
                x
            })
            .collect();
        let views: Vec<&[f64]> = xs.iter().map(|x| x.as_slice()).collect();
        let mut rs = vec![vec![0.0; m]; states.len()];
        self.op.apply_block(&views, &mut rs);
        let mut losses = Vec::with_capacity(states.len());
        for r in rs.iter_mut() {
            for (ri, yi) in r.iter_mut().zip(&self.y) {
                *ri -= yi;
            }
            losses.push(self.loss_factor() * r.iter().map(|v| v * v).sum::<f64>());
        }
        let rviews: Vec<&[f64]> = rs.iter().map(|r| r.as_slice()).collect();
        let mut gs = vec![vec![0.0; n1 * n2]; states.len()];
        self.op.adjoint_block(&rviews, &mut gs);
        for ((s, g), out) in states.iter().zip(&gs).zip(outs.iter_mut()) {
            let g = DMatrixView::from_slice(g, n1, n2);
            let (u, v) = self.split(s);
            let (mut fu, mut fv) = self.split_mut(out);
            fu.gemm(-1.0, &g, &v, 0.0);
            fv.gemm_tr(-1.0, &g, &u, 0.0);
        }
        losses
    }

    /// out = J(state)·dir, the exact derivative of [`Self::rhs`].
    pub fn jvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        self.evaluate(state, ws);
        let (u, v) = self.split(state);
        let (du, dv) = self.split(dir);
        ws.xdot.gemm(1.0, &du, &v.transpose(), 0.0);
        ws.xdot.gemm(1.0, &u, &dv.transpose(), 1.0);
        if let Some(p) = &self.perturbation {
            self.gdot_perturbed(p, ws);
        } else {
            self.op.apply(ws.xdot.as_slice(), &mut ws.rdot);
            self.op.adjoint(&ws.rdot, ws.gdot.as_mut_slice());
        }
        if self.symmetric {
            // −(ĠU + GU̇)
            let mut ou = DMatrixViewMut::from_slice(out, self.n1, self.k);
            ou.gemm(-1.0, &ws.gdot, &u, 0.0);
            ou.gemm(-1.0, &ws.g, &du, 1.0);
            return;
        }
        let (mut ou, mut ov) = self.split_mut(out);
        ou.gemm(-1.0, &ws.gdot, &v, 0.0);
        ou.gemm(-1.0, &ws.g, &dv, 1.0);
        ov.gemm_tr(-1.0, &ws.gdot, &u, 0.0);
        ov.gemm_tr(-1.0, &ws.g, &du, 1.0);
    }

    /// out = H·dir with H = ∇²f = −J, the Hessian–vector product of the loss.
    pub fn hvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        self.jvp(state, dir, out, ws);
        out.iter_mut().for_each(|o| *o = -*o);
    }

    /// out = F̃ = −∇f̃ for GD's modified loss f̃ = f + (η/4)‖∇f‖² (GD with step η follows the
    /// flow of f̃ to second order): ∇f̃ = ∇f + (η/2)∇²f·∇f, and with F = −∇f, J = −∇²f this
    /// is F − (η/2)·J·F. Returns f (not f̃).
    pub fn modified_rhs(
        &self,
        state: &[f64],
        eta: f64,
        out: &mut [f64],
        ws: &mut Workspace,
    ) -> f64 {
        let mut plain = std::mem::take(&mut ws.plain);
        plain.resize(self.state_len(), 0.0);
        let loss = self.rhs(state, &mut plain, ws);
        self.jvp(state, &plain, out, ws);
        for (o, f) in out.iter_mut().zip(&plain) {
            *o = f - 0.5 * eta * *o;
        }
        ws.plain = plain;
        loss
    }

    /// f̃ = f + (η/4)‖∇f‖², the loss whose gradient flow [`Self::modified_rhs`] is.
    pub fn modified_loss(&self, state: &[f64], eta: f64, ws: &mut Workspace) -> f64 {
        let mut plain = vec![0.0; self.state_len()];
        let loss = self.rhs(state, &mut plain, ws);
        loss + 0.25 * eta * plain.iter().map(|v| v * v).sum::<f64>()
    }

    /// Multiply–adds of one [`Self::rhs`]: two passes over the operator and the three
    /// factor products (UVᵀ, GV, GᵀU).
    pub fn rhs_cost_macs(&self) -> f64 {
        2.0 * self.op.entries_per_pass() as f64 + 3.0 * (self.n1 * self.n2 * self.k) as f64
    }

    /// Multiply–adds of one [`Self::jacobian_into`]: building C and the GEMM CᵀC, or one jvp
    /// per column where there is no one-GEMM form.
    pub fn jacobian_cost_macs(&self) -> f64 {
        let n = self.state_len() as f64;
        if self.perturbation.is_some() || self.symmetric {
            return n * self.rhs_cost_macs();
        }
        let m = self.y.len() as f64;
        m * n * n + m * 2.0 * (self.n1 * self.n2 * self.k) as f64
    }

    /// The dense N×N Jacobian J = −(CᵀC + S(G)) (MATH §2) in one GEMM, where row i of C is
    /// (vec(A_i V), vec(A_iᵀ U)) and S(G) has I_k ⊗ G and its transpose off the diagonal.
    pub fn jacobian_into(&self, state: &[f64], jac: &mut DMatrix<f64>, ws: &mut Workspace) {
        let n = self.state_len();
        assert_eq!(jac.shape(), (n, n), "Jacobian shape");
        if self.perturbation.is_some() || self.symmetric {
            // No one-GEMM form here: one jvp per column.
            let mut e = vec![0.0; n];
            let mut col = vec![0.0; n];
            for j in 0..n {
                e[j] = 1.0;
                self.jvp(state, &e, &mut col, ws);
                jac.column_mut(j).copy_from_slice(&col);
                e[j] = 0.0;
            }
            return;
        }
        self.evaluate(state, ws);
        let (u, v) = self.split(state);
        let (n1, n2, k, m) = (self.n1, self.n2, self.k, self.y.len());
        let nu = n1 * k;
        // Cᵀ, column i = row i of C: contiguous, and CᵀC = Cᵀ (Cᵀ)ᵀ is one GEMM on it.
        let mut ct = DMatrix::<f64>::zeros(n, m);
        let mut ai = vec![0.0; n1 * n2];
        for i in 0..m {
            self.op.measurement_matrix(i, &mut ai);
            let a = DMatrixView::from_slice(&ai, n1, n2);
            let col = ct.column_mut(i);
            let col = col.data.into_slice_mut();
            let (cu, cv) = col.split_at_mut(nu);
            DMatrixViewMut::from_slice(cu, n1, k).gemm(1.0, &a, &v, 0.0);
            DMatrixViewMut::from_slice(cv, n2, k).gemm_tr(1.0, &a, &u, 0.0);
        }
        // CᵀC is symmetric: form its lower triangle only (half the multiply–adds of a full
        // GEMM) and mirror it. Sequential, so the result does not depend on the thread count.
        {
            use faer::linalg::matmul::triangular::{matmul, BlockStructure};
            let c = faer::MatRef::from_column_major_slice(ct.as_slice(), n, m);
            matmul(
                faer::MatMut::from_column_major_slice_mut(jac.as_mut_slice(), n, n),
                BlockStructure::TriangularLower,
                faer::Accum::Replace,
                c,
                BlockStructure::Rectangular,
                c.transpose(),
                BlockStructure::Rectangular,
                -1.0,
                faer::Par::Seq,
            );
        }
        for col in 1..n {
            for row in 0..col {
                jac[(row, col)] = jac[(col, row)];
            }
        }
        // −S(G): entry (a + j·n1, nu + b + j·n2) and its mirror are −G_ab.
        for j in 0..k {
            for b in 0..n2 {
                let col = nu + b + j * n2;
                for a in 0..n1 {
                    let row = a + j * n1;
                    let g = ws.g[(a, b)];
                    jac[(row, col)] -= g;
                    jac[(col, row)] -= g;
                }
            }
        }
    }

    /// Allocating form of [`Self::jacobian_into`].
    pub fn jacobian(&self, state: &[f64], ws: &mut Workspace) -> DMatrix<f64> {
        let n = self.state_len();
        let mut jac = DMatrix::zeros(n, n);
        self.jacobian_into(state, &mut jac, ws);
        jac
    }
}
