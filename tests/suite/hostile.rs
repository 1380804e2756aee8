//! What a hostile (or careless) user types: each kind refused before any work, quickly, with
//! a non-zero exit, a message naming the flag or field, and no output written; nothing
//! overwritten that gdflow did not write; a closed stdout ends quietly.

use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

use super::npz::write_npz;

fn gdflow() -> Command {
    Command::cargo_bin("gdflow").unwrap()
}

/// `args` exits with status 2 within two seconds, naming `key` on stderr, writing nothing to
/// `out` (when given).
fn refused(args: &[&str], key: &str) {
    let start = Instant::now();
    let out = gdflow()
        .args(args)
        .timeout(Duration::from_secs(20))
        .assert()
        .code(2)
        .get_output()
        .clone();
    let seconds = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(key),
        "{args:?}: the message names `{key}`: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "{args:?}: a refusal, not a panic: {err}"
    );
    assert!(seconds < 2.0, "{args:?}: refused after {seconds:.2} s");
    assert!(
        out.stdout.is_empty(),
        "{args:?}: nothing printed before the refusal"
    );
}

#[test]
fn unbounded_work_and_memory_are_refused_before_they_start() {
    refused(&["sweep", "--eta-range", "0.01:0.2:100000000"], "eta_range");
    refused(&["sweep", "--etas", "0.1,0.05,0.1"], "etas");
    refused(
        &["sweep", "--stability-steps", "1000000000000"],
        "stability_steps",
    );
    refused(&["run", "--steps", "1000000000"], "steps");
    refused(&["run", "--steps", "18446744073709551615"], "steps");
    refused(&["check", "--steps", "1000000000"], "steps");
    // 2000 step sizes to a long horizon would keep tens of GiB of flow states
    refused(
        &[
            "sweep",
            "--eta-range",
            "0.0001:0.2:2000",
            "--horizon",
            "200",
            "--stability-steps",
            "0",
        ],
        "etas",
    );
}

#[test]
fn values_that_make_no_sense_are_refused_naming_the_flag() {
    for (args, key) in [
        (&["run", "--rtol", "2"][..], "rtol"),
        (&["run", "--rtol", "1"], "rtol"),
        (&["run", "--perturbation-size", "0.3"], "perturbation_size"),
        (&["run", "--alpha", "1e-300"], "alpha"),
        (&["run", "--eta", "1e-320"], "eta"),
        (&["run", "--kappa", "1e300"], "kappa"),
        (&["run", "--seed", "18446744073709551615"], "seed"),
        (&["run", "--seed", "9223372036854775808"], "seed"),
        (&["sweep", "--etas", "0.1,0.1"], "etas"),
        (&["run", "--optimizer", "heavy-ball"], "momentum"),
        (&["run", "--momentum", "0.5"], "momentum"),
        (
            &["run", "--optimizer", "nesterov", "--flow", "modified"],
            "flow",
        ),
        // the central flow is solved by DOP853 alone: another method would be ignored
        (&["run", "--flow", "central", "--method", "bdf"], "method"),
        (&["run", "--flow", "central", "--method", "auto"], "method"),
    ] {
        refused(args, key);
    }
}

#[test]
fn a_seed_the_outputs_cannot_hold_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    refused(
        &["run", "--seed", "18446744073709551615", "--out", o],
        "seed",
    );
    assert!(!out.exists(), "no output directory for a refused run");
}

#[test]
fn files_gdflow_did_not_write_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("notes.txt");
    std::fs::write(&mine, "my notes").unwrap();
    let m = mine.to_str().unwrap();
    refused(
        &["run", "--steps", "5", "--save-problem", m],
        "save_problem",
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "my notes");
    // --force replaces it, as asked
    gdflow()
        .args(["run", "--steps", "5", "--save-problem", m, "--force"])
        .assert()
        .success();
    assert_ne!(std::fs::read(&mine).unwrap(), b"my notes");
    // an input is never written over, --force or not
    let p = dir.path().join("p.npz");
    let ps = p.to_str().unwrap();
    gdflow()
        .args(["run", "--steps", "5", "--save-problem", ps])
        .assert()
        .success();
    let before = std::fs::read(&p).unwrap();
    refused(
        &[
            "run",
            "--steps",
            "5",
            "--problem",
            ps,
            "--save-problem",
            ps,
            "--force",
        ],
        "save_problem",
    );
    assert_eq!(std::fs::read(&p).unwrap(), before);
    // a recorded config.toml re-run into its own directory would replace its input
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    gdflow()
        .args(["run", "--steps", "5", "--out", o])
        .assert()
        .success();
    let config = out.join("config.toml");
    let before = std::fs::read(&config).unwrap();
    refused(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--out",
            o,
            "--force",
        ],
        "config",
    );
    assert_eq!(std::fs::read(&config).unwrap(), before);
}

#[test]
fn inputs_that_are_not_regular_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Process::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo is not available here: skipped the FIFO cases");
        return;
    }
    let f = fifo.to_str().unwrap();
    refused(&["run", "--config", f], "config");
    refused(&["run", "--problem", f], "problem");
    refused(
        &["run", "--problem", dir.path().to_str().unwrap()],
        "problem",
    );
}

fn npz_refused(path: &Path, key: &str) {
    refused(
        &["run", "--steps", "3", "--problem", path.to_str().unwrap()],
        key,
    );
}

#[test]
fn problem_files_are_checked_from_their_headers() {
    let dir = tempfile::tempdir().unwrap();
    let x = ("x_star", vec![2, 3], vec![1., 0., 0., 0., 1., 0.]);
    let s = ("sensing", vec![4, 2, 3], vec![0.5; 24]);
    // a misspelt array is not silently ignored
    let p = dir.path().join("misspelt.npz");
    write_npz(
        &p,
        &[x.clone(), s.clone(), ("U0", vec![2, 2], vec![0.1; 4])],
    );
    npz_refused(&p, "U0");
    // a sensing array whose header does not fit x_star is refused before its data is read
    let p = dir.path().join("shape.npz");
    write_npz(
        &p,
        &[
            x.clone(),
            ("sensing", vec![100_000, 3, 3], vec![0.0; 900_000]),
        ],
    );
    npz_refused(&p, "sensing");
    // NumPy writes a Python scalar as a 0-d array: alpha = 1e-3 is one number, the scale of
    // the file's start
    let u0 = ("u0", vec![2, 2], vec![1e-3, -2e-3, 5e-4, 1e-3]);
    let v0 = ("v0", vec![3, 2], vec![2e-3, 1e-3, -1e-3, 5e-4, 1e-3, -2e-3]);
    let p = dir.path().join("scalar.npz");
    write_npz(
        &p,
        &[
            x.clone(),
            s.clone(),
            u0.clone(),
            v0.clone(),
            ("alpha", vec![], vec![1e-3]),
        ],
    );
    gdflow()
        .args(["run", "--steps", "3", "--problem", p.to_str().unwrap()])
        .assert()
        .success();
    // a start below the least --alpha: its absolute tolerance would underflow
    let p = dir.path().join("tiny_start.npz");
    let tiny = |(name, shape, v): (&'static str, Vec<u64>, Vec<f64>)| {
        (
            name,
            shape,
            v.iter().map(|x| x * 1e-297).collect::<Vec<f64>>(),
        )
    };
    write_npz(&p, &[x.clone(), s.clone(), tiny(u0), tiny(v0)]);
    npz_refused(&p, "u0");
}

#[test]
fn a_closed_stdout_ends_quietly_and_the_outputs_are_still_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = Process::new(assert_cmd::cargo::cargo_bin("gdflow"))
        .args(["run", "--steps", "200", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "exit {:?}: {err}", result.status);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert!(out.join("trajectory.csv").exists());
}

#[test]
fn messages_name_the_flag_to_change() {
    refused(&["run", "--width", "10000000"], "width");
    refused(
        &["run", "--singular-values", "1e308,1,1"],
        "singular_values",
    );
    refused(&["sweep", "--eta-range", "-0.01:0.2:3"], "eta_range");
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("sweep.toml");
    std::fs::write(&toml, "etas = [0.1, 0.2]\n").unwrap();
    refused(&["sweep", "--config", toml.to_str().unwrap()], "[sweep]");
}

/// A small run and a small sweep, written into `dir`.
fn outputs(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let small = [
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
    ];
    let run = dir.join("run");
    gdflow()
        .arg("run")
        .args(small)
        .args(["--steps", "40", "--out"])
        .arg(&run)
        .assert()
        .success();
    let sweep = dir.join("sweep");
    gdflow()
        .arg("sweep")
        .args(small)
        .args([
            "--etas",
            "0.1,0.05",
            "--horizon",
            "4",
            "--stability-steps",
            "0",
        ])
        .args(["--shard", "1/1", "--out"])
        .arg(&sweep)
        .assert()
        .success();
    (run, sweep)
}

#[test]
fn merge_and_plot_refuse_damaged_or_foreign_results() {
    let dir = tempfile::tempdir().unwrap();
    let (run, sweep) = outputs(dir.path());
    let merged = dir.path().join("merged");
    let m = merged.to_str().unwrap();
    // a run's directory is not a sweep's part, and says so
    refused(&["merge", run.to_str().unwrap(), "--out", m], "gdflow run");
    // a part whose deviation.csv lost its last rows
    let dev = sweep.join("deviation.csv");
    let text = std::fs::read_to_string(&dev).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(&dev, kept[..kept.len() - 2].join("\n") + "\n").unwrap();
    refused(
        &["merge", sweep.to_str().unwrap(), "--out", m],
        "deviation.csv",
    );
    refused(
        &["plot", sweep.to_str().unwrap(), "--out", m],
        "deviation.csv",
    );
    // a header-only trajectory.csv, and another run's summary beside it
    let traj = run.join("trajectory.csv");
    let text = std::fs::read_to_string(&traj).unwrap();
    std::fs::write(&traj, text.lines().next().unwrap().to_string() + "\n").unwrap();
    refused(
        &["plot", run.to_str().unwrap(), "--out", m],
        "trajectory.csv",
    );
    assert!(
        !merged.exists(),
        "nothing written for a refused merge or plot"
    );
}

#[test]
fn a_truncated_array_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.npz");
    write_npz(
        &good,
        &[
            ("x_star", vec![2, 3], vec![1., 0., 0., 0., 1., 0.]),
            (
                "sensing",
                vec![400, 2, 3],
                (0..2400).map(|i| (i % 7) as f64).collect(),
            ),
        ],
    );
    // cut the archive's stored sensing data short by rewriting it uncompressed and truncated
    let bytes = std::fs::read(&good).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let bad = dir.path().join("bad.npz");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&bad).unwrap());
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut data).unwrap();
        if f.name().starts_with("sensing") {
            data.truncate(data.len() / 2);
        }
        let name = f.name().to_string();
        w.start_file(name, zip::write::FileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, &data).unwrap();
    }
    w.finish().unwrap();
    npz_refused(&bad, "truncated");
}

/// A run long enough to be interrupted or overlapped: the default problem, many steps.
const LONG_RUN: &[&str] = &[
    "run",
    "--steps",
    "100000",
    "--record-every",
    "100",
    "--quiet",
];

#[test]
fn a_second_command_on_the_same_out_fails_fast_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut first = Process::new(assert_cmd::cargo::cargo_bin("gdflow"))
        .args(LONG_RUN)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join(".gdflow.lock");
    let start = Instant::now();
    while !lock.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lock.exists(), "the first run holds the lock");
    let o = out.to_str().unwrap();
    refused(
        &["run", "--steps", "5", "--out", o, "--force"],
        &first.id().to_string(),
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn an_interrupt_leaves_no_lock_and_no_half_written_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut run = Process::new(assert_cmd::cargo::cargo_bin("gdflow"))
        .args(LONG_RUN)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out.join(".gdflow.lock").exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let sent = Process::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted, not finished");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .chain(std::fs::read_dir(&out).into_iter().flatten())
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "nothing left in --out: {left:?}"
    );
    // a temporary file a killed run left behind goes with --force
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(".trajectory.csv.tmp-99999"), "half").unwrap();
    let o = out.to_str().unwrap();
    refused(&["run", "--steps", "5", "--out", o], "out");
    gdflow()
        .args(["run", "--steps", "5", "--out", o, "--force"])
        .assert()
        .success();
    assert!(!out.join(".trajectory.csv.tmp-99999").exists());
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
];

/// `args` ends within `seconds` with exit status `code`.
fn ends(args: &[&str], code: i32, seconds: f64) -> String {
    let start = Instant::now();
    let out = gdflow()
        .args(args)
        .timeout(Duration::from_secs(60))
        .assert()
        .code(code)
        .get_output()
        .clone();
    let took = start.elapsed().as_secs_f64();
    assert!(took < seconds, "{args:?}: {took:.1} s");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn far_past_its_regime_a_run_ends_as_a_result_not_a_hang() {
    // the central flow far past the stability limit: every direction reaches 2/η
    let run = [
        &["run"],
        TINY,
        &["--steps", "50", "--flow", "central", "--eta", "50"],
    ]
    .concat();
    let out = ends(&run, 0, 10.0);
    assert!(
        out.contains("FAILED") && out.contains("eigenvalues reached 2/η"),
        "{out}"
    );
    // a modified flow that blows up is a failed flow, not a hang
    let sweep = [
        &["sweep"],
        TINY,
        &[
            "--etas",
            "5,0.1",
            "--horizon",
            "10",
            "--stability-steps",
            "0",
        ],
    ]
    .concat();
    ends(&sweep, 0, 20.0);
    // a start so large that the solver would crawl is refused up front
    refused(
        &[&["run"], TINY, &["--steps", "50", "--alpha", "1000"]].concat(),
        "alpha",
    );
    refused(
        &[&["check"], TINY, &["--steps", "50", "--alpha", "100"]].concat(),
        "alpha",
    );
}

/// MATH §8's 8 × 7 problem, past its stability limit at η = 0.9093.
const EOS: &[&str] = &[
    "--n1",
    "8",
    "--n2",
    "7",
    "--rank",
    "2",
    "--width",
    "3",
    "--measurements",
    "60",
    "--alpha",
    "1e-2",
    "--seed",
    "1",
];

/// The central flow's eigen-solves ask for residuals of rtol/100 of the sharpness; below
/// 1e-14 rounding never lets a residual pass, and each solve spent its whole budget: a single
/// step at rtol 5e-14 had not ended in a minute, in `run`, `sweep` and `check` alike.
#[test]
fn the_central_flow_at_the_tightest_tolerances_ends() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (run, sweep, check) = (out("run"), out("sweep"), out("check"));
    let tight = ["--rtol", "5e-14"];
    ends(
        &[
            &["run", "--quiet", "--flow", "central", "--eta", "0.9093"][..],
            EOS,
            &["--steps", "20", "--out", &run],
            &tight,
        ]
        .concat(),
        0,
        30.0,
    );
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(&run).join("summary.json")).unwrap(),
    )
    .unwrap();
    let work = &summary["central"]["work"];
    assert_eq!(work["unconverged_eigen_solves"], 0, "{work}");
    assert!(work["eigen_solves"].as_u64().unwrap() > 0, "{work}");
    ends(
        &[
            &["sweep", "--etas", "0.5,0.9093", "--horizon", "20"][..],
            &["--stability-steps", "0", "--out", &sweep],
            EOS,
            &tight,
        ]
        .concat(),
        0,
        30.0,
    );
    ends(
        &[
            &[
                "check", "--eta", "0.9093", "--steps", "100", "--out", &check,
            ],
            EOS,
            &tight,
        ]
        .concat(),
        0,
        30.0,
    );
}

/// A perturbation's factorisation field makes no pass over the sensing matrix: the report
/// does not count its right-hand sides among the passes (it said "3 passes (62 of them the
/// flow's right-hand sides …)").
#[test]
fn a_field_without_the_sensing_operator_reports_no_passes_for_its_flow() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stdout = ends(
        &[
            &["run", "--perturbation", "none", "--steps", "30"][..],
            TINY_SIZES,
            &["--out", out.to_str().unwrap()],
        ]
        .concat(),
        0,
        30.0,
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("passes over the sensing matrix"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("reads no sensing operator") && !line.contains("right-hand sides"),
        "{line}"
    );
}

/// [`TINY`]'s sizes without its number of measurements.
const TINY_SIZES: &[&str] = &["--n1", "8", "--n2", "6", "--rank", "2", "--width", "3"];

/// RAYON_NUM_THREADS sizes the pool: a value rayon cannot read (which it takes for unset) or
/// a count far past the processors (a hundred thousand threads made a 300-step run take
/// minutes) is refused naming it, before any work and without output.
#[test]
fn an_unreadable_or_huge_thread_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for value in ["abc", "-1", "100000"] {
        let out = dir.path().join(format!("out{value}"));
        let run = gdflow()
            .env("RAYON_NUM_THREADS", value)
            .args(["run", "--steps", "5", "--out", out.to_str().unwrap()])
            .args(TINY)
            .timeout(Duration::from_secs(20))
            .assert()
            .code(2)
            .get_output()
            .clone();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            err.contains("RAYON_NUM_THREADS") && err.contains(value),
            "{err}"
        );
        assert!(!out.exists(), "{value}: no output for a refused run");
    }
    // a few threads per processor run, with the same results as one
    let csv = |value: &str| {
        let out = dir.path().join(format!("ok{value}"));
        gdflow()
            .env("RAYON_NUM_THREADS", value)
            .args([
                "run",
                "--quiet",
                "--steps",
                "5",
                "--out",
                out.to_str().unwrap(),
            ])
            .args(TINY)
            .assert()
            .success();
        std::fs::read(out.join("trajectory.csv")).unwrap()
    };
    assert_eq!(csv("8"), csv("1"));
}

/// --sharpness-every acts on the central flow's rows as on GD's: 0 leaves the column empty,
/// 5 fills one record in five (the central flow measured its own at every record before).
#[test]
fn sharpness_every_acts_on_the_central_flows_rows() {
    let dir = tempfile::tempdir().unwrap();
    let rows_with_sharpness = |every: &str| -> (usize, usize) {
        let out = dir.path().join(format!("every{every}"));
        ends(
            &[
                &["run", "--quiet", "--flow", "central", "--eta", "0.9093"][..],
                EOS,
                &["--steps", "100", "--sharpness-every", every],
                &["--out", out.to_str().unwrap()],
            ]
            .concat(),
            0,
            30.0,
        );
        let csv = std::fs::read_to_string(out.join("trajectory.csv")).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let col = header.iter().position(|h| *h == "sharpness").unwrap();
        let count = |dynamics: &str| {
            csv.lines()
                .filter(|l| l.starts_with(&format!("{dynamics},")))
                .filter(|l| !l.split(',').nth(col).unwrap().is_empty())
                .count()
        };
        (count("gd"), count("flow"))
    };
    assert_eq!(rows_with_sharpness("0"), (0, 0));
    // records 0, 5, …, 100 of each
    assert_eq!(rows_with_sharpness("5"), (21, 21));
}

/// GD's two-step average at (j + ½)η waits for x_{j+1}'s divergence test: a run that
/// diverges keeps no average with the diverged iterate, and its verdict says it diverged.
#[test]
fn an_average_with_a_diverged_iterate_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stdout = ends(
        &[
            &["run", "--flow", "central", "--eta", "2.3681646270471752"][..],
            EOS,
            &["--steps", "50", "--out", out.to_str().unwrap()],
        ]
        .concat(),
        0,
        30.0,
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["gd"]["status"], "diverged", "{}", summary["gd"]);
    let diverged = summary["gd"]["step"].as_u64().unwrap();
    let csv = std::fs::read_to_string(out.join("trajectory.csv")).unwrap();
    let means: Vec<(u64, f64)> = csv
        .lines()
        .filter(|l| l.starts_with("gd_mean,"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect();
    let last = means.last().expect("averages before the divergence").0;
    // x_{diverged} failed its test, so the last average is ½(x_{d−2} + x_{d−1})
    assert_eq!(last + 2, diverged, "{means:?}");
    let gd_loss_before: f64 = csv
        .lines()
        .find(|l| l.starts_with(&format!("gd,{},", diverged - 1)))
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .unwrap();
    assert!(
        means.iter().all(|(_, loss)| loss.is_finite()),
        "{means:?} (GD's last kept loss {gd_loss_before:e})"
    );
    assert!(
        stdout.contains(&format!("verdict: GD diverged at step {diverged}")),
        "{stdout}"
    );
}

#[test]
fn second_batch_of_silent_and_late_cases() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    for (args, key) in [
        (vec!["run", "--rtol", "1e-300"], "rtol"),
        (vec!["run", "--rtol", "nan"], "rtol"),
        (
            vec!["run", "--record-every", "18446744073709551615"],
            "record_every",
        ),
        (
            vec!["run", "--sharpness-every", "18446744073709551615"],
            "sharpness_every",
        ),
        (
            vec![
                "run",
                "--perturbation",
                "none",
                "--perturbation-size",
                "0.3",
            ],
            "perturbation_size",
        ),
        (
            vec!["run", "--perturbation", "relative", "--noise", "0.1"],
            "noise",
        ),
        // a field that reads no sensing operator: its keys would act on nothing
        (
            vec![
                "run",
                "--perturbation",
                "none",
                "--sensing-precision",
                "f32",
            ],
            "sensing_precision",
        ),
        (
            vec!["run", "--perturbation", "relative", "--measurements", "61"],
            "measurements",
        ),
        (
            vec![
                "sweep",
                "--perturbation",
                "absolute",
                "--operator",
                "identity",
            ],
            "operator",
        ),
        (
            vec!["run", "--singular-values", "1,0.5", "--kappa", "5"],
            "kappa",
        ),
        (
            vec!["sweep", "--stability-steps", "0", "--stability-tol", "0.1"],
            "stability_tol",
        ),
        (
            vec!["sweep", "--etas", "0.1,0.05", "--shard", "3/3"],
            "shard",
        ),
        (
            vec!["sweep", "--max-rows", "18446744073709551615"],
            "max_rows",
        ),
    ] {
        refused(&args, key);
    }
    // outputs that would land on each other or on an input
    std::fs::create_dir_all(d("o3")).unwrap();
    refused(
        &[
            "run",
            "--steps",
            "5",
            "--out",
            &d("o3"),
            "--save-problem",
            &d("o3/trajectory.csv"),
        ],
        "save_problem",
    );
    let link = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere/x"), &link).unwrap();
    refused(
        &["run", "--steps", "5", "--out", link.to_str().unwrap()],
        "out",
    );
    let long = dir.path().join("a".repeat(300));
    refused(
        &["run", "--steps", "5", "--out", long.to_str().unwrap()],
        "out",
    );
    let (run, _) = outputs(dir.path());
    let r = run.to_str().unwrap();
    refused(&["plot", r, r, "--out", &d("figs")], "twice");
    let sweep_parts: Vec<String> = (1..=2)
        .map(|i| {
            let out = d(&format!("part{i}"));
            gdflow()
                .arg("sweep")
                .args(TINY)
                .args([
                    "--etas",
                    "0.1,0.05",
                    "--horizon",
                    "2",
                    "--stability-steps",
                    "0",
                ])
                .args(["--shard", &format!("{i}/2"), "--out", &out])
                .assert()
                .success();
            out
        })
        .collect();
    refused(
        &[
            "merge",
            &sweep_parts[0],
            &sweep_parts[1],
            "--out",
            &sweep_parts[0],
            "--force",
        ],
        "out",
    );
}

#[test]
fn numbers_are_shown_as_typed_and_check_flags_by_their_names() {
    refused(&["run", "--eta", "1e-320"], "1e-320");
    refused(&["run", "--alpha", "1e308"], "1e308");
    refused(&["check", "--check-epsilon", "5"], "check_epsilon");
}

/// Under `ulimit -v` the memory estimate uses the limit, so a problem too large for it is
/// refused up front instead of failing an allocation late.
#[test]
fn an_address_space_limit_bounds_the_memory_estimate() {
    let bin = assert_cmd::cargo::cargo_bin("gdflow");
    let out = Process::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v 4000000; {} run --n1 200 --n2 200 --measurements 20000 --steps 5",
            bin.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("measurements") && err.contains("GiB"), "{err}");
}

/// A run whose memory is mostly its recorded states is told to record less often: a larger
/// --record-every, not a smaller one.
#[test]
fn too_many_recorded_states_ask_for_a_larger_record_every() {
    let bin = assert_cmd::cargo::cargo_bin("gdflow");
    let out = Process::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v 4000000; {} run --n1 8 --n2 7 --rank 2 --width 3 --measurements 60 \
             --eta 0.05 --steps 4000000",
            bin.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("record_every") && err.contains("raise --record-every"),
        "{err}"
    );
}

/// A seed acts on nothing when the problem file holds y and the start: said, not ignored.
#[test]
fn a_seed_that_acts_on_nothing_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("full.npz");
    let ps = p.to_str().unwrap();
    gdflow()
        .args(["run", "--steps", "5", "--save-problem", ps])
        .args(TINY)
        .assert()
        .success();
    // `run --problem FILE --seed 5` with `extra`: its stderr
    let seeded = |extra: &[&str]| {
        let run = gdflow()
            .args(["run", "--steps", "5", "--problem", ps, "--seed", "5"])
            .args(extra)
            .assert()
            .success()
            .get_output()
            .clone();
        String::from_utf8_lossy(&run.stderr).to_string()
    };
    let out = dir.path().join("out");
    let err = seeded(&["--out", out.to_str().unwrap()]);
    assert!(err.contains("--seed 5 acts on nothing"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let warnings = summary["warnings"].to_string();
    assert!(warnings.contains("acts on nothing"), "{warnings}");
    // ... but it draws SGD's batches (and the starts of --vary start): no warning then
    for extra in [
        &[
            "--quiet",
            "--optimizer",
            "sgd",
            "--batch",
            "4",
            "--replicas",
            "4",
        ][..],
        &["--quiet", "--replicas", "4", "--vary", "start"][..],
    ] {
        let err = seeded(extra);
        assert!(!err.contains("acts on nothing"), "{extra:?}: {err}");
    }
}

/// A config file's table for another command is allowed (a sweep's config.toml re-runs as a
/// run) but said on stderr.
#[test]
fn a_table_for_another_command_is_said_to_act_on_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, "steps = 5\n[check]\norder_tol = 0.2\n").unwrap();
    let out = gdflow()
        .args(["run", "--config", toml.to_str().unwrap()])
        .args(TINY)
        .assert()
        .success()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[check] table") && err.contains("does not use it"),
        "{err}"
    );
}

/// The last unclear cases of the hunt: the key behind a huge state, two arrays under one
/// name, λ = 0 said as such.
#[test]
fn the_hunts_last_unclear_cases_name_what_to_change() {
    refused(
        &[
            &["run"],
            &TINY[..2],
            &["--n1", "4000000000", "--steps", "5"],
        ]
        .concat(),
        "n1",
    );
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.npz");
    write_npz(
        &good,
        &[
            ("x_star", vec![2, 3], vec![1., 0., 0., 0., 1., 0.]),
            ("sensing", vec![4, 2, 3], vec![0.5; 24]),
        ],
    );
    let bytes = std::fs::read(&good).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let dupe = dir.path().join("dupe.npz");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&dupe).unwrap());
    let mut first = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut data).unwrap();
        if i == 0 {
            first = data.clone();
        }
        w.start_file(f.name().to_string(), zip::write::FileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, &data).unwrap();
    }
    // the first array again, under its own name
    let name = archive.by_index(0).unwrap().name().to_string();
    w.start_file(name, zip::write::FileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut w, &first).unwrap();
    w.finish().unwrap();
    npz_refused(&dupe, "share a name");
    let out = gdflow()
        .args([
            "run",
            "--steps",
            "5",
            "--optimizer",
            "scaled-gd",
            "--damping",
            "0",
        ])
        .args(TINY)
        .assert()
        .success()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("λ = 0") && err.len() < 2000, "{err}");
}

/// A recorded config.toml re-runs from any directory, and a relative `problem` in a config
/// file is the file's neighbour, not the working directory's.
#[test]
fn problem_paths_do_not_depend_on_where_gdflow_runs() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    gdflow()
        .current_dir(&work)
        .args(["run", "--steps", "5", "--save-problem", "p1.npz"])
        .args(TINY)
        .assert()
        .success();
    gdflow()
        .current_dir(&work)
        .args(["run", "--steps", "5", "--problem", "p1.npz", "--out", "a"])
        .assert()
        .success();
    // from elsewhere, through the recorded config
    gdflow()
        .current_dir(dir.path())
        .args(["run", "--config", "work/a/config.toml", "--out", "b"])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(work.join("a/trajectory.csv")).unwrap(),
        std::fs::read(dir.path().join("b/trajectory.csv")).unwrap()
    );
    // a hand-written config beside its problem file
    std::fs::write(work.join("c.toml"), "problem = \"p1.npz\"\nsteps = 5\n").unwrap();
    gdflow()
        .current_dir(dir.path())
        .args(["run", "--config", "work/c.toml"])
        .assert()
        .success();
}
