//! `--method auto` against plain Tsit45 (and BDF, for scale) on the default problem's sizes
//! (30×30, r = 3, k = 6, m = 600, α = 1e-3, rtol 1e-8, the defaults):
//! - ill-conditioned, κ = 100, to T = 1500, where σ_r = 0.01 is learned;
//! - well-conditioned, κ = 2, to T = 50 (the default run's horizon) and T = 200 (into the
//!   stiff tail, too short for a switch to pay).
//!
//! `cargo bench --bench auto`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gdflow::config::{ConfigArgs, Method};
use gdflow::dynamics::flow::{solve_flow, FlowOptions};
use gdflow::field::SensingField;
use gdflow::problem::Problem;

fn bench(c: &mut Criterion) {
    for (name, kappa, horizon) in [
        ("kappa100_T1500", 100.0, 1500.0),
        ("kappa2_T50", 2.0, 50.0),
        ("kappa2_T200", 2.0, 200.0),
    ] {
        let cfg = ConfigArgs {
            n1: Some(30),
            n2: Some(30),
            kappa: Some(kappa),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let p = Problem::generate(&cfg.problem_spec()).unwrap();
        let field = SensingField::from_problem(&p);
        let x0 = p.start_state();
        let steps: Vec<usize> = (0..=100).collect();
        let times: Vec<f64> = steps.iter().map(|&j| horizon * j as f64 / 100.0).collect();
        let mut g = c.benchmark_group(format!("auto_{name}"));
        g.sample_size(10).measurement_time(Duration::from_secs(8));
        for method in [Method::Tsit45, Method::Auto, Method::Bdf] {
            let opts = FlowOptions::new(method, cfg.rtol, cfg.atol);
            g.bench_function(method.name(), |b| {
                b.iter(|| solve_flow(&field, &x0, &times, &steps, &opts).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
