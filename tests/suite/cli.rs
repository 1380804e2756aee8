//! The binary as a user calls it.

use assert_cmd::Command;

const SMALL: &[&str] = &[
    "run",
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
    "--eta",
    "0.1",
    "--steps",
    "50",
    "--seed",
    "3",
];

fn assert_same_trajectory(a: &std::path::Path, b: &std::path::Path) {
    assert_eq!(
        std::fs::read(a.join("trajectory.csv")).unwrap(),
        std::fs::read(b.join("trajectory.csv")).unwrap()
    );
}

/// `gdflow run --config FROM/config.toml --out TO` succeeds and writes FROM's trajectory.
fn assert_reruns_from_its_config(from: &std::path::Path, to: &std::path::Path) {
    gdflow()
        .args(["run", "--config"])
        .arg(from.join("config.toml"))
        .arg("--out")
        .arg(to)
        .assert()
        .success();
    assert_same_trajectory(from, to);
}

fn gdflow() -> Command {
    Command::cargo_bin("gdflow").unwrap()
}

#[test]
fn run_out_writes_summary_and_trajectory_with_the_contract_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    gdflow()
        .args(SMALL)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["crate_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(summary["seed"], 3);
    assert_eq!(summary["config"]["width"], 3);
    assert!(summary["solver"]["rhs_evals"].as_u64().unwrap() > 0);
    assert!(summary["distance"]["max"].as_f64().unwrap() >= 0.0);
    assert_eq!(summary["gd"]["status"], "completed");

    let mut rdr = csv::Reader::from_path(out.join("trajectory.csv")).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "dynamics",
            "step",
            "t",
            "loss",
            "rel_error",
            "balance_drift",
            "sv_1",
            "sv_2",
            "sv_3",
            "rho",
            "signal_u",
            "signal_v",
            "sin_theta_u",
            "sin_theta_v",
            "spurious_u",
            "spurious_v",
            "sharpness",
            "sigma_trace",
            "active",
            "distance",
            "distance_rel"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 2 * 51);
    assert_eq!(rows.iter().filter(|r| &r[0] == "gd").count(), 51);
    assert_eq!(rows.iter().filter(|r| &r[0] == "flow").count(), 51);
    for r in &rows {
        // sharpness, sigma_trace and active are empty without the sharpness and the central
        // flow; the distance to the flow is on GD's rows
        for v in r.iter().skip(1).take(r.len() - 6) {
            assert!(v.parse::<f64>().unwrap().is_finite());
        }
        assert!(r.iter().skip(r.len() - 5).take(3).all(str::is_empty));
        for v in r.iter().skip(r.len() - 2) {
            match &r[0] {
                "gd" => assert!(v.parse::<f64>().unwrap().is_finite()),
                _ => assert!(v.is_empty()),
            }
        }
    }
}

#[test]
fn recorded_config_reruns_to_identical_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    gdflow().args(SMALL).arg("--out").arg(&a).assert().success();
    assert_reruns_from_its_config(&a, &b);
}

#[test]
fn save_problem_then_run_from_it_gives_the_same_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("p.npz");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    gdflow()
        .args(SMALL)
        .arg("--save-problem")
        .arg(&npz)
        .arg("--out")
        .arg(&a)
        .assert()
        .success();
    gdflow()
        .args(["run", "--eta", "0.1", "--steps", "50", "--problem"])
        .arg(&npz)
        .arg("--out")
        .arg(&b)
        .assert()
        .success();
    assert_same_trajectory(&a, &b);
}

#[test]
fn bad_value_exits_2_naming_the_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let assert = gdflow()
        .args(["run", "--alpha", "-1", "--out"])
        .arg(&out)
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(stderr.contains("alpha"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn help_shows_examples() {
    let assert = gdflow().args(["run", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(text.contains("Examples:") && text.contains("--save-problem"));
}

const SMALL_SWEEP: &[&str] = &[
    "sweep",
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
    "5",
    "--etas",
    "0.2,0.05,0.1",
    "--horizon",
    "12",
    "--stability-steps",
    "300",
    "--quiet",
];

fn sweep_into(dir: &std::path::Path, threads: &str) {
    gdflow()
        .args(SMALL_SWEEP)
        .arg("--out")
        .arg(dir)
        .env("RAYON_NUM_THREADS", threads)
        .assert()
        .success();
}

#[test]
fn sweep_csvs_are_identical_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    sweep_into(&one, "1");
    sweep_into(&two, "2");
    for name in ["sweep.csv", "deviation.csv", "config.toml"] {
        assert_eq!(
            std::fs::read(one.join(name)).unwrap(),
            std::fs::read(two.join(name)).unwrap(),
            "{name} differs between 1 and 2 threads"
        );
    }
}

#[test]
fn sweep_writes_the_contract_files_keys_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    sweep_into(&out, "2");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    for key in [
        "order_plain",
        "order_modified",
        "stability_limit",
        "two_over_lambda_max",
    ] {
        assert!(summary[key].is_f64(), "summary.json `{key}` is a number");
    }
    assert_eq!(summary["crate_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(summary["seed"], 5);

    let sweep = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let mut lines = sweep.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in [
        "eta",
        "max_dev",
        "max_dev_modified",
        "ref_error",
        "t_eps_gd",
        "t_eps_flow",
    ] {
        assert!(header.contains(&col), "sweep.csv lacks `{col}`");
    }
    let etas: Vec<f64> = lines
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(etas, vec![0.05, 0.1, 0.2], "one row per η, ascending");

    let dev = std::fs::read_to_string(out.join("deviation.csv")).unwrap();
    let mut lines = dev.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..4], &["eta", "step", "t", "dev"]);
    let rows: Vec<Vec<f64>> = lines
        .map(|l| {
            l.split(',')
                .filter(|c| *c != "true" && *c != "false" && !c.is_empty())
                .map(|c| c.parse().unwrap())
                .collect()
        })
        .collect();
    for eta in [0.05, 0.1, 0.2] {
        let n = rows.iter().filter(|r| r[0] == eta).count();
        let steps = (12.0 / eta * (1.0 + 1e-12)).floor() as usize;
        assert_eq!(n, steps + 1, "η = {eta}: one row per step 0..={steps}");
    }
    assert!(rows.iter().flatten().all(|v| v.is_finite()));
}

#[test]
fn sweep_reruns_from_its_config_and_refuses_run_only_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    sweep_into(&a, "2");
    gdflow()
        .args(["sweep", "--quiet", "--config"])
        .arg(a.join("config.toml"))
        .arg("--out")
        .arg(&b)
        .assert()
        .success();
    for name in ["sweep.csv", "deviation.csv", "config.toml"] {
        assert_eq!(
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
            "{name} differs after re-running from config.toml"
        );
    }
    let assert = gdflow().args(["sweep", "--eta", "0.1"]).assert().code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(
        stderr.contains("eta") && stderr.contains("--etas"),
        "{stderr}"
    );
    let assert = gdflow()
        .args(["sweep", "--eta-range", "0.1:0.01:3"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(stderr.contains("eta_range"), "{stderr}");
}

#[test]
fn plot_reads_saved_runs_and_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    gdflow()
        .args(SMALL)
        .arg("--quiet")
        .arg("--out")
        .arg(&run)
        .assert()
        .success();
    let figs = dir.path().join("figs");
    gdflow()
        .arg("plot")
        .arg(&run)
        .arg("--out")
        .arg(&figs)
        .assert()
        .success();
    for name in ["loss_error", "singular_values", "balance_drift"] {
        for ext in ["png", "svg", "csv"] {
            assert!(figs.join(format!("{name}.{ext}")).exists(), "{name}.{ext}");
        }
    }
    let sweep = dir.path().join("sweep");
    sweep_into(&sweep, "2");
    gdflow().arg("plot").arg(&sweep).assert().success();
    assert!(sweep.join("figures/deviation_vs_eta.svg").exists());
    // --figures needs somewhere to put them
    let assert = gdflow().args(SMALL).arg("--figures").assert().code(2);
    assert!(String::from_utf8_lossy(&assert.get_output().stderr).contains("figures"));

    // runs and a sweep together: the runs' figures into --out, the sweep's into a
    // sub-directory named after it, and the output says what was drawn from what
    let mixed = dir.path().join("mixed");
    let out = gdflow()
        .arg("plot")
        .arg(&run)
        .arg(&sweep)
        .arg("--out")
        .arg(&mixed)
        .arg("--top-singular-values")
        .arg("1")
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        stdout.contains("from 1 run(s)") && stdout.contains("from sweep"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not drawn: deviation_vs_eta needs a sweep"),
        "{stdout}"
    );
    assert!(mixed.join("singular_values.svg").exists());
    assert!(mixed.join("sweep/deviation_vs_eta.svg").exists());
    let svg = std::fs::read_to_string(mixed.join("singular_values.svg")).unwrap();
    assert!(svg.contains("σ₂…σ₃"), "--top-singular-values 1 acted");

    // a flag for runs with only a sweep is refused, and so is a directory of neither kind,
    // before anything is written
    let refused = dir.path().join("refused");
    let assert = gdflow()
        .arg("plot")
        .arg(&sweep)
        .arg("--out")
        .arg(&refused)
        .arg("--top-singular-values")
        .arg("2")
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(stderr.contains("--top-singular-values"), "{stderr}");
    assert!(!refused.exists());
    let assert = gdflow()
        .arg("plot")
        .arg(dir.path())
        .arg("--out")
        .arg(&refused)
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(stderr.contains("neither a run directory"), "{stderr}");
    assert!(!refused.exists());
}

#[test]
fn shards_merge_into_the_unsharded_sweep_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    sweep_into(&full, "2");
    let mut parts = Vec::new();
    for i in 1..=2 {
        let part = dir.path().join(format!("part{i}"));
        gdflow()
            .args(SMALL_SWEEP)
            .args(["--shard", &format!("{i}/2"), "--out"])
            .arg(&part)
            .assert()
            .success();
        parts.push(part);
    }
    // a part alone is not the whole sweep
    assert_ne!(
        std::fs::read(full.join("sweep.csv")).unwrap(),
        std::fs::read(parts[0].join("sweep.csv")).unwrap()
    );
    let merged = dir.path().join("merged");
    gdflow()
        .arg("merge")
        .arg(&parts[1])
        .arg(&parts[0])
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    for name in ["sweep.csv", "deviation.csv", "config.toml"] {
        assert_eq!(
            std::fs::read(full.join(name)).unwrap(),
            std::fs::read(merged.join(name)).unwrap(),
            "{name}: merged differs from unsharded"
        );
    }
    let json = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap()
    };
    for key in [
        "order_plain",
        "order_modified",
        "stability_limit",
        "two_over_lambda_max",
    ] {
        assert_eq!(json(&full)[key], json(&merged)[key], "{key}");
    }
    // a missing part is an error naming it
    let assert = gdflow()
        .arg("merge")
        .arg(&parts[0])
        .arg("--out")
        .arg(dir.path().join("m2"))
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&assert.get_output().stderr).contains("part 2/2 is missing"));
}

#[test]
fn method_auto_reports_its_switches_in_the_summary_and_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("auto");
    let args = [
        "run",
        "--n1",
        "12",
        "--n2",
        "10",
        "--rank",
        "2",
        "--width",
        "4",
        "--measurements",
        "240",
        "--kappa",
        "100",
        "--eta",
        "0.5",
        "--steps",
        "3000",
        "--record-every",
        "100",
        "--method",
        "auto",
    ];
    let assert = gdflow()
        .args(args)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(stdout.contains("dop853 → bdf"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let auto = &summary["solver"]["auto"];
    let switch = &auto["switches"][0];
    assert_eq!(switch["from"], "dop853");
    assert_eq!(switch["to"], "bdf");
    for key in ["t", "step_size", "spectral_radius", "h_rho"] {
        assert!(switch[key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert_eq!(summary["config"]["method"], "auto");
    // The recorded configuration re-runs to the same trajectory.
    let again = dir.path().join("again");
    assert_reruns_from_its_config(&out, &again);
}

fn header(path: &std::path::Path) -> Vec<String> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    rdr.headers().unwrap().iter().map(String::from).collect()
}

/// The full header of every CSV the README documents, as users' scripts read them.
#[test]
fn every_documented_csv_has_its_full_header() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("sweep");
    gdflow()
        .args(SMALL_SWEEP)
        .arg("--figures")
        .arg("--out")
        .arg(&sweep)
        .assert()
        .success();
    assert_eq!(
        header(&sweep.join("sweep.csv")),
        [
            "eta",
            "steps",
            "gd_status",
            "max_dev",
            "max_dev_rel",
            "t_max_dev",
            "ref_error",
            "below_ref",
            "max_dev_modified",
            "max_dev_modified_rel",
            "t_max_dev_modified",
            "ref_error_modified",
            "below_ref_modified",
            "max_dev_u",
            "max_dev_v",
            "max_loss_diff",
            "final_rel_error_gd",
            "final_rel_error_flow",
            "final_rel_error_modified",
            "t_eps_gd",
            "t_eps_flow",
            "final_drift_gd",
            "final_drift_flow",
            "max_drift_gd",
            "max_dev_central",
            "max_dev_central_rel",
            "t_max_dev_central",
            "final_dev_central",
            "central_first_reached",
            "central_max_active",
            "central_status",
            "final_dev",
            "final_dev_modified"
        ]
    );
    assert_eq!(
        header(&sweep.join("deviation.csv")),
        [
            "eta",
            "step",
            "t",
            "dev",
            "dev_rel",
            "dev_u",
            "dev_v",
            "loss_gd",
            "loss_flow",
            "loss_diff",
            "ref_error",
            "below_ref",
            "dev_modified",
            "dev_modified_rel",
            "ref_error_modified",
            "below_ref_modified",
            "rel_error_gd",
            "rel_error_flow",
            "rel_error_modified",
            "drift_gd",
            "drift_flow",
            "dev_central",
            "dev_central_rel",
            "rel_error_gd_mean",
            "rel_error_central",
            "active_central"
        ]
    );
    for fig in ["loss_error", "balance_drift", "deviation_vs_eta"] {
        assert_eq!(
            header(&sweep.join(format!("figures/{fig}.csv"))),
            ["panel", "series", "x", "y"],
            "{fig}.csv"
        );
    }
    let check = dir.path().join("check");
    let done = gdflow()
        .args([
            "check",
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
            "--steps",
            "60",
            "--quiet",
            "--out",
        ])
        .arg(&check)
        .output()
        .unwrap();
    assert!(matches!(done.status.code(), Some(0) | Some(3)));
    assert_eq!(
        header(&check.join("checks.csv")),
        ["name", "prediction", "measured", "predicted", "pass"]
    );
    let traj = header(&check.join("trajectory.csv"));
    assert_eq!(
        traj,
        [
            "dynamics",
            "step",
            "t",
            "loss",
            "rel_error",
            "balance_drift",
            "sv_1",
            "sv_2",
            "sv_3",
            "rho",
            "signal_u",
            "signal_v",
            "sin_theta_u",
            "sin_theta_v",
            "spurious_u",
            "spurious_v",
            "sharpness",
            "sigma_trace",
            "active",
            "distance",
            "distance_rel"
        ]
    );
}

/// `--optimizer` and its parameters on every subcommand: rows named after the optimiser, its
/// time in t, the summary's record, a re-run from config.toml; sweeps of the jη methods; the
/// checks (GD's) refuse it with exit status 2.
#[test]
fn optimizers_run_and_sweep_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hb");
    gdflow()
        .args(SMALL)
        .args(["--optimizer", "heavy-ball", "--friction", "1", "--out"])
        .arg(&out)
        .assert()
        .success();
    let csv = std::fs::read_to_string(out.join("trajectory.csv")).unwrap();
    let names: std::collections::BTreeSet<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(names, ["flow", "heavy-ball"].into_iter().collect());
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["optimizer"]["name"], "heavy-ball");
    assert_eq!(summary["optimizer"]["parameters"]["friction"], 1.0);
    assert_eq!(summary["optimizer"]["time_scale"], "sqrt-eta");
    // t = j√η at the last step: 50 steps of √0.1
    let last_t = summary["gd"]["final_t"].as_f64().unwrap();
    assert!((last_t - 50.0 * 0.1f64.sqrt()).abs() < 1e-12, "{last_t}");
    let again = dir.path().join("again");
    assert_reruns_from_its_config(&out, &again);

    let sweep = dir.path().join("sweep");
    gdflow()
        .args(&SMALL_SWEEP[..SMALL_SWEEP.len() - 3])
        .args([
            "--optimizer",
            "scaled-gd",
            "--damping",
            "0.05",
            "--quiet",
            "--out",
        ])
        .arg(&sweep)
        .assert()
        .success();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sweep.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["config"]["optimizer"], "scaled-gd");
    assert!(summary["stability"].is_null());
    // the stability bisection is GD's, and so are the checks
    let out = gdflow()
        .args(SMALL_SWEEP)
        .args(["--optimizer", "scaled-gd"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stability_steps"), "{err}");
}

/// `--spectrum-every 3`: the spectral columns (sv_i, rho, the theory's) at records 0, 3, 6, …
/// and the last, equal there to a run that computes them at every record, empty elsewhere;
/// every other column and every maximum unchanged; with 0 no singular values' figure. check
/// and sweep refuse the key.
#[test]
fn spectrum_every_leaves_the_other_columns_and_the_maxima_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let (full, sparse) = (dir.path().join("full"), dir.path().join("sparse"));
    for (out, every) in [(&full, "1"), (&sparse, "3")] {
        gdflow()
            .args(SMALL)
            .args(["--quiet", "--flow", "modified", "--spectrum-every", every])
            .arg("--out")
            .arg(out)
            .assert()
            .success();
    }
    let read = |dir: &std::path::Path| {
        let text = std::fs::read_to_string(dir.join("trajectory.csv")).unwrap();
        let mut lines = text.lines();
        let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
        let rows: Vec<Vec<String>> = lines
            .map(|l| l.split(',').map(String::from).collect())
            .collect();
        (header, rows)
    };
    let ((header, a), (header_b, b)) = (read(&full), read(&sparse));
    assert_eq!(header, header_b);
    assert_eq!(a.len(), b.len());
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    // the contract's order: sv_1 … sv_k, then rho … spurious_v (see the first test here)
    let spectral: Vec<usize> = (col("sv_1")..=col("spurious_v")).collect();
    assert_eq!(
        spectral.len(),
        7 + 3,
        "k = 3 singular values and the theory's seven"
    );
    let (dynamics, step) = (col("dynamics"), col("step"));
    let last_step = a
        .iter()
        .map(|r| r[step].parse::<usize>().unwrap())
        .max()
        .unwrap();
    let mut index_in_track = std::collections::HashMap::new();
    let mut empty = 0;
    for (ra, rb) in a.iter().zip(&b) {
        let i = index_in_track.entry(ra[dynamics].clone()).or_insert(0usize);
        let due = *i % 3 == 0 || ra[step].parse::<usize>().unwrap() == last_step;
        *i += 1;
        for (c, (va, vb)) in ra.iter().zip(rb).enumerate() {
            if !spectral.contains(&c) || due {
                assert_eq!(va, vb, "column {} at {:?}", header[c], ra);
            } else {
                assert!(vb.is_empty() && !va.is_empty(), "{} at {:?}", header[c], rb);
                empty += 1;
            }
        }
    }
    assert!(empty > 0);
    let summary = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
    };
    let (sa, sb) = (summary(&full), summary(&sparse));
    for key in ["distance", "gd", "flow"] {
        assert_eq!(sa[key], sb[key], "{key}");
    }
    assert_eq!(sb["config"]["spectrum_every"], 3, "stated in the output");
    // a run that diverges ends on a record off the cadence: it still carries the columns
    let diverged = dir.path().join("diverged");
    let eta = SMALL.iter().position(|a| *a == "--eta").unwrap();
    gdflow()
        .args(&SMALL[..eta])
        .args(&SMALL[eta + 2..])
        .args(["--quiet", "--eta", "5", "--spectrum-every", "4"])
        .arg("--out")
        .arg(&diverged)
        .assert()
        .success();
    let (h, rows) = read(&diverged);
    let last_gd = rows.iter().filter(|r| r[0] == "gd").last().unwrap();
    let step = &last_gd[h.iter().position(|c| c == "step").unwrap()];
    assert_ne!(
        step.parse::<usize>().unwrap() % 4,
        0,
        "the test needs an end off the cadence"
    );
    let rho = &last_gd[h.iter().position(|c| c == "rho").unwrap()];
    assert!(rho.parse::<f64>().is_ok(), "last row {last_gd:?}");
    // with no spectral columns at all, no singular values' figure (it would show only the
    // targets); `gdflow plot` says why it is not drawn
    let none = dir.path().join("none");
    gdflow()
        .args(SMALL)
        .args(["--quiet", "--spectrum-every", "0", "--figures"])
        .arg("--out")
        .arg(&none)
        .assert()
        .success();
    assert!(none.join("figures/loss_error.png").exists());
    assert!(!none.join("figures/singular_values.png").exists());
    let plotted = gdflow()
        .arg("plot")
        .arg(&none)
        .arg("--out")
        .arg(dir.path().join("plotted"))
        .assert()
        .success();
    let out = String::from_utf8_lossy(&plotted.get_output().stdout).to_string();
    assert!(
        out.contains("singular_values") && out.contains("--spectrum-every 0"),
        "{out}"
    );
    for cmd in ["check", "sweep"] {
        let assert = gdflow()
            .args([cmd, "--spectrum-every", "2"])
            .assert()
            .code(2);
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
        assert!(stderr.contains("spectrum_every"), "{cmd}: {stderr}");
    }
}

/// The spectral columns' cadence is said in the run's header line and kept in config.toml,
/// including a cadence of 1 where the steps' default would be another: a re-run from
/// config.toml gives the same trajectory.csv.
#[test]
fn spectral_cadence_is_stated_and_reruns_from_config_toml() {
    let dir = tempfile::tempdir().unwrap();
    // SMALL over 300 steps: a default cadence of 3
    let args: Vec<&str> = SMALL
        .iter()
        .scan(false, |after_steps, &a| {
            let v = if *after_steps { "300" } else { a };
            *after_steps = a == "--steps";
            Some(v)
        })
        .collect();
    for (name, given, said) in [
        (
            "default",
            None,
            "at one record in 3 and the last (--spectrum-every 3)",
        ),
        ("every", Some("1"), "at every record (--spectrum-every 1)"),
    ] {
        let (a, b) = (
            dir.path().join(name),
            dir.path().join(format!("{name}_again")),
        );
        let mut cmd = gdflow();
        cmd.args(&args).arg("--out").arg(&a);
        if let Some(every) = given {
            cmd.args(["--spectrum-every", every]);
        }
        let out = cmd.assert().success().get_output().stdout.clone();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(&format!(
                "records: every step; spectral columns (sv_i, rho, theory): {said}"
            )),
            "{name}: {out}"
        );
        let config = std::fs::read_to_string(a.join("config.toml")).unwrap();
        let every = given.unwrap_or("3");
        assert!(
            config.contains(&format!("spectrum_every = {every}")),
            "{config}"
        );
        assert_reruns_from_its_config(&a, &b);
    }
}
