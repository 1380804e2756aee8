//! GD at 8 step sizes sharing one operator: 8 separate runs against one batched run that
//! streams the sensing matrix once per step for all of them (`gradient_descent_batch`).
//!
//! `cargo bench --bench batch`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gdflow::config::ConfigArgs;
use gdflow::dynamics::{gradient_descent, gradient_descent_batch, RunOptions as GdOptions};
use gdflow::field::{Field, SensingField};
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
        let p = Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap();
        let field = SensingField::from_problem(&p);
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

        // The two products behind it: one pass for eight inputs against one for one.
        let op = field.operator();
        let nx = n * n;
        let xs: Vec<Vec<f64>> = (0..8)
            .map(|b| (0..nx).map(|i| ((i * 7 + b) % 13) as f64 - 6.0).collect())
            .collect();
        let zs: Vec<Vec<f64>> = (0..8)
            .map(|b| (0..m).map(|i| ((i * 5 + b) % 11) as f64 - 5.0).collect())
            .collect();
        let xr: Vec<&[f64]> = xs.iter().map(Vec::as_slice).collect();
        let zr: Vec<&[f64]> = zs.iter().map(Vec::as_slice).collect();
        let (mut ys, mut ws) = (vec![vec![0.0; m]; 8], vec![vec![0.0; nx]; 8]);
        let mut g = c.benchmark_group(format!("products_n{n}_k{k}_m{m}"));
        g.sample_size(20).measurement_time(Duration::from_secs(5));
        g.bench_function("apply_1", |b| b.iter(|| op.apply(&xs[0], &mut ys[0])));
        g.bench_function("apply_block_8", |b| b.iter(|| op.apply_block(&xr, &mut ys)));
        g.bench_function("adjoint_1", |b| b.iter(|| op.adjoint(&zs[0], &mut ws[0])));
        g.bench_function("adjoint_block_8", |b| {
            b.iter(|| op.adjoint_block(&zr, &mut ws))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
