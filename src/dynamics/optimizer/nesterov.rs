//! Nesterov's method in the form of Su, Boyd and Candès (JMLR 2016), MATH §9:
//! x_{j+1} = y_j + ηF(y_j), y_{j+1} = x_{j+1} + j/(j+3)·(x_{j+1} − x_j), y_0 = x_0; time
//! t = j√η; limit Ẍ + (3/t)Ẋ + ∇f = 0, X(0) = x_0, Ẋ(0) = 0, singular at t = 0 and so
//! started at a small t_0 from the series X = x_0 − t_0²∇f(x_0)/8, Ẋ = −t_0∇f(x_0)/4.
//!
//! The limit's clock then reads τ = t_0 + t when it is compared with x_j at t = j√η: the
//! offset moves X by about t_0·|Ẋ(t_0)| = O(t_0²), far below the O(√η) being measured.

use std::sync::Arc;

use super::second_order::{Friction, SecondOrder};
use super::{no_limit, Limit, Optimizer, TimeScale};
use crate::dynamics::{Evaluation, FlowVariant, Stepper};
use crate::field::{Field, Workspace};

/// t_0 relative to √η.
const START_FRACTION: f64 = 1e-3;

/// Nesterov's accelerated gradient.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nesterov;

impl Optimizer for Nesterov {
    fn name(&self) -> String {
        "nesterov".into()
    }
    fn time_scale(&self) -> TimeScale {
        TimeScale::SqrtEta
    }
    fn stepper(&self, _eta: f64) -> Box<dyn Stepper> {
        Box::new(NesterovStepper::default())
    }
    fn limits(&self) -> Vec<FlowVariant> {
        vec![FlowVariant::Plain]
    }
    fn limit(
        &self,
        variant: FlowVariant,
        field: Arc<dyn Field>,
        x0: &[f64],
        eta: f64,
    ) -> Result<Limit, String> {
        if variant != FlowVariant::Plain {
            return Err(no_limit("nesterov", variant, &self.limits()));
        }
        let t0 = START_FRACTION * eta.sqrt();
        let mut f = vec![0.0; x0.len()];
        field.rhs(x0, &mut f, &mut field.workspace());
        let x: Vec<f64> = x0
            .iter()
            .zip(&f)
            .map(|(x, fi)| x + t0 * t0 * fi / 8.0)
            .collect();
        let v: Vec<f64> = f.iter().map(|fi| t0 * fi / 4.0).collect();
        Ok(Limit::ode(
            Arc::new(SecondOrder::new(field, Friction::Nesterov)),
            SecondOrder::state(&x, &v, t0),
            format!("Ẍ + (3/t)Ẋ + ∇f = 0, X(0) = x_0, Ẋ(0) = 0 (from t_0 = {t0:e})"),
        ))
    }
}

/// Steps from the look-ahead point y_j: its evaluation there is the one operator pass of a
/// step, so the loss it returns (used for the divergence test) is f(y_j), and it keeps no
/// workspace at x_j (records evaluate x_j themselves).
#[derive(Default)]
struct NesterovStepper {
    eval: Evaluation,
    y: Option<Vec<f64>>,
    j: usize,
}

impl Stepper for NesterovStepper {
    fn name(&self) -> String {
        "nesterov".into()
    }
    fn evaluate(&mut self, field: &dyn Field, x: &[f64]) -> f64 {
        let y = self.y.get_or_insert_with(|| x.to_vec());
        self.eval.at(field, y)
    }
    /// The look-ahead point's evaluation shares the pass (the step's, wherever it is).
    fn evaluate_beside(
        &mut self,
        field: &dyn Field,
        x: &[f64],
        other: &[f64],
        other_ws: &mut Workspace,
        gradient: bool,
    ) -> bool {
        let y = self.y.get_or_insert_with(|| x.to_vec());
        self.eval.beside(field, y, other, other_ws, gradient)
    }
    fn evaluate_beside_with_loss(
        &mut self,
        field: &dyn Field,
        x: &[f64],
        other: (&[f64], &mut Workspace),
        loss_at: (&[f64], &mut Workspace),
    ) -> bool {
        let y = self.y.get_or_insert_with(|| x.to_vec());
        self.eval.beside_with_loss(field, y, other, loss_at)
    }
    fn advance(&mut self, _field: &dyn Field, x: &mut [f64], eta: f64) {
        let y = self.y.as_mut().expect("evaluated first");
        let c = self.j as f64 / (self.j as f64 + 3.0);
        for ((xi, yi), fi) in x.iter_mut().zip(y.iter_mut()).zip(&self.eval.f) {
            let next = *yi + eta * fi;
            *yi = next + c * (next - *xi);
            *xi = next;
        }
        self.j += 1;
    }
}
