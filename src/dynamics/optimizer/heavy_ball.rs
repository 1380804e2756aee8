//! Heavy ball x_{j+1} = x_j + ηF(x_j) + β(x_j − x_{j−1}), x_{−1} = x_0 (MATH §9).
//!
//! Fixed β ∈ [0, 1), time t = jη: plain limit x' = F/(1−β); modified limit
//! x' = F/(1−β) − η(1+β)/(2(1−β)³)·JF (= −∇f/(1−β) − η(1+β)/(4(1−β)³)∇‖∇f‖²), started at
//! x_0 − ηβ/(1−β)²·F(x_0), the momentum's start-up lag, without which it is only O(η) close.
//! At the critical scaling β = 1 − γ√η, time t = j√η: Ẍ + γẊ = F, X(0) = x_0, Ẋ(0) = 0.

use std::sync::Arc;

use super::second_order::{Friction, SecondOrder};
use super::{no_limit, Context, Limit, Optimizer, Parameters, Refusal, Settings, TimeScale};
use crate::dynamics::{Evaluation, FlowVariant, Stepper};
use crate::field::{Field, Modified};

/// Heavy ball with its momentum given one of two ways.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeavyBall {
    /// Fixed β.
    Momentum(f64),
    /// β = 1 − γ√η.
    Friction(f64),
}

impl HeavyBall {
    fn beta(self, eta: f64) -> f64 {
        match self {
            HeavyBall::Momentum(b) => b,
            HeavyBall::Friction(g) => 1.0 - g * eta.sqrt(),
        }
    }
}

impl Optimizer for HeavyBall {
    fn name(&self) -> String {
        "heavy-ball".into()
    }
    fn parameters(&self) -> Parameters {
        match *self {
            HeavyBall::Momentum(b) => [("momentum".to_string(), b)].into(),
            HeavyBall::Friction(g) => [("friction".to_string(), g)].into(),
        }
    }
    fn time_scale(&self) -> TimeScale {
        match self {
            HeavyBall::Momentum(_) => TimeScale::Eta,
            HeavyBall::Friction(_) => TimeScale::SqrtEta,
        }
    }
    fn stepper(&self, eta: f64) -> Box<dyn Stepper> {
        Box::new(HeavyBallStepper {
            beta: self.beta(eta),
            eval: Evaluation::default(),
            previous: None,
        })
    }
    fn limits(&self) -> Vec<FlowVariant> {
        match self {
            HeavyBall::Momentum(_) => vec![FlowVariant::Plain, FlowVariant::Modified],
            HeavyBall::Friction(_) => vec![FlowVariant::Plain],
        }
    }
    fn limit(
        &self,
        variant: FlowVariant,
        field: Arc<dyn Field>,
        x0: &[f64],
        eta: f64,
    ) -> Result<Limit, String> {
        let refuse = || Err(no_limit("heavy-ball", variant, &self.limits()));
        match (*self, variant) {
            (HeavyBall::Momentum(b), FlowVariant::Plain) => Ok(Limit::ode(
                Arc::new(Modified::with_coefficients(
                    field,
                    eta,
                    1.0 / (1.0 - b),
                    0.0,
                )),
                x0.to_vec(),
                format!("x' = −∇f/(1−β), β = {b}"),
            )),
            (HeavyBall::Momentum(b), FlowVariant::Modified) => {
                let mut f = vec![0.0; x0.len()];
                let mut ws = field.workspace();
                field.rhs(x0, &mut f, &mut ws);
                let shift = eta * b / ((1.0 - b) * (1.0 - b));
                let start = x0.iter().zip(&f).map(|(x, fi)| x - shift * fi).collect();
                let c = 1.0 - b;
                Ok(Limit::ode(
                    Arc::new(Modified::with_coefficients(
                        field,
                        eta,
                        1.0 / c,
                        -(1.0 + b) / (2.0 * c * c * c),
                    )),
                    start,
                    format!(
                        "x' = −∇f/(1−β) − η(1+β)/(4(1−β)³)∇‖∇f‖², β = {b}, from x_0 + ηβ/(1−β)²∇f(x_0)"
                    ),
                ))
            }
            (HeavyBall::Friction(g), FlowVariant::Plain) => Ok(Limit::ode(
                Arc::new(SecondOrder::new(field, Friction::Constant(g))),
                SecondOrder::state(x0, &vec![0.0; x0.len()], 0.0),
                format!("Ẍ + γẊ + ∇f = 0, γ = {g}, X(0) = x_0, Ẋ(0) = 0"),
            )),
            _ => refuse(),
        }
    }
}

/// The registry's builder: exactly one of momentum β ∈ [0, 1) and friction γ > 0 with
/// γ√η < 1 (so that β = 1 − γ√η > 0).
pub(super) fn build(s: &Settings, c: &Context) -> Result<Arc<dyn Optimizer>, Refusal> {
    s.only("heavy-ball", &["momentum", "friction"])?;
    let refuse = |key, value: f64, reason: String| Refusal {
        key,
        value: value.to_string(),
        reason,
    };
    match (s.momentum, s.friction) {
        (Some(b), None) if (0.0..1.0).contains(&b) => Ok(Arc::new(HeavyBall::Momentum(b))),
        (Some(b), None) => Err(refuse(
            "momentum",
            b,
            "must be a β in [0, 1) (β = 0 is GD)".into(),
        )),
        (None, Some(g)) if g.is_finite() && g > 0.0 && g * c.eta.sqrt() < 1.0 => {
            Ok(Arc::new(HeavyBall::Friction(g)))
        }
        (None, Some(g)) if g.is_finite() && g > 0.0 => Err(refuse(
            "friction",
            g,
            format!(
                "gives β = 1 − γ√η = {} < 0 at η = {}: lower --friction or --eta",
                1.0 - g * c.eta.sqrt(),
                c.eta
            ),
        )),
        (None, Some(g)) => Err(refuse("friction", g, "must be a finite γ > 0".into())),
        (Some(b), Some(_)) => Err(refuse(
            "momentum",
            b,
            "and --friction both set β: give one (fixed β, time jη; or β = 1 − γ√η, time j√η)"
                .into(),
        )),
        (None, None) => Err(Refusal {
            key: "momentum",
            value: "unset".into(),
            reason: "heavy-ball needs --momentum β (fixed, time jη) or --friction γ \
                     (β = 1 − γ√η, time j√η)"
                .into(),
        }),
    }
}

struct HeavyBallStepper {
    beta: f64,
    eval: Evaluation,
    previous: Option<Vec<f64>>,
}

impl Stepper for HeavyBallStepper {
    fn name(&self) -> String {
        "heavy-ball".into()
    }
    crate::dynamics::steps_from_its_evaluation!(eval);
    fn advance(&mut self, _field: &dyn Field, x: &mut [f64], eta: f64) {
        let previous = self.previous.get_or_insert_with(|| x.to_vec());
        for ((xi, fi), pi) in x.iter_mut().zip(&self.eval.f).zip(previous.iter_mut()) {
            let now = *xi;
            *xi = now + eta * fi + self.beta * (now - *pi);
            *pi = now;
        }
    }
}
