//! ScaledGD(λ) (Tong, Ma, Chi, JMLR 2021; λ > 0 from a small start: Xu, Shen, Ma, Chi, ICML
//! 2023), MATH §9: U⁺ = U − ηGV(VᵀV + λI)⁻¹, V⁺ = V − ηGᵀU(UᵀU + λI)⁻¹, both from the old
//! iterate. Its plain limit is the preconditioned flow x' = PF, P = blockdiag((VᵀV + λI)⁻¹,
//! (UᵀU + λI)⁻¹) acting on the factors from the right; Φ₁ = 0, so its modified limit is
//! PF − (η/2)D(PF)·PF. Not a gradient flow: UᵀU − VᵀV drifts.

use std::sync::Arc;

use nalgebra::{DMatrix, DMatrixView};

use super::{no_limit, Context, Limit, Optimizer, Parameters, Refusal, Settings};
use crate::dynamics::{Evaluation, FlowVariant, Stepper};
use crate::field::{Factors, Field, Modified, Workspace};

/// The default λ relative to σ_r(X*): Xu, Shen, Ma and Chi (ICML 2023) take λ a small
/// constant times σ_r(X*) (their analysis asks for λ ≍ c_λσ_r with a small c_λ, and their
/// experiments use values of this order); from a small start it bounds the early steps of the
/// tiny factors by 1/λ without slowing the end, where VᵀV ≈ Σ* ≫ λ.
pub const DEFAULT_DAMPING: f64 = 0.01;

/// The registry's builder: λ ≥ 0 and finite, default [`DEFAULT_DAMPING`]·σ_r(X*).
pub(super) fn build(s: &Settings, c: &Context) -> Result<Arc<dyn Optimizer>, Refusal> {
    s.only("scaled-gd", &["damping"])?;
    let damping = s.damping.unwrap_or(DEFAULT_DAMPING * c.sigma_r);
    if !(damping.is_finite() && damping >= 0.0) {
        return Err(Refusal {
            key: "damping",
            value: damping.to_string(),
            reason: "must be a finite λ >= 0 (λ = 0 only while VᵀV and UᵀU stay invertible)".into(),
        });
    }
    Ok(Arc::new(ScaledGd { damping }))
}

/// ScaledGD(λ).
#[derive(Debug, Clone, Copy)]
pub struct ScaledGd {
    pub damping: f64,
}

impl Optimizer for ScaledGd {
    fn name(&self) -> String {
        "scaled-gd".into()
    }
    fn parameters(&self) -> Parameters {
        [("damping".to_string(), self.damping)].into()
    }
    fn stepper(&self, _eta: f64) -> Box<dyn Stepper> {
        Box::new(ScaledGdStepper {
            damping: self.damping,
            eval: Evaluation::default(),
            failure: None,
        })
    }
    fn limits(&self) -> Vec<FlowVariant> {
        vec![FlowVariant::Plain, FlowVariant::Modified]
    }
    fn needs_two_factors(&self) -> bool {
        true
    }
    /// Near a small start P ≈ I/λ, so the field's rate is about σ_1/λ: a step η above λ/σ_1
    /// is far from both limits until the factors outgrow √λ, and there the modified limit's
    /// correction (η/2)D(PF)·PF dominates PF, making it stiff (slow) and meaningless.
    fn warnings(&self, c: &Context) -> Vec<String> {
        if self.damping == 0.0 {
            return vec![
                "ScaledGD with λ = 0: near a small start (VᵀV, UᵀU tiny) its preconditioner is \
                 unbounded and the method far from its limits; give --damping > 0 unless the \
                 start is well away from the origin"
                    .into(),
            ];
        }
        let ratio = c.eta * c.sigma_1 / self.damping;
        if ratio > 1.0 {
            vec![format!(
                "ScaledGD's step η = {} is {ratio:.3e} times the preconditioned field's time scale \
                 λ/σ_1 = {:.3e} near a small start: until VᵀV and UᵀU outgrow λ the method is far \
                 from its limits, and its modified limit is stiff there; raise --damping or \
                 lower --eta to be in the regime the limits describe",
                c.eta,
                self.damping / c.sigma_1
            )]
        } else {
            Vec::new()
        }
    }
    fn curvature(&self, field: Arc<dyn Field>) -> Arc<dyn Field> {
        Arc::new(Preconditioned::new(field, self.damping))
    }
    fn limit(
        &self,
        variant: FlowVariant,
        field: Arc<dyn Field>,
        x0: &[f64],
        eta: f64,
    ) -> Result<Limit, String> {
        let plain: Arc<dyn Field> = Arc::new(Preconditioned::new(field, self.damping));
        let (field, equation) = match variant {
            FlowVariant::Plain => (plain, "x' = P(x)F(x)"),
            FlowVariant::Modified => (
                Arc::new(Modified::new(plain, eta)) as Arc<dyn Field>,
                "x' = PF − (η/2)D(PF)·PF",
            ),
            FlowVariant::Central | FlowVariant::Sme1 | FlowVariant::Sme2 => {
                return Err(no_limit("scaled-gd", variant, &self.limits()))
            }
        };
        Ok(Limit::ode(field, x0.to_vec(), equation))
    }
}

/// (M + λI)⁻¹ of a k×k Gram matrix M = AᵀA, or why not.
fn inverse_gram(a: DMatrixView<'_, f64>, damping: f64, name: &str) -> Result<DMatrix<f64>, String> {
    damped_gram(a, damping)
        .cholesky()
        .map(|c| c.inverse())
        .filter(|inv| inv.iter().all(|v| v.is_finite()))
        .ok_or_else(|| {
            format!(
                "{name}ᵀ{name} + λI is singular (λ = {damping}): ScaledGD needs --damping > 0 \
                 while a factor is rank-deficient, as from a small start with k > r"
            )
        })
}

/// AᵀA + λI.
fn damped_gram(a: DMatrixView<'_, f64>, damping: f64) -> DMatrix<f64> {
    let mut m = a.tr_mul(&a);
    for i in 0..m.nrows() {
        m[(i, i)] += damping;
    }
    m
}

/// (AᵀA + λI)^{-1/2}, symmetric, or `None` where AᵀA + λI is singular.
fn inverse_sqrt_gram(a: DMatrixView<'_, f64>, damping: f64) -> Option<DMatrix<f64>> {
    let eig = damped_gram(a, damping).symmetric_eigen();
    if eig.eigenvalues.iter().any(|&l| !(l > 0.0 && l.is_finite())) {
        return None;
    }
    let q = &eig.eigenvectors;
    let d = DMatrix::from_diagonal(&eig.eigenvalues.map(|l| 1.0 / l.sqrt()));
    Some(q * d * q.transpose())
}

/// x_U ← x_U + c·F_U·P_V, x_V ← x_V + c·F_V·P_U for the factors of `at`.
fn add_preconditioned(
    fac: Factors,
    at: &[f64],
    f: &[f64],
    c: f64,
    damping: f64,
    out: &mut [f64],
) -> Result<(), String> {
    let (u, v) = fac.split(at);
    let pv = inverse_gram(v, damping, "V")?;
    let pu = inverse_gram(u, damping, "U")?;
    let (fu, fv) = fac.split(f);
    let du = fu * pv;
    let dv = fv * pu;
    let nu = fac.n1 * fac.k;
    for (o, d) in out[..nu].iter_mut().zip(du.iter()) {
        *o += c * d;
    }
    for (o, d) in out[nu..].iter_mut().zip(dv.iter()) {
        *o += c * d;
    }
    Ok(())
}

struct ScaledGdStepper {
    damping: f64,
    eval: Evaluation,
    failure: Option<String>,
}

impl Stepper for ScaledGdStepper {
    fn name(&self) -> String {
        "scaled-gd".into()
    }
    crate::dynamics::steps_from_its_evaluation!(eval);
    fn advance(&mut self, field: &dyn Field, x: &mut [f64], eta: f64) {
        let old = x.to_vec();
        let f = &self.eval.f;
        if let Err(e) = add_preconditioned(field.factors(), &old, f, eta, self.damping, x) {
            self.failure = Some(e);
        }
    }
    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }
}

/// The preconditioned field PF of ScaledGD(λ), with its exact derivative
/// D(PF)[W] = (JW)P + F·dP[W], dP_V[W] = −P_V(W_VᵀV + VᵀW_V)P_V (and likewise for U).
/// A singular preconditioner (λ = 0, a rank-deficient factor) gives a non-finite field, which
/// the flow solver reports as its failure.
#[derive(Clone)]
pub struct Preconditioned {
    inner: Arc<dyn Field>,
    damping: f64,
}

impl Preconditioned {
    pub fn new(inner: Arc<dyn Field>, damping: f64) -> Self {
        Self { inner, damping }
    }
}

impl Field for Preconditioned {
    crate::delegate_to_inner_field!(inner);
    fn describe(&self) -> String {
        format!(
            "ScaledGD(λ = {}) of {}",
            self.damping,
            self.inner.describe()
        )
    }
    fn rhs(&self, state: &[f64], out: &mut [f64], ws: &mut Workspace) -> f64 {
        let mut f = vec![0.0; out.len()];
        let loss = self.inner.rhs(state, &mut f, ws);
        out.iter_mut().for_each(|o| *o = 0.0);
        if add_preconditioned(self.factors(), state, &f, 1.0, self.damping, out).is_err() {
            out.iter_mut().for_each(|o| *o = f64::NAN);
        }
        loss
    }
    fn jvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        let fac = self.factors();
        let n = out.len();
        let mut f = vec![0.0; n];
        self.inner.rhs(state, &mut f, ws);
        let mut jw = vec![0.0; n];
        self.inner.jvp(state, dir, &mut jw, ws);
        out.iter_mut().for_each(|o| *o = 0.0);
        let (u, v) = fac.split(state);
        let (wu, wv) = fac.split(dir);
        let (fu, fv) = fac.split(&f);
        let (jwu, jwv) = fac.split(&jw);
        let (pv, pu) = match (
            inverse_gram(v, self.damping, "V"),
            inverse_gram(u, self.damping, "U"),
        ) {
            (Ok(pv), Ok(pu)) => (pv, pu),
            _ => {
                out.iter_mut().for_each(|o| *o = f64::NAN);
                return;
            }
        };
        let dpv = -(&pv * (wv.tr_mul(&v) + v.tr_mul(&wv)) * &pv);
        let dpu = -(&pu * (wu.tr_mul(&u) + u.tr_mul(&wu)) * &pu);
        let ou = jwu * &pv + fu * dpv;
        let ov = jwv * &pu + fv * dpu;
        let nu = fac.n1 * fac.k;
        out[..nu].copy_from_slice(ou.as_slice());
        out[nu..].copy_from_slice(ov.as_slice());
    }
    fn rhs_cost_macs(&self) -> f64 {
        self.inner.rhs_cost_macs()
    }
    /// P^½∇²fP^½ (P^½ acting on each factor from the right), symmetric with the eigenvalues
    /// of P∇²f: ScaledGD's step is linearly stable while η·λ_max of it is below 2 (MATH §9).
    fn hvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        let fac = self.factors();
        let (u, v) = fac.split(state);
        let (sv, su) = (
            inverse_sqrt_gram(v, self.damping),
            inverse_sqrt_gram(u, self.damping),
        );
        let (Some(sv), Some(su)) = (sv, su) else {
            out.iter_mut().for_each(|o| *o = f64::NAN);
            return;
        };
        let right = |x: &[f64], out: &mut [f64]| {
            let (xu, xv) = fac.split(x);
            let (a, b) = (xu * &sv, xv * &su);
            let nu = fac.n1 * fac.k;
            out[..nu].copy_from_slice(a.as_slice());
            out[nu..].copy_from_slice(b.as_slice());
        };
        let mut d = vec![0.0; dir.len()];
        right(dir, &mut d);
        let mut h = vec![0.0; dir.len()];
        self.inner.hvp(state, &d, &mut h, ws);
        right(&h, out);
    }
}
