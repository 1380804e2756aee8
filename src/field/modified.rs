//! GD's modified field (MATH §2, §7): GD with step η follows x' = F − (η/2)·J·F to second
//! order in η. For a gradient field F = −∇f this is −∇f̃ with f̃ = f + (η/4)‖∇f‖².

use std::sync::Arc;

use nalgebra::DMatrix;

use super::{Field, Workspace};

/// F̃ = a·F + b·η·J·F around any field F: GD's modified field with a = 1, b = −½
/// ([`Modified::new`]); other methods' modified fields have other coefficients (heavy ball's,
/// MATH §9, has a = 1/(1−β), b = −(1+β)/(2(1−β)³)).
#[derive(Clone)]
pub struct Modified {
    inner: Arc<dyn Field>,
    eta: f64,
    a: f64,
    b: f64,
}

impl Modified {
    /// GD's modified field F − (η/2)·J·F.
    pub fn new(inner: Arc<dyn Field>, eta: f64) -> Self {
        Self::with_coefficients(inner, eta, 1.0, -0.5)
    }
    /// a·F + b·η·J·F.
    pub fn with_coefficients(inner: Arc<dyn Field>, eta: f64, a: f64, b: f64) -> Self {
        Self { inner, eta, a, b }
    }
    pub fn eta(&self) -> f64 {
        self.eta
    }
    pub fn inner(&self) -> &dyn Field {
        self.inner.as_ref()
    }

    /// f̃ = f + (η/4)‖F‖², the loss whose gradient flow this is when F = −∇f.
    pub fn modified_loss(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        let mut plain = vec![0.0; self.inner.state_len()];
        let loss = self.inner.rhs(state, &mut plain, ws);
        loss + 0.25 * self.eta * plain.iter().map(|v| v * v).sum::<f64>()
    }
}

impl Field for Modified {
    crate::delegate_to_inner_field!(inner);
    fn describe(&self) -> String {
        format!("modified (η = {}) of {}", self.eta, self.inner.describe())
    }

    /// out = F − (η/2)·J·F; returns f (not f̃).
    fn rhs(&self, state: &[f64], out: &mut [f64], ws: &mut Workspace) -> f64 {
        if self.b == 0.0 {
            // a rescaled field (heavy ball's plain limit): no derivative needed
            let loss = self.inner.rhs(state, out, ws);
            out.iter_mut().for_each(|o| *o *= self.a);
            return loss;
        }
        let mut plain = std::mem::take(&mut ws.plain);
        plain.resize(self.inner.state_len(), 0.0);
        let loss = self.inner.rhs(state, &mut plain, ws);
        self.inner.jvp(state, &plain, out, ws);
        // with a = 1, b = −½ these are GD's F − (η/2)·J·F bit for bit
        let (a, b) = (self.a, -self.b);
        for (o, f) in out.iter_mut().zip(&plain) {
            *o = a * f - b * self.eta * *o;
        }
        ws.plain = plain;
        loss
    }

    /// J̃v = a·Jv + b·η(D²F[v, F] + J(Jv)), exact.
    fn jvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        let n = self.inner.state_len();
        let mut f = vec![0.0; n];
        self.inner.rhs(state, &mut f, ws);
        let mut jv = vec![0.0; n];
        self.inner.jvp(state, dir, &mut jv, ws);
        let mut d2 = vec![0.0; n];
        self.inner.second_derivative(state, dir, &f, &mut d2, ws);
        self.inner.jvp(state, &jv, out, ws);
        let (ca, cb) = (self.a, -self.b);
        for ((o, a), b) in out.iter_mut().zip(&jv).zip(&d2) {
            *o = ca * a - cb * self.eta * (b + *o);
        }
    }

    /// The inner field's Jacobian: O(η) off the modified one, it steers Newton's iteration
    /// (costing iterations, never accuracy) at the price of one GEMM instead of N jvps.
    fn jacobian_into(&self, state: &[f64], jac: &mut DMatrix<f64>, ws: &mut Workspace) {
        self.inner.jacobian_into(state, jac, ws);
    }
    fn jacobian_is_exact(&self) -> bool {
        false
    }
    fn jacobian_cost_macs(&self) -> f64 {
        self.inner.jacobian_cost_macs()
    }
    fn rhs_cost_macs(&self) -> f64 {
        2.0 * self.inner.rhs_cost_macs()
    }
    /// The Hessian of f, not of f̃: sharpness is a property of the loss GD minimises.
    fn hvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        self.inner.hvp(state, dir, out, ws);
    }
    fn hvp_many(&self, state: &[f64], dirs: &[&[f64]], outs: &mut [Vec<f64>], ws: &mut Workspace) {
        self.inner.hvp_many(state, dirs, outs, ws);
    }
}
