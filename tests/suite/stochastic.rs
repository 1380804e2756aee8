//! Mini-batch SGD (MATH §10): GD bit for bit at b = m without replacement; its iterates against
//! a loop written here with a dense 𝒜; its batches unbiased (within 95% intervals) and drawn
//! from counter-based streams; its parameters refused before any work.

use gdflow::config::ConfigArgs;
use gdflow::dynamics::optimizer::{Optimizer, Sgd};
use gdflow::dynamics::{Driver, RunOptions};
use gdflow::experiments::run_config;
use gdflow::field::{Field, SensingField};
use nalgebra::{DMatrix, DVector};

use super::{small_gaussian, Plain};

fn args(batch: Option<usize>) -> ConfigArgs {
    ConfigArgs {
        n1: Some(8),
        n2: Some(7),
        rank: Some(2),
        width: Some(3),
        measurements: Some(60),
        alpha: Some(0.1),
        seed: Some(4),
        eta: Some(0.05),
        steps: Some(40),
        optimizer: batch.map(|_| "sgd".into()),
        batch,
        ..Default::default()
    }
}

/// A weak sweep of `base` at η = 0.05, 0.1 to `horizon`, without the stability bisection.
fn weak_sweep(base: &ConfigArgs, horizon: f64) -> gdflow::results::sweep::WeakSweep {
    let sweep = gdflow::config::SweepArgs {
        etas: Some(vec![0.05, 0.1]),
        horizon: Some(horizon),
        stability_steps: Some(0),
        ..Default::default()
    };
    let s = gdflow::experiments::sweep_config(base, &sweep)
        .unwrap()
        .summary;
    s.weak.expect("a weak sweep")
}

/// The ensemble summary of `run` at the sweep's step size `eta` (its steps to `horizon`, one
/// record at the end) against `flow`.
fn run_at(
    base: &ConfigArgs,
    eta: f64,
    horizon: f64,
    flow: gdflow::FlowVariant,
) -> gdflow::results::ensemble::EnsembleSummary {
    run_config(&ConfigArgs {
        eta: Some(eta),
        steps: Some((horizon / eta * (1.0 + 1e-12)).floor() as usize),
        flow: Some(flow),
        record_every: Some(1000),
        ..base.clone()
    })
    .unwrap()
    .summary
    .ensemble
    .unwrap()
}

/// `gdflow SUBCOMMAND` on [`args`]'s problem with SGD's batches of 6, as a user types it.
fn sgd_cli(subcommand: &str) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("gdflow").unwrap();
    cmd.args([
        subcommand, "--quiet", "--n1", "8", "--n2", "7", "--rank", "2", "--width", "3",
    ])
    .args(["--measurements", "60", "--alpha", "0.1", "--seed", "4"])
    .args(["--optimizer", "sgd", "--batch", "6"]);
    cmd
}

#[test]
fn full_batch_without_replacement_is_gd_bit_for_bit() {
    let gd = run_config(&args(None)).unwrap();
    let sgd = run_config(&args(Some(60))).unwrap();
    assert_eq!(sgd.summary.optimizer.name, "sgd");
    assert_eq!(gd.gd.len(), sgd.gd.len());
    for (a, b) in gd.gd.iter().zip(&sgd.gd) {
        assert_eq!((a.step, a.t), (b.step, b.t));
        assert_eq!(a.values(), b.values());
    }
    for (a, b) in gd.flow.iter().zip(&sgd.flow) {
        assert_eq!(a.values(), b.values());
    }
}

/// The batches: every step's weights sum to m; without replacement they are m/b on exactly b
/// measurements; each weight's mean over many steps is 1 (unbiased), within its 95% interval.
/// A mini-batch step reads its b rows alone: the row products equal the full products' entries
/// (dense f64 and f32 storage, and the default through `measurement_matrix` for sampled
/// entries), and the batch's loss estimate ½Σ w_i r_i² — what the divergence test sees
/// between records — is unbiased: its mean over many batches is the loss within its interval.
#[test]
fn batch_rows_match_full_passes_and_estimate_the_loss() {
    use gdflow::operator::{DenseOperator, EntryOperator, SensingOperator};
    use rand::SeedableRng;
    let (n1, n2, m) = (5, 4, 37);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let ops: Vec<Box<dyn SensingOperator>> = vec![
        Box::new(DenseOperator::gaussian(n1, n2, m, &mut rng)),
        Box::new(DenseOperator::gaussian(n1, n2, m, &mut rng).into_f32()),
        Box::new(EntryOperator::new(
            n1,
            n2,
            (0..m).map(|i| (i * 7) % (n1 * n2)).collect(),
        )),
    ];
    let x: Vec<f64> = (0..n1 * n2).map(|i| (i as f64 * 0.37).sin()).collect();
    let z: Vec<f64> = (0..m).map(|i| (i as f64 * 0.91).cos()).collect();
    let rows = [30, 2, 17, 2, 36];
    for op in &ops {
        let mut full = vec![0.0; m];
        op.apply(&x, &mut full);
        let mut some = vec![0.0; rows.len()];
        op.apply_rows(&rows, &x, &mut some);
        for (k, &i) in rows.iter().enumerate() {
            assert!(
                (some[k] - full[i]).abs() <= 1e-13 * full[i].abs().max(1.0),
                "row {i}"
            );
        }
        // Σ_k z_k A_{rows[k]} against the adjoint of z restricted to the rows (2 twice)
        let mut zr = vec![0.0; m];
        for (k, &i) in rows.iter().enumerate() {
            zr[i] += z[k];
        }
        let (mut want, mut got) = (vec![0.0; n1 * n2], vec![0.0; n1 * n2]);
        op.adjoint(&zr, &mut want);
        op.adjoint_rows(&rows, &z[..rows.len()], &mut got);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-13 * b.abs().max(1.0));
        }
    }
    // the estimate's mean over batches is the loss
    let p = small_gaussian(8);
    let field = SensingField::from_problem(&p);
    let x0 = super::random_state(&p, 9, 0.5);
    let mut ws = field.workspace();
    let loss = field.loss(&x0, &mut ws);
    let m = field.observations().len();
    // the losses of an ensemble's records, eight states a pass, are each state's own
    let states: Vec<Vec<f64>> = (0..11).map(|s| super::random_state(&p, s, 0.5)).collect();
    let views: Vec<&[f64]> = states.iter().map(|s| s.as_slice()).collect();
    for (x, l) in states.iter().zip(field.loss_batch(&views)) {
        let want = field.loss(x, &mut ws);
        assert!((l - want).abs() <= 1e-13 * want, "{l} against {want}");
    }
    for with_replacement in [false, true] {
        let sgd = Sgd {
            batch: 3,
            with_replacement,
            m,
            seed: 2,
            substeps: 8,
            label_noise: 0.0,
        };
        let (mut w, mut out) = (Vec::new(), vec![0.0; x0.len()]);
        let n = 20_000;
        let estimates: Vec<f64> = (0..n)
            .map(|j| {
                sgd.weights(0, j, &mut w);
                let (estimate, full) =
                    gdflow::field::batch_rhs(&field, &x0, &w, None, &mut out, &mut ws);
                assert!(full.is_none(), "3 of {m} rows are read alone");
                estimate
            })
            .collect();
        let mean = estimates.iter().sum::<f64>() / n as f64;
        let sd =
            (estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        let ci99 = 2.58 * sd / (n as f64).sqrt();
        assert!(
            (mean - loss).abs() <= ci99,
            "{mean} ± {ci99} against {loss}"
        );
    }
}

#[test]
fn batches_are_unbiased_and_counter_based() {
    for with_replacement in [false, true] {
        let sgd = Sgd {
            batch: 7,
            with_replacement,
            m: 30,
            seed: 11,
            substeps: 8,
            label_noise: 0.0,
        };
        let steps = 20_000;
        let (mut sum, mut sum_sq) = (vec![0.0; 30], vec![0.0; 30]);
        let mut w = Vec::new();
        for j in 0..steps {
            sgd.weights(0, j, &mut w);
            assert!((w.iter().sum::<f64>() - 30.0).abs() < 1e-9);
            if !with_replacement {
                assert_eq!(w.iter().filter(|&&x| x != 0.0).count(), 7);
                assert!(w.iter().all(|&x| x == 0.0 || x == 30.0 / 7.0));
            }
            for (i, x) in w.iter().enumerate() {
                sum[i] += x;
                sum_sq[i] += x * x;
            }
        }
        let n = steps as f64;
        let covered = (0..30)
            .filter(|&i| {
                let mean = sum[i] / n;
                let sd = ((sum_sq[i] / n - mean * mean) * n / (n - 1.0)).sqrt();
                (mean - 1.0).abs() <= 1.96 * sd / n.sqrt()
            })
            .count();
        // 95% intervals: about 28.5 of 30 cover 1; fewer than 24 would be a bias
        assert!(covered >= 24, "{covered} of 30 intervals cover 1");
        // counter-based: step 5 of replica 0 is the same whatever was drawn before it, and
        // another replica's differs
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        sgd.weights(0, 5, &mut a);
        sgd.weights(0, 19_999, &mut b);
        sgd.weights(0, 5, &mut b);
        sgd.weights(1, 5, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}

/// The iterates against x⁺ = x − η(m/b)Σ_{i∈B} r_i∇r_i computed here with a dense 𝒜, on the
/// batches the method drew.
#[test]
fn iterates_match_a_dense_loop() {
    let p = small_gaussian(3);
    let field = SensingField::from_problem(&p);
    let sgd = Sgd {
        batch: 5,
        with_replacement: true,
        m: p.m(),
        seed: 2,
        substeps: 8,
        label_noise: 0.0,
    };
    let eta = 0.05;
    let steps = 30;
    let x0 = p.start_state();
    let traj = Driver::new(
        &field,
        sgd.replica_stepper(eta, 3),
        &x0,
        RunOptions::new(eta, steps, 1),
    )
    .run(&mut |_: &gdflow::dynamics::Iterate<'_>| {})
    .pop()
    .unwrap();
    let pl = Plain::of(&p);
    let (mut u, mut v) = pl.split(&x0);
    let mut w = Vec::new();
    for j in 0..steps {
        sgd.weights(3, j, &mut w);
        let r = pl
            .residual(&u, &v)
            .component_mul(&DVector::from_column_slice(&w));
        step(&pl, &mut u, &mut v, &r, eta);
        assert_close(&Plain::join(&u, &v), &traj.states[j + 1], j + 1);
    }
}

/// U, V ← U − ηGV, V − ηGᵀU with G = 𝒜*(r) for the residual `r` given.
fn step(pl: &Plain, u: &mut DMatrix<f64>, v: &mut DMatrix<f64>, r: &DVector<f64>, eta: f64) {
    let g = pl.adjoint(r);
    let (gu, gv) = (&g * &*v, g.transpose() * &*u);
    *u -= eta * gu;
    *v -= eta * gv;
}

/// The loop's iterate against the library's, entry by entry, to 1e-12.
fn assert_close(mine: &[f64], theirs: &[f64], step: usize) {
    let err = mine
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err <= 1e-12, "step {step}: {err}");
}

/// D(X)'s columns d_i = √m r_i∇r_i − ∇f/√m give Σ_1 = DDᵀ (MATH §10), from the residual and
/// the per-measurement gradients at a state.
fn sigma1(r: &DVector<f64>, grads: &[DVector<f64>]) -> DMatrix<f64> {
    let (dim, mf) = (grads[0].len(), r.len() as f64);
    let grad_f = grads
        .iter()
        .zip(r.iter())
        .fold(DVector::zeros(dim), |acc, (g, ri)| acc + g * *ri);
    grads
        .iter()
        .zip(r.iter())
        .fold(DMatrix::zeros(dim, dim), |acc, (g, ri)| {
            let d = g * (mf.sqrt() * ri) - &grad_f / mf.sqrt();
            acc + &d * d.transpose()
        })
}

/// The largest difference between the empirical covariance of `draws` draws of `g(j)` and
/// `expected`, entry by entry, in standard errors √((Σ_aa Σ_bb + Σ_ab²)/n).
fn covariance_misfit(
    expected: &DMatrix<f64>,
    draws: usize,
    mut g: impl FnMut(usize) -> DVector<f64>,
) -> f64 {
    let dim = expected.nrows();
    let (mut mean, mut second) = (DVector::zeros(dim), DMatrix::zeros(dim, dim));
    for j in 0..draws {
        let x = g(j);
        second += &x * x.transpose();
        mean += x;
    }
    let n = draws as f64;
    mean /= n;
    let cov = second / n - &mean * mean.transpose();
    let mut worst: f64 = 0.0;
    for i in 0..dim {
        for j in 0..dim {
            let se = ((expected[(i, i)] * expected[(j, j)] + expected[(i, j)].powi(2)) / n)
                .sqrt()
                .max(1e-300);
            worst = worst.max((cov[(i, j)] - expected[(i, j)]).abs() / se);
        }
    }
    worst
}

#[test]
fn bad_sgd_parameters_are_refused_naming_the_key() {
    for (a, key) in [
        (args(Some(0)), "batch"),
        (args(Some(61)), "batch"),
        (
            ConfigArgs {
                batch: None,
                optimizer: Some("sgd".into()),
                ..args(None)
            },
            "batch",
        ),
        (
            ConfigArgs {
                batch: Some(5),
                ..args(None)
            },
            "batch",
        ),
        (
            ConfigArgs {
                perturbation: Some(gdflow::field::PerturbationModel::Relative),
                ..args(Some(5))
            },
            "perturbation",
        ),
        (
            ConfigArgs {
                with_replacement: Some(true),
                ..args(None)
            },
            "with_replacement",
        ),
    ] {
        let err = run_config(&a).err().expect("refused").to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}

fn ensemble_args(replicas: usize) -> ConfigArgs {
    ConfigArgs {
        replicas: Some(replicas),
        record_every: Some(10),
        ..args(Some(6))
    }
}

/// The ensemble's statistics against the replicas run one by one here (each replica's stepper
/// in a driver of its own, sums taken in plain loops): means and sample deviations agree, the
/// interval is 1.96·s/√n, and replica 0 is the path trajectory.csv holds.
#[test]
fn ensemble_statistics_match_replicas_run_one_by_one() {
    let n = 12;
    let a = ensemble_args(n);
    let result = run_config(&a).unwrap();
    let setup = gdflow::Setup::new(&a, gdflow::Command::Run, false).unwrap();
    let opt = setup.optimizer().unwrap();
    let field = setup.field();
    let x0 = setup.start();
    let (mut finals, mut states) = (Vec::new(), Vec::new());
    for r in 0..n as u64 {
        let (mut last, mut state) = (f64::NAN, Vec::new());
        Driver::new(
            field.as_ref(),
            opt.replica_stepper(0.05, r),
            &x0,
            RunOptions::new(0.05, 40, 1),
        )
        .run(&mut |it: &gdflow::dynamics::Iterate<'_>| {
            last = it.loss;
            state = it.state.to_vec();
        });
        finals.push(last);
        states.push(state);
    }
    let mean = finals.iter().sum::<f64>() / n as f64;
    let sd = (finals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt();
    let row = result
        .ensemble
        .iter()
        .find(|r| r.step == 40 && r.quantity == "loss")
        .unwrap();
    assert_eq!(row.stat.n, n);
    assert!(
        (row.stat.mean - mean).abs() <= 1e-12 * mean,
        "{} vs {mean}",
        row.stat.mean
    );
    assert!(
        (row.stat.std - sd).abs() <= 1e-9 * sd,
        "{} vs {sd}",
        row.stat.std
    );
    assert_eq!(row.stat.ci95, 1.96 * row.stat.std / (n as f64).sqrt());
    // replica 0 is trajectory.csv's path
    assert_eq!(result.gd.last().unwrap().loss(), finals[0]);
    // the summary's final statistics are the last step's rows; the flow's have n = 1
    let e = result.summary.ensemble.as_ref().unwrap();
    assert_eq!(e.replicas, n);
    assert_eq!(e.final_stats["sgd"]["loss"], row.stat);
    assert_eq!(e.final_stats["flow"]["loss"].n, 1);
    assert_eq!(e.final_stats["flow"]["loss"].std, 0.0);
    // the imbalance ‖UᵀU − VᵀV‖ and ‖U‖² + ‖V‖² − 2‖X*‖_*, from the stacked (vec U, vec V)
    let (n1, n2, k) = (8, 7, 3);
    let nuclear: f64 = setup
        .problem
        .x_star
        .clone()
        .svd(false, false)
        .singular_values
        .sum();
    let by_hand = |f: &dyn Fn(&DMatrix<f64>, &DMatrix<f64>) -> f64| {
        let values: Vec<f64> = states
            .iter()
            .map(|x| {
                let u = DMatrix::from_column_slice(n1, k, &x[..n1 * k]);
                let v = DMatrix::from_column_slice(n2, k, &x[n1 * k..]);
                f(&u, &v)
            })
            .collect();
        values.iter().sum::<f64>() / n as f64
    };
    let imbalance = by_hand(&|u, v| (u.transpose() * u - v.transpose() * v).norm());
    let excess = by_hand(&|u, v| {
        u.iter().map(|a| a * a).sum::<f64>() + v.iter().map(|a| a * a).sum::<f64>() - 2.0 * nuclear
    });
    for (q, want) in [("imbalance", imbalance), ("norm_excess", excess)] {
        let got = e.final_stats["sgd"][q].mean;
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{q}: {got} vs {want}"
        );
    }
    // every recorded step, every quantity
    assert_eq!(result.ensemble.len(), 5 * 6);
}

#[test]
fn ensemble_does_not_depend_on_the_thread_count() {
    let a = ensemble_args(20);
    let one = super::on_threads(1, || run_config(&a).unwrap().ensemble);
    let two = super::on_threads(2, || run_config(&a).unwrap().ensemble);
    assert_eq!(one, two);
}

#[test]
fn replicas_are_refused_where_they_cannot_act() {
    let gd = ConfigArgs {
        replicas: Some(4),
        ..args(None)
    };
    let err = run_config(&gd).err().unwrap().to_string();
    assert!(
        err.contains("replicas") && err.contains("deterministic"),
        "{err}"
    );
    let zero = ensemble_args(0);
    assert!(run_config(&zero)
        .err()
        .unwrap()
        .to_string()
        .contains("replicas"));
    for cmd in ["sweep", "check"] {
        let out = assert_cmd::Command::cargo_bin("gdflow")
            .unwrap()
            .args([cmd, "--quiet", "--replicas", "3"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("replicas"));
    }
}

/// ensemble.csv's columns are the contract's, and `gdflow run --out` writes it.
#[test]
fn ensemble_csv_has_the_contract_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    sgd_cli("run")
        .args(["--steps", "20", "--eta", "0.05", "--replicas", "5"])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let text = std::fs::read_to_string(out.join("ensemble.csv")).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "dynamics,step,t,quantity,n,mean,std,ci95"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["ensemble"]["replicas"], 5);
    assert_eq!(summary["ensemble"]["final"]["sgd"]["loss"]["n"], 5);
}

/// D(X)ξ applied through one adjoint pass equals Σ_i ξ_i d_i with the columns
/// d_i = √m r_i∇r_i − ∇f/√m assembled here from a dense 𝒜 (MATH §10).
#[test]
fn gradient_noise_equals_the_assembled_columns() {
    use gdflow::field::{gradient_noise, Field};
    let p = small_gaussian(5);
    let field = SensingField::from_problem(&p);
    let x = super::random_state(&p, 7, 0.5);
    let mut ws = field.workspace();
    field.evaluate(&x, &mut ws);
    let m = p.m();
    let xi: Vec<f64> = (0..m)
        .map(|i| ((i * 7919 % 13) as f64 - 6.0) / 5.0)
        .collect();
    let mut out = vec![0.0; x.len()];
    gradient_noise(&field, &x, &xi, 1.0, &mut out, &mut ws);
    let pl = Plain::of(&p);
    let (u, v) = pl.split(&x);
    let r = pl.residual(&u, &v);
    let grads = pl.residual_gradients(&x);
    let grad_f = (0..m).fold(DVector::zeros(x.len()), |acc, i| acc + &grads[i] * r[i]);
    let mf = m as f64;
    let expected = (0..m).fold(DVector::zeros(x.len()), |acc, i| {
        acc + (&grads[i] * (mf.sqrt() * r[i]) - &grad_f / mf.sqrt()) * xi[i]
    });
    let err = (DVector::from_vec(out) - &expected).amax();
    assert!(err <= 1e-12 * expected.amax(), "{err}");
}

/// SGD's per-step noise has covariance c_b·DDᵀ (MATH §10), the SMEs' diffusion: the
/// empirical covariance of g_B over many batches against c_b·DDᵀ assembled from the columns,
/// entry by entry within the Monte Carlo error, with and without replacement.
#[test]
fn batch_gradient_covariance_is_c_b_d_dt() {
    let p = small_gaussian(6);
    let m = p.m();
    let x = super::random_state(&p, 3, 0.5);
    let pl = Plain::of(&p);
    let (u, v) = pl.split(&x);
    let r = pl.residual(&u, &v);
    let grads = pl.residual_gradients(&x);
    let sigma1 = sigma1(&r, &grads);
    let dim = x.len();
    for with_replacement in [false, true] {
        let sgd = Sgd {
            batch: 4,
            with_replacement,
            m,
            seed: 9,
            substeps: 8,
            label_noise: 0.0,
        };
        let mut w = Vec::new();
        let worst = covariance_misfit(&(&sigma1 * sgd.c_b()), 40_000, |j| {
            sgd.weights(0, j, &mut w);
            (0..m).fold(DVector::zeros(dim), |acc, i| {
                acc + &grads[i] * (w[i] * r[i])
            })
        });
        eprintln!("with_replacement {with_replacement}: worst entry {worst:.2} standard errors");
        // a wrong c_b (1/b against (m−b)/(b(m−1))) or a wrong D is off by many standard errors
        assert!(
            worst < 6.0,
            "with_replacement {with_replacement}: {worst} standard errors"
        );
    }
}

/// Without noise (b = m without replacement: c_b = 0) the SME-1 path is Euler's method on the
/// gradient flow with h = η/s: the flow's rows against an explicit Euler loop written here.
#[test]
fn sme1_without_noise_is_euler_on_the_gradient_flow() {
    let a = ConfigArgs {
        flow: Some(gdflow::FlowVariant::Sme1),
        sde_substeps: Some(4),
        steps: Some(10),
        ..args(Some(60))
    };
    let result = run_config(&a).unwrap();
    let setup = gdflow::Setup::new(&a, gdflow::Command::Run, false).unwrap();
    let p = &setup.problem;
    let pl = Plain::of(p);
    let (mut u, mut v) = pl.split(&setup.start());
    let h = 0.05 / 4.0;
    for j in 0..=10 {
        let x = &u * v.transpose();
        let rel = (&x - &p.x_star).norm() / p.x_star.norm();
        let row = &result.flow[j];
        assert!((row.rel_error() - rel).abs() <= 1e-12 * rel, "step {j}");
        for _ in 0..4 {
            let r = pl.residual(&u, &v);
            step(&pl, &mut u, &mut v, &r, h);
        }
    }
}

/// With an SME as the limit, its own replicas make the flow's ensemble rows (n = N), and the
/// weak error is the difference of the two means with the two intervals combined.
#[test]
fn sme_ensemble_and_weak_error() {
    let a = ConfigArgs {
        flow: Some(gdflow::FlowVariant::Sme2),
        replicas: Some(40),
        steps: Some(10),
        record_every: Some(5),
        ..args(Some(6))
    };
    let r = run_config(&a).unwrap();
    let e = r.summary.ensemble.as_ref().unwrap();
    let (sgd, flow) = (
        &e.final_stats["sgd"]["loss"],
        &e.final_stats["flow"]["loss"],
    );
    assert_eq!((sgd.n, flow.n), (40, 40));
    assert!(flow.std > 0.0, "the SME's paths differ");
    let w = &e.weak_error["loss"];
    assert_eq!(w.difference, sgd.mean - flow.mean);
    assert_eq!(w.ci95, sgd.ci95.hypot(flow.ci95));
    assert_eq!(w.resolved, w.difference.abs() > w.ci95);
    assert!(r
        .ensemble
        .iter()
        .any(|row| row.dynamics == "flow" && row.stat.n == 40));
    // no distance between independent paths
    assert!(!e.final_stats["sgd"].contains_key("distance"));
    // the scheme's own weak error: the difference of the h and h/2 ensembles, with its interval
    let se = &e.scheme_error["loss"];
    assert!(se.ci95 > 0.0 && se.difference.is_finite());
    assert_eq!(se.resolved, se.difference.abs() > se.ci95);
}

/// Label-noise SGD (MATH §10): its step is GD's on labels y + σε with ε from its stream
/// (iterates against a dense loop), and its per-step noise covariance is
/// c_b·DDᵀ + σ²(m/b)·JJᵀ, the sum the SME's two noises carry (Monte Carlo, entry by entry).
#[test]
fn label_noise_steps_and_covariance() {
    let p = small_gaussian(8);
    let m = p.m();
    let pl = Plain::of(&p);
    let x0 = p.start_state();
    // iterates, full batch
    let full = Sgd {
        batch: m,
        with_replacement: false,
        m,
        seed: 5,
        substeps: 8,
        label_noise: 0.3,
    };
    assert!(full.is_stochastic());
    let field = SensingField::from_problem(&p);
    let traj = Driver::new(
        &field,
        full.replica_stepper(0.05, 1),
        &x0,
        RunOptions::new(0.05, 10, 1),
    )
    .run(&mut |_: &gdflow::dynamics::Iterate<'_>| {})
    .pop()
    .unwrap();
    let (mut u, mut v) = pl.split(&x0);
    let mut s = Vec::new();
    for j in 0..10 {
        full.label_draw(1, j, &mut s);
        let r = pl.residual(&u, &v) - DVector::from_column_slice(&s);
        step(&pl, &mut u, &mut v, &r, 0.05);
        assert_close(&Plain::join(&u, &v), &traj.states[j + 1], j + 1);
    }
    // covariance with a batch: c_b Σ_1 + σ²(m/b) JJᵀ
    let x = super::random_state(&p, 4, 0.5);
    let (u, v) = pl.split(&x);
    let r = pl.residual(&u, &v);
    let grads = pl.residual_gradients(&x);
    let dim = x.len();
    let mf = m as f64;
    let jjt = grads
        .iter()
        .fold(DMatrix::zeros(dim, dim), |acc, g| acc + g * g.transpose());
    let sigma1 = sigma1(&r, &grads);
    let sgd = Sgd {
        batch: 10,
        with_replacement: false,
        m,
        seed: 5,
        substeps: 8,
        label_noise: 0.3,
    };
    let expected = &sigma1 * sgd.c_b() + &jjt * (0.09 * mf / 10.0);
    let (mut w, mut s) = (Vec::new(), Vec::new());
    let worst = covariance_misfit(&expected, 40_000, |j| {
        sgd.weights(0, j, &mut w);
        sgd.label_draw(0, j, &mut s);
        (0..m).fold(DVector::zeros(dim), |acc, i| {
            acc + &grads[i] * (w[i] * (r[i] - s[i]))
        })
    });
    eprintln!("label noise: worst entry {worst:.2} standard errors");
    assert!(worst < 6.0, "{worst} standard errors");
    // Jξ through one adjoint pass against Σ ξ_i ∇r_i
    let xi: Vec<f64> = (0..m).map(|i| (i as f64 * 0.37).sin()).collect();
    let mut out = vec![0.0; dim];
    gdflow::field::residual_jacobian_t(&field, &x, &xi, 1.0, &mut out);
    let expected = (0..m).fold(DVector::zeros(dim), |acc, i| acc + &grads[i] * xi[i]);
    assert!((DVector::from_vec(out) - &expected).amax() <= 1e-12 * expected.amax());
}

#[test]
fn label_noise_parameters_are_refused_naming_the_key() {
    for (sigma, key) in [
        (None, "label_noise"),
        (Some(0.0), "label_noise"),
        (Some(-1.0), "label_noise"),
    ] {
        let a = ConfigArgs {
            optimizer: Some("label-noise".into()),
            label_noise: sigma,
            batch: None,
            ..args(None)
        };
        let err = run_config(&a).err().expect("refused").to_string();
        assert!(err.contains(key), "{err}");
    }
    let gd = ConfigArgs {
        label_noise: Some(0.1),
        ..args(None)
    };
    assert!(run_config(&gd)
        .err()
        .unwrap()
        .to_string()
        .contains("label_noise"));
}

/// The Euler–Maruyama scheme itself on dX = −aX dt + σ dW (two independent coordinates), whose
/// moments have closed forms: the scheme's mean x0(1 − ah)^n and variance
/// σ²h(1 − (1 − ah)^{2n})/(1 − (1 − ah)²) are met by 4·10⁴ paths within their 99.9% intervals
/// (six comparisons at once: 95% each would fail one in four correct runs),
/// and the error of the mean against the exact x0·e^{−aT} has weak order 1 in h (fitted over
/// h, h/2, h/4 from the Monte Carlo means).
#[test]
fn euler_maruyama_weak_order_on_a_linear_sde() {
    use gdflow::dynamics::flow::Times;
    use gdflow::dynamics::sde::euler_maruyama;
    // σ small: the mean's weak error does not depend on it, its Monte Carlo error does
    let (a, sigma, x0, t_end) = (2.0, 0.05, 1.0, 1.0);
    let paths = 40_000;
    let mut errors = Vec::new();
    for substeps in [5usize, 10, 20] {
        let h = t_end / substeps as f64;
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for p in 0..paths {
            let mut end = 0.0;
            let mut increment = |x: &[f64], h: f64, dw: &[f64], delta: &mut [f64]| {
                for ((d, x), w) in delta.iter_mut().zip(x).zip(dw) {
                    *d = -a * x * h + sigma * w;
                }
            };
            euler_maruyama(
                &[x0, x0],
                Times::Grid {
                    dt: t_end,
                    count: 2,
                },
                substeps,
                2,
                (17, p),
                &mut increment,
                &mut |i, _, x| {
                    if i == 1 {
                        end = x[0];
                    }
                },
                &mut |_| {},
            );
            sum += end;
            sum_sq += end * end;
        }
        let n = paths as f64;
        let mean = sum / n;
        let var = (sum_sq - n * mean * mean) / (n - 1.0);
        let q = 1.0 - a * h;
        let scheme_mean = x0 * q.powi(substeps as i32);
        let scheme_var = sigma * sigma * h * (1.0 - q.powi(2 * substeps as i32)) / (1.0 - q * q);
        let z = 3.29;
        let ci_mean = z * var.sqrt() / n.sqrt();
        // the sample variance's standard error for a normal: var·√(2/(n − 1))
        let ci_var = z * scheme_var * (2.0 / (n - 1.0)).sqrt();
        assert!(
            (mean - scheme_mean).abs() <= ci_mean,
            "{substeps}: mean {mean} vs {scheme_mean}"
        );
        assert!(
            (var - scheme_var).abs() <= ci_var,
            "{substeps}: var {var} vs {scheme_var}"
        );
        errors.push((h, (mean - x0 * (-a * t_end).exp()).abs()));
    }
    let order = gdflow::analysis::fit::slope(
        &errors.iter().map(|e| e.0.ln()).collect::<Vec<_>>(),
        &errors.iter().map(|e| e.1.ln()).collect::<Vec<_>>(),
    );
    eprintln!("Euler–Maruyama weak errors {errors:?}, order {order:.3}");
    assert!((order - 1.0).abs() <= 0.15, "weak order {order}");
}

/// The weak-order fit: differences c·η² give order 2 with a zero-width interval, and one
/// unresolved difference leaves the order unread, saying where.
#[test]
fn weak_orders_fit_and_refuse_unresolved_points() {
    use gdflow::experiments::weak::weak_orders;
    use gdflow::results::ensemble::{Stat, WeakError, WeakPoint};
    let point = |eta: f64, d: f64, ci: f64| WeakPoint {
        eta,
        weak_error: [(
            "sme2".to_string(),
            WeakError {
                difference: d,
                ci95: ci,
                resolved: d.abs() > ci,
            },
        )]
        .into_iter()
        .collect(),
        variance_ratio: Default::default(),
        method_loss: Stat::exact(0.0),
        scheme_error: Default::default(),
        substeps: Default::default(),
    };
    let exact: Vec<WeakPoint> = [0.05, 0.1, 0.2]
        .iter()
        .map(|&e| point(e, 3.0 * e * e, 1e-6))
        .collect();
    let o = &weak_orders(&exact)["sme2"];
    assert!((o.order.unwrap() - 2.0).abs() < 1e-12);
    assert!(o.ci95 < 1e-9);
    let mut noisy = exact.clone();
    noisy[0] = point(0.05, 1e-4, 2e-4);
    let o = &weak_orders(&noisy)["sme2"];
    assert_eq!(o.order, None);
    assert!(o.unresolved.as_deref().unwrap().contains("0.05"));
}

/// `sweep --optimizer sgd --replicas N` gives at each η the same weak error as `run --replicas
/// N --flow sme2` there (the same streams), and writes weak_error.csv.
#[test]
fn sweep_weak_errors_are_the_runs() {
    let base = ConfigArgs {
        replicas: Some(200),
        eta: None,
        steps: None,
        ..args(Some(6))
    };
    let w = weak_sweep(&base, 1.0);
    assert_eq!(w.points.len(), 2);
    for p in &w.points {
        let e = run_at(&base, p.eta, 1.0, gdflow::FlowVariant::Sme2);
        assert_eq!(p.weak_error["sme2"], e.weak_error["loss"]);
        // the sweep solves the plain flow to T alone, the run records it at every step: the
        // same SGD ensemble against flows equal to the solver's tolerance
        let e = run_at(&base, p.eta, 1.0, gdflow::FlowVariant::Plain);
        let (a, b) = (p.weak_error["plain"], e.weak_error["loss"]);
        assert!(
            (a.difference - b.difference).abs() < 1e-6 * b.difference.abs() && a.ci95 == b.ci95,
            "{a:?} against {b:?}"
        );
    }
    assert!(w.orders.contains_key("plain"));
}

/// ensemble.csv reads back as written, and the figures of an ensemble and of a weak sweep are
/// drawn by `run --figures`, `sweep --figures` and `gdflow plot` (whose summary.json holds
/// the NaN interval of a two-point order fit, written as null).
#[test]
fn ensemble_and_weak_figures_are_drawn_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (run_dir, sweep_dir) = (dir.path().join("r"), dir.path().join("s"));
    sgd_cli("run")
        .args([
            "--eta",
            "0.05",
            "--steps",
            "40",
            "--record-every",
            "10",
            "--replicas",
            "30",
        ])
        .args(["--flow", "sme2", "--figures", "--out"])
        .arg(&run_dir)
        .assert()
        .success();
    let run = run_config(&ConfigArgs {
        flow: Some(gdflow::FlowVariant::Sme2),
        ..ensemble_args(30)
    })
    .unwrap();
    let back = gdflow::results::run::load_run(&run_dir).unwrap();
    assert!(!run.ensemble.is_empty());
    assert_eq!(back.ensemble, run.ensemble);
    assert!(run_dir.join("figures/ensemble.png").exists());
    sgd_cli("sweep")
        .args(["--replicas", "40", "--etas", "0.05,0.1", "--horizon", "0.5"])
        .args(["--stability-steps", "0", "--figures", "--out"])
        .arg(&sweep_dir)
        .assert()
        .success();
    assert!(sweep_dir.join("figures/weak_error.png").exists());
    let figures = dir.path().join("f");
    assert_cmd::Command::cargo_bin("gdflow")
        .unwrap()
        .args(["plot", "--out"])
        .arg(&figures)
        .arg(&run_dir)
        .arg(&sweep_dir)
        .assert()
        .success();
    for name in ["ensemble", "s/weak_error"] {
        let svg = std::fs::read_to_string(figures.join(format!("{name}.svg"))).unwrap();
        roxmltree::Document::parse(&svg).unwrap();
        assert!(svg.contains("95%"), "{name}: says what the bands are");
    }
}

/// The tiny problem of MATH §10 with label noise σ: at σ = 1e-6 its SME is nearly
/// deterministic, so Euler–Maruyama's own error is resolved by a hundred replicas.
fn label_noise_sme(
    sigma: f64,
    eta: f64,
    substeps: Option<usize>,
    tt: bool,
) -> gdflow::results::ensemble::EnsembleSummary {
    label_noise_sme_run(sigma, eta, substeps, tt)
        .ensemble
        .unwrap()
}

/// [`label_noise_sme`]'s whole summary (its warnings too).
fn label_noise_sme_run(
    sigma: f64,
    eta: f64,
    substeps: Option<usize>,
    tt: bool,
) -> gdflow::results::run::RunSummary {
    run_config(&ConfigArgs {
        n1: Some(4),
        n2: Some(3),
        rank: Some(1),
        width: Some(2),
        measurements: Some(12),
        alpha: Some(0.5),
        seed: Some(1),
        optimizer: Some("label-noise".into()),
        label_noise: Some(sigma),
        eta: Some(eta),
        steps: Some(10),
        record_every: Some(10),
        flow: Some(gdflow::FlowVariant::Sme2),
        replicas: Some(100),
        sde_substeps: substeps,
        talay_tubaro: tt.then_some(true),
        ..Default::default()
    })
    .unwrap()
    .summary
}

/// Left to gdflow, the substep count is doubled until every resolved scheme error
/// E_h − E_{h/2} is below half its weak error (re-checked here from the reported numbers), and
/// it did double here: at 8 substeps Euler's error is larger than the O(η²) weak error of a
/// nearly deterministic SME-2. A given count is kept.
#[test]
fn sde_substeps_are_doubled_until_the_scheme_error_is_below_the_weak_error() {
    let e = label_noise_sme(1e-6, 0.1, None, false);
    let c = e.substeps.as_ref().unwrap();
    assert!(c.tried.len() > 1 && c.tried[0] == 8, "{c:?}");
    assert_eq!(c.substeps, *c.tried.last().unwrap());
    for w in c.tried.windows(2) {
        assert_eq!(w[1], 2 * w[0]);
    }
    for (q, s) in &e.scheme_error {
        let w = e.weak_error[q];
        assert!(
            !s.resolved || 2.0 * (s.difference.abs() + s.ci95) <= w.difference.abs(),
            "{q}: scheme {s:?} against weak {w:?}"
        );
    }
    let given = label_noise_sme(1e-6, 0.1, Some(8), false);
    let g = given.substeps.unwrap();
    assert_eq!((g.substeps, g.tried), (8, vec![8]));
    assert!(g.reason.contains("given"));
}

/// Talay–Tubaro is 2E_{h/2} − E_h of the same two ensembles (an identity against the plain
/// report's E_h and E_h − E_{h/2}), and it removes Euler–Maruyama's first-order error: at
/// 8 substeps it is closer to a 64-substep solve than Euler–Maruyama at 8 by more than 4×.
#[test]
fn talay_tubaro_extrapolates_and_removes_the_first_order_error() {
    let plain = label_noise_sme(0.3, 0.1, Some(8), false);
    let tt = label_noise_sme(0.3, 0.1, Some(8), true);
    assert!(tt.talay_tubaro);
    for (q, c) in &plain.final_stats["flow"] {
        let s = plain.scheme_error[q];
        let x = tt.final_stats["flow"][q];
        let want = c.mean - 2.0 * s.difference;
        assert!(
            (x.mean - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{q}: {} vs {want}",
            x.mean
        );
        // ci(E_h − E_{h/2}) = hypot(ci_h, ci_{h/2}), so ci_{h/2}² = ci_s² − ci_h²
        let ci_fine = (s.ci95.powi(2) - c.ci95.powi(2)).max(0.0).sqrt();
        let ci = (2.0 * ci_fine).hypot(c.ci95);
        assert!(
            (x.ci95 - ci).abs() <= 1e-9 * ci.max(1e-300),
            "{q}: {} vs {ci}",
            x.ci95
        );
    }
    let loss = |e: &gdflow::results::ensemble::EnsembleSummary| e.final_stats["flow"]["loss"].mean;
    let (coarse, extrapolated) = (
        label_noise_sme(1e-6, 0.1, Some(8), false),
        label_noise_sme(1e-6, 0.1, Some(8), true),
    );
    let reference = loss(&label_noise_sme(1e-6, 0.1, Some(64), false));
    let (e_em, e_tt) = (
        (loss(&coarse) - reference).abs(),
        (loss(&extrapolated) - reference).abs(),
    );
    assert!(
        e_tt * 4.0 < e_em,
        "Talay–Tubaro {e_tt:e} against Euler–Maruyama {e_em:e}"
    );
}

#[test]
fn talay_tubaro_is_refused_without_an_sme_ensemble() {
    for (flow, replicas) in [
        (gdflow::FlowVariant::Plain, 10),
        (gdflow::FlowVariant::Sme2, 1),
    ] {
        let err = run_config(&ConfigArgs {
            talay_tubaro: Some(true),
            flow: Some(flow),
            replicas: Some(replicas),
            ..args(Some(6))
        })
        .err()
        .expect("refused")
        .to_string();
        assert!(err.contains("talay_tubaro"), "{err}");
    }
}

/// `--vary start`: an ensemble of GD over starts. Replica 0 keeps the problem's start, the
/// others draw their own (entries of variance α²/k); the method's mean final loss is GD run
/// here from each start with the dense reference; the limit is an ensemble of its own (each
/// replica's flow from its start, solved by a run of its own here) and the weak error is the
/// mean of the paired differences; nothing depends on the thread count.
#[test]
fn vary_start_makes_an_ensemble_over_starts() {
    let n = 6;
    let a = ConfigArgs {
        replicas: Some(n),
        vary: Some(gdflow::config::Vary::Start),
        record_every: Some(40),
        ..args(None)
    };
    let result = run_config(&a).unwrap();
    let setup = gdflow::Setup::new(&a, gdflow::Command::Run, false).unwrap();
    let p = &setup.problem;
    assert_eq!(p.replica_start_state(4, 0), p.start_state());
    // the starts' scale, over many replicas: E x_i² = α²/k
    let (alpha, k) = (0.1f64, 3.0);
    let draws: Vec<f64> = (1..400u64)
        .flat_map(|r| p.replica_start_state(4, r))
        .collect();
    let var = draws.iter().map(|x| x * x).sum::<f64>() / draws.len() as f64;
    assert!(
        (var / (alpha * alpha / k) - 1.0).abs() < 0.03,
        "variance {var}"
    );
    let plain = Plain::of(p);
    let loss = |x: &[f64]| {
        let (u, v) = plain.split(x);
        0.5 * plain.residual(&u, &v).norm_squared()
    };
    let (mut gd, mut diffs) = (Vec::new(), Vec::new());
    for r in 0..n as u64 {
        let start = p.replica_start_state(4, r);
        let mut x = start.clone();
        for _ in 0..40 {
            let g = plain.grad(&x);
            for (xi, gi) in x.iter_mut().zip(&g) {
                *xi -= 0.05 * gi;
            }
        }
        let mut own = p.clone();
        let (u0, v0) = plain.split(&start);
        (own.u0, own.v0) = (u0, v0);
        let mut cfg = setup.config.clone();
        (cfg.replicas, cfg.vary) = (1, None);
        let flow = gdflow::experiments::run(
            &gdflow::Setup::from_problem(cfg, own).unwrap(),
            &Default::default(),
        )
        .unwrap();
        gd.push(loss(&x));
        diffs.push(loss(&x) - flow.flow.last().unwrap().loss());
    }
    let e = result.summary.ensemble.as_ref().unwrap();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let got = e.final_stats["gd"]["loss"];
    assert_eq!(got.n, n);
    assert!(
        (got.mean - mean(&gd)).abs() <= 1e-10 * mean(&gd),
        "{got:?} vs {}",
        mean(&gd)
    );
    assert_eq!(e.final_stats["flow"]["loss"].n, n);
    let w = e.weak_error["loss"];
    assert!(
        (w.difference - mean(&diffs)).abs() <= 1e-6 * mean(&diffs).abs(),
        "{w:?} vs {}",
        mean(&diffs)
    );
    let one = super::on_threads(1, || run_config(&a).unwrap().ensemble);
    assert_eq!(one, result.ensemble);
}

/// A weak sweep splits across shards by step size: the merged parts' weak_error.csv and
/// sweep.csv are the unsharded sweep's, byte for byte, and the orders are refitted over all.
#[test]
fn weak_sweep_shards_merge_to_the_unsharded_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = |extra: &[&str], out: &str| {
        sgd_cli("sweep")
            .args([
                "--replicas",
                "40",
                "--etas",
                "0.025,0.05,0.1",
                "--horizon",
                "0.5",
            ])
            .args(["--stability-steps", "0"])
            .args(extra)
            .arg("--out")
            .arg(dir.path().join(out))
            .assert()
            .success();
    };
    sweep(&[], "whole");
    sweep(&["--shard", "1/2"], "p1");
    sweep(&["--shard", "2/2"], "p2");
    assert_cmd::Command::cargo_bin("gdflow")
        .unwrap()
        .args(["merge", "--out"])
        .arg(dir.path().join("merged"))
        .arg(dir.path().join("p2"))
        .arg(dir.path().join("p1"))
        .assert()
        .success();
    for file in ["weak_error.csv", "sweep.csv"] {
        let read = |d: &str| std::fs::read(dir.path().join(d).join(file)).unwrap();
        assert_eq!(read("whole"), read("merged"), "{file}");
    }
    let weak = |d: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.path().join(d).join("summary.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["weak"]["orders"].clone()
    };
    assert_eq!(weak("whole"), weak("merged"));
    // a part of another ensemble is refused naming the key that differs
    sgd_cli("sweep")
        .args([
            "--replicas",
            "41",
            "--etas",
            "0.025,0.05,0.1",
            "--horizon",
            "0.5",
        ])
        .args(["--stability-steps", "0", "--shard", "2/2", "--out"])
        .arg(dir.path().join("other"))
        .assert()
        .success();
    let out = assert_cmd::Command::cargo_bin("gdflow")
        .unwrap()
        .args(["merge", "--out"])
        .arg(dir.path().join("mixed"))
        .arg(dir.path().join("p1"))
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`replicas` differs"),
        "{err}"
    );
}

/// One run's ensemble split into parts (`run --replicas N --shard i/N`): the merged parts'
/// ensemble.csv and trajectory.csv are the unsharded run's byte for byte, and so is the
/// summary's `ensemble` — for an SME with Talay–Tubaro over more chunks than blocks (two
/// levels of folding), and for an ensemble over starts paired with its deterministic limit.
/// Parts that do not make one run are refused, naming why.
#[test]
fn run_shards_merge_to_the_unsharded_ensemble() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let cases: [&[&str]; 2] = [
        &[
            "--replicas",
            "700",
            "--flow",
            "sme2",
            "--sde-substeps",
            "2",
            "--talay-tubaro",
        ],
        &["--replicas", "45", "--vary", "start", "--flow", "modified"],
    ];
    for (c, extra) in cases.iter().enumerate() {
        let run = |shard: Option<&str>, out: &str| {
            let mut cmd = sgd_cli("run");
            cmd.args(["--eta", "0.05", "--steps", "12", "--record-every", "3"])
                .args(*extra);
            if let Some(s) = shard {
                cmd.args(["--shard", s]);
            }
            cmd.arg("--out").arg(d(out)).assert().success();
        };
        let (whole, parts) = (format!("whole{c}"), [1, 2, 3].map(|i| format!("p{c}_{i}")));
        run(None, &whole);
        for (i, p) in parts.iter().enumerate() {
            run(Some(&format!("{}/3", i + 1)), p);
            assert!(d(p).join("ensemble_blocks.csv").exists());
            assert!(
                !d(p).join("ensemble.csv").exists(),
                "a part has no statistics"
            );
        }
        let merged = format!("merged{c}");
        assert_cmd::Command::cargo_bin("gdflow")
            .unwrap()
            .args(["merge", "--out"])
            .arg(d(&merged))
            .args([&parts[2], &parts[0], &parts[1]].map(|p| d(p)))
            .assert()
            .success();
        for file in ["ensemble.csv", "trajectory.csv"] {
            let read = |o: &str| std::fs::read(d(o).join(file)).unwrap();
            assert_eq!(read(&whole), read(&merged), "{file}");
        }
        let json = |o: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(d(o).join("summary.json")).unwrap())
                .unwrap()
        };
        let (w, m) = (json(&whole), json(&merged));
        assert_eq!(w["ensemble"], m["ensemble"]);
        assert_eq!(w["warnings"], m["warnings"]);
        // the merged run re-runs as the unsharded one: its config.toml is a run's
        assert!(!std::fs::read_to_string(d(&merged).join("config.toml"))
            .unwrap()
            .contains("shard"));
    }
    let merge = |parts: &[&str]| {
        let out = assert_cmd::Command::cargo_bin("gdflow")
            .unwrap()
            .args(["merge", "--out"])
            .arg(d("refused"))
            .args(parts.iter().map(|p| d(p)))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(!d("refused").join("summary.json").exists());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(merge(&["p1_1", "p1_2"]).contains("part 3/3 is missing"));
    assert!(merge(&["p1_1", "p1_2", "p1_2", "p1_3"]).contains("repeats part 2/3"));
    // parts of two different runs
    assert!(merge(&["p0_1", "p1_2", "p1_3"]).contains("differs"));
    assert!(merge(&["whole1", "p1_2"]).contains("not a part of a sharded ensemble"));
    // a damaged or foreign ensemble_blocks.csv is refused, never merged into statistics over
    // the wrong replicas: a block cut out, another part's blocks, a count above a block's size
    let blocks = std::fs::read_to_string(d("p1_1").join("ensemble_blocks.csv")).unwrap();
    let damaged = |name: &str, text: String| {
        let dir = d(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["summary.json", "trajectory.csv", "config.toml"] {
            std::fs::copy(d("p1_1").join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("ensemble_blocks.csv"), text).unwrap();
    };
    let without_block0: Vec<&str> = blocks
        .lines()
        .filter(|l| l.split(',').nth(1) != Some("0"))
        .collect();
    damaged("cut", without_block0.join("\n") + "\n");
    assert!(merge(&["cut", "p1_2", "p1_3"]).contains("lacks the start of block 0"));
    damaged(
        "swapped",
        std::fs::read_to_string(d("p1_2").join("ensemble_blocks.csv")).unwrap(),
    );
    assert!(merge(&["swapped", "p1_2", "p1_3"]).contains("which is not this part's"));
    let mut lines: Vec<String> = blocks.lines().map(String::from).collect();
    let mut cells: Vec<String> = lines[1].split(',').map(String::from).collect();
    cells[4] = "9".into();
    lines[1] = cells.join(",");
    damaged("counted", lines.join("\n") + "\n");
    assert!(merge(&["counted", "p1_2", "p1_3"]).contains("n = 9"));
    // what a part cannot do is refused before any work, naming --shard
    let refused = |args: &[&str], says: &str| {
        let out = sgd_cli("run")
            .args(["--eta", "0.05", "--steps", "12"])
            .args(args)
            .arg("--out")
            .arg(d("never"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("`shard`") && err.contains(says),
            "{err}"
        );
        assert!(!d("never").exists());
    };
    refused(&["--shard", "1/2"], "--replicas");
    refused(&["--replicas", "20", "--shard", "1/4"], "at most 3 parts");
    refused(
        &["--replicas", "100", "--flow", "sme1", "--shard", "1/2"],
        "--sde-substeps",
    );
}

/// The hunt's findings, each fixed: a weak sweep over starts pairs its deterministic limits as
/// `run` does (the same difference and interval), names no SME for GD and no spread ratio for
/// a deterministic limit; its config.toml runs again; an ensemble's early ends are counted per
/// dynamics; a doubled substep count is said beside trajectory.csv's single path; replicas
/// are refused with the central flow.
#[test]
fn ensembles_pair_count_and_say_what_they_did() {
    let base = ConfigArgs {
        replicas: Some(10),
        vary: Some(gdflow::config::Vary::Start),
        eta: None,
        steps: None,
        ..args(None)
    };
    let w = weak_sweep(&base, 0.5);
    assert_eq!(w.orders.keys().collect::<Vec<_>>(), ["modified", "plain"]);
    for p in &w.points {
        assert!(p.variance_ratio.is_empty(), "{:?}", p.variance_ratio);
        let e = run_at(&base, p.eta, 0.5, gdflow::FlowVariant::Plain);
        let (a, b) = (p.weak_error["plain"], e.weak_error["loss"]);
        assert!(
            (a.difference - b.difference).abs() <= 1e-12 * b.difference.abs()
                && (a.ci95 - b.ci95).abs() <= 1e-12 * b.ci95,
            "{a:?} against {b:?}"
        );
    }
    // config.toml of an SGD weak sweep runs again
    let dir = tempfile::tempdir().unwrap();
    let (first, again) = (dir.path().join("a"), dir.path().join("b"));
    sgd_cli("sweep")
        .args(["--replicas", "20", "--etas", "0.05,0.1", "--horizon", "0.5"])
        .args(["--stability-steps", "0", "--out"])
        .arg(&first)
        .assert()
        .success();
    assert_cmd::Command::cargo_bin("gdflow")
        .unwrap()
        .args(["sweep", "--quiet", "--config"])
        .arg(first.join("config.toml"))
        .arg("--out")
        .arg(&again)
        .assert()
        .success();
    let read = |d: &std::path::Path| std::fs::read(d.join("weak_error.csv")).unwrap();
    assert_eq!(read(&first), read(&again));
    // early ends per dynamics, never more than the replicas
    let diverging = run_config(&ConfigArgs {
        eta: Some(1.2),
        steps: Some(30),
        replicas: Some(40),
        flow: Some(gdflow::FlowVariant::Sme2),
        sde_substeps: Some(8),
        ..args(Some(6))
    })
    .unwrap()
    .summary;
    let e = diverging.ensemble.as_ref().unwrap();
    assert!(e.ended_early <= 40 && e.ended_early_limit <= 40, "{e:?}");
    if e.ended_early + e.ended_early_limit > 0 {
        assert!(diverging.warnings.iter().any(|w| w.contains("survivors")));
    }
    // a doubled substep count is said
    let doubled = label_noise_sme_run(1e-6, 0.1, None, false);
    let chosen = doubled
        .ensemble
        .as_ref()
        .unwrap()
        .substeps
        .as_ref()
        .unwrap()
        .substeps;
    assert!(chosen > 8);
    assert!(doubled
        .warnings
        .iter()
        .any(|w| w.contains(&format!("--sde-substeps {chosen}"))));
    let err = run_config(&ConfigArgs {
        flow: Some(gdflow::FlowVariant::Central),
        replicas: Some(4),
        vary: Some(gdflow::config::Vary::Start),
        ..args(None)
    })
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("replicas") && err.contains("central"), "{err}");
}
