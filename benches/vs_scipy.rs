//! gdflow against the SciPy script a user would otherwise write (benches/scipy_reference.py:
//! NumPy GD and SciPy's DOP853 on the same `.npz` problem, compared at t_j = j·η), side by
//! side in one run, at the default settings: GD at η = 0.25 for 400 steps and the flow at
//! rtol 1e-8, atol 1e-20, from α = 1e-8 (seed 0).
//!
//! Problems (n1 = n2, rank, width k, measurements m): small (20, 2, 5, 400), medium
//! (50, 3, 10, 1500), and with GDFLOW_BENCH_LARGE=1 large (100, 5, 20, 5000, a 400 MB matrix;
//! about 10 minutes).
//!
//! SciPy is timed only when GDFLOW_SCIPY_PYTHON names a Python with numpy and scipy from PyPI,
//! installed outside the project:
//!
//! ```sh
//! python -m venv /tmp/venv && /tmp/venv/bin/pip install numpy scipy
//! GDFLOW_SCIPY_PYTHON=/tmp/venv/bin/python cargo bench --bench vs_scipy
//! ```
//!
//! Both in one run, each on its worst terms: gdflow as a whole process (`gdflow run --problem
//! FILE --quiet`: start-up, loading the file, the run, the report), the script's computation
//! timed in-process after its imports and its problem load (what a notebook user who has both
//! already waits for; it prints `compute_seconds`). The CPU model is printed first: kernels
//! and caches differ between machines, and a ratio means something only with its machine.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gdflow::config::ConfigArgs;
use gdflow::experiments::{Command, Setup};

#[path = "common/machine.rs"]
mod machine;

const ETA: f64 = 0.25;
const STEPS: usize = 400;
const RTOL: f64 = 1e-8;
const ATOL: f64 = 1e-20;

fn write_problem(dir: &Path, name: &str, n: usize, rank: usize, k: usize, m: usize) -> PathBuf {
    let setup = Setup::new(
        &ConfigArgs {
            n1: Some(n),
            n2: Some(n),
            rank: Some(rank),
            width: Some(k),
            measurements: Some(m),
            alpha: Some(1e-8),
            seed: Some(0),
            ..Default::default()
        },
        Command::Run,
        false,
    )
    .expect("a valid problem");
    let path = dir.join(format!("{name}.npz"));
    setup.problem.save_npz(&path).expect("written");
    path
}

fn bench(c: &mut Criterion) {
    machine::print_machine();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut sizes = vec![("small", 20, 2, 5, 400), ("medium", 50, 3, 10, 1500)];
    if std::env::var_os("GDFLOW_BENCH_LARGE").is_some() {
        sizes.push(("large", 100, 5, 20, 5000));
    }
    let python = std::env::var_os("GDFLOW_SCIPY_PYTHON");
    if python.is_none() {
        eprintln!("GDFLOW_SCIPY_PYTHON is not set: timing gdflow only (see the file's header)");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/scipy_reference.py");
    for (name, n, rank, k, m) in sizes {
        let problem = write_problem(dir.path(), name, n, rank, k, m);
        let args = ConfigArgs {
            problem: Some(problem.clone()),
            eta: Some(ETA),
            steps: Some(STEPS),
            rtol: Some(RTOL),
            atol: Some(ATOL),
            ..Default::default()
        };
        // the problem loads and the configuration is valid, before any timing
        Setup::new(&args, Command::Run, false).expect("the saved problem loads");
        let mut g = c.benchmark_group(format!("vs_scipy_{name}_n{n}_k{k}_m{m}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(if name == "large" { 600 } else { 30 }));
        g.bench_function("gdflow", |b| {
            b.iter(|| {
                let status = Process::new(env!("CARGO_BIN_EXE_gdflow"))
                    .args(["run", "--quiet", "--problem"])
                    .arg(&problem)
                    .args(["--eta", &ETA.to_string(), "--steps", &STEPS.to_string()])
                    .args(["--rtol", &RTOL.to_string(), "--atol", &ATOL.to_string()])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("gdflow starts");
                assert!(status.success(), "gdflow failed");
            })
        });
        if let Some(py) = &python {
            g.bench_function("scipy", |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let args = [ETA, STEPS as f64, RTOL, ATOL].map(|v| v.to_string());
                            machine::script_seconds(py, &script, &problem, &args)
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
