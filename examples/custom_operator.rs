//! A measurement operator of your own: rank-one measurements A_i = a_i b_iᵀ (MATH §1), stored
//! as the vectors a_i, b_i only (m·(n1 + n2) numbers instead of m·n1·n2), plugged into the
//! library through the `SensingOperator` trait and run like any built-in problem.
//!
//! `cargo run --release --example custom_operator` (also run by `cargo test`)

use std::sync::Arc;

use gdflow::config::ConfigArgs;
use gdflow::experiments::{run, RunExtras, Setup};
use gdflow::operator::{Counter, OperatorCounts, SensingOperator};
use gdflow::problem::{observe, random_start, random_target, sub_rng, Problem, ProblemSource};
use nalgebra::DMatrix;
use rand_distr::{Distribution, Normal};

/// 𝒜(X)_i = a_iᵀ X b_i and 𝒜*(z) = Σ_i z_i a_i b_iᵀ, with a_i, b_i ~ N(0, I/√m) so that
/// E‖𝒜(Z)‖² = ‖Z‖².
struct RankOne {
    a: DMatrix<f64>, // n1 × m
    b: DMatrix<f64>, // n2 × m
    counter: Counter,
}

impl RankOne {
    fn new(n1: usize, n2: usize, m: usize, seed: u64) -> Self {
        let mut rng = sub_rng(seed, 1);
        let normal = Normal::new(0.0, (m as f64).powf(-0.25)).unwrap();
        let a = DMatrix::from_fn(n1, m, |_, _| normal.sample(&mut rng));
        let b = DMatrix::from_fn(n2, m, |_, _| normal.sample(&mut rng));
        Self {
            a,
            b,
            counter: Counter::default(),
        }
    }
}

impl SensingOperator for RankOne {
    fn n1(&self) -> usize {
        self.a.nrows()
    }
    fn n2(&self) -> usize {
        self.b.nrows()
    }
    fn m(&self) -> usize {
        self.a.ncols()
    }
    fn apply(&self, x: &[f64], out: &mut [f64]) {
        self.counter.apply();
        let x = DMatrix::from_column_slice(self.n1(), self.n2(), x);
        let xb = &x * &self.b; // n1 × m: column i is X b_i
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.a.column(i).dot(&xb.column(i));
        }
    }
    fn adjoint(&self, z: &[f64], out: &mut [f64]) {
        self.counter.adjoint();
        let scaled = DMatrix::from_fn(self.n1(), self.m(), |p, i| self.a[(p, i)] * z[i]);
        out.copy_from_slice((scaled * self.b.transpose()).as_slice());
    }
    fn measurement_matrix(&self, i: usize, out: &mut [f64]) {
        let ab = self.a.column(i) * self.b.column(i).transpose();
        out.copy_from_slice(ab.as_slice());
    }
    fn counts(&self) -> OperatorCounts {
        self.counter.counts()
    }
    fn name(&self) -> &'static str {
        "rank-one"
    }
    fn entries_per_pass(&self) -> usize {
        self.m() * (self.n1() + self.n2())
    }
}

fn example(print: bool) -> anyhow::Result<()> {
    let (n1, n2, m, k, seed) = (20, 15, 300, 4, 3);
    let op = RankOne::new(n1, n2, m, seed);
    // the adjoint identity ⟨𝒜X, z⟩ = ⟨X, 𝒜*z⟩, as every operator must satisfy it
    let x = DMatrix::from_fn(n1, n2, |p, q| ((3 * p + 5 * q) % 7) as f64 - 3.0);
    let z: Vec<f64> = (0..m).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
    let mut ax = vec![0.0; m];
    op.apply(x.as_slice(), &mut ax);
    let mut az = vec![0.0; n1 * n2];
    op.adjoint(&z, &mut az);
    let lhs: f64 = ax.iter().zip(&z).map(|(p, q)| p * q).sum();
    let rhs: f64 = x.iter().zip(&az).map(|(p, q)| p * q).sum();
    assert!(
        (lhs - rhs).abs() <= 1e-10 * lhs.abs().max(1.0),
        "{lhs} vs {rhs}"
    );

    let sv = [1.0, 0.5];
    let x_star = random_target(n1, n2, &sv, seed);
    let op: Arc<dyn SensingOperator> = Arc::new(op);
    let y = observe(op.as_ref(), &x_star, 0.0, seed);
    let alpha = 1e-3;
    let (u0, v0) = random_start(n1, n2, k, alpha, seed);
    let problem = Problem {
        op,
        x_star,
        target_sv: sv.to_vec(),
        y,
        u0,
        v0,
        symmetric: false,
        f32_change_of_y: None,
        source: ProblemSource::Generated,
        start_alpha: Some(alpha),
    };
    let config = ConfigArgs {
        eta: Some(0.1),
        steps: Some(400),
        record_every: Some(50),
        ..Default::default()
    }
    .resolve()?;
    let setup = Setup::from_problem(config, problem)?;
    let result = run(&setup, &RunExtras::default())?;
    let s = &result.summary;
    if print {
        print!("{}", gdflow::cli::format_summary(s));
    }
    // m = 300 rank-one measurements of a rank-2 target: GD and the flow recover it
    assert!(s.gd.final_rel_error < 1e-2, "GD {}", s.gd.final_rel_error);
    assert!(
        s.flow.final_rel_error < 1e-2,
        "flow {}",
        s.flow.final_rel_error
    );
    assert_eq!(s.problem.operator, "rank-one");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    example(true)
}

#[test]
fn custom_operator_example_runs() {
    example(false).unwrap();
}
