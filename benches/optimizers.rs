//! One step of every optimiser beside GD's: each costs one pass over the sensing matrix (the
//! fused 𝒜 and 𝒜*), alternating GD two by definition; ScaledGD's k×k solves and momentum's
//! vectors are noise beside it.
//!
//! `cargo bench --bench optimizers`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gdflow::config::ConfigArgs;
use gdflow::dynamics::optimizer::{self, Context, Settings};
use gdflow::field::SensingField;
use gdflow::problem::Problem;

const SIZES: [(usize, usize, usize); 2] = [(50, 10, 1500), (100, 20, 5000)];

fn problem(n: usize, k: usize, m: usize) -> Problem {
    let args = ConfigArgs {
        n1: Some(n),
        n2: Some(n),
        rank: Some((k / 2).max(1)),
        width: Some(k),
        measurements: Some(m),
        alpha: Some(1e-1),
        ..Default::default()
    };
    Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap()
}

fn bench(c: &mut Criterion) {
    // a step small enough that thousands of them leave the state where it is
    let eta = 1e-4;
    let ctx = Context {
        sigma_r: 1.0,
        sigma_1: 1.0,
        eta,
        m: 0,
        seed: 0,
        replicas: 1,
    };
    for (n, k, m) in SIZES {
        let mut g = c.benchmark_group(format!("step_n{n}_k{k}_m{m}"));
        g.sample_size(20)
            .measurement_time(Duration::from_secs(if n >= 100 { 6 } else { 3 }));
        let p = problem(n, k, m);
        let field = SensingField::from_problem(&p);
        for (name, settings) in [
            ("gd", Settings::default()),
            (
                "scaled-gd",
                Settings {
                    damping: Some(1e-2),
                    ..Default::default()
                },
            ),
            ("alternating-gd", Settings::default()),
            (
                "heavy-ball",
                Settings {
                    momentum: Some(0.5),
                    ..Default::default()
                },
            ),
            ("nesterov", Settings::default()),
        ] {
            let opt = optimizer::build(name, &settings, &ctx).unwrap();
            let mut stepper = opt.stepper(eta);
            let mut x = p.start_state();
            g.bench_function(name, |b| {
                b.iter(|| {
                    stepper.evaluate(&field, &x);
                    stepper.advance(&field, &mut x, eta);
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
