//! Answers, not just numbers: the largest η within a deviation, the central flow's verdict,
//! the checks that do not apply past the stability limit, the states a run keeps. Each is
//! checked against an independent computation (another command measuring the same quantity).

use assert_cmd::Command;
use gdflow::config::{CheckArgs, ConfigArgs, FlowVariant, SweepArgs};
use gdflow::experiments::{check_config, run_config, sweep_config};

fn gdflow() -> Command {
    Command::cargo_bin("gdflow").unwrap()
}

/// MATH §8's 8×7 problem; at η = 0.95 (2/η = 2.105) it is past the stability limit (the
/// gradient flow ends at sharpness 2.44).
fn eos_problem() -> ConfigArgs {
    super::math8_args(1e-2)
}

/// The bracket `--target-deviation` reports holds when each end is measured by a sweep of its
/// own (the sweep's reference flows, not the trials' `run`): the lower end within δ, the upper
/// not, and the two within the stated tolerance.
#[test]
fn target_deviation_bracket_holds_when_measured_by_run() {
    let delta = 0.02;
    let horizon = 20.0;
    let sweep = SweepArgs {
        etas: Some(vec![0.01, 0.05, 0.2]),
        horizon: Some(horizon),
        target_deviation: Some(delta),
        ..Default::default()
    };
    let s = sweep_config(&eos_problem(), &sweep).unwrap().summary;
    let t = s.target_deviation.expect("asked for");
    let [lo, hi] = t.bracket.map(|e| e.expect("bracketed"));
    assert!(hi / lo <= 1.0 + t.tolerance + 1e-12, "bracket [{lo}, {hi}]");
    assert_eq!(t.eta, Some(lo));
    let ends = SweepArgs {
        etas: Some(vec![lo, hi]),
        horizon: Some(horizon),
        stability_steps: Some(0),
        ..Default::default()
    };
    let points = sweep_config(&eos_problem(), &ends).unwrap().summary.points;
    let measured = |eta: f64| points.iter().find(|p| p.eta == eta).unwrap().max_dev_rel;
    let (d_lo, d_hi) = (measured(lo), measured(hi));
    // the two computations differ by their solvers' errors only (rtol 1e-8)
    assert!(
        d_lo <= delta * (1.0 + 1e-5),
        "at lo = {lo}: {d_lo} > {delta}"
    );
    assert!(
        d_hi > delta * (1.0 - 1e-5),
        "at hi = {hi}: {d_hi} <= {delta}"
    );
    // and the deviations reported at the ends are what the sweep measures
    assert!((t.deviation[0].unwrap() - d_lo).abs() <= 1e-5 * d_lo);
}

#[test]
fn target_deviation_is_refused_with_a_shard_and_when_not_positive() {
    for (extra, what) in [
        (vec!["--shard", "1/2"], "target_deviation"),
        (vec![], "target-deviation"),
    ] {
        let mut cmd = gdflow();
        cmd.args(["sweep", "--quiet", "--n1", "8", "--n2", "7", "--rank", "2"])
            .args(["--etas", "0.05,0.1", "--target-deviation"])
            .arg(if extra.is_empty() { "-1" } else { "0.01" })
            .args(&extra);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(what) || err.contains("target_deviation"),
            "{err}"
        );
    }
}

/// Past the stability limit `run --flow central` judges the central flow against the
/// gradient flow: the iterates' distance to the gradient flow it reports is the one a plain
/// run measures, and GD's average is nearer the central flow; the verdict is printed.
#[test]
fn central_run_verdict_against_the_plain_run() {
    let args = ConfigArgs {
        eta: Some(0.95),
        steps: Some(285),
        flow: Some(FlowVariant::Central),
        ..eos_problem()
    };
    let central = run_config(&args).unwrap();
    let c = central.summary.central.as_ref().unwrap();
    let plain = run_config(&ConfigArgs {
        flow: Some(FlowVariant::Plain),
        ..args.clone()
    })
    .unwrap();
    let (reported, measured) = (
        c.distance_plain.as_ref().unwrap(),
        plain.summary.distance.as_ref().unwrap(),
    );
    assert_eq!(reported.final_distance, measured.final_distance);
    assert_eq!(reported.max, measured.max);
    assert_eq!(c.follows_central(), Some(true));
    // the average ends an order of magnitude nearer the central flow
    assert!(c.distance_mean.as_ref().unwrap().final_distance < 0.1 * measured.final_distance);
    let out = gdflow()
        .args([
            "run", "--n1", "8", "--n2", "7", "--rank", "2", "--width", "3",
        ])
        .args(["--measurements", "60", "--alpha", "0.01", "--seed", "1"])
        .args(["--eta", "0.95", "--steps", "285", "--flow", "central"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("verdict: GD follows the central flow on average"),
        "{text}"
    );
}

/// Past the limit the GD-order row is not applicable (no verdict), so that `check` gates an
/// edge-of-stability run on the rows that apply there.
#[test]
fn check_past_the_limit_marks_the_order_row_not_applicable() {
    let args = ConfigArgs {
        eta: Some(0.95),
        steps: Some(285),
        ..eos_problem()
    };
    let r = check_config(&args, &CheckArgs::default()).unwrap().summary;
    let row = |name: &str| r.rows.iter().find(|x| x.name == name).unwrap();
    assert!(row("stability_limit").measured > 1.0);
    assert_eq!(row("gd_order").pass, None);
    assert!(row("gd_order").predicted.contains("n/a"));
    assert_eq!(row("eos_sharpness").pass, Some(true));
    // below the limit the same row has its verdict
    let below = check_config(
        &ConfigArgs {
            eta: Some(0.2),
            steps: Some(300),
            ..eos_problem()
        },
        &CheckArgs::default(),
    )
    .unwrap()
    .summary;
    assert!(below
        .rows
        .iter()
        .any(|x| x.name == "gd_order" && x.pass.is_some()));
}

/// `--save-states`: U and V of every recorded step of GD and the flow, loadable as NumPy
/// arrays; their products give the trajectory's relative error.
#[test]
fn save_states_writes_u_and_v_of_every_recorded_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    gdflow()
        .args([
            "run", "--quiet", "--n1", "8", "--n2", "7", "--rank", "2", "--width", "3",
        ])
        .args([
            "--eta",
            "0.1",
            "--steps",
            "20",
            "--record-every",
            "5",
            "--save-states",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let bytes = std::fs::read(out.join("states.npz")).unwrap();
    let mut npz = npyz::npz::NpzArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let u = npz.by_name("gd_U").unwrap().unwrap();
    assert_eq!(u.shape(), &[5, 8, 3]);
    let u: Vec<f64> = u.into_vec().unwrap();
    let v: Vec<f64> = npz.by_name("gd_V").unwrap().unwrap().into_vec().unwrap();
    let steps: Vec<f64> = npz.by_name("gd_step").unwrap().unwrap().into_vec().unwrap();
    assert_eq!(steps, vec![0.0, 5.0, 10.0, 15.0, 20.0]);
    assert!(npz.by_name("flow_U").unwrap().is_some());
    // the relative error of U_20 V_20ᵀ against the target the trajectory reports
    let run = gdflow::results::run::load_run(&out).unwrap();
    let p = gdflow::Problem::generate(&run.summary.config().problem_spec()).unwrap();
    let x = nalgebra::DMatrix::from_fn(8, 7, |a, b| {
        (0..3)
            .map(|c| u[4 * 24 + a * 3 + c] * v[4 * 21 + b * 3 + c])
            .sum::<f64>()
    });
    let rel = (x - &p.x_star).norm() / p.x_star.norm();
    let reported = run.gd.last().unwrap().rel_error();
    assert!(
        (rel - reported).abs() <= 1e-12 * reported,
        "{rel} vs {reported}"
    );
    // without --out there is nowhere to write them
    let refused = gdflow()
        .args(["run", "--quiet", "--save-states"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("save_states"));
}
