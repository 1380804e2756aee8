//! MATH §3: the flow conserves D = UᵀU − VᵀV; GD changes it by exactly
//! η²(VᵀGᵀGV − UᵀGGᵀU) per step.

use gdflow::analysis::record::balance;
use gdflow::config::Method;
use gdflow::dynamics::flow::{solve_flow, FlowOptions};
use gdflow::dynamics::{Driver, Gd, Iterate, RunOptions as GdOptions, Status};
use gdflow::field::{Field, SensingField};
use nalgebra::DMatrix;

use super::small_gaussian;

#[test]
fn flow_conserves_the_balance_to_solver_tolerance() {
    let p = small_gaussian(21);
    let field = SensingField::from_problem(&p);
    let x0 = p.start_state();
    let d0 = balance(&field, &x0);
    let steps: Vec<usize> = (0..=100).collect();
    let times: Vec<f64> = steps.iter().map(|&j| j as f64 * 0.2).collect();
    for (method, rtol) in [
        (Method::Dop853, 1e-10),
        (Method::Tsit45, 1e-10),
        (Method::Bdf, 1e-10),
        (Method::Esdirk34, 1e-8),
    ] {
        let opts = FlowOptions::new(method, rtol, rtol * 1e-3);
        let sol = solve_flow(&field, &x0, &times, &steps, &opts).unwrap();
        assert_eq!(sol.trajectory.status, Status::Completed);
        let scale = p.x_star.norm();
        let worst = sol
            .trajectory
            .states
            .iter()
            .map(|x| (balance(&field, x) - &d0).norm())
            .fold(0.0, f64::max);
        // D changes only through solver error: of the order of rtol times the state size
        assert!(
            worst < 1e3 * rtol * scale,
            "{method:?}: balance drift {worst:e} at rtol {rtol:e}"
        );
    }
}

#[test]
fn gd_drift_equals_the_sum_of_the_per_step_identity() {
    let p = small_gaussian(22);
    let field = SensingField::from_problem(&p);
    let x0 = p.start_state();
    let eta = 0.05;
    let opts = GdOptions::new(eta, 300, 1);
    let mut ws = field.workspace();
    let mut predicted = balance(&field, &x0);
    let k = p.width();
    let mut f = vec![0.0; x0.len()];
    let mut observe = |it: &Iterate<'_>| {
        let (j, x) = (it.step, it.state);
        if j == opts.steps {
            return;
        }
        field.rhs(x, &mut f, &mut ws);
        let g: &DMatrix<f64> = ws.g();
        let (u, v) = field.factors().split(x);
        let gv = g * v;
        let gtu = g.transpose() * u;
        let step: DMatrix<f64> = eta * eta * (gv.tr_mul(&gv) - gtu.tr_mul(&gtu));
        assert_eq!(step.shape(), (k, k));
        predicted += step;
    };
    let traj = Driver::new(&field, Gd::new(), &x0, opts.clone())
        .run(&mut observe)
        .pop()
        .unwrap();
    assert_eq!(traj.status, Status::Completed);
    let observed = balance(&field, traj.states.last().unwrap());
    let d0 = balance(&field, &x0);
    let drift = (&observed - &d0).norm();
    let err = (&observed - &predicted).norm();
    assert!(drift > 1e-6, "GD should drift measurably: {drift:e}");
    assert!(
        err < 1e-12 * observed.norm().max(1.0),
        "observed D differs from the summed identity by {err:e} (drift {drift:e})"
    );
}

/// Each batched state is the separate run's to 1e-12 relative (rounding over whole runs).
fn assert_states_agree(single: &[Vec<f64>], batched: &[Vec<f64>], label: &str) {
    for (x, y) in single.iter().zip(batched) {
        let scale = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let diff = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            diff <= 1e-12 * scale,
            "{label}: states differ by {diff:e} (norm {scale:e})"
        );
    }
}

/// Batched GD streams the sensing matrix once per step for all step sizes. Its sums run in
/// another order (and fused on FMA machines), so its trajectories equal the unbatched ones to
/// rounding: on a small problem, and on one large enough for the operator to split its work
/// across threads, with runs of different lengths leaving the batch and one diverging.
#[test]
fn batched_gd_equals_separate_runs_to_rounding() {
    use gdflow::config::ConfigArgs;
    use gdflow::dynamics::{gradient_descent, gradient_descent_batch, RunOptions as GdOptions};
    use gdflow::problem::Problem;
    for (n, m) in [(7, 40), (40, 700)] {
        let args = ConfigArgs {
            n1: Some(n),
            n2: Some(n - 1),
            rank: Some(2),
            width: Some(3),
            measurements: Some(m),
            alpha: Some(0.1),
            ..Default::default()
        };
        let p = Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap();
        let field = SensingField::from_problem(&p);
        let x0 = p.start_state();
        // nine runs: a full group of eight and a padded one; different step counts, one
        // diverging
        let mut opts: Vec<GdOptions> = (0..8)
            .map(|i| GdOptions::new(0.02 * (i + 1) as f64, 30 + 5 * i, 1 + i % 3))
            .collect();
        opts.push(GdOptions::new(40.0, 50, 1));
        let batched = gradient_descent_batch(&field, &x0, &opts);
        for (o, b) in opts.iter().zip(&batched) {
            let single = gradient_descent(&field, &x0, o);
            assert_eq!(single.steps, b.steps, "η = {}", o.eta);
            match (&single.status, &b.status) {
                (Status::Completed, Status::Completed) => {}
                (Status::Diverged { step: s, .. }, Status::Diverged { step: t, .. }) => {
                    assert_eq!(s, t)
                }
                other => panic!("η = {}: {other:?}", o.eta),
            }
            assert_states_agree(&single.states, &b.states, &format!("η = {}", o.eta));
        }
        assert!(matches!(batched[8].status, Status::Diverged { .. }));
    }
}

/// Several starts (seeds and α values) on one operator, batched: each run equals GD from its
/// own start to rounding, and differs from the others (the starts really are used).
#[test]
fn batched_gd_from_several_starts_equals_separate_runs() {
    use gdflow::config::ConfigArgs;
    use gdflow::dynamics::{
        gradient_descent, gradient_descent_batch_from, RunOptions as GdOptions,
    };
    use gdflow::problem::Problem;
    let problem = |seed: u64, alpha: f64| {
        let args = ConfigArgs {
            n1: Some(9),
            n2: Some(8),
            rank: Some(2),
            width: Some(3),
            measurements: Some(60),
            alpha: Some(alpha),
            seed: Some(seed),
            ..Default::default()
        };
        Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap()
    };
    let base = problem(0, 0.1);
    let field = SensingField::from_problem(&base);
    // The same operator (seed 0) with starts drawn for other seeds and scales.
    let starts: Vec<Vec<f64>> = [(0, 0.1), (1, 0.1), (2, 0.01), (3, 0.3), (4, 1e-3)]
        .iter()
        .map(|&(seed, alpha)| {
            let x = problem(seed, alpha).start_state();
            assert_eq!(x.len(), field.state_len());
            x
        })
        .collect();
    let views: Vec<&[f64]> = starts.iter().map(Vec::as_slice).collect();
    let opts: Vec<GdOptions> = (0..starts.len())
        .map(|i| GdOptions::new(0.1, 40 + 10 * i, 10))
        .collect();
    let batched = gradient_descent_batch_from(&field, &views, &opts);
    for ((start, o), b) in starts.iter().zip(&opts).zip(&batched) {
        let single = gradient_descent(&field, start, o);
        assert_eq!(single.steps, b.steps);
        assert_eq!(single.status, Status::Completed);
        assert_eq!(b.status, Status::Completed);
        assert_states_agree(&single.states, &b.states, "start");
    }
    assert_ne!(batched[0].states[1], batched[1].states[1]);
}

/// Every output of the block products is the unbatched product to within the classical
/// bound for a sum of n products, |fl(Σ aⱼxⱼ) − Σ aⱼxⱼ| ≤ γₙ Σ|aⱼxⱼ| with γₙ = nu/(1 − nu),
/// doubled for the two roundings compared: for f64 and f32 storage, for block sizes that
/// fill, pad and repeat the groups, and at a size where the work is split across threads.
#[test]
fn block_products_equal_single_products_within_the_rounding_bound() {
    use gdflow::operator::{DenseOperator, SensingOperator};
    use gdflow::problem::{sub_rng, STREAM_OPERATOR};
    for (n1, n2, m) in [(6, 5, 37), (40, 31, 900)] {
        let f64_op = DenseOperator::gaussian(n1, n2, m, &mut sub_rng(1, STREAM_OPERATOR));
        let f32_op =
            DenseOperator::gaussian(n1, n2, m, &mut sub_rng(1, STREAM_OPERATOR)).into_f32();
        for op in [&f64_op, &f32_op] {
            let dense = op.to_dense(); // column i = vec(A_i)
            let abs = dense.abs();
            let n = n1 * n2;
            let u = f64::EPSILON / 2.0;
            for batch in [1, 3, 8, 11] {
                let xs: Vec<Vec<f64>> = (0..batch)
                    .map(|b| {
                        (0..n)
                            .map(|j| ((j * 7 + b * 3) % 11) as f64 - 5.2)
                            .collect()
                    })
                    .collect();
                let zs: Vec<Vec<f64>> = (0..batch)
                    .map(|b| {
                        (0..m)
                            .map(|i| ((i * 5 + b) % 13) as f64 * 0.3 - 1.7)
                            .collect()
                    })
                    .collect();
                let xr: Vec<&[f64]> = xs.iter().map(Vec::as_slice).collect();
                let zr: Vec<&[f64]> = zs.iter().map(Vec::as_slice).collect();
                let mut ys = vec![vec![0.0; m]; batch];
                let mut ws = vec![vec![0.0; n]; batch];
                op.apply_block(&xr, &mut ys);
                op.adjoint_block(&zr, &mut ws);
                for b in 0..batch {
                    let mut y = vec![0.0; m];
                    let mut w = vec![0.0; n];
                    op.apply(&xs[b], &mut y);
                    op.adjoint(&zs[b], &mut w);
                    let xa = nalgebra::DVector::from_iterator(n, xs[b].iter().map(|v| v.abs()));
                    let za = nalgebra::DVector::from_iterator(m, zs[b].iter().map(|v| v.abs()));
                    let apply_bound = abs.tr_mul(&xa);
                    let adjoint_bound = &abs * &za;
                    let gamma = |k: usize| 2.0 * k as f64 * u / (1.0 - k as f64 * u);
                    for i in 0..m {
                        let allowed = gamma(n) * apply_bound[i];
                        assert!(
                            (ys[b][i] - y[i]).abs() <= allowed,
                            "apply row {i}, batch {batch}"
                        );
                    }
                    for j in 0..n {
                        let allowed = gamma(m) * adjoint_bound[j];
                        assert!(
                            (ws[b][j] - w[j]).abs() <= allowed,
                            "adjoint entry {j}, batch {batch}"
                        );
                    }
                }
            }
        }
    }
}

/// The block products split their work by the number of threads, but every output is summed
/// whole by one task in one order: results are bit-identical with 1, 2 and 3 threads.
#[test]
fn block_products_do_not_depend_on_the_thread_count() {
    use gdflow::operator::{DenseOperator, SensingOperator};
    use gdflow::problem::{sub_rng, STREAM_OPERATOR};
    let (n1, n2, m) = (40, 31, 900); // above the operator's threshold for splitting work
    let op = DenseOperator::gaussian(n1, n2, m, &mut sub_rng(2, STREAM_OPERATOR));
    let n = n1 * n2;
    let xs: Vec<Vec<f64>> = (0..5)
        .map(|b| (0..n).map(|j| ((j * 3 + b) % 7) as f64 - 3.1).collect())
        .collect();
    let zs: Vec<Vec<f64>> = (0..5)
        .map(|b| (0..m).map(|i| ((i * 11 + b) % 5) as f64 - 2.3).collect())
        .collect();
    let products = |threads: usize| {
        super::on_threads(threads, || {
            let xr: Vec<&[f64]> = xs.iter().map(Vec::as_slice).collect();
            let zr: Vec<&[f64]> = zs.iter().map(Vec::as_slice).collect();
            let (mut ys, mut ws) = (vec![vec![0.0; m]; 5], vec![vec![0.0; n]; 5]);
            op.apply_block(&xr, &mut ys);
            op.adjoint_block(&zr, &mut ws);
            // and one input at a time (above the size where they split across threads)
            let (mut y1, mut w1) = (vec![0.0; m], vec![0.0; n]);
            op.apply(&xs[0], &mut y1);
            op.adjoint(&zs[0], &mut w1);
            (ys, ws, y1, w1)
        })
    };
    let one = products(1);
    assert_eq!(one, products(2));
    assert_eq!(one, products(3));
}

/// The fused residual–gradient pass: its residual is the two-pass residual bit for bit (the
/// same dot products), its gradient agrees with 𝒜*(r) within the classical bound
/// γ_m·Σ_i |r_i||a_ij| (the rows are summed per block, then the blocks), in f64 and f32
/// storage; and it is bit-identical with 1, 2 and 3 threads.
#[test]
fn fused_gradient_equals_the_two_pass_one_within_the_rounding_bound() {
    use gdflow::operator::SensingOperator;
    let u = f64::EPSILON / 2.0;
    let gamma = |k: usize| 2.0 * k as f64 * u / (1.0 - k as f64 * u);
    for (n1, n2, m) in [(6, 5, 37), (40, 31, 900)] {
        let (f64_op, f32_op) = f64_and_f32_storage(n1, n2, m, 3);
        let n = n1 * n2;
        let x: Vec<f64> = (0..n).map(|j| ((j * 7) % 11) as f64 - 5.2).collect();
        let y: Vec<f64> = (0..m).map(|i| ((i * 5) % 13) as f64 * 0.3 - 1.7).collect();
        for op in [&f64_op, &f32_op] {
            let fused = |threads: usize| {
                super::on_threads(threads, || {
                    let (mut r, mut g) = (vec![0.0; m], vec![0.0; n]);
                    op.residual_adjoint(&x, &y, &mut r, &mut g);
                    (r, g)
                })
            };
            let (r, g) = fused(1);
            assert_eq!((r.clone(), g.clone()), fused(2), "2 threads");
            assert_eq!((r.clone(), g.clone()), fused(3), "3 threads");
            let mut r2 = vec![0.0; m];
            op.apply(&x, &mut r2);
            for (ri, yi) in r2.iter_mut().zip(&y) {
                *ri -= yi;
            }
            assert_eq!(r, r2, "the residual is the two-pass one");
            let mut g2 = vec![0.0; n];
            op.adjoint(&r2, &mut g2);
            let abs = op.to_dense().abs();
            let ra = nalgebra::DVector::from_iterator(m, r.iter().map(|v| v.abs()));
            let bound = &abs * &ra;
            for j in 0..n {
                assert!(
                    (g[j] - g2[j]).abs() <= gamma(m) * bound[j],
                    "entry {j}: {} vs {}",
                    g[j],
                    g2[j]
                );
            }
            // and the two are not the same sums: the test has teeth
            if m > 100 {
                assert_ne!(g, g2);
            }
        }
    }
}

/// Two inputs through one fused pass (what GD and the flow share in `gdflow run`): each
/// residual and gradient is bit-identical to its own single pass, in f64 and f32 storage,
/// below and above the size the pass splits across threads, with 1, 2 and 3 threads, and so
/// is the residual of a second input that rides along without its gradient (a record that
/// needs only the loss), which is also `apply`'s; through the field, two evaluations in one
/// pass equal two separate ones, a loss beside an evaluation is the evaluation's loss, and a
/// workspace holding that loss alone still evaluates G when asked.
#[test]
fn a_shared_fused_pass_equals_two_single_ones_bit_for_bit() {
    use gdflow::field::{Field, SensingField};
    use gdflow::operator::SensingOperator;
    for (n1, n2, m) in [(6, 5, 37), (9, 7, 203), (40, 31, 900)] {
        let (f64_op, f32_op) = f64_and_f32_storage(n1, n2, m, 5);
        let n = n1 * n2;
        let xa: Vec<f64> = (0..n).map(|j| ((j * 7) % 11) as f64 - 5.2).collect();
        let xb: Vec<f64> = (0..n).map(|j| ((j * 3) % 13) as f64 * 0.4 - 2.1).collect();
        let y: Vec<f64> = (0..m).map(|i| ((i * 5) % 13) as f64 * 0.3 - 1.7).collect();
        for op in [&f64_op, &f32_op] {
            let single = |x: &[f64]| {
                let (mut r, mut g) = (vec![0.0; m], vec![0.0; n]);
                op.residual_adjoint(x, &y, &mut r, &mut g);
                (r, g)
            };
            let expected = (single(&xa), single(&xb));
            for threads in 1..=3 {
                let pair = super::on_threads(threads, || {
                    let (mut ra, mut ga) = (vec![0.0; m], vec![0.0; n]);
                    let (mut rb, mut gb) = (vec![0.0; m], vec![0.0; n]);
                    op.residual_adjoint_pair(
                        [&xa, &xb],
                        &y,
                        [&mut ra, &mut rb],
                        [&mut ga, &mut gb],
                    );
                    ((ra, ga), (rb, gb))
                });
                assert_eq!(pair, expected, "{threads} threads, m = {m}");
                let beside = super::on_threads(threads, || {
                    let (mut ra, mut ga) = (vec![0.0; m], vec![0.0; n]);
                    let mut rb = vec![0.0; m];
                    op.residual_adjoint_beside_residual(
                        [&xa, &xb],
                        &y,
                        [&mut ra, &mut rb],
                        &mut ga,
                    );
                    ((ra, ga), rb)
                });
                assert_eq!(beside.0, expected.0, "{threads} threads, m = {m}, beside");
                assert_eq!(
                    beside.1, expected.1 .0,
                    "{threads} threads, m = {m}, beside"
                );
                // three inputs: G at the first two, the residual alone at the third
                let xc: Vec<f64> = xa.iter().zip(&xb).map(|(a, b)| 0.3 * a - b).collect();
                let trio = super::on_threads(threads, || {
                    let (mut ra, mut ga) = (vec![0.0; m], vec![0.0; n]);
                    let (mut rb, mut gb) = (vec![0.0; m], vec![0.0; n]);
                    let mut rc = vec![0.0; m];
                    op.residual_adjoint_pair_beside_residual(
                        [&xb, &xa, &xc],
                        &y,
                        [&mut rb, &mut ra, &mut rc],
                        [&mut gb, &mut ga],
                    );
                    ((rb, gb), (ra, ga), rc)
                });
                assert_eq!(trio.0, expected.1, "{threads} threads, m = {m}, trio");
                assert_eq!(trio.1, expected.0, "{threads} threads, m = {m}, trio");
                assert_eq!(trio.2, single(&xc).0, "{threads} threads, m = {m}, trio");
            }
            let mut applied = vec![0.0; m];
            op.apply(&xb, &mut applied);
            applied.iter_mut().zip(&y).for_each(|(a, yi)| *a -= yi);
            assert_eq!(applied, expected.1 .0, "apply's residual, m = {m}");
        }
        // the field: G and the loss at two states from one pass
        let field = SensingField::new(std::sync::Arc::new(f64_op), y.clone(), 3);
        let len = field.state_len();
        let sa: Vec<f64> = (0..len).map(|j| ((j * 5) % 9) as f64 * 0.1 - 0.4).collect();
        let sb: Vec<f64> = (0..len).map(|j| ((j * 2) % 7) as f64 * 0.2 - 0.5).collect();
        let (mut wa, mut wb) = (field.workspace(), field.workspace());
        let (la, lb) = field.evaluate_pair(&sa, &mut wa, &sb, &mut wb);
        let (mut wa1, mut wb1) = (field.workspace(), field.workspace());
        assert_eq!(la, field.evaluate(&sa, &mut wa1));
        assert_eq!(lb, field.evaluate(&sb, &mut wb1));
        assert_eq!(wa.g(), wa1.g());
        assert_eq!(wb.g(), wb1.g());
        // G at one state and the loss alone at the other, from one pass
        let (mut wa2, mut wb2) = (field.workspace(), field.workspace());
        let fresh = field.workspace().g().clone();
        assert_eq!(
            field.evaluate_beside_loss(&sa, &mut wa2, &sb, &mut wb2),
            (la, lb)
        );
        assert_eq!(wa2.g(), wa1.g());
        assert_eq!(wb2.g(), &fresh, "no G computed at the loss's state");
        assert_eq!(field.evaluate_loss(&sb, &mut wb2), lb, "cached");
        assert_eq!(field.evaluate(&sb, &mut wb2), lb);
        assert_eq!(wb2.g(), wb1.g(), "G evaluated where only the loss was held");
        assert_eq!(field.evaluate_loss(&sa, &mut wa1), la);
        // G at two states and the loss alone at a third, from one pass
        let sc: Vec<f64> = sa.iter().zip(&sb).map(|(a, b)| a - 0.5 * b).collect();
        let (mut w1, mut w2, mut w3) = (field.workspace(), field.workspace(), field.workspace());
        let lc = field.evaluate(&sc, &mut field.workspace());
        let before = field.operator().counts();
        assert_eq!(
            field.evaluate_pair_beside_loss(&sb, &mut w1, &sa, &mut w2, &sc, &mut w3),
            (lb, la, lc)
        );
        let after = field.operator().counts();
        assert_eq!(
            (after.fused - before.fused, after.apply - before.apply),
            (2, 1),
            "two gradients and one residual"
        );
        assert_eq!(
            after.passes.unwrap() - before.passes.unwrap(),
            1,
            "one pass"
        );
        assert_eq!((w1.g(), w2.g()), (wb1.g(), wa1.g()));
        assert_eq!(w3.g(), &fresh, "no G computed at the loss's state");
        assert_eq!(field.evaluate_loss(&sc, &mut w3), lc, "cached");
    }
}

/// The sensing field (Gaussian, symmetric, f64 and f32 storage) and every perturbed field,
/// each with a state of its shape.
fn fields_of_every_kind() -> Vec<(Box<dyn Field>, Vec<f64>)> {
    use gdflow::field::{Perturbation, PerturbationModel, Perturbed};
    use std::sync::Arc;
    let p = small_gaussian(43);
    let sym = super::small_symmetric();
    let (op64, op32) = f64_and_f32_storage(9, 8, 70, 4);
    let y: Vec<f64> = (0..70).map(|i| ((i * 5) % 13) as f64 * 0.3 - 1.7).collect();
    let mut fields: Vec<(Box<dyn Field>, Vec<f64>)> = vec![
        (
            Box::new(SensingField::from_problem(&p)),
            super::random_state(&p, 1, 0.5),
        ),
        (
            Box::new(SensingField::from_problem(&sym)),
            super::random_state(&sym, 3, 0.5)[..sym.n1() * sym.width()].to_vec(),
        ),
    ];
    for op in [op64, op32] {
        let field = SensingField::new(Arc::new(op), y.clone(), 3);
        let x = (0..field.state_len())
            .map(|j| ((j * 7) % 11) as f64 * 0.1 - 0.5)
            .collect();
        fields.push((Box::new(field), x));
    }
    for model in [
        PerturbationModel::None,
        PerturbationModel::Sensing,
        PerturbationModel::Noise,
        PerturbationModel::Relative,
        PerturbationModel::Absolute,
    ] {
        fields.push((
            Box::new(Perturbed::new(
                SensingField::from_problem(&p),
                Perturbation::new(model, 0.1, &p, 3),
            )),
            super::random_state(&p, 2, 0.5),
        ));
    }
    fields
}

/// Hessian–vector products along a block of directions (`Field::hvp_many`, what the
/// eigen-solves of the sharpness column and the central flow call) equal the products one by
/// one bit for bit, for every kind of field and through the modified flow's wrapper; on a
/// dense operator two directions share each pass (at these sizes one block of rows; the pair
/// across blocks and plans is `every_plan_of_the_fused_pass_gives_the_same_bits`).
#[test]
fn hessian_vector_products_in_a_block_equal_single_ones_bit_for_bit() {
    use gdflow::field::Modified;
    use std::sync::Arc;
    for (field, x) in fields_of_every_kind() {
        let dirs: Vec<Vec<f64>> = (0..5)
            .map(|d| {
                (0..x.len())
                    .map(|j| (((j + 3 * d) * 7) % 13) as f64 * 0.1 - 0.6)
                    .collect()
            })
            .collect();
        let dirs: Vec<&[f64]> = dirs.iter().map(|d| d.as_slice()).collect();
        let single: Vec<Vec<f64>> = dirs
            .iter()
            .map(|d| {
                let mut h = vec![0.0; x.len()];
                field.hvp(&x, d, &mut h, &mut field.workspace());
                h
            })
            .collect();
        let mut block = vec![vec![0.0; x.len()]; dirs.len()];
        let mut ws = field.workspace();
        field.evaluate(&x, &mut ws);
        let before = field.operator().counts();
        field.hvp_many(&x, &dirs, &mut block, &mut ws);
        let after = field.operator().counts();
        assert_eq!(block, single, "{}", field.describe());
        if let (Some(a), Some(b)) = (after.passes, before.passes) {
            if field.describe().starts_with("sensing") {
                assert_eq!(
                    a - b,
                    3,
                    "{}: five products in three passes",
                    field.describe()
                );
            }
        }
    }
    // the wrappers pass the block through to the field they wrap
    let p = small_gaussian(44);
    let inner: Arc<dyn Field> = Arc::new(SensingField::from_problem(&p));
    let modified = Modified::new(inner.clone(), 0.1);
    let x = super::random_state(&p, 5, 0.5);
    let d: Vec<f64> = x.iter().map(|v| 1.0 - v).collect();
    let (mut one, mut many) = (vec![0.0; x.len()], vec![vec![0.0; x.len()]]);
    inner.hvp(&x, &d, &mut one, &mut inner.workspace());
    modified.hvp_many(&x, &[&d], &mut many, &mut modified.workspace());
    assert_eq!(many[0], one);
}

/// The loss alone (`Field::evaluate_loss`: one application of 𝒜 where nothing is held) is the
/// loss `Field::evaluate` gives with G, bit for bit: the sensing field in f64 and f32 storage
/// and symmetric, and every perturbed field; on a fresh workspace and on one holding G at
/// another state. A workspace holding a loss alone is never taken for one holding G, and a
/// residual riding beside another input's pass is counted as an application of 𝒜.
#[test]
fn the_loss_alone_is_the_evaluations_loss_bit_for_bit() {
    use gdflow::operator::SensingOperator;
    let fields = fields_of_every_kind();
    for (field, x) in &fields {
        let other: Vec<f64> = x.iter().map(|v| 0.5 * v + 0.01).collect();
        let (mut full, mut alone) = (field.workspace(), field.workspace());
        let loss = field.evaluate(x, &mut full);
        assert_eq!(
            field.evaluate_loss(x, &mut alone),
            loss,
            "{}",
            field.describe()
        );
        // a workspace that held G elsewhere, then the loss here, then G here
        let mut ws = field.workspace();
        field.evaluate(&other, &mut ws);
        assert_eq!(
            field.evaluate_loss(x, &mut ws),
            loss,
            "{}",
            field.describe()
        );
        assert_eq!(field.evaluate(x, &mut ws), loss);
        assert_eq!(
            ws.g(),
            full.g(),
            "G after a loss alone, {}",
            field.describe()
        );
        // and the loss beside another state's evaluation
        let (mut wa, mut wb) = (field.workspace(), field.workspace());
        let (la, lb) = field.evaluate_beside_loss(&other, &mut wa, x, &mut wb);
        assert_eq!((la, lb), (field.evaluate(&other, &mut ws), loss));
        assert_eq!(wa.g(), ws.g(), "{}", field.describe());
    }
    // the counts: one fused pass and one application of 𝒜
    let (op, _) = f64_and_f32_storage(9, 8, 70, 4);
    let y = vec![0.1; 70];
    let n = 72;
    let (xa, xb) = (vec![0.3; n], vec![-0.2; n]);
    let (mut ra, mut rb, mut g) = (vec![0.0; 70], vec![0.0; 70], vec![0.0; n]);
    let before = op.counts();
    op.residual_adjoint_beside_residual([&xa, &xb], &y, [&mut ra, &mut rb], &mut g);
    let after = op.counts();
    assert_eq!(
        (
            after.fused - before.fused,
            after.apply - before.apply,
            after.adjoint - before.adjoint
        ),
        (1, 1, 0)
    );
}

/// Every way the fused pass can run (its row blocks in one sweep or two, on the pool or on
/// the calling thread, or its inputs split between two threads; the operator times them on
/// its first calls and keeps the fastest) gives
/// the same residuals and gradients bit for bit, for one input, two sharing a pass, and one
/// with a second input's residual beside it, in f64
/// and f32 storage, with 1, 2 and 3 threads, the blocks on the operator's spinning helpers
/// or on rayon's pool (`beside_other_work`), with three callers at once, at a size with a
/// short last block (m = 903 rows in blocks of 60) and rows whose length is not a multiple of
/// four, at a smaller size where the inputs' plan competes with the blocks' (150 rows in
/// blocks of 12), and at a size below the parallel one (one block of 97 rows, the inputs
/// split between threads); and an operator left to choose reports the plan it chose.
#[test]
fn every_plan_of_the_fused_pass_gives_the_same_bits() {
    // above the parallel size (16 row blocks), above it but below the size where a pass of
    // several inputs may also split its inputs (13 blocks, the inputs' plan among the others),
    // and below it (one block; the plans that split rows then run as one thread, the inputs'
    // plan still splits the inputs)
    for (n1, n2, m) in [(41, 31, 903), (24, 23, 150), (13, 11, 97)] {
        every_plan_gives_the_same_bits_at(n1, n2, m);
    }
}

fn every_plan_gives_the_same_bits_at(n1: usize, n2: usize, m: usize) {
    use gdflow::operator::{beside_other_work, FusedPlan, SensingOperator};
    let n = n1 * n2;
    let (f64_op, f32_op) = f64_and_f32_storage(n1, n2, m, 8);
    let xa: Vec<f64> = (0..n).map(|j| ((j * 7) % 11) as f64 - 5.2).collect();
    let xb: Vec<f64> = (0..n).map(|j| ((j * 3) % 13) as f64 * 0.4 - 2.1).collect();
    let y: Vec<f64> = (0..m).map(|i| ((i * 5) % 13) as f64 * 0.3 - 1.7).collect();
    for mut op in [f64_op, f32_op] {
        let passes = |op: &gdflow::operator::DenseOperator| {
            let (mut r, mut g) = (vec![0.0; m], vec![0.0; n]);
            op.residual_adjoint(&xa, &y, &mut r, &mut g);
            let (mut ra, mut ga) = (vec![0.0; m], vec![0.0; n]);
            let (mut rb, mut gb) = (vec![0.0; m], vec![0.0; n]);
            op.residual_adjoint_pair([&xa, &xb], &y, [&mut ra, &mut rb], [&mut ga, &mut gb]);
            let (mut ra2, mut ga2, mut rb2) = (vec![0.0; m], vec![0.0; n], vec![0.0; m]);
            op.residual_adjoint_beside_residual([&xa, &xb], &y, [&mut ra2, &mut rb2], &mut ga2);
            assert_eq!((&ra2, &ga2, &rb2), (&ra, &ga, &rb), "a residual beside");
            let (mut r3, mut g3) = (
                [vec![0.0; m], vec![0.0; m], vec![0.0; m]],
                [vec![0.0; n], vec![0.0; n]],
            );
            let [r3a, r3b, r3c] = &mut r3;
            let [g3a, g3b] = &mut g3;
            op.residual_adjoint_pair_beside_residual(
                [&xb, &xa, &xb],
                &y,
                [r3a, r3b, r3c],
                [g3a, g3b],
            );
            assert_eq!(
                (&r3[1], &g3[1], &r3[0], &g3[0], &r3[2]),
                (&ra, &ga, &rb, &gb, &rb),
                "a residual beside a pair"
            );
            ((r, g), (ra, ga), (rb, gb))
        };
        let run = |op: &gdflow::operator::DenseOperator, threads: usize| {
            super::on_threads(threads, || passes(op))
        };
        // the blocks on rayon's pool instead of the operator's helpers
        let beside = |op: &gdflow::operator::DenseOperator, threads: usize| {
            super::on_threads(threads, || beside_other_work(|| passes(op)))
        };
        op.set_fused_plan(Some(FusedPlan::Pool));
        let expected = run(&op, 2);
        assert_eq!(expected.0, expected.1, "one input alone and in a pair");
        assert_ne!(expected.0 .1, expected.2 .1, "two different inputs");
        for plan in FusedPlan::ALL {
            op.set_fused_plan(Some(plan));
            for threads in 1..=3 {
                assert_eq!(run(&op, threads), expected, "{plan:?}, {threads} threads");
                assert_eq!(
                    beside(&op, threads),
                    expected,
                    "{plan:?}, {threads}, on rayon"
                );
            }
            // callers at once, sharing the helpers (each waits only for its own blocks)
            std::thread::scope(|s| {
                let callers: Vec<_> = (0..3).map(|_| s.spawn(|| run(&op, 2))).collect();
                for c in callers {
                    assert_eq!(c.join().unwrap(), expected, "{plan:?}, concurrent callers");
                }
            });
        }
        op.set_fused_plan(None);
        assert_eq!(op.counts().fused_plan, None, "nothing timed yet");
        // every kind of pass through its warm-up and every plan's trials (16 + 6 × 6 calls),
        // several inputs among the plans of `FusedPlan::ALL` at the middle size, some calls
        // from a one-thread pool among them (the plans a kind of pass is timed among do not
        // depend on the caller's pool)
        for i in 0..80 {
            let got = if i % 7 == 3 { run(&op, 1) } else { run(&op, 2) };
            assert_eq!(got, expected, "while the plans are timed (call {i})");
        }
        let chosen = op.counts().fused_plan;
        // the parallel size, `operator::kernels::FUSED_PARALLEL_MIN_ENTRIES`
        if n * m >= 1 << 16 {
            assert!(chosen.is_some(), "a plan chosen after every plan was timed");
        } else {
            // one input below the parallel size always runs on one thread, untimed
            assert_eq!(
                chosen, None,
                "one input below the parallel size is not planned"
            );
        }
        assert_eq!(op.fused_plan(), chosen);
    }
}

/// In `gdflow run`, the method's evaluation at x_j (Nesterov's at its look-ahead) shares its
/// pass over the sensing matrix with the flow's record at t_j (GD, heavy ball, ScaledGD,
/// alternating GD, Nesterov); each method's
/// trajectory is nonetheless bit for bit the one it takes alone (losses at every step), at a
/// size whose pass runs on several threads; and the flow's records, with their G (spectral
/// columns) or their loss alone (the others), hold the loss the field evaluates at the flow's
/// state, bit for bit; and a user's quantity finds G at the flow's state at every record.
#[test]
fn gd_in_a_run_beside_the_flow_is_gd_alone_bit_for_bit() {
    use gdflow::config::ConfigArgs;
    use gdflow::experiments::{run, Command, RunExtras, Setup};
    let args = ConfigArgs {
        n1: Some(30),
        n2: Some(30),
        rank: Some(2),
        width: Some(4),
        measurements: Some(400), // 360 000 entries: the fused pass splits across threads
        eta: Some(0.2),
        steps: Some(40),
        alpha: Some(1e-3),
        seed: Some(9),
        spectrum_every: Some(3),
        save_states: Some(true),
        ..Default::default()
    };
    for (optimizer, momentum) in [
        ("gd", None),
        ("heavy-ball", Some(0.5)),
        ("scaled-gd", None),
        ("alternating-gd", None),
        ("nesterov", None),
    ] {
        let args = ConfigArgs {
            optimizer: Some(optimizer.into()),
            momentum,
            ..args.clone()
        };
        let setup = Setup::new(&args, Command::Run, false).unwrap();
        let result = run(&setup, &RunExtras::default()).unwrap();
        let field = setup.field();
        let stepper = setup.optimizer().unwrap().stepper(0.2);
        let mut none = |_: &Iterate<'_>| {};
        let alone = Driver::new(
            field.as_ref(),
            stepper,
            &setup.start(),
            GdOptions::new(0.2, 40, 1),
        )
        .run(&mut none)
        .pop()
        .unwrap();
        assert_eq!(
            (result.gd.len(), alone.states.len()),
            (41, 41),
            "{optimizer}"
        );
        let mut ws = field.workspace();
        for (rec, x) in result.gd.iter().zip(&alone.states) {
            let step = rec.step;
            assert_eq!(
                rec.loss(),
                field.evaluate(x, &mut ws),
                "{optimizer}, step {step}"
            );
        }
    }
    let setup = Setup::new(&args, Command::Run, false).unwrap();
    let result = run(&setup, &RunExtras::default()).unwrap();
    let field = setup.field();
    let flow = &result
        .states
        .iter()
        .find(|(name, _)| name == "flow")
        .unwrap()
        .1;
    assert_eq!(flow.states.len(), result.flow.len());
    let spectral = result.flow.iter().filter(|r| r.rho().is_finite()).count();
    assert!(
        spectral > 5 && spectral < result.flow.len() - 5,
        "{spectral} rows with ρ"
    );
    for (rec, y) in result.flow.iter().zip(&flow.states) {
        let mut ws = field.workspace();
        assert_eq!(
            rec.loss(),
            field.evaluate(y, &mut ws),
            "flow, step {}",
            rec.step
        );
    }
    // a user's quantity reads G at every record, spectral or not
    let extras = RunExtras {
        quantities: vec![std::sync::Arc::new(GradientNorm)],
        ..RunExtras::default()
    };
    let with_g = run(&setup, &extras).unwrap();
    for (rec, y) in with_g.flow.iter().zip(&flow.states) {
        let mut ws = field.workspace();
        field.evaluate(y, &mut ws);
        assert_eq!(
            rec.get("gradient_norm"),
            Some(ws.g().norm()),
            "step {}",
            rec.step
        );
    }
}

/// In a run of GD beside the gradient flow, GD's evaluations and the flow's records ride on
/// the flow's own passes over the sensing matrix (ours and diffsol's solvers, records at
/// every step or every third, spectral or not, a user's quantity reading G), and change no
/// bit: the flow's states equal its solve alone at the same times, with the same number of
/// right-hand sides, and its records' losses the field's there; GD's losses equal its run
/// alone. Without the records' spectral work, the run's passes are the flow's right-hand sides
/// and hardly any more, where GD alone would add one per step.
#[test]
fn gd_and_the_records_ride_on_the_flows_passes_changing_no_bit() {
    use gdflow::config::ConfigArgs;
    use gdflow::experiments::{run, Command, RunExtras, Setup};
    let steps = 40;
    for (method, record_every, spectrum_every, quantity, eta) in [
        (Method::Dop853, 1, 0, false, 0.2),
        (Method::Dop853, 3, 2, false, 0.2),
        (Method::Dop853, 1, 0, true, 0.2),
        (Method::Bdf, 1, 3, false, 0.2),
        (Method::Tsit45, 2, 0, false, 0.2),
        // GD diverges while the flow goes on: the outputs after it complete without GD
        (Method::Dop853, 1, 3, false, 3.0),
    ] {
        let what = format!("{method:?}, every {record_every}, spectrum {spectrum_every}, η {eta}");
        let args = ConfigArgs {
            n1: Some(30),
            n2: Some(30),
            rank: Some(2),
            width: Some(4),
            measurements: Some(400), // the fused pass splits across threads
            eta: Some(eta),
            steps: Some(steps),
            alpha: Some(1e-3),
            seed: Some(13),
            method: Some(method),
            record_every: Some(record_every),
            spectrum_every: Some(spectrum_every),
            save_states: Some(true),
            ..Default::default()
        };
        let setup = Setup::new(&args, Command::Run, false).unwrap();
        let extras = RunExtras {
            quantities: match quantity {
                true => vec![std::sync::Arc::new(GradientNorm) as _],
                false => Vec::new(),
            },
            ..RunExtras::default()
        };
        let result = run(&setup, &extras).unwrap();
        let field = setup.field();
        let kept = |name: &str| {
            &result
                .states
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} states"))
                .1
        };
        let flow = kept("flow");
        let recorded: Vec<usize> = (0..=steps)
            .filter(|j| j % record_every == 0 || *j == steps)
            .collect();
        assert_eq!(flow.steps, recorded, "{what}");
        // the run's flow is output at every t_j (its dense output's stages depend on that)
        let every: Vec<usize> = (0..=steps).collect();
        let times: Vec<f64> = every.iter().map(|&j| j as f64 * eta).collect();
        let opts = setup.config.flow_options();
        let alone = solve_flow(field.as_ref(), &setup.start(), &times, &every, &opts).unwrap();
        let alone_recorded: Vec<&Vec<f64>> = recorded
            .iter()
            .map(|&j| &alone.trajectory.states[j])
            .collect();
        let run_recorded: Vec<&Vec<f64>> = flow.states.iter().collect();
        assert_eq!(alone_recorded, run_recorded, "{what}: flow states");
        assert_eq!(
            alone.stats.rhs_evals, result.summary.solver.rhs_evals,
            "{what}"
        );
        for (rec, y) in result.flow.iter().zip(&flow.states) {
            let mut ws = field.workspace();
            let loss = field.evaluate(y, &mut ws);
            assert_eq!(rec.loss(), loss, "{what}: flow at step {}", rec.step);
            if quantity {
                let g = Some(ws.g().norm());
                assert_eq!(rec.get("gradient_norm"), g, "{what}: step {}", rec.step);
            }
        }
        let gd = gradient_descent_alone(field.as_ref(), &setup.start(), eta, steps);
        let diverged = matches!(result.summary.gd.status, Status::Diverged { .. });
        assert_eq!(
            diverged,
            eta > 1.0,
            "{what}: {:?}",
            result.summary.gd.status
        );
        if record_every == 1 {
            assert_eq!(
                result.gd.len(),
                gd.len(),
                "{what}: GD's records up to where it stopped"
            );
        }
        for rec in &result.gd {
            let mut ws = field.workspace();
            let loss = field.evaluate(&gd[rec.step], &mut ws);
            assert_eq!(rec.loss(), loss, "{what}: GD at step {}", rec.step);
        }
        if method == Method::Dop853 && spectrum_every == 0 && !quantity {
            let passes = result
                .summary
                .operator_counts
                .passes
                .expect("a dense operator");
            let rhs = result.summary.solver.rhs_evals as u64;
            assert!(
                passes >= rhs && passes < rhs + (steps as u64 + 1) / 4,
                "{what}: {passes} passes for {rhs} right-hand sides and {} GD steps",
                steps + 1
            );
        }
    }
}

/// A user's quantity that reads G where the record is made: ‖G‖.
struct GradientNorm;

impl gdflow::analysis::Quantity for GradientNorm {
    fn columns(&self) -> Vec<String> {
        vec!["gradient_norm".into()]
    }
    fn measure(&self, at: &gdflow::analysis::At<'_>) -> Vec<f64> {
        vec![at.workspace.g().norm()]
    }
}

/// GD's iterates x_0 … x_steps from `x0`, run alone.
fn gradient_descent_alone(field: &dyn Field, x0: &[f64], eta: f64, steps: usize) -> Vec<Vec<f64>> {
    let opts = GdOptions::new(eta, steps, 1);
    gdflow::dynamics::gradient_descent(field, x0, &opts).states
}

/// The same Gaussian operator stored in f64 and in f32.
fn f64_and_f32_storage(
    n1: usize,
    n2: usize,
    m: usize,
    seed: u64,
) -> (
    gdflow::operator::DenseOperator,
    gdflow::operator::DenseOperator,
) {
    use gdflow::operator::DenseOperator;
    use gdflow::problem::{sub_rng, STREAM_OPERATOR};
    let op = || DenseOperator::gaussian(n1, n2, m, &mut sub_rng(seed, STREAM_OPERATOR));
    (op(), op().into_f32())
}

/// Every way a dense operator comes to hold its entries (drawn in f64 or f32, from a matrix,
/// rounded to f32) stores them from the start of a 64-byte cache line, so that no row whose
/// length is a multiple of 8 entries has a 32-byte load straddling two lines; the entries are
/// the ones given.
#[test]
fn dense_operators_store_their_entries_from_a_cache_line() {
    use gdflow::operator::{DenseOperator, Precision, SensingOperator, StorageView};
    use gdflow::problem::{sub_rng, STREAM_OPERATOR};
    let aligned = |op: &DenseOperator| match op.storage() {
        StorageView::F64(s) => s.as_ptr() as usize % 64 == 0,
        StorageView::F32(s) => s.as_ptr() as usize % 64 == 0,
    };
    for (n1, n2, m) in [(20, 20, 400), (3, 5, 7), (1, 1, 1)] {
        let rng = || sub_rng(4, STREAM_OPERATOR);
        let f64_op = DenseOperator::gaussian(n1, n2, m, &mut rng());
        let f32_op = DenseOperator::gaussian_stored(n1, n2, m, &mut rng(), Precision::F32);
        let dense = f64_op.to_dense();
        let from_matrix = DenseOperator::from_columns(n1, n2, dense.clone());
        assert_eq!(from_matrix.to_dense(), dense, "the entries given");
        let rounded = from_matrix.into_f32();
        assert_eq!(
            rounded.to_dense(),
            f32_op.to_dense(),
            "the same draws, rounded"
        );
        for (name, op) in [
            ("f64", &f64_op),
            ("f32", &f32_op),
            ("from_columns", &rounded),
        ] {
            assert!(aligned(op), "{name}, {n1}×{n2}×{m}");
        }
        let again = DenseOperator::from_columns(n1, n2, dense);
        assert!(aligned(&again), "from_columns, {n1}×{n2}×{m}");
    }
}
