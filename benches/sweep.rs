//! A sweep of 8 step sizes at (n1 = n2 = 50, k = 10, m = 1500) against 8 separate runs, the
//! work `gdflow sweep --eta-range 0.0125:0.1:8 --horizon 5` and eight `gdflow run --eta η
//! --steps ⌊5/η⌋` calls do (in process: problem generation included, process start-up not).
//!
//! The sweep does more than the runs: the plain reference at two tolerances (shared by all
//! η), per η GD's modified flow at two tolerances (4 operator passes per rhs), and per-step
//! comparisons; the runs do GD and one plain flow each.
//!
//! `cargo bench --bench sweep` (about 7 minutes).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gdflow::config::{ConfigArgs, SweepArgs};

fn problem_args() -> ConfigArgs {
    ConfigArgs {
        n1: Some(50),
        n2: Some(50),
        rank: Some(5),
        width: Some(10),
        measurements: Some(1500),
        alpha: Some(1e-2),
        ..Default::default()
    }
}

const HORIZON: f64 = 5.0;

fn bench(c: &mut Criterion) {
    let sweep_args = SweepArgs {
        eta_range: Some("0.0125:0.1:8".into()),
        horizon: Some(HORIZON),
        stability_steps: Some(0),
        ..Default::default()
    };
    let etas = gdflow::config::parse_eta_range("0.0125:0.1:8").unwrap();
    let mut g = c.benchmark_group("eight_step_sizes_n50_k10_m1500");
    g.sample_size(10).measurement_time(Duration::from_secs(60));
    g.bench_function("sweep", |b| {
        b.iter(|| gdflow::experiments::sweep_config(&problem_args(), &sweep_args).unwrap())
    });
    g.bench_function("eight_runs", |b| {
        b.iter(|| {
            for &eta in &etas {
                let args = ConfigArgs {
                    eta: Some(eta),
                    steps: Some((HORIZON / eta * (1.0 + 1e-12)).floor() as usize),
                    ..problem_args()
                };
                gdflow::experiments::run_config(&args).unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
