//! Cost of the basic operations against the memory floor: streaming the sensing matrix twice
//! (one rhs evaluation needs 𝒜 and 𝒜*, one pass each).
//!
//! `cargo bench --bench core` (add `-- rhs` etc. to filter).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gdflow::analysis::Recorder;
use gdflow::config::{ConfigArgs, Method};
use gdflow::dynamics::flow::{solve_flow, FlowOptions, JacobianMode};
use gdflow::field::{Field, SensingField};
use gdflow::operator::{DenseOperator, FusedPlan, Precision, SensingOperator, StorageView};
use gdflow::problem::{sub_rng, Problem, STREAM_OPERATOR};

const SIZES: [(usize, usize, usize); 3] = [(20, 5, 400), (50, 10, 1500), (100, 20, 5000)];
/// The operations' sizes: [`SIZES`] and, first, about the default problem's (30 × 25, k = 6,
/// m = 600: 450 000 entries), above the size from which the fused pass splits its rows into
/// blocks and its plans (one thread or the pool, one sweep or two) can trade places.
const OPS_SIZES: [(usize, usize, usize); 4] = [(27, 6, 600), SIZES[0], SIZES[1], SIZES[2]];

fn problem(n: usize, k: usize, m: usize, precision: Precision) -> Problem {
    let args = ConfigArgs {
        n1: Some(n),
        n2: Some(n),
        rank: Some((k / 2).max(1)),
        width: Some(k),
        measurements: Some(m),
        alpha: Some(1e-2),
        sensing_precision: Some(precision),
        ..Default::default()
    };
    Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap()
}

/// [`stream`] over f32 entries, widened as the kernels widen them.
fn stream32(data: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    for c in data.chunks_exact(8) {
        for i in 0..8 {
            acc[i] += c[i] as f64;
        }
    }
    acc.iter().sum()
}

/// A plain read of every entry, with independent accumulators so that it is bandwidth-bound.
fn stream(data: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    for c in data.chunks_exact(8) {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum()
}

/// [`stream`] over sixteen row blocks on rayon's threads, as the fused pass splits its work.
fn stream_parallel(data: &[f64]) -> f64 {
    use rayon::prelude::*;
    data.par_chunks(data.len().div_ceil(16).max(8))
        .map(stream)
        .sum()
}

fn label(n: usize, k: usize, m: usize) -> String {
    format!("n{n}_k{k}_m{m}")
}

fn bench(c: &mut Criterion) {
    for (n, k, m) in OPS_SIZES {
        let mut c = c.benchmark_group(format!("ops_{}", label(n, k, m)));
        c.sample_size(20)
            .measurement_time(Duration::from_secs(if n >= 100 { 8 } else { 3 }));
        let p = problem(n, k, m, Precision::F64);
        let field = SensingField::from_problem(&p);
        let x = p.start_state();
        let mut ws = field.workspace();
        let mut out = vec![0.0; x.len()];
        let dir: Vec<f64> = x.iter().map(|v| v * 0.5 + 1e-3).collect();

        let dense = DenseOperator::gaussian(n, n, m, &mut sub_rng(0, STREAM_OPERATOR));
        let StorageView::F64(data) = dense.storage() else {
            unreachable!("generated in f64")
        };
        c.bench_function("floor_stream_twice", |b| {
            b.iter(|| black_box(stream(black_box(data)) + stream(black_box(data))))
        });
        // the same on every thread: what a pass over the matrix can cost at best here
        c.bench_function("floor_stream_twice_parallel", |b| {
            b.iter(|| {
                black_box(stream_parallel(black_box(data)) + stream_parallel(black_box(data)))
            })
        });
        let data32: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        c.bench_function("floor_stream_twice_f32", |b| {
            b.iter(|| black_box(stream32(black_box(&data32)) + stream32(black_box(&data32))))
        });
        let p32 = problem(n, k, m, Precision::F32);
        let field32 = SensingField::from_problem(&p32);
        let mut ws32 = field32.workspace();
        c.bench_function("rhs_f32", |b| {
            let mut y = x.clone();
            b.iter(|| {
                y[0] += 1e-12;
                field32.rhs(black_box(&y), &mut out, &mut ws32)
            })
        });
        // One gradient (the residual and G = 𝒜*r) from X, in one fused pass and in two.
        for (name, prob) in [("", &p), ("_f32", &p32)] {
            let op = prob.op.clone();
            let xm = field.product(&x);
            let (mut r, mut gm) = (vec![0.0; m], vec![0.0; n * n]);
            c.bench_function(format!("gradient_fused{name}"), |b| {
                b.iter(|| op.residual_adjoint(black_box(xm.as_slice()), &prob.y, &mut r, &mut gm))
            });
            // two inputs sharing the pass (GD and the flow at a record): what the second costs
            let xm2: Vec<f64> = xm.iter().map(|v| 1.001 * v).collect();
            let (mut r2, mut gm2) = (vec![0.0; m], vec![0.0; n * n]);
            c.bench_function(format!("gradient_pair{name}"), |b| {
                b.iter(|| {
                    op.residual_adjoint_pair(
                        [black_box(xm.as_slice()), &xm2],
                        &prob.y,
                        [&mut r, &mut r2],
                        [&mut gm, &mut gm2],
                    )
                })
            });
            // the second input's residual alone (the flow's loss at a record beside GD's step)
            c.bench_function(format!("gradient_beside_residual{name}"), |b| {
                b.iter(|| {
                    op.residual_adjoint_beside_residual(
                        [black_box(xm.as_slice()), &xm2],
                        &prob.y,
                        [&mut r, &mut r2],
                        &mut gm,
                    )
                })
            });
            // a flow's right-hand side carrying GD's step and a record's loss (a run's riders)
            let xm3: Vec<f64> = xm.iter().map(|v| 0.999 * v).collect();
            let mut r3 = vec![0.0; m];
            c.bench_function(format!("gradient_pair_beside_residual{name}"), |b| {
                b.iter(|| {
                    op.residual_adjoint_pair_beside_residual(
                        [black_box(xm.as_slice()), &xm2, &xm3],
                        &prob.y,
                        [&mut r, &mut r2, &mut r3],
                        [&mut gm, &mut gm2],
                    )
                })
            });
            c.bench_function(format!("gradient_two_pass{name}"), |b| {
                b.iter(|| {
                    op.apply(black_box(xm.as_slice()), &mut r);
                    for (ri, yi) in r.iter_mut().zip(&prob.y) {
                        *ri -= yi;
                    }
                    op.adjoint(&r, &mut gm)
                })
            });
        }
        // each way of running the fused pass, all bit-identical (`gradient_fused` above runs
        // the one the operator chose by timing its first calls)
        let mut planned = DenseOperator::gaussian(n, n, m, &mut sub_rng(0, STREAM_OPERATOR));
        let xm = field.product(&x);
        let (mut r, mut gm) = (vec![0.0; m], vec![0.0; n * n]);
        for plan in FusedPlan::ROWS {
            planned.set_fused_plan(Some(plan));
            c.bench_function(format!("gradient_fused_{}", plan.name()), |b| {
                b.iter(|| planned.residual_adjoint(black_box(xm.as_slice()), &p.y, &mut r, &mut gm))
            });
        }
        c.bench_function("rhs", |b| {
            // a fresh state each time: no cached residual
            let mut y = x.clone();
            b.iter(|| {
                y[0] += 1e-12;
                field.rhs(black_box(&y), &mut out, &mut ws)
            })
        });
        // a record's own work (ρ's operator norm, the factored SVDs), the field already
        // evaluated: what a record adds to the pass it shares
        c.bench_function("record", |b| {
            let recorder = Recorder::new(&field, &p.x_star, &x);
            let state: Vec<f64> = x.iter().map(|v| v * 1e3).collect();
            field.evaluate(&state, &mut ws);
            b.iter(|| recorder.record_evaluated(1, 1.0, black_box(&state), &ws))
        });
        c.bench_function("jvp", |b| {
            field.rhs(&x, &mut out, &mut ws);
            b.iter(|| field.jvp(black_box(&x), black_box(&dir), &mut out, &mut ws))
        });
        c.bench_function("gd_step", |b| {
            let mut y = x.clone();
            let mut f = vec![0.0; y.len()];
            b.iter(|| {
                field.rhs(&y, &mut f, &mut ws);
                for (yi, fi) in y.iter_mut().zip(&f) {
                    *yi += 0.01 * fi;
                }
            })
        });
        c.finish();
    }
    // Cost growth beyond the bench sizes: the two smaller matrices (1.3 MB, 30 MB) sit in this
    // machine's L2 and L3, so only (100, 20, 5000) and this one (800 MB) both stream from
    // DRAM; their ratio is the per-entry cost without cache effects.
    {
        let (n, k, m) = (100, 20, 10000);
        let mut g = c.benchmark_group(format!("growth_{}", label(n, k, m)));
        g.sample_size(20).measurement_time(Duration::from_secs(10));
        let p = problem(n, k, m, Precision::F64);
        let field = SensingField::from_problem(&p);
        let x = p.start_state();
        let mut ws = field.workspace();
        let mut out = vec![0.0; x.len()];
        g.bench_function("rhs", |b| {
            let mut y = x.clone();
            b.iter(|| {
                y[0] += 1e-12;
                field.rhs(black_box(&y), &mut out, &mut ws)
            })
        });
        g.finish();
    }
    let mut g = c.benchmark_group("tsit45_solve");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (n, k, m) in SIZES {
        let p = problem(n, k, m, Precision::F64);
        let field = SensingField::from_problem(&p);
        let x0 = p.start_state();
        let times = [0.0, 5.0];
        let opts = FlowOptions::new(Method::Tsit45, 1e-6, 1e-6 * 1e-2 / (k as f64).sqrt());
        g.bench_with_input(BenchmarkId::from_parameter(label(n, k, m)), &(), |b, _| {
            b.iter(|| solve_flow(&field, &x0, &times, &[0, 1], &opts).unwrap())
        });
    }
    g.finish();

    // BDF with the one-GEMM Jacobian against diffsol's N jvps per Jacobian (N = 1000 here).
    let (n, k, m) = (50, 10, 1500);
    let p = problem(n, k, m, Precision::F64);
    let field = SensingField::from_problem(&p);
    let x0 = p.start_state();
    let times = [0.0, 2.0];
    // What one Newton set-up costs at N = 1000: the one-GEMM Jacobian, and the LU of I − γJ
    // by nalgebra's unblocked algorithm (the one diffsol's NalgebraLU runs in place) and by
    // faer's blocked partial-pivot LU (what flow::BlockedLu runs).
    {
        let mut g = c.benchmark_group(format!("newton_{}", label(n, k, m)));
        g.sample_size(20).measurement_time(Duration::from_secs(5));
        let mut ws = field.workspace();
        let nn = field.state_len();
        let mut jac = nalgebra::DMatrix::zeros(nn, nn);
        g.bench_function("jacobian", |b| {
            b.iter(|| field.jacobian_into(black_box(&x0), &mut jac, &mut ws))
        });
        let newton = nalgebra::DMatrix::<f64>::identity(nn, nn) - &jac * 0.1;
        g.bench_function("lu_nalgebra", |b| b.iter(|| black_box(newton.clone()).lu()));
        g.bench_function("lu_faer_blocked", |b| {
            use faer::linalg::lu::partial_pivoting::factor;
            let (mut perm, mut perm_inv) = (vec![0usize; nn], vec![0usize; nn]);
            let scratch = factor::lu_in_place_scratch::<usize, f64>(
                nn,
                nn,
                faer::Par::Seq,
                Default::default(),
            );
            let mut mem = faer::dyn_stack::MemBuffer::new(scratch);
            b.iter(|| {
                let mut a = newton.clone();
                factor::lu_in_place(
                    faer::MatMut::from_column_major_slice_mut(a.as_mut_slice(), nn, nn),
                    &mut perm,
                    &mut perm_inv,
                    faer::Par::Seq,
                    faer::dyn_stack::MemStack::new(&mut mem),
                    Default::default(),
                );
                black_box(a)
            })
        });
        g.finish();
    }
    let mut g = c.benchmark_group(format!("bdf_solve_{}", label(n, k, m)));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (name, jacobian) in [
        ("exact", JacobianMode::Exact),
        ("assembled", JacobianMode::Assembled),
    ] {
        let opts = FlowOptions {
            jacobian,
            ..FlowOptions::new(Method::Bdf, 1e-6, 1e-6 * 1e-2 / (k as f64).sqrt())
        };
        g.bench_function(name, |b| {
            b.iter(|| solve_flow(&field, &x0, &times, &[0, 1], &opts).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
