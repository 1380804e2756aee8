//! GD against the plain and the modified flow over step sizes: the closed-form case, observed
//! orders on a Gaussian problem, the order fit, sharpness and the stability limit.

use gdflow::analysis::fit::fit_order;
use gdflow::config::{Config, ConfigArgs, SweepArgs};
use gdflow::dynamics::sharpness::sharpness;
use gdflow::dynamics::stability::{stability_limit, StabilityOptions};
use gdflow::dynamics::Status;
use gdflow::experiments::sweep::{resolve_settings, run_sweep};
use gdflow::experiments::Setup;
use gdflow::field::SensingField;
use gdflow::problem::{random_target, Problem};
use gdflow::results::sweep::SweepSettings;
use nalgebra::DMatrix;

const SIGMA: [f64; 2] = [1.0, 0.5];
const S0: [f64; 2] = [1e-3, 1e-3];

fn flow_exact(sigma: f64, s0: f64, t: f64) -> f64 {
    sigma / (1.0 + (sigma / s0 - 1.0) * (-2.0 * sigma * t).exp())
}

/// max_j ‖X_j − X(jη)‖ for the diagonal problem: GD's scalar map against the flow's formula.
fn analytic_max_deviation(eta: f64, horizon: f64) -> (f64, usize) {
    let n = ((horizon / eta) * (1.0 + 1e-12)).floor() as usize;
    let mut s = S0;
    let mut best = (0.0, 0);
    for j in 0..=n {
        let t = j as f64 * eta;
        let d: f64 = (0..2)
            .map(|i| (s[i] - flow_exact(SIGMA[i], S0[i], t)).powi(2))
            .sum::<f64>()
            .sqrt();
        if d > best.0 {
            best = (d, j);
        }
        for i in 0..2 {
            s[i] *= (1.0 + eta * (SIGMA[i] - s[i])).powi(2);
        }
    }
    best
}

fn settings(etas: &[f64], horizon: f64, stability_steps: usize) -> SweepSettings {
    SweepSettings {
        etas: etas.to_vec(),
        horizon,
        epsilon: 1e-2,
        stability_steps,
        stability_tol: 1e-4,
        max_rows: 100,
        shard: None,
    }
}

#[test]
fn closed_form_deviations_and_order_match_the_gd_map_and_the_flow_formula() {
    let p = Problem::aligned_factorisation(4, 3, &SIGMA, &S0);
    let cfg = Config {
        rtol: 1e-9,
        atol: 1e-15,
        ..Config::default()
    };
    let etas = [0.0125, 0.025, 0.05, 0.1];
    let horizon = 16.0;
    let setup = Setup::from_problem(cfg, p).unwrap();
    let result = run_sweep(&setup, &settings(&etas, horizon, 0), false).unwrap();
    let s = &result.summary;
    let mut analytic = Vec::new();
    for (point, &eta) in s.points.iter().zip(&etas) {
        assert_eq!(point.eta, eta);
        assert_eq!(point.gd_status, Status::Completed);
        let (dev, step) = analytic_max_deviation(eta, horizon);
        let rel = (point.max_dev.value - dev).abs() / dev;
        assert!(
            rel < 1e-6,
            "η = {eta}: sweep {} vs analytic {dev} (rel. diff {rel:e})",
            point.max_dev.value
        );
        assert_eq!(
            point.max_dev.step, step,
            "η = {eta}: where the maximum occurs"
        );
        assert!(point.ref_error < 1e-3 * dev && !point.below_ref);
        analytic.push((eta, dev, 0.0, true));
    }
    let expected = fit_order(&analytic).order.unwrap();
    let order = s.order_plain.unwrap();
    assert!(
        (order - expected).abs() < 1e-4,
        "order {order} vs analytic {expected}"
    );
    assert!((order - 1.0).abs() < 0.15, "order vs plain flow {order}");
    let modified = s.order_modified.unwrap();
    assert!(
        (modified - 2.0).abs() < 0.3,
        "order vs modified flow {modified}"
    );
    // every step size's deviation table ends at its last step
    for &eta in &etas {
        let last = result
            .deviations
            .iter()
            .rev()
            .find(|r| r.eta == eta)
            .unwrap();
        assert_eq!(
            last.step,
            ((horizon / eta) * (1.0 + 1e-12)).floor() as usize
        );
    }
}

#[test]
fn gaussian_orders_are_one_against_the_plain_flow_and_two_against_the_modified_flow() {
    let args = ConfigArgs {
        n1: Some(10),
        n2: Some(8),
        rank: Some(2),
        width: Some(4),
        measurements: Some(120),
        alpha: Some(1e-2),
        seed: Some(11),
        ..Default::default()
    };
    let cfg = args.resolve().unwrap();
    let p = Problem::generate(&cfg.problem_spec()).unwrap();
    let sweep = SweepArgs {
        eta_range: Some("0.005:0.04:4".into()),
        stability_steps: Some(0),
        ..Default::default()
    };
    let st = resolve_settings(&sweep, &cfg, &p).unwrap();
    let setup = Setup::from_problem(cfg, p).unwrap();
    let s = run_sweep(&setup, &st, false).unwrap().summary;
    assert!(s.fit_plain.excluded.is_empty() && s.fit_modified.excluded.is_empty());
    let plain = s.order_plain.unwrap();
    let modified = s.order_modified.unwrap();
    assert!((plain - 1.0).abs() < 0.15, "order vs plain flow {plain}");
    assert!(
        (modified - 2.0).abs() < 0.3,
        "order vs modified flow {modified}"
    );
}

#[test]
fn fit_recovers_a_power_law_and_leaves_out_unresolved_and_diverged_points() {
    let pts: Vec<(f64, f64, f64, bool)> = [0.01, 0.02, 0.04, 0.08]
        .iter()
        .map(|&e: &f64| (e, 3.0 * e.powf(1.7), 1e-9, true))
        .chain([(0.001, 1e-10, 1e-9, true), (0.5, 1.0, 1e-9, false)])
        .collect();
    let fit = fit_order(&pts);
    assert!((fit.order.unwrap() - 1.7).abs() < 1e-12);
    assert!((fit.intercept.unwrap() - 3f64.ln()).abs() < 1e-12);
    assert!(fit.residual_std.unwrap() < 1e-12);
    let left_out: Vec<f64> = fit.excluded.iter().map(|e| e.eta).collect();
    assert_eq!(left_out, vec![0.001, 0.5]);
}

/// Plain factorisation (identity operator, k = r) started near the balanced solution
/// U* = L√Σ, V* = R√Σ, where λ_max(∇²f) = 2σ_1 exactly.
#[test]
fn stability_limit_near_a_balanced_solution_is_two_over_lambda_max() {
    let (n1, n2) = (6, 5);
    let sv = [1.5, 0.6];
    let cfg = Config {
        n1,
        n2,
        rank: 2,
        width: 2,
        operator: gdflow::config::OperatorKind::Identity,
        measurements: n1 * n2,
        singular_values: Some(sv.to_vec()),
        seed: 7,
        ..Config::default()
    };
    let mut p = Problem::generate(&cfg.problem_spec()).unwrap();
    let x = random_target(n1, n2, &sv, 7);
    let svd = x.clone().svd(true, true);
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
    let l = svd.u.unwrap();
    let rt = svd.v_t.unwrap();
    let u_star = DMatrix::from_fn(n1, 2, |i, j| {
        l[(i, order[j])] * svd.singular_values[order[j]].sqrt()
    });
    let v_star = DMatrix::from_fn(n2, 2, |i, j| {
        rt[(order[j], i)] * svd.singular_values[order[j]].sqrt()
    });
    assert!((&u_star * v_star.transpose() - &x).norm() < 1e-12);
    let field = SensingField::from_problem(&p);
    let mut solution = u_star.as_slice().to_vec();
    solution.extend_from_slice(v_star.as_slice());
    let sharp = sharpness(&field, &solution, 3, 1e-8, 50_000);
    assert!(sharp.converged);
    let lambda_max = sharp.values[0];
    assert!(
        (lambda_max - 2.0 * sv[0]).abs() < 1e-6,
        "λ_max {} vs 2σ_1 = {}",
        lambda_max,
        2.0 * sv[0]
    );
    // start 1e-2 away from the solution, in a seeded direction
    p.u0 = &u_star
        + DMatrix::from_fn(n1, 2, |i, j| {
            1e-2 * (((3 * i + 5 * j) % 7) as f64 - 3.0) / 3.0
        });
    p.v0 = &v_star
        + DMatrix::from_fn(n2, 2, |i, j| {
            1e-2 * (((2 * i + 3 * j) % 5) as f64 - 2.0) / 2.0
        });
    let field = SensingField::from_problem(&p);
    let opts = StabilityOptions {
        steps: 2000,
        tol: 1e-4,
        rel_width: 5e-3,
    };
    // start the bracket away from the answer so that the bisection has to find it
    let limit = stability_limit(&field, &p.start_state(), 0.3, &opts);
    let eta_star = limit.limit.unwrap();
    let predicted = 2.0 / lambda_max;
    assert!(
        (eta_star - predicted).abs() < 0.1 * predicted,
        "stability limit {eta_star} vs 2/λ_max = {predicted}"
    );
    assert!(limit.upper.unwrap() > eta_star);
}

#[test]
fn run_with_the_modified_flow_tracks_gd_far_closer_than_the_plain_flow() {
    let base = ConfigArgs {
        n1: Some(8),
        n2: Some(6),
        rank: Some(2),
        width: Some(3),
        measurements: Some(40),
        alpha: Some(1e-2),
        eta: Some(0.05),
        steps: Some(300),
        ..Default::default()
    };
    let distance = |flow| {
        let args = ConfigArgs {
            flow: Some(flow),
            ..base.clone()
        };
        let r = gdflow::experiments::run_config(&args).unwrap();
        r.summary.distance.unwrap().max
    };
    let plain = distance(gdflow::config::FlowVariant::Plain);
    let modified = distance(gdflow::config::FlowVariant::Modified);
    // O(η) against O(η²) with η = 0.05: at least a factor 5 apart
    assert!(
        modified < plain / 5.0,
        "modified {modified:e} vs plain {plain:e}"
    );
}

/// `--shard auto` reads the part from the array job: SLURM and SGE with their ranges and
/// steps, PBS and Kubernetes (no count) by `auto/N` with the index mod N — every one of N
/// consecutive indices maps to a different part; a missing index or count, a count at odds
/// with the scheduler's, or an index outside the array is refused naming `shard`.
#[test]
fn shard_auto_reads_the_array_job() {
    use gdflow::results::sweep::Shard;
    let at = |spec: &str, vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Shard::resolve(spec, &move |key: &str| {
            vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        })
        .map(|(s, _)| (s.index, s.count))
    };
    let slurm = |id: &str, min: &str, step: &str, count: &str| {
        [
            ("SLURM_ARRAY_TASK_ID", id.to_string()),
            ("SLURM_ARRAY_TASK_MIN", min.to_string()),
            ("SLURM_ARRAY_TASK_STEP", step.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", count.to_string()),
        ]
    };
    let owned = |v: [(&'static str, String); 4]| v;
    for (vars, want) in [
        (owned(slurm("0", "0", "1", "4")), (1, 4)),
        (owned(slurm("3", "0", "1", "4")), (4, 4)),
        (owned(slurm("5", "5", "1", "2")), (1, 2)),
        (owned(slurm("14", "10", "2", "3")), (3, 3)),
    ] {
        let v: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(at("auto", &v).unwrap(), want, "{vars:?}");
    }
    let sge = [
        ("SGE_TASK_ID", "7"),
        ("SGE_TASK_FIRST", "1"),
        ("SGE_TASK_LAST", "9"),
        ("SGE_TASK_STEPSIZE", "3"),
    ];
    assert_eq!(at("auto", &sge).unwrap(), (3, 3));
    for key in ["PBS_ARRAY_INDEX", "PBS_ARRAYID", "JOB_COMPLETION_INDEX"] {
        for first in [0, 1] {
            let mut parts: Vec<usize> = (first..first + 5)
                .map(|i| at("auto/5", &[(key, &i.to_string())]).unwrap().0)
                .collect();
            parts.sort();
            assert_eq!(parts, [1, 2, 3, 4, 5], "{key} from {first}");
        }
        assert!(at("auto", &[(key, "2")])
            .unwrap_err()
            .to_string()
            .contains("auto/N"));
    }
    assert_eq!(at("2/3", &[]).unwrap(), (2, 3));
    for (spec, vars, why) in [
        ("auto", vec![], "no array-job index"),
        (
            "auto/3",
            vec![
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
            "4 tasks",
        ),
        (
            "auto",
            vec![
                ("SLURM_ARRAY_TASK_ID", "9"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
            "outside",
        ),
        (
            "auto",
            vec![("SGE_TASK_ID", "undefined")],
            "no array-job index",
        ),
        ("auto/x", vec![], "auto/N"),
        (
            "auto",
            vec![
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_STEP", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ],
            "not a task",
        ),
        (
            "auto",
            vec![("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_STEP", "0")],
            "not a task",
        ),
        ("auto/2", vec![("JOB_COMPLETION_INDEX", "-1")], "negative"),
        (
            "auto/2",
            vec![("SLURM_ARRAY_TASK_ID", "1"), ("SGE_TASK_ID", "1")],
            "more than one",
        ),
        ("autox", vec![], "i/N"),
    ] {
        let err = at(spec, &vars).unwrap_err().to_string();
        assert!(
            err.contains("shard") && err.contains(why),
            "{spec} {vars:?}: {err}"
        );
    }
}

/// The sweep takes its part from the environment: `--shard auto` under a SLURM array task
/// runs the same step sizes as `--shard i/N`.
#[test]
fn sweep_shard_auto_runs_the_array_tasks_part() {
    let dir = tempfile::tempdir().unwrap();
    let run = |shard: &str, env: &[(&str, &str)], out: &str| {
        let mut cmd = assert_cmd::Command::cargo_bin("gdflow").unwrap();
        cmd.args([
            "sweep", "--quiet", "--n1", "8", "--n2", "6", "--rank", "2", "--width", "3",
        ])
        .args([
            "--measurements",
            "40",
            "--etas",
            "0.05,0.1,0.2",
            "--horizon",
            "2",
        ])
        .args(["--stability-steps", "0", "--shard", shard, "--out"])
        .arg(dir.path().join(out));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.assert().success();
        std::fs::read_to_string(dir.path().join(out).join("sweep.csv")).unwrap()
    };
    let auto = run(
        "auto",
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ],
        "a",
    );
    assert_eq!(auto, run("2/3", &[], "b"));
}
