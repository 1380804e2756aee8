//! Gradient descent (MATH §2): x⁺ = x + ηF, F = −∇f. Plain limit the gradient flow, modified
//! limit x' = F − (η/2)JF (= −∇f̃, f̃ = f + (η/4)‖∇f‖²); past the stability limit the central
//! flow (MATH §8), which the run experiment solves with its own driver.

use std::sync::Arc;

use super::{Limit, LimitSolver, Optimizer};
use crate::dynamics::{FlowVariant, Gd, Stepper};
use crate::field::{Field, Modified};

/// Plain gradient descent.
#[derive(Debug, Clone, Copy, Default)]
pub struct GdMethod;

impl Optimizer for GdMethod {
    fn name(&self) -> String {
        "gd".into()
    }
    fn stepper(&self, _eta: f64) -> Box<dyn Stepper> {
        Box::new(Gd::new())
    }
    fn limits(&self) -> Vec<FlowVariant> {
        vec![
            FlowVariant::Plain,
            FlowVariant::Modified,
            FlowVariant::Central,
        ]
    }
    fn limit(
        &self,
        variant: FlowVariant,
        field: Arc<dyn Field>,
        x0: &[f64],
        eta: f64,
    ) -> Result<Limit, String> {
        let start = x0.to_vec();
        Ok(match variant {
            FlowVariant::Plain => Limit::ode(field, start, "x' = −∇f"),
            FlowVariant::Modified => Limit::ode(
                Arc::new(Modified::new(field, eta)),
                start,
                "x' = −∇f − (η/4)∇‖∇f‖²",
            ),
            // the central flow's event-driven solve runs around the plain field
            FlowVariant::Central => Limit {
                solver: LimitSolver::Central {
                    eta,
                    columns: crate::dynamics::flow::CentralColumns::ALL,
                },
                ..Limit::ode(field, start, "the central flow (MATH §8)")
            },
            FlowVariant::Sme1 | FlowVariant::Sme2 => {
                return Err(super::no_limit("gd", variant, &self.limits()))
            }
        })
    }
    fn plain_limit_conserves_balance(&self) -> bool {
        true
    }
    fn is_gradient_descent(&self) -> bool {
        true
    }
}
