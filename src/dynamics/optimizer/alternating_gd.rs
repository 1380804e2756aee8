//! Alternating (Gauss–Seidel) gradient descent, MATH §9: U⁺ = U − ηG(U, V)V, then
//! V⁺ = V − ηG(U⁺, V)ᵀU⁺. Two gradients a step, by definition (the second at the new U).
//! Same plain limit as GD; Φ₁ = (0, D_U F_V[F_U]), so its modified limit is
//! F − (η/2)JF + η(0, D_U F_V[F_U]), and D_U F_V[F_U] is the V part of J·(F_U, 0).

use std::sync::Arc;

use super::{no_limit, Limit, Optimizer};
use crate::dynamics::{Evaluation, FlowVariant, Stepper};
use crate::field::{central_difference, Field, Workspace};

/// Alternating GD.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlternatingGd;

impl Optimizer for AlternatingGd {
    fn name(&self) -> String {
        "alternating-gd".into()
    }
    fn stepper(&self, _eta: f64) -> Box<dyn Stepper> {
        Box::new(AlternatingStepper::default())
    }
    fn limits(&self) -> Vec<FlowVariant> {
        vec![FlowVariant::Plain, FlowVariant::Modified]
    }
    fn needs_two_factors(&self) -> bool {
        true
    }
    fn limit(
        &self,
        variant: FlowVariant,
        field: Arc<dyn Field>,
        x0: &[f64],
        eta: f64,
    ) -> Result<Limit, String> {
        let (field, equation): (Arc<dyn Field>, _) = match variant {
            FlowVariant::Plain => (field, "x' = −∇f"),
            FlowVariant::Modified => (
                Arc::new(AlternatingModified { inner: field, eta }),
                "x' = F − (η/2)JF + η(0, D_U F_V[F_U])",
            ),
            FlowVariant::Central | FlowVariant::Sme1 | FlowVariant::Sme2 => {
                return Err(no_limit("alternating-gd", variant, &self.limits()))
            }
        };
        Ok(Limit::ode(field, x0.to_vec(), equation))
    }
}

#[derive(Default)]
struct AlternatingStepper {
    eval: Evaluation,
}

impl Stepper for AlternatingStepper {
    fn name(&self) -> String {
        "alternating-gd".into()
    }
    crate::dynamics::steps_from_its_evaluation!(eval);
    fn advance(&mut self, field: &dyn Field, x: &mut [f64], eta: f64) {
        let nu = field.factors().n1 * field.factors().k;
        for (xi, fi) in x[..nu].iter_mut().zip(&self.eval.f[..nu]) {
            *xi += eta * fi;
        }
        // the V step at the new U
        self.eval.at(field, x);
        for (xi, fi) in x[nu..].iter_mut().zip(&self.eval.f[nu..]) {
            *xi += eta * fi;
        }
    }
}

/// Alternating GD's modified field (MATH §9).
#[derive(Clone)]
struct AlternatingModified {
    inner: Arc<dyn Field>,
    eta: f64,
}

impl Field for AlternatingModified {
    crate::delegate_to_inner_field!(inner);
    fn describe(&self) -> String {
        format!(
            "alternating GD's modified (η = {}) of {}",
            self.eta,
            self.inner.describe()
        )
    }
    fn rhs(&self, state: &[f64], out: &mut [f64], ws: &mut Workspace) -> f64 {
        let n = out.len();
        let nu = self.factors().n1 * self.factors().k;
        let mut f = vec![0.0; n];
        let loss = self.inner.rhs(state, &mut f, ws);
        self.inner.jvp(state, &f, out, ws);
        let mut fu = f.clone();
        fu[nu..].iter_mut().for_each(|v| *v = 0.0);
        let mut phi1 = vec![0.0; n];
        self.inner.jvp(state, &fu, &mut phi1, ws);
        for i in 0..n {
            let p = if i < nu { 0.0 } else { phi1[i] };
            out[i] = f[i] - 0.5 * self.eta * out[i] + self.eta * p;
        }
        loss
    }
    /// A central difference of the field: only implicit methods and Newton ask for it.
    fn jvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        central_difference(state, dir, out, |x, o| {
            self.rhs(x, o, ws);
        });
    }
    fn rhs_cost_macs(&self) -> f64 {
        3.0 * self.inner.rhs_cost_macs()
    }
    fn hvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        self.inner.hvp(state, dir, out, ws);
    }
}
