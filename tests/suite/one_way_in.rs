//! Every option acts the same in `run`, `sweep` and `check`, or is refused; a problem file
//! overrides nothing silently. One test per defect found by an independent re-implementation
//! (issue 12), each failing on the code before the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use gdflow::config::{ConfigArgs, PerturbationModel, SweepArgs};
use gdflow::dynamics::sharpness::{top_eigenpairs, EigenOptions};
use gdflow::dynamics::{Driver, Gd, Iterate, RunOptions, SaveAt};
use gdflow::experiments::{sweep::run_sweep, Command as Cmd, Setup};
use gdflow::field::{Field, Perturbation, Perturbed, SensingField};
use gdflow::results::sweep::SweepSettings;
use nalgebra::{DMatrix, SymmetricEigen};

fn gdflow() -> Command {
    Command::cargo_bin("gdflow").unwrap()
}

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).to_string()
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

const TINY: &[&str] = &[
    "--n1",
    "8",
    "--n2",
    "6",
    "--rank",
    "2",
    "--width",
    "3",
    "--measurements",
    "40",
    "--alpha",
    "1e-2",
    "--seed",
    "4",
    "--quiet",
];

/// A saved problem (y, u0, v0 and α included) of the tiny configuration plus `extra`.
fn saved_problem(dir: &Path, extra: &[&str]) -> PathBuf {
    let path = dir.join(format!("p{}.npz", extra.len()));
    let tiny: Vec<&str> = if extra.contains(&"--alpha") {
        let at = TINY.iter().position(|a| *a == "--alpha").unwrap();
        [&TINY[..at], &TINY[at + 2..]].concat()
    } else {
        TINY.to_vec()
    };
    gdflow()
        .arg("run")
        .args(tiny)
        .args(["--steps", "1"])
        .args(extra)
        .arg("--save-problem")
        .arg(&path)
        .assert()
        .success();
    path
}

/// Defect 1: the sweep's GD and flows run on the perturbed field (before, `sweep` built the
/// plain field and recorded the perturbation as if it had acted).
#[test]
fn sweep_runs_gd_on_the_perturbed_field() {
    let args = ConfigArgs {
        n1: Some(8),
        n2: Some(6),
        rank: Some(2),
        width: Some(3),
        alpha: Some(1e-2),
        perturbation: Some(PerturbationModel::Relative),
        perturbation_size: Some(3.0),
        ..Default::default()
    };
    let setup = Setup::new(&args, Cmd::Sweep, false).unwrap();
    let settings = SweepSettings {
        etas: vec![0.1],
        horizon: 3.0,
        epsilon: 1e-2,
        stability_steps: 0,
        stability_tol: 1e-4,
        max_rows: 100,
        shard: None,
    };
    let result = run_sweep(&setup, &settings, false).unwrap();
    // GD on the perturbed field, computed here without the sweep
    let p = &setup.problem;
    let field = Perturbed::new(
        SensingField::from_problem(p),
        Perturbation::new(PerturbationModel::Relative, 3.0, p, 0),
    );
    let mut errors = Vec::new();
    let mut watch = |it: &Iterate<'_>| {
        errors.push((field.product(it.state) - &p.x_star).norm() / p.x_star.norm());
    };
    let opts = RunOptions {
        save: SaveAt::Nothing,
        ..RunOptions::new(0.1, 30, 1)
    };
    Driver::new(&field, Gd::new(), &p.start_state(), opts).run(&mut watch);
    let rows = &result.deviations;
    assert_eq!(rows.len(), errors.len());
    for (row, e) in rows.iter().zip(&errors) {
        assert_eq!(row.rel_error_gd, *e, "step {}", row.step);
    }
    // and the plain field would have given something else
    let plain = Setup::new(
        &ConfigArgs {
            perturbation: None,
            perturbation_size: None,
            ..args
        },
        Cmd::Sweep,
        false,
    )
    .unwrap();
    let other = run_sweep(&plain, &settings, false).unwrap();
    assert_ne!(
        other.deviations.last().unwrap().rel_error_gd,
        rows.last().unwrap().rel_error_gd
    );
}

/// Defect 2: `check --save-problem` writes the problem it checked.
#[test]
fn check_saves_the_problem_it_was_asked_to_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checked.npz");
    let done = gdflow()
        .arg("check")
        .args(TINY)
        .args(["--steps", "60", "--save-problem"])
        .arg(&path)
        .output()
        .unwrap();
    // the predictions may pass (0) or fail (3) on this tiny problem; the file is written
    assert!(
        matches!(done.status.code(), Some(0) | Some(3)),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let saved = gdflow::problem::Problem::load_npz(
        &path,
        &gdflow::config::Config::default().problem_spec(),
    )
    .unwrap();
    let args = ConfigArgs {
        n1: Some(8),
        n2: Some(6),
        rank: Some(2),
        width: Some(3),
        measurements: Some(40),
        alpha: Some(1e-2),
        seed: Some(4),
        ..Default::default()
    };
    let generated = Setup::new(&args, Cmd::Check, false).unwrap().problem;
    assert_eq!(saved.x_star, generated.x_star);
    assert_eq!(saved.y, generated.y);
}

/// Defects 3 and 4: options a problem file fixes are checked against it or refused, and never
/// recorded as if they had acted.
#[test]
fn a_problem_file_overrides_nothing_silently() {
    let dir = tempfile::tempdir().unwrap();
    let file = saved_problem(dir.path(), &["--singular-values", "1,0.5"]);
    let run = |extra: &[&str]| {
        gdflow()
            .args(["run", "--steps", "5", "--quiet", "--problem"])
            .arg(&file)
            .args(extra)
            .assert()
    };
    for (extra, field) in [
        (&["--noise", "0.1"][..], "noise"),
        (&["--singular-values", "9,7,5"][..], "singular_values"),
        (&["--singular-values", "1,0.4"][..], "singular_values"),
        (&["--rank", "3"][..], "rank"),
        (&["--kappa", "3"][..], "kappa"),
        (&["--profile", "linear"][..], "profile"),
        (&["--operator", "identity"][..], "operator"),
        (&["--alpha", "1e-4"][..], "alpha"),
        (&["--width", "4"][..], "width"),
    ] {
        let a = run(extra).code(2);
        let err = stderr_of(&a);
        assert!(
            err.contains(&format!("`{field}`")) && err.contains("problem file"),
            "{extra:?}: {err}"
        );
    }
    // values that agree with the file are accepted (a re-run from config.toml gives them)
    for extra in [
        &["--singular-values", "1,0.5"][..],
        &["--singular-values", "0.5,1"][..],
        &["--rank", "2", "--kappa", "2"][..],
    ] {
        run(extra).success();
    }
    // the summary says what came from the file, and config.toml leaves it to the file
    let out = dir.path().join("out");
    gdflow()
        .args(["run", "--steps", "5", "--quiet", "--problem"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let s = json(out.join("summary.json"));
    let from_file: Vec<&str> = s["from_file"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for key in [
        "singular_values",
        "rank",
        "noise",
        "alpha",
        "width",
        "operator",
    ] {
        assert!(from_file.contains(&key), "{key} in {from_file:?}");
    }
    let toml = std::fs::read_to_string(out.join("config.toml")).unwrap();
    for key in ["singular_values", "noise", "alpha", "kappa", "profile"] {
        assert!(!toml.contains(&format!("{key} =")), "{key} in {toml}");
    }
}

/// Defect 5: with a problem file the start's α (its `alpha` array, or what its start
/// measures) sets α and the default atol, not the default α = 1e-3 (MATH §7).
#[test]
fn a_problem_files_start_sets_alpha_and_the_default_atol() {
    let dir = tempfile::tempdir().unwrap();
    let file = saved_problem(dir.path(), &["--alpha", "1e-8"]);
    let setup = Setup::new(
        &ConfigArgs {
            problem: Some(file.clone()),
            ..Default::default()
        },
        Cmd::Run,
        false,
    )
    .unwrap();
    assert_eq!(setup.config.alpha, 1e-8);
    assert_eq!(setup.config.atol, 1e-8 * 1e-8 / 3f64.sqrt());
    // a file made elsewhere, without `alpha`: α is measured from u0 and v0
    let p = gdflow::problem::Problem::load_npz(
        &file,
        &gdflow::config::Config::default().problem_spec(),
    )
    .unwrap();
    let mut bare = p.clone();
    bare.start_alpha = None;
    let bare_path = dir.path().join("bare.npz");
    bare.save_npz(&bare_path).unwrap();
    let setup = Setup::new(
        &ConfigArgs {
            problem: Some(bare_path),
            ..Default::default()
        },
        Cmd::Run,
        false,
    )
    .unwrap();
    let energy = p.u0.norm_squared() + p.v0.norm_squared();
    let measured = (energy / (8.0 + 6.0)).sqrt();
    assert_eq!(setup.config.alpha, measured);
    assert!(
        (measured / 1e-8 - 1.0).abs() < 0.3,
        "α ≈ 1e-8: {measured:e}"
    );
    assert!(setup.config.atol <= 1e-8 * measured / 3f64.sqrt() * (1.0 + 1e-12));
}

/// Defect 6: the largest GD–flow distance and the largest balance drifts are taken over
/// every step, whatever is recorded.
#[test]
fn maxima_do_not_depend_on_what_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let summary = |every: &str| {
        let out = dir.path().join(format!("r{every}"));
        gdflow()
            .arg("run")
            .args(TINY)
            .args(["--eta", "0.1", "--steps", "200", "--record-every", every])
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        json(out.join("summary.json"))
    };
    let (all, sparse) = (summary("1"), summary("9"));
    for key in [
        &["distance", "max"][..],
        &["distance", "step"][..],
        &["gd", "max_balance_drift"][..],
        &["flow", "max_balance_drift"][..],
    ] {
        let get = |v: &serde_json::Value| key.iter().fold(v.clone(), |v, k| v[*k].clone());
        assert_eq!(get(&all), get(&sparse), "{key:?}");
    }
    // the maximum falls on a step that record-every 9 does not record
    assert_ne!(all["distance"]["step"].as_u64().unwrap() % 9, 0);
}

/// The Hessian by its jvps, assembled densely, and its eigenvalues.
fn dense_spectrum(field: &dyn Field, x: &[f64]) -> Vec<f64> {
    let n = x.len();
    let mut ws = field.workspace();
    let mut h = DMatrix::zeros(n, n);
    let mut e = vec![0.0; n];
    let mut col = vec![0.0; n];
    for j in 0..n {
        e[j] = 1.0;
        field.hvp(x, &e, &mut col, &mut ws);
        h.column_mut(j).copy_from_slice(&col);
        e[j] = 0.0;
    }
    let h = 0.5 * (&h + h.transpose());
    let mut l: Vec<f64> = SymmetricEigen::new(h).eigenvalues.iter().copied().collect();
    l.sort_by(|a, b| b.total_cmp(a));
    l
}

/// Defect 7: near the saddle the Hessian has pairs ±σ_i(𝒜*y); the sweep's λ_max is the
/// algebraically largest eigenvalue (against a dense eigendecomposition), never the largest
/// in modulus, and an estimate that did not converge is not reported as λ_max.
#[test]
fn sweep_sharpness_near_the_saddle_is_the_algebraically_largest_eigenvalue() {
    let args = ConfigArgs {
        n1: Some(8),
        n2: Some(6),
        rank: Some(2),
        width: Some(3),
        measurements: Some(40),
        alpha: Some(1e-2),
        ..Default::default()
    };
    for seed in 0..4 {
        let setup = Setup::new(
            &ConfigArgs {
                seed: Some(seed),
                ..args.clone()
            },
            Cmd::Sweep,
            false,
        )
        .unwrap();
        let sweep = SweepArgs {
            etas: Some(vec![0.05]),
            horizon: Some(0.5),
            stability_steps: Some(0),
            ..Default::default()
        };
        let s = gdflow::experiments::sweep(&setup, &sweep, false)
            .unwrap()
            .summary;
        let st = s.stability.unwrap();
        // the reference state at t = 0.5, solved again here
        let field = setup.field();
        let traj = gdflow::dynamics::flow::solve_flow(
            field.as_ref(),
            &setup.start(),
            &[st.sharpness_t],
            &[0],
            &gdflow::dynamics::flow::FlowOptions::new(
                setup.config.method,
                setup.config.rtol / 100.0,
                setup.config.atol / 100.0,
            ),
        )
        .unwrap();
        let spectrum = dense_spectrum(field.as_ref(), &traj.trajectory.states[0]);
        let (top, bottom) = (spectrum[0], *spectrum.last().unwrap());
        assert!(
            bottom < -0.5 * top,
            "seed {seed}: a saddle ({top}, {bottom})"
        );
        assert!(st.sharpness.converged);
        let found = st.sharpness.values[0];
        assert!(
            (found - top).abs() <= 1e-5 * top.abs(),
            "seed {seed}: λ_max {found} against the dense {top}"
        );
        assert_eq!(s.two_over_lambda_max, Some(2.0 / found));
    }
    // an unconverged estimate is flagged and not offered as λ_max
    let p = Setup::new(&args, Cmd::Run, false).unwrap();
    let field = p.field();
    let short = top_eigenpairs(
        field.as_ref(),
        &p.start(),
        &[],
        &EigenOptions {
            max_hvps: 2,
            ..EigenOptions::default()
        },
        0,
    );
    assert!(!short.converged);
    assert_eq!(short.lambda_max(), None);
}

/// Defects 8, 9 and 10: refused before any work, naming the option.
#[test]
fn meaningless_or_impossible_runs_are_refused_before_any_work() {
    for (args, field) in [
        (
            &[
                "run",
                "--symmetric",
                "--n2",
                "30",
                "--perturbation",
                "relative",
            ][..],
            "perturbation",
        ),
        (
            &[
                "run",
                "--symmetric",
                "--n2",
                "30",
                "--perturbation",
                "absolute",
            ][..],
            "perturbation",
        ),
        (&["run", "--eta", "1e308", "--steps", "3"][..], "eta"),
        (&["sweep", "--horizon", "1e300"][..], "horizon"),
        (&["check", "--flow", "modified"][..], "flow"),
    ] {
        let a = gdflow()
            .args(args)
            .timeout(Duration::from_secs(60))
            .assert()
            .code(2);
        let err = stderr_of(&a);
        assert!(err.contains(field), "{args:?}: {err}");
    }
    // GD would take minutes here before the flow's memory was checked
    let a = gdflow()
        .args([
            "run", "--method", "bdf", "--n1", "400", "--n2", "400", "--width", "400",
        ])
        .timeout(Duration::from_secs(60))
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("bdf"), "{}", stderr_of(&a));
}

/// Defect 9's safety net: a flow asked for more steps than its budget stops as failed, with
/// the time it reached and why.
#[test]
fn a_flow_beyond_its_step_budget_fails_with_a_reason() {
    let p = gdflow::problem::Problem::aligned_factorisation(3, 3, &[1.0], &[1e-4]);
    let field = SensingField::from_problem(&p);
    let mut opts =
        gdflow::dynamics::flow::FlowOptions::new(gdflow::config::Method::Tsit45, 1e-8, 1e-14);
    opts.max_steps = 50;
    let sol =
        gdflow::dynamics::flow::solve_flow(&field, &p.start_state(), &[0.0, 1e6], &[0, 1], &opts)
            .unwrap();
    match sol.trajectory.status {
        gdflow::dynamics::Status::Failed { t, reason } => {
            assert!(t > 0.0 && t < 1e6, "{t}");
            assert!(reason.contains("step budget"), "{reason}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(sol.stats.steps, 50);
}

/// Defect 11: `gdflow check` passes on its own default problem, for a reason: the convergence
/// time is predicted from σ_r(𝒜*y), the growth rate at the start.
#[test]
fn check_passes_on_its_default_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("check");
    gdflow()
        .args(["check", "--quiet", "--out"])
        .arg(&out)
        .assert()
        .success();
    let text = std::fs::read_to_string(out.join("checks.csv")).unwrap();
    let row = |name: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name},")))
            .unwrap();
        line.rsplitn(3, ',').map(String::from).collect()
    };
    assert_eq!(row("convergence_time")[0], "pass");
    assert!(row("convergence_time")[1].contains("𝒜*y"));
    assert_eq!(row("convergence_time_asymptotic")[0], "");
}

/// Defect 12: a failure to serialise a result is the program's fault (exit 1), not the
/// user's (exit 2).
#[test]
fn serialisation_failures_are_runtime_errors() {
    let mut bad = std::collections::BTreeMap::new();
    bad.insert((1, 2), 3.0);
    let e = gdflow::results::json_bytes("summary.json", &bad).unwrap_err();
    assert_eq!(e.exit_code(), 1, "{e}");
    assert!(e.to_string().contains("summary.json"));
    assert_eq!(
        gdflow::error::Error::invalid("alpha", -1, "must be > 0").exit_code(),
        2
    );
}
