//! GD at 8 step sizes sharing one operator: 8 separate runs against one batched run that
//! streams the sensing matrix once per step for all of them (`gradient_descent_batch`).
//!
//! `cargo bench --bench batch`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gdflow::config::ConfigArgs;
use gdflow::field::VectorField;
use gdflow::gd::{gradient_descent, gradient_descent_batch, GdOptions};
use gdflow::problem::Problem;

const STEPS: usize = 40;

fn bench(c: &mut Criterion) {
    for (n, k, m) in [(50, 10, 1500), (100, 20, 5000)] {
        let args = ConfigArgs {
            n1: Some(n),
            n2: Some(n),
            rank: Some(k / 2),
            width: Some(k),
            measurements: Some(m),
            alpha: Some(1e-2),
            ..Default::default()
        };
        let p = Problem::generate(&args.resolve().unwrap()).unwrap();
        let field = VectorField::from_problem(&p);
        let x0 = p.start_state();
        let opts: Vec<GdOptions> = (0..8)
            .map(|i| GdOptions::new(0.0125 * 1.35f64.powi(i), STEPS, STEPS))
            .collect();
        let mut g = c.benchmark_group(format!("gd_8_etas_{STEPS}_steps_n{n}_k{k}_m{m}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(if n >= 100 { 30 } else { 5 }));
        g.bench_function("separate", |b| {
            b.iter(|| {
                opts.iter()
                    .map(|o| gradient_descent(&field, &x0, o))
                    .collect::<Vec<_>>()
            })
        });
        g.bench_function("batched", |b| {
            b.iter(|| gradient_descent_batch(&field, &x0, &opts))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
