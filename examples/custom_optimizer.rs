//! An optimiser of your own beside its continuous limit, from outside the crate: gradient
//! descent with a Polyak-scaled step,
//!   x⁺ = x + η·c(x)·F(x),   c(x) = f(x)/‖∇f(x)‖²,
//! (η = 1 is Polyak's step for f* = 0). It is a one-step method x⁺ = x + ηΦ(x) with Φ = cF, so
//! its plain limit is x' = c(x)F(x), tracked to O(η) (MATH §9). Three pieces: a [`Stepper`]
//! (the discrete method), a [`Field`] (its limit), and an [`Optimizer`] pairing them, handed
//! to [`Setup::with_optimizer`]; `run` then compares them like any built-in optimiser.
//!
//! `cargo run --release --example custom_optimizer` (also run by `cargo test`)

use std::sync::Arc;

use gdflow::config::ConfigArgs;
use gdflow::dynamics::optimizer::{no_limit, Limit, Optimizer, Parameters};
use gdflow::dynamics::{FlowVariant, Stepper};
use gdflow::experiments::{run, Command, RunExtras, Setup};
use gdflow::field::{central_difference, Factors, Field, Workspace};
use gdflow::operator::SensingOperator;

/// c(x) = f/‖F‖², and F itself, into `f`; returns (f, c).
fn polyak(field: &dyn Field, x: &[f64], f: &mut [f64], ws: &mut Workspace) -> (f64, f64) {
    let loss = field.rhs(x, f, ws);
    let norm2: f64 = f.iter().map(|v| v * v).sum();
    (loss, loss / norm2)
}

#[derive(Default)]
struct PolyakStepper {
    f: Vec<f64>,
    c: f64,
    ws: Option<Workspace>,
}

impl Stepper for PolyakStepper {
    fn name(&self) -> String {
        "polyak-gd".into()
    }
    fn evaluate(&mut self, field: &dyn Field, x: &[f64]) -> f64 {
        self.f.resize(x.len(), 0.0);
        let ws = self.ws.get_or_insert_with(|| field.workspace());
        let (loss, c) = polyak(field, x, &mut self.f, ws);
        self.c = c;
        loss
    }
    fn advance(&mut self, _field: &dyn Field, x: &mut [f64], eta: f64) {
        for (xi, fi) in x.iter_mut().zip(&self.f) {
            *xi += eta * self.c * fi;
        }
    }
    fn workspace(&self) -> Option<&Workspace> {
        self.ws.as_ref()
    }
}

/// The plain limit x' = c(x)F(x).
struct PolyakField(Arc<dyn Field>);

impl Field for PolyakField {
    fn factors(&self) -> Factors {
        self.0.factors()
    }
    fn operator(&self) -> &dyn SensingOperator {
        self.0.operator()
    }
    fn observations(&self) -> &[f64] {
        self.0.observations()
    }
    fn describe(&self) -> String {
        format!("Polyak-scaled {}", self.0.describe())
    }
    fn evaluate(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        self.0.evaluate(state, ws)
    }
    fn loss(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        self.0.loss(state, ws)
    }
    fn rhs(&self, state: &[f64], out: &mut [f64], ws: &mut Workspace) -> f64 {
        let (loss, c) = polyak(self.0.as_ref(), state, out, ws);
        out.iter_mut().for_each(|o| *o *= c);
        loss
    }
    fn jvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        central_difference(state, dir, out, |x, o| {
            self.rhs(x, o, ws);
        });
    }
}

struct PolyakGd;

impl Optimizer for PolyakGd {
    fn name(&self) -> String {
        "polyak-gd".into()
    }
    fn parameters(&self) -> Parameters {
        Parameters::new()
    }
    fn stepper(&self, _eta: f64) -> Box<dyn Stepper> {
        Box::new(PolyakStepper::default())
    }
    fn limits(&self) -> Vec<FlowVariant> {
        vec![FlowVariant::Plain]
    }
    fn limit(
        &self,
        variant: FlowVariant,
        field: Arc<dyn Field>,
        x0: &[f64],
        _eta: f64,
    ) -> Result<Limit, String> {
        if variant != FlowVariant::Plain {
            return Err(no_limit("polyak-gd", variant, &self.limits()));
        }
        Ok(Limit::ode(
            Arc::new(PolyakField(field)),
            x0.to_vec(),
            "x' = (f/‖∇f‖²)·(−∇f)",
        ))
    }
}

/// The final distance ‖X_J − X(T)‖ of Polyak-scaled GD from its limit at step η, T = 2.
fn final_distance(eta: f64, print: bool) -> anyhow::Result<f64> {
    let args = ConfigArgs {
        n1: Some(8),
        n2: Some(7),
        rank: Some(2),
        width: Some(3),
        measurements: Some(60),
        alpha: Some(0.3),
        seed: Some(1),
        eta: Some(eta),
        steps: Some((2.0 / eta).round() as usize),
        rtol: Some(1e-10),
        atol: Some(1e-13),
        ..Default::default()
    };
    let setup = Setup::new(&args, Command::Run, false)?.with_optimizer(Arc::new(PolyakGd))?;
    let result = run(&setup, &RunExtras::default())?;
    let d = result
        .summary
        .distance
        .expect("common times")
        .final_distance;
    if print {
        println!(
            "η = {eta}: {} rows, final distance from x' = cF {d:.3e}, relative error {:.3e}",
            result.summary.optimizer.name, result.summary.gd.final_rel_error
        );
    }
    assert_eq!(result.summary.optimizer.name, "polyak-gd");
    Ok(d)
}

fn example(print: bool) -> anyhow::Result<()> {
    let (a, b, c) = (
        final_distance(0.02, print)?,
        final_distance(0.01, print)?,
        final_distance(0.005, print)?,
    );
    let order = ((a / b).log2() + (b / c).log2()) / 2.0;
    if print {
        println!("observed order {order:.3} (a one-step method tracks its plain limit to O(η))");
    }
    assert!((order - 1.0).abs() < 0.15, "order {order}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    example(true)
}

#[test]
fn custom_optimizer_example_runs() {
    example(false).unwrap();
}
