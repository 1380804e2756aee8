//! N replicas of SGD on the default problem (batch 32, η = 0.05, 100 steps, records every 10),
//! per replica-step, for N = 1, 64, 1024: gdflow as a whole process (`gdflow run --optimizer sgd
//! --replicas N`: start-up, the problem, replica 0 beside its gradient flow, the ensemble and
//! its statistics, the report), the same N replicas run one after another in-process on one
//! thread (the driver, no statistics), and the NumPy script a user would otherwise write,
//! vectorised over a replica axis (benches/numpy_sgd_ensemble.py; its compute time after its
//! imports and problem load).
//!
//! NumPy is timed only when GDFLOW_SCIPY_PYTHON names a Python with numpy from PyPI, installed
//! outside the project:
//!
//! ```sh
//! python -m venv /tmp/venv && /tmp/venv/bin/pip install numpy
//! GDFLOW_SCIPY_PYTHON=/tmp/venv/bin/python cargo bench --bench ensemble
//! ```
//!
//! Criterion reports throughput in replica-steps per second (elements). The CPU model is
//! printed first: a ratio means something only with its machine.

use std::path::Path;
use std::process::Command as Process;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gdflow::config::ConfigArgs;
use gdflow::dynamics::{Driver, Iterate, RunOptions, SaveAt};
use gdflow::experiments::{Command, Setup};

#[path = "common/machine.rs"]
mod machine;

const BATCH: usize = 32;
const ETA: f64 = 0.05;
const STEPS: usize = 100;
const RECORD_EVERY: usize = 10;

fn bench(c: &mut Criterion) {
    machine::print_machine();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let problem = dir.path().join("default.npz");
    let args = ConfigArgs {
        optimizer: Some("sgd".into()),
        batch: Some(BATCH),
        eta: Some(ETA),
        steps: Some(STEPS),
        record_every: Some(RECORD_EVERY),
        ..Default::default()
    };
    let setup = Setup::new(&args, Command::Run, false).expect("the default problem");
    setup.problem.save_npz(&problem).expect("written");
    let python = std::env::var_os("GDFLOW_SCIPY_PYTHON");
    if python.is_none() {
        eprintln!("GDFLOW_SCIPY_PYTHON is not set: timing gdflow only (see the file's header)");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/numpy_sgd_ensemble.py");
    let field = setup.field();
    let optimizer = setup.optimizer().expect("sgd builds");
    let x0 = setup.start();
    for n in [1usize, 64, 1024] {
        let mut g = c.benchmark_group(format!("sgd_ensemble_b{BATCH}_replicas{n}"));
        g.throughput(Throughput::Elements((n * STEPS) as u64))
            .sample_size(10)
            .measurement_time(Duration::from_secs(if n >= 1024 { 20 } else { 5 }));
        g.bench_function("gdflow", |b| {
            b.iter(|| {
                let status = Process::new(env!("CARGO_BIN_EXE_gdflow"))
                    .args(["run", "--quiet", "--problem"])
                    .arg(&problem)
                    .args(["--optimizer", "sgd", "--batch", &BATCH.to_string()])
                    .args(["--eta", &ETA.to_string(), "--steps", &STEPS.to_string()])
                    .args(["--record-every", &RECORD_EVERY.to_string()])
                    .args(["--replicas", &n.to_string()])
                    .stdout(std::process::Stdio::null())
                    // N = 1 warns that one path carries the noise
                    .stderr(std::process::Stdio::null())
                    .status()
                    .expect("gdflow starts");
                assert!(status.success(), "gdflow failed");
            })
        });
        if n <= 64 {
            g.bench_function("sequential", |b| {
                b.iter(|| {
                    for r in 0..n as u64 {
                        let opts = RunOptions {
                            save: SaveAt::Nothing,
                            loss_at: SaveAt::Every(RECORD_EVERY),
                            ..RunOptions::new(ETA, STEPS, RECORD_EVERY)
                        };
                        let stepper = optimizer.replica_stepper(ETA, r);
                        let mut none = |_: &Iterate<'_>| {};
                        Driver::new(field.as_ref(), stepper, &x0, opts).run(&mut none);
                    }
                })
            });
        }
        if let Some(py) = &python {
            g.bench_function("numpy", |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let args = [n, BATCH].map(|v| v.to_string());
                            let more =
                                [ETA.to_string(), STEPS.to_string(), RECORD_EVERY.to_string()];
                            machine::script_seconds(
                                py,
                                &script,
                                &problem,
                                &[args.as_slice(), &more].concat(),
                            )
                        })
                        .sum()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
