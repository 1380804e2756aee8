//! The vector fields every dynamics runs on (MATH §2, §5): GD steps along them, the flows
//! integrate them.
//!
//! A state is one vector (vec U, vec V) of length N = (n1 + n2)·k, both factors column-major
//! (vec U alone, N = n1·k, in the symmetric case), described by [`Factors`].
//!
//! | type | field | what it wraps |
//! |---|---|---|
//! | [`SensingField`] | F = (−GV, −GᵀU), G = 𝒜*(𝒜(UVᵀ) − y) = ∇_X f | the operator and y |
//! | [`Perturbed`] | F = ((X* − UVᵀ + E)V, (X* − UVᵀ + E)ᵀU), E from a model (MATH §5) | a [`SensingField`] |
//! | [`Modified`] | F̃ = F − (η/2)·J·F, GD's second-order modified field | any [`Field`] |
//!
//! The first two are [`FactorGradient`]s: a matrix G(X) of X = UVᵀ, mapped to the factors.
//! Every [`FactorGradient`] is a [`Field`] through one implementation of the factor maps, so a
//! new one (another perturbation model, a preconditioned gradient) only says what G, its
//! derivative and its second derivative are.
//!
//! | quantity | operator passes (sensing) |
//! |---|---|
//! | loss | 1 |
//! | rhs (G and F) | 2 (1 fused, dense operator) |
//! | two evaluations at once ([`Field::evaluate_pair`]) | 1 fused, dense operator |
//! | an evaluation and another state's loss ([`Field::evaluate_beside_loss`]) | 1 fused, the second input's dot products added |
//! | jvp (G cached by state) | 2 |
//! | second derivative D²F[u, w] | 6 |
//! | Jacobian (one GEMM) | 2 + one pass building C |
//! | modified rhs | 4 |

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut};
use serde::{Deserialize, Serialize};

use crate::operator::SensingOperator;
use crate::vector::norm;

mod modified;
mod perturbed;
mod sensing;

pub use modified::Modified;
pub use perturbed::{Perturbation, PerturbationModel, Perturbed, STREAM_PERTURBATION};
pub use sensing::SensingField;

/// The shape of a state: U (n1×k) and V (n2×k), or U alone with V = U in the symmetric case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Factors {
    pub n1: usize,
    pub n2: usize,
    pub k: usize,
    pub symmetric: bool,
}

impl Factors {
    /// N = (n1 + n2)·k (n1·k in the symmetric case).
    pub fn state_len(&self) -> usize {
        if self.symmetric {
            self.n1 * self.k
        } else {
            (self.n1 + self.n2) * self.k
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

    /// Mutable views of U and V (asymmetric states only).
    pub fn split_mut<'s>(
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

    /// UVᵀ of a state into `out` (n1×n2), without allocating.
    pub fn product_into(&self, state: &[f64], out: &mut DMatrix<f64>) {
        let (u, v) = self.split(state);
        out.gemm(1.0, &u, &v.transpose(), 0.0);
    }

    /// Ẋ = ŮVᵀ + UV̊ᵀ, the product's derivative at `state` in direction `dir`, into `out`.
    pub fn product_dot(&self, state: &[f64], dir: &[f64], out: &mut DMatrix<f64>) {
        let (u, v) = self.split(state);
        let (du, dv) = self.split(dir);
        out.gemm(1.0, &du, &v.transpose(), 0.0);
        out.gemm(1.0, &u, &dv.transpose(), 1.0);
    }

    /// out = (−GV, −GᵀU), or −GU in the symmetric case.
    pub fn map_gradient(&self, state: &[f64], g: &DMatrix<f64>, out: &mut [f64]) {
        let (u, v) = self.split(state);
        if self.symmetric {
            DMatrixViewMut::from_slice(out, self.n1, self.k).gemm(-1.0, g, &u, 0.0);
            return;
        }
        let (mut fu, mut fv) = self.split_mut(out);
        fu.gemm(-1.0, g, &v, 0.0);
        fv.gemm_tr(-1.0, g, &u, 0.0);
    }

    /// The derivative of [`Self::map_gradient`] along `dir` with Ġ the derivative of G:
    /// out = −(ĠV + GV̊, ĠᵀU + GᵀŮ), or −(ĠU + GŮ).
    pub fn map_gradient_dot(
        &self,
        state: &[f64],
        dir: &[f64],
        g: &DMatrix<f64>,
        gdot: &DMatrix<f64>,
        out: &mut [f64],
    ) {
        let (u, v) = self.split(state);
        let (du, dv) = self.split(dir);
        if self.symmetric {
            let mut ou = DMatrixViewMut::from_slice(out, self.n1, self.k);
            ou.gemm(-1.0, gdot, &u, 0.0);
            ou.gemm(-1.0, g, &du, 1.0);
            return;
        }
        let (mut ou, mut ov) = self.split_mut(out);
        ou.gemm(-1.0, gdot, &v, 0.0);
        ou.gemm(-1.0, g, &dv, 1.0);
        ov.gemm_tr(-1.0, gdot, &u, 0.0);
        ov.gemm_tr(-1.0, g, &du, 1.0);
    }
}

/// Scratch buffers of one caller, and the G of the last state seen, so that a jvp at the
/// state of the preceding rhs evaluation (what Newton iterations do) costs two passes, not
/// four. One workspace per thread.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub(crate) x: DMatrix<f64>,
    pub(crate) r: Vec<f64>,
    pub(crate) g: DMatrix<f64>,
    pub(crate) loss: f64,
    pub(crate) cached: Option<Vec<f64>>,
    /// The cached state's loss was computed without G ([`Field::evaluate_loss`]).
    pub(crate) loss_only: bool,
    pub(crate) xdot: DMatrix<f64>,
    pub(crate) rdot: Vec<f64>,
    pub(crate) gdot: DMatrix<f64>,
    /// The inner field while a wrapper assembles its own.
    pub(crate) plain: Vec<f64>,
    /// R = X* − UVᵀ of the cached state (perturbed fields).
    pub(crate) resid: DMatrix<f64>,
    pub(crate) scratch: DMatrix<f64>,
}

impl Workspace {
    /// Buffers for states of shape `factors` and `m` measurements.
    pub fn new(factors: Factors, m: usize) -> Self {
        let (n1, n2) = (factors.n1, factors.n2);
        Self {
            x: DMatrix::zeros(n1, n2),
            r: vec![0.0; m],
            g: DMatrix::zeros(n1, n2),
            loss: f64::NAN,
            cached: None,
            loss_only: false,
            xdot: DMatrix::zeros(n1, n2),
            rdot: vec![0.0; m],
            gdot: DMatrix::zeros(n1, n2),
            plain: vec![0.0; factors.state_len()],
            resid: DMatrix::zeros(n1, n2),
            scratch: DMatrix::zeros(n1, n2),
        }
    }

    /// G at the state of the last evaluation.
    pub fn g(&self) -> &DMatrix<f64> {
        &self.g
    }

    /// The residual r = 𝒜(UVᵀ) − y of the last evaluation (sensing fields).
    pub fn residual(&self) -> &[f64] {
        &self.r
    }

    /// Whether `state` is the state of the last evaluation, G included.
    pub(crate) fn holds(&self, state: &[f64]) -> bool {
        !self.loss_only && self.holds_loss(state)
    }

    /// Whether the workspace holds the loss at `state` (with or without G).
    pub(crate) fn holds_loss(&self, state: &[f64]) -> bool {
        self.cached.as_deref() == Some(state)
    }

    pub(crate) fn remember(&mut self, state: &[f64], loss: f64) {
        self.remember_loss(state, loss);
        self.loss_only = false;
    }

    pub(crate) fn remember_loss(&mut self, state: &[f64], loss: f64) {
        self.loss = loss;
        self.loss_only = true;
        match &mut self.cached {
            Some(c) if c.len() == state.len() => c.copy_from_slice(state),
            _ => self.cached = Some(state.to_vec()),
        }
    }
}

/// The [`Field`] methods a wrapper of another field (in its field `$inner`) passes through
/// unchanged: the shape, the operator, y, the evaluation and the loss (alone too). Wrappers that change
/// the field (GD's modified field, ScaledGD's preconditioned one, …) write only what they
/// change.
#[macro_export]
macro_rules! delegate_to_inner_field {
    ($inner:ident) => {
        fn factors(&self) -> $crate::field::Factors {
            self.$inner.factors()
        }
        fn operator(&self) -> &dyn $crate::operator::SensingOperator {
            self.$inner.operator()
        }
        fn observations(&self) -> &[f64] {
            self.$inner.observations()
        }
        fn evaluate(&self, state: &[f64], ws: &mut $crate::field::Workspace) -> f64 {
            self.$inner.evaluate(state, ws)
        }
        fn loss(&self, state: &[f64], ws: &mut $crate::field::Workspace) -> f64 {
            self.$inner.loss(state, ws)
        }
        fn evaluate_loss(&self, state: &[f64], ws: &mut $crate::field::Workspace) -> f64 {
            self.$inner.evaluate_loss(state, ws)
        }
        fn loss_batch(&self, states: &[&[f64]]) -> Vec<f64> {
            self.$inner.loss_batch(states)
        }
    };
}

/// A vector field on factor states: what GD steps along and what the flows integrate.
///
/// Required: the shape, the operator it measures with, [`Field::evaluate`], [`Field::rhs`],
/// [`Field::jvp`] and [`Field::loss`]; everything else has a default built on those.
pub trait Field: Send + Sync {
    /// The state's shape.
    fn factors(&self) -> Factors;
    /// The sensing operator (work estimates, the one-GEMM Jacobian).
    fn operator(&self) -> &dyn SensingOperator;
    /// The observations y.
    fn observations(&self) -> &[f64];
    /// A short description for reports ("sensing", "perturbed (relative, ε = 0.1)", …).
    fn describe(&self) -> String;

    /// G at `state` into the workspace (see [`Workspace::g`]); returns the loss. Cached: a
    /// second call at the same state costs nothing.
    fn evaluate(&self, state: &[f64], ws: &mut Workspace) -> f64;
    /// [`Field::evaluate`] at two states, each into its own workspace, with the same results
    /// bit for bit; fields whose two evaluations can share a pass over the sensing matrix do.
    fn evaluate_pair(
        &self,
        a: &[f64],
        wa: &mut Workspace,
        b: &[f64],
        wb: &mut Workspace,
    ) -> (f64, f64) {
        (self.evaluate(a, wa), self.evaluate(b, wb))
    }
    /// The loss at `state`, kept in `ws` (which then holds that loss, not G there:
    /// [`Workspace::holds_loss`]); bit-identical to [`Field::evaluate`]'s. Cached as
    /// [`Field::evaluate`] is, and free where `ws` holds G at `state`.
    fn evaluate_loss(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        if ws.holds_loss(state) {
            return ws.loss;
        }
        let loss = self.loss(state, ws);
        ws.remember_loss(state, loss);
        loss
    }
    /// [`Field::evaluate`] at `a` and [`Field::evaluate_loss`] at `b`, with the same results
    /// bit for bit; where the two share a pass over the sensing matrix, `b` costs its
    /// residual's dot products only (a record beside GD's step that needs only the loss).
    fn evaluate_beside_loss(
        &self,
        a: &[f64],
        wa: &mut Workspace,
        b: &[f64],
        wb: &mut Workspace,
    ) -> (f64, f64) {
        (self.evaluate(a, wa), self.evaluate_loss(b, wb))
    }
    /// [`Field::evaluate_pair`] at `a` and `b` and [`Field::evaluate_loss`] at `c`, with the
    /// same results bit for bit; where the three share a pass over the sensing matrix, `c`
    /// costs its residual's dot products only (a flow's right-hand side, GD's step and a
    /// record beside them that needs only the loss).
    fn evaluate_pair_beside_loss(
        &self,
        a: &[f64],
        wa: &mut Workspace,
        b: &[f64],
        wb: &mut Workspace,
        c: &[f64],
        wc: &mut Workspace,
    ) -> (f64, f64, f64) {
        let (la, lb) = self.evaluate_pair(a, wa, b, wb);
        (la, lb, self.evaluate_loss(c, wc))
    }
    /// out = F(state); returns the loss f(state).
    fn rhs(&self, state: &[f64], out: &mut [f64], ws: &mut Workspace) -> f64;
    /// out = J(state)·dir, the derivative of [`Field::rhs`].
    fn jvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace);
    /// The loss alone.
    fn loss(&self, state: &[f64], ws: &mut Workspace) -> f64;

    /// out = D²F(state)[u, w], the second derivative of the field (symmetric in u, w). For a
    /// gradient field F = −∇f this is −D³f[u, w, ·] (MATH §8). The default is a central
    /// difference of [`Field::jvp`] along u with a step of ε^{1/3} relative to the state;
    /// fields with a closed form override it.
    fn second_derivative(
        &self,
        state: &[f64],
        u: &[f64],
        w: &[f64],
        out: &mut [f64],
        ws: &mut Workspace,
    ) {
        central_difference(state, u, out, |x, o| self.jvp(x, w, o, ws));
    }

    /// out = H·dir with H = ∇²f = −J, the Hessian–vector product of the loss (for gradient
    /// fields).
    fn hvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        self.jvp(state, dir, out, ws);
        out.iter_mut().for_each(|o| *o = -*o);
    }

    /// [`Field::hvp`] along each of `dirs` into `outs`, each bit-identical to its own call;
    /// fields whose products can share passes over the sensing matrix do (a block of an
    /// eigen-solve's vectors).
    fn hvp_many(&self, state: &[f64], dirs: &[&[f64]], outs: &mut [Vec<f64>], ws: &mut Workspace) {
        for (dir, out) in dirs.iter().zip(outs.iter_mut()) {
            self.hvp(state, dir, out, ws);
        }
    }

    /// A fresh workspace for this field.
    fn workspace(&self) -> Workspace {
        Workspace::new(self.factors(), self.operator().m())
    }

    /// N, the length of a state.
    fn state_len(&self) -> usize {
        self.factors().state_len()
    }

    /// UVᵀ of a state.
    fn product(&self, state: &[f64]) -> DMatrix<f64> {
        self.factors().product(state)
    }

    /// The dense N×N Jacobian (or the matrix Newton's iteration uses, see
    /// [`Field::jacobian_is_exact`]). The default is one jvp per column.
    fn jacobian_into(&self, state: &[f64], jac: &mut DMatrix<f64>, ws: &mut Workspace) {
        default_jacobian(self, state, jac, ws);
    }

    /// Whether [`Field::jacobian_into`] is the exact Jacobian (false where it is a cheaper
    /// matrix that only steers Newton's iteration, e.g. the modified field's).
    fn jacobian_is_exact(&self) -> bool {
        true
    }

    /// Allocating form of [`Field::jacobian_into`].
    fn jacobian(&self, state: &[f64], ws: &mut Workspace) -> DMatrix<f64> {
        let n = self.state_len();
        let mut jac = DMatrix::zeros(n, n);
        self.jacobian_into(state, &mut jac, ws);
        jac
    }

    /// Multiply–adds of one [`Field::rhs`]: two passes over the operator and the three
    /// factor products (UVᵀ, GV, GᵀU).
    fn rhs_cost_macs(&self) -> f64 {
        let f = self.factors();
        2.0 * self.operator().entries_per_pass() as f64 + 3.0 * (f.n1 * f.n2 * f.k) as f64
    }

    /// Multiply–adds of one [`Field::jacobian_into`].
    fn jacobian_cost_macs(&self) -> f64 {
        self.state_len() as f64 * self.rhs_cost_macs()
    }

    /// [`Field::loss`] at several states; fields that can share a pass over the sensing matrix
    /// between them override it. Losses equal [`Field::loss`]'s to rounding.
    fn loss_batch(&self, states: &[&[f64]]) -> Vec<f64> {
        let mut ws = self.workspace();
        states.iter().map(|x| self.loss(x, &mut ws)).collect()
    }

    /// [`Field::rhs`] for several states; fields that can share a pass over the sensing
    /// matrix between them override it. Outputs and losses equal [`Field::rhs`]'s to
    /// rounding.
    fn rhs_batch(&self, states: &[&[f64]], outs: &mut [Vec<f64>]) -> Vec<f64> {
        let mut ws = self.workspace();
        states
            .iter()
            .zip(outs.iter_mut())
            .map(|(x, o)| self.rhs(x, o, &mut ws))
            .collect()
    }
}

/// A field F = (−GV, −GᵀU) (−GU symmetric) whose G is a matrix function of X = UVᵀ: the
/// sensing field, and the perturbed flows of MATH §5. Implementing the three derivatives of G
/// makes it a [`Field`] with exact jvp and second derivative.
pub trait FactorGradient: Send + Sync {
    fn factors(&self) -> Factors;
    fn operator(&self) -> &dyn SensingOperator;
    fn observations(&self) -> &[f64];
    fn describe(&self) -> String;
    /// G(X) into `ws.g` with X = UVᵀ already in `ws.x`; returns the loss.
    fn gradient(&self, ws: &mut Workspace) -> f64;
    /// Ġ = DG(X)[Ẋ] for Ẋ in `ws.xdot`, into `ws.gdot` (X is the state `gradient` last saw).
    fn gradient_dot(&self, ws: &mut Workspace);
    /// [`Self::gradient`] for two workspaces (X in each `ws.x`), each result bit-identical to
    /// its own call; the sensing field serves both from one operator pass.
    fn gradient_pair(&self, a: &mut Workspace, b: &mut Workspace) -> (f64, f64) {
        (self.gradient(a), self.gradient(b))
    }
    /// [`Self::gradient`] at `a` and the loss alone at X = `b.x` (as [`Self::loss_at`]), each
    /// bit-identical to its own call; the sensing field serves both from one operator pass.
    fn gradient_beside_loss(&self, a: &mut Workspace, b: &mut Workspace) -> (f64, f64) {
        let x = std::mem::replace(&mut b.x, DMatrix::zeros(0, 0));
        let lb = self.loss_at(&x, b);
        b.x = x;
        (self.gradient(a), lb)
    }
    /// [`Self::gradient_pair`] at `a` and `b` and the loss alone at X = `c.x`, each
    /// bit-identical to its own call; the sensing field serves all three from one pass.
    fn gradient_pair_beside_loss(
        &self,
        a: &mut Workspace,
        b: &mut Workspace,
        c: &mut Workspace,
    ) -> (f64, f64, f64) {
        let (la, lc) = self.gradient_beside_loss(a, c);
        (la, self.gradient(b), lc)
    }
    /// [`Self::gradient_dot`] for each of `xdots` into `gdots` (X is the state `gradient` last
    /// saw), each bit-identical to its own call; the sensing field shares passes among them.
    fn gradient_dot_many(
        &self,
        ws: &mut Workspace,
        xdots: &[DMatrix<f64>],
        gdots: &mut [DMatrix<f64>],
    ) {
        for (xdot, gdot) in xdots.iter().zip(gdots.iter_mut()) {
            ws.xdot.copy_from(xdot);
            self.gradient_dot(ws);
            gdot.copy_from(&ws.gdot);
        }
    }
    /// G̈ = D²G(X)[Ẋ_u, Ẋ_w] + DG(X)[Ẍ] into `out`.
    fn gradient_second(
        &self,
        ws: &mut Workspace,
        xdot_u: &DMatrix<f64>,
        xdot_w: &DMatrix<f64>,
        xddot: &DMatrix<f64>,
        out: &mut DMatrix<f64>,
    );
    /// The loss at X = `x`, preferably without G.
    fn loss_at(&self, x: &DMatrix<f64>, ws: &mut Workspace) -> f64;
    /// Overrides of the [`Field`] defaults.
    fn jacobian_into(&self, state: &[f64], jac: &mut DMatrix<f64>, ws: &mut Workspace) -> bool {
        let _ = (state, jac, ws);
        false
    }
    fn jacobian_cost_macs(&self) -> Option<f64> {
        None
    }
    fn rhs_batch(&self, states: &[&[f64]], outs: &mut [Vec<f64>]) -> Option<Vec<f64>> {
        let _ = (states, outs);
        None
    }
    /// The losses at several X at once, where one pass can serve them all.
    fn loss_batch(&self, xs: &[DMatrix<f64>]) -> Option<Vec<f64>> {
        let _ = xs;
        None
    }
}

/// `field` at `a` into `wa` and at `b` into `wb` — G there too if `gradient`
/// ([`Field::evaluate_pair`]), the loss alone otherwise ([`Field::evaluate_beside_loss`]) — in
/// one pass where the field can share it.
pub(crate) fn evaluate_beside(
    field: &dyn Field,
    (a, wa): (&[f64], &mut Workspace),
    (b, wb): (&[f64], &mut Workspace),
    gradient: bool,
) -> (f64, f64) {
    if gradient {
        field.evaluate_pair(a, wa, b, wb)
    } else {
        field.evaluate_beside_loss(a, wa, b, wb)
    }
}

/// X = UVᵀ of each state into its workspace, for a pass that serves them together.
fn products_into<const N: usize>(f: Factors, states: [(&[f64], &mut Workspace); N]) {
    for (state, ws) in states {
        assert_eq!(state.len(), f.state_len(), "state length");
        f.product_into(state, &mut ws.x);
    }
}

impl<T: FactorGradient> Field for T {
    fn factors(&self) -> Factors {
        FactorGradient::factors(self)
    }
    fn operator(&self) -> &dyn SensingOperator {
        FactorGradient::operator(self)
    }
    fn observations(&self) -> &[f64] {
        FactorGradient::observations(self)
    }
    fn describe(&self) -> String {
        FactorGradient::describe(self)
    }

    fn evaluate(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        let f = FactorGradient::factors(self);
        assert_eq!(state.len(), f.state_len(), "state length");
        if ws.holds(state) {
            return ws.loss;
        }
        f.product_into(state, &mut ws.x);
        let loss = self.gradient(ws);
        ws.remember(state, loss);
        loss
    }

    fn evaluate_pair(
        &self,
        a: &[f64],
        wa: &mut Workspace,
        b: &[f64],
        wb: &mut Workspace,
    ) -> (f64, f64) {
        if wa.holds(a) || wb.holds(b) {
            return (self.evaluate(a, wa), self.evaluate(b, wb));
        }
        products_into(
            FactorGradient::factors(self),
            [(a, &mut *wa), (b, &mut *wb)],
        );
        let (la, lb) = self.gradient_pair(wa, wb);
        wa.remember(a, la);
        wb.remember(b, lb);
        (la, lb)
    }

    fn evaluate_beside_loss(
        &self,
        a: &[f64],
        wa: &mut Workspace,
        b: &[f64],
        wb: &mut Workspace,
    ) -> (f64, f64) {
        if wa.holds(a) || wb.holds_loss(b) {
            return (self.evaluate(a, wa), self.evaluate_loss(b, wb));
        }
        products_into(
            FactorGradient::factors(self),
            [(a, &mut *wa), (b, &mut *wb)],
        );
        let (la, lb) = self.gradient_beside_loss(wa, wb);
        wa.remember(a, la);
        wb.remember_loss(b, lb);
        (la, lb)
    }

    fn evaluate_pair_beside_loss(
        &self,
        a: &[f64],
        wa: &mut Workspace,
        b: &[f64],
        wb: &mut Workspace,
        c: &[f64],
        wc: &mut Workspace,
    ) -> (f64, f64, f64) {
        if wa.holds(a) || wb.holds(b) || wc.holds_loss(c) {
            let (la, lb) = self.evaluate_pair(a, wa, b, wb);
            return (la, lb, self.evaluate_loss(c, wc));
        }
        products_into(
            FactorGradient::factors(self),
            [(a, &mut *wa), (b, &mut *wb), (c, &mut *wc)],
        );
        let (la, lb, lc) = self.gradient_pair_beside_loss(wa, wb, wc);
        wa.remember(a, la);
        wb.remember(b, lb);
        wc.remember_loss(c, lc);
        (la, lb, lc)
    }

    fn rhs(&self, state: &[f64], out: &mut [f64], ws: &mut Workspace) -> f64 {
        let loss = self.evaluate(state, ws);
        FactorGradient::factors(self).map_gradient(state, &ws.g, out);
        loss
    }

    fn jvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        self.evaluate(state, ws);
        let f = FactorGradient::factors(self);
        f.product_dot(state, dir, &mut ws.xdot);
        self.gradient_dot(ws);
        f.map_gradient_dot(state, dir, &ws.g, &ws.gdot, out);
    }

    /// As [`Field::hvp`] (−jvp) along each direction, their Ġ from shared passes.
    fn hvp_many(&self, state: &[f64], dirs: &[&[f64]], outs: &mut [Vec<f64>], ws: &mut Workspace) {
        assert_eq!(dirs.len(), outs.len(), "one output per direction");
        self.evaluate(state, ws);
        let f = FactorGradient::factors(self);
        let shape = |ws: &Workspace| DMatrix::zeros(ws.xdot.nrows(), ws.xdot.ncols());
        let xdots: Vec<DMatrix<f64>> = dirs
            .iter()
            .map(|dir| {
                let mut xdot = shape(ws);
                f.product_dot(state, dir, &mut xdot);
                xdot
            })
            .collect();
        let mut gdots: Vec<DMatrix<f64>> = dirs.iter().map(|_| shape(ws)).collect();
        self.gradient_dot_many(ws, &xdots, &mut gdots);
        for ((dir, gdot), out) in dirs.iter().zip(&gdots).zip(outs.iter_mut()) {
            f.map_gradient_dot(state, dir, &ws.g, gdot, out);
            out.iter_mut().for_each(|o| *o = -*o);
        }
    }

    fn loss(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        let mut x = std::mem::replace(&mut ws.xdot, DMatrix::zeros(0, 0));
        FactorGradient::factors(self).product_into(state, &mut x);
        let loss = self.loss_at(&x, ws);
        ws.xdot = x;
        loss
    }

    /// D²F[u, w] = −(G̈V + Ġ_uV_w + Ġ_wV_u, G̈ᵀU + Ġ_uᵀU_w + Ġ_wᵀU_u) with Ẍ = U_uV_wᵀ + U_wV_uᵀ
    /// (V = U and V_u = U_u in the symmetric case).
    fn second_derivative(
        &self,
        state: &[f64],
        u: &[f64],
        w: &[f64],
        out: &mut [f64],
        ws: &mut Workspace,
    ) {
        self.evaluate(state, ws);
        let f = FactorGradient::factors(self);
        let (n1, n2) = (f.n1, f.n2);
        let mut xu = DMatrix::zeros(n1, n2);
        let mut xw = DMatrix::zeros(n1, n2);
        f.product_dot(state, u, &mut xu);
        f.product_dot(state, w, &mut xw);
        let (uu, vu) = f.split(u);
        let (uw, vw) = f.split(w);
        let mut xuw = DMatrix::zeros(n1, n2);
        xuw.gemm(1.0, &uu, &vw.transpose(), 0.0);
        xuw.gemm(1.0, &uw, &vu.transpose(), 1.0);
        ws.xdot.copy_from(&xu);
        self.gradient_dot(ws);
        let gu = ws.gdot.clone();
        // u = w (the central flow's diagonal pairs q_a, q_a): Ġ_w is Ġ_u, no second pass
        let gw = if u == w {
            gu.clone()
        } else {
            ws.xdot.copy_from(&xw);
            self.gradient_dot(ws);
            ws.gdot.clone()
        };
        let mut guw = DMatrix::zeros(n1, n2);
        self.gradient_second(ws, &xu, &xw, &xuw, &mut guw);
        let (x_u, x_v) = f.split(state);
        if f.symmetric {
            let mut o = DMatrixViewMut::from_slice(out, n1, f.k);
            o.gemm(-1.0, &guw, &x_u, 0.0);
            o.gemm(-1.0, &gu, &uw, 1.0);
            o.gemm(-1.0, &gw, &uu, 1.0);
            return;
        }
        let (mut ou, mut ov) = f.split_mut(out);
        ou.gemm(-1.0, &guw, &x_v, 0.0);
        ou.gemm(-1.0, &gu, &vw, 1.0);
        ou.gemm(-1.0, &gw, &vu, 1.0);
        ov.gemm_tr(-1.0, &guw, &x_u, 0.0);
        ov.gemm_tr(-1.0, &gu, &uw, 1.0);
        ov.gemm_tr(-1.0, &gw, &uu, 1.0);
    }

    fn jacobian_into(&self, state: &[f64], jac: &mut DMatrix<f64>, ws: &mut Workspace) {
        if !FactorGradient::jacobian_into(self, state, jac, ws) {
            default_jacobian(self, state, jac, ws);
        }
    }

    fn jacobian_cost_macs(&self) -> f64 {
        FactorGradient::jacobian_cost_macs(self)
            .unwrap_or_else(|| self.state_len() as f64 * self.rhs_cost_macs())
    }

    fn loss_batch(&self, states: &[&[f64]]) -> Vec<f64> {
        let f = FactorGradient::factors(self);
        let xs: Vec<DMatrix<f64>> = states
            .iter()
            .map(|s| {
                let mut x = DMatrix::zeros(f.n1, f.n2);
                f.product_into(s, &mut x);
                x
            })
            .collect();
        FactorGradient::loss_batch(self, &xs).unwrap_or_else(|| {
            let mut ws = Field::workspace(self);
            xs.iter().map(|x| self.loss_at(x, &mut ws)).collect()
        })
    }

    fn rhs_batch(&self, states: &[&[f64]], outs: &mut [Vec<f64>]) -> Vec<f64> {
        FactorGradient::rhs_batch(self, states, outs).unwrap_or_else(|| {
            let mut ws = Field::workspace(self);
            states
                .iter()
                .zip(outs.iter_mut())
                .map(|(x, o)| Field::rhs(self, x, o, &mut ws))
                .collect()
        })
    }
}

/// One jvp per column.
fn default_jacobian<F: Field + ?Sized>(
    field: &F,
    state: &[f64],
    jac: &mut DMatrix<f64>,
    ws: &mut Workspace,
) {
    let n = field.state_len();
    assert_eq!(jac.shape(), (n, n), "Jacobian shape");
    let mut e = vec![0.0; n];
    let mut col = vec![0.0; n];
    for j in 0..n {
        e[j] = 1.0;
        field.jvp(state, &e, &mut col, ws);
        jac.column_mut(j).copy_from_slice(&col);
        e[j] = 0.0;
    }
}

/// out = (f(state + h·dir) − f(state − h·dir))/(2h) with h = ε^{1/3}·max(‖state‖, 1)/‖dir‖,
/// the central difference along `dir` of a function that writes its value into its second
/// argument: for derivatives a field has no closed form of.
/// F at `state` from the measurements of non-zero weight (a mini-batch's), each residual
/// shifted and weighted, r_i → w_i(r_i − s_i): G_w = Σ_{w_i ≠ 0} w_i(r_i − s_i)A_i and
/// F = (−G_wV, −G_wᵀU), with labels y + s when `shift` is given (label noise, MATH §10).
/// A batch of b ≪ m reads its b rows alone (b/m of a pass, twice); a batch of a quarter of the
/// measurements or more takes the two passes, which also give the loss. Returns the batch's
/// estimate of the loss ½Σ_i w_i r_i² (unbiased: E w_i = 1) and, from the two passes, the loss
/// itself. `ws` no longer holds the field's own evaluation afterwards.
pub fn batch_rhs(
    field: &dyn Field,
    state: &[f64],
    weights: &[f64],
    shift: Option<&[f64]>,
    out: &mut [f64],
    ws: &mut Workspace,
) -> (f64, Option<f64>) {
    let (f, op, y) = (field.factors(), field.operator(), field.observations());
    assert!(!f.symmetric, "weighted residuals are for two factors");
    assert_eq!(weights.len(), y.len(), "one weight per measurement");
    ws.cached = None;
    f.product_into(state, &mut ws.x);
    let rows: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] != 0.0).collect();
    let mut estimate = 0.0;
    let full = if rows.len() * 4 >= y.len() {
        op.apply(ws.x.as_slice(), &mut ws.r);
        let mut loss = 0.0;
        for (i, ((r, yi), w)) in ws.r.iter_mut().zip(y).zip(weights).enumerate() {
            *r -= yi;
            loss += *r * *r;
            estimate += w * *r * *r;
            *r = w * (*r - shift.map_or(0.0, |s| s[i]));
        }
        op.adjoint(&ws.r, ws.g.as_mut_slice());
        Some(0.5 * loss)
    } else {
        let r = &mut ws.r[..rows.len()];
        op.apply_rows(&rows, ws.x.as_slice(), r);
        for (rk, &i) in r.iter_mut().zip(&rows) {
            let ri = *rk - y[i];
            estimate += weights[i] * ri * ri;
            *rk = weights[i] * (ri - shift.map_or(0.0, |s| s[i]));
        }
        op.adjoint_rows(&rows, r, ws.g.as_mut_slice());
        None
    };
    f.map_gradient(state, &ws.g, out);
    (0.5 * estimate, full)
}

/// Jξ = Σ_i ξ_i∇r_i = (𝒜*(ξ)V, 𝒜*(ξ)ᵀU), the label noise's direction (MATH §10), one adjoint
/// pass; added into `out` scaled by `scale`.
pub fn residual_jacobian_t(
    field: &dyn Field,
    state: &[f64],
    xi: &[f64],
    scale: f64,
    out: &mut [f64],
) {
    let f = field.factors();
    let mut g = DMatrix::zeros(f.n1, f.n2);
    field.operator().adjoint(xi, g.as_mut_slice());
    let mut d = vec![0.0; state.len()];
    // map_gradient gives −(GV, GᵀU)
    f.map_gradient(state, &g, &mut d);
    for (o, v) in out.iter_mut().zip(&d) {
        *o -= scale * v;
    }
}

/// D(X)ξ, the gradient noise of one draw applied to ξ ∈ R^m without forming its covariance
/// (MATH §10): √m(𝒜*(ξ⊙r)V, 𝒜*(ξ⊙r)ᵀU) − (Σ_i ξ_i/√m)∇f, one adjoint pass; added into `out`
/// scaled by `scale`. `ws` must hold the field's evaluation at `state` (r and G there).
pub fn gradient_noise(
    field: &dyn Field,
    state: &[f64],
    xi: &[f64],
    scale: f64,
    out: &mut [f64],
    ws: &mut Workspace,
) {
    assert!(
        ws.holds(state),
        "the workspace must hold the evaluation at `state`"
    );
    let f = field.factors();
    let m = xi.len() as f64;
    // the derivative buffers hold nothing the cached evaluation needs: they serve as scratch,
    // so that a substep allocates nothing
    let (mut z, mut gz, mut d) = (
        std::mem::take(&mut ws.rdot),
        std::mem::replace(&mut ws.gdot, DMatrix::zeros(0, 0)),
        std::mem::take(&mut ws.plain),
    );
    z.clear();
    z.extend(ws.r.iter().zip(xi).map(|(r, x)| r * x));
    gz.resize_mut(f.n1, f.n2, 0.0);
    field.operator().adjoint(&z, gz.as_mut_slice());
    // map_gradient gives −(GV, GᵀU): D ξ = −√m·map(Gz) + (Σξ/√m)·map(G)
    let sum: f64 = xi.iter().sum();
    let (a, b) = (-m.sqrt(), sum / m.sqrt());
    gz.zip_apply(&ws.g, |gzi, gi| *gzi = a * *gzi + b * gi);
    d.resize(state.len(), 0.0);
    f.map_gradient(state, &gz, &mut d);
    for (o, v) in out.iter_mut().zip(&d) {
        *o += scale * v;
    }
    (ws.rdot, ws.gdot, ws.plain) = (z, gz, d);
}

pub fn central_difference(
    state: &[f64],
    dir: &[f64],
    out: &mut [f64],
    mut f: impl FnMut(&[f64], &mut [f64]),
) {
    let h = f64::EPSILON.cbrt() * norm(state).max(1.0) / norm(dir).max(f64::MIN_POSITIVE);
    let plus: Vec<f64> = state.iter().zip(dir).map(|(x, d)| x + h * d).collect();
    let minus: Vec<f64> = state.iter().zip(dir).map(|(x, d)| x - h * d).collect();
    let mut a = vec![0.0; out.len()];
    f(&plus, &mut a);
    f(&minus, out);
    for (o, p) in out.iter_mut().zip(&a) {
        *o = (p - *o) / (2.0 * h);
    }
}
