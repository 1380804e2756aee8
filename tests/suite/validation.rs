//! Wrong input, every way a user can give it: flags, TOML files, `.npz` problems. Each case
//! must exit with the right status, name the offending field, and create no output.

use std::path::Path;

use assert_cmd::Command;
use npyz::WriterBuilder;

enum Npz {
    /// Arrays (name, shape, data) written as float64.
    F64(Vec<(&'static str, Vec<u64>, Vec<f64>)>),
    /// `x_star` as int64 (NumPy's default for integers), a valid `sensing`.
    IntXStar,
    /// Bytes that are not a zip archive.
    Garbage,
}

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    toml: Option<&'static str>,
    npz: Option<Npz>,
    code: i32,
    /// Must appear in stderr (the field, or the flag).
    names: &'static str,
}

fn flag(name: &'static str, args: &'static [&'static str], names: &'static str) -> Case {
    Case {
        name,
        args,
        toml: None,
        npz: None,
        code: 2,
        names,
    }
}

fn toml(name: &'static str, text: &'static str, names: &'static str) -> Case {
    Case {
        name,
        args: &["run"],
        toml: Some(text),
        npz: None,
        code: 2,
        names,
    }
}

fn npz(name: &'static str, file: Npz, names: &'static str) -> Case {
    Case {
        name,
        args: &["run"],
        toml: None,
        npz: Some(file),
        code: 2,
        names,
    }
}

fn ok_sensing() -> (&'static str, Vec<u64>, Vec<f64>) {
    (
        "sensing",
        vec![2, 2, 3],
        (0..12).map(|i| i as f64).collect(),
    )
}

fn ok_x() -> (&'static str, Vec<u64>, Vec<f64>) {
    ("x_star", vec![2, 3], vec![1., 0., 7., 0., 0., 2.])
}

fn write_npz(path: &Path, file: &Npz) {
    match file {
        Npz::Garbage => std::fs::write(path, b"this is not a zip archive").unwrap(),
        Npz::F64(arrays) => super::npz::write_npz(path, arrays),
        Npz::IntXStar => {
            let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
            let mut w = npz
                .array::<i64>("x_star", Default::default())
                .unwrap()
                .default_dtype()
                .shape(&[2, 3])
                .begin_nd()
                .unwrap();
            w.extend([1i64, 0, 7, 0, 0, 2]).unwrap();
            w.finish().unwrap();
            let (name, shape, data) = ok_sensing();
            let mut w = npz
                .array::<f64>(name, Default::default())
                .unwrap()
                .default_dtype()
                .shape(&shape)
                .begin_nd()
                .unwrap();
            w.extend(data).unwrap();
            w.finish().unwrap();
            npz.zip_writer().finish().unwrap();
        }
    }
}

fn cases() -> Vec<Case> {
    vec![
        flag("n1 zero", &["run", "--n1", "0"], "n1"),
        flag("n2 zero", &["run", "--n2", "0"], "n2"),
        flag("rank zero", &["run", "--rank", "0"], "rank"),
        flag("rank above min(n1, n2)", &["run", "--rank", "40"], "rank"),
        flag("width zero", &["run", "--width", "0"], "width"),
        flag("m zero", &["run", "--measurements", "0"], "measurements"),
        flag("alpha zero", &["run", "--alpha", "0"], "alpha"),
        flag("alpha negative", &["run", "--alpha", "-1e-3"], "alpha"),
        flag("alpha NaN", &["run", "--alpha", "nan"], "alpha"),
        flag("eta zero", &["run", "--eta", "0"], "eta"),
        flag("eta infinite", &["run", "--eta", "inf"], "eta"),
        flag("rtol zero", &["run", "--rtol", "0"], "rtol"),
        flag("atol negative", &["run", "--atol", "-1"], "atol"),
        flag("kappa below one", &["run", "--kappa", "0.5"], "kappa"),
        flag(
            "negative singular value",
            &["run", "--singular-values", "1,-2,3"],
            "singular_values",
        ),
        flag(
            "too few singular values",
            &["run", "--singular-values", "1,2"],
            "singular_values",
        ),
        flag("noise negative", &["run", "--noise", "-0.1"], "noise"),
        flag("steps zero", &["run", "--steps", "0"], "steps"),
        flag(
            "record_every zero",
            &["run", "--record-every", "0"],
            "record_every",
        ),
        flag(
            "identity with m != n1 n2",
            &["run", "--operator", "identity", "--measurements", "10"],
            "measurements",
        ),
        flag(
            "entries above n1 n2",
            &["run", "--operator", "entries", "--measurements", "100000"],
            "measurements",
        ),
        flag(
            "operator too large for memory",
            &["run", "--measurements", "100000000000"],
            "measurements",
        ),
        flag("unknown method", &["run", "--method", "rk4"], "--method"),
        flag("n1 not a number", &["run", "--n1", "abc"], "--n1"),
        flag("unknown flag", &["run", "--frobnicate"], "--frobnicate"),
        flag(
            "missing config file",
            &["run", "--config", "/nonexistent/c.toml"],
            "config",
        ),
        flag(
            "save_problem in a missing directory",
            &["run", "--save-problem", "/nonexistent/p.npz"],
            "save_problem",
        ),
        flag(
            "eta range reversed",
            &["sweep", "--eta-range", "0.1:0.01:3"],
            "eta_range",
        ),
        flag(
            "eta range malformed",
            &["sweep", "--eta-range", "0.1:0.2"],
            "eta_range",
        ),
        flag(
            "zero step size in a sweep",
            &["sweep", "--etas", "0,0.1"],
            "etas",
        ),
        flag(
            "step size beyond the horizon",
            &["sweep", "--etas", "100"],
            "etas",
        ),
        flag("horizon negative", &["sweep", "--horizon", "-1"], "horizon"),
        flag("epsilon zero", &["sweep", "--epsilon", "0"], "epsilon"),
        flag(
            "stability tol above one",
            &["sweep", "--stability-tol", "2"],
            "stability_tol",
        ),
        flag("run-only eta in a sweep", &["sweep", "--eta", "0.1"], "eta"),
        toml("misspelt key", "alpah = 1e-3\n", "did you mean `alpha`"),
        toml("string for a number", "n1 = 10\nalpha = \"abc\"\n", "alpha"),
        toml("negative integer", "n1 = -3\n", "n1"),
        toml("semantic range in TOML", "alpha = -1.0\n", "alpha"),
        toml("broken TOML", "rank = = 3\n", "rank"),
        toml(
            "bad type in [sweep]",
            "[sweep]\nhorizon = \"x\"\n",
            "sweep.horizon",
        ),
        toml(
            "misspelt key in [sweep]",
            "[sweep]\netaz = [0.1]\n",
            "did you mean `etas`",
        ),
        // found by cargo-fuzz: n1·n2 overflowed in the memory check
        toml(
            "sizes whose product overflows",
            "n1 = 666666966666666666\nn2 = 666666966666666666\n",
            "n1",
        ),
        toml(
            "operator file without a problem",
            "operator = \"file\"\n",
            "operator",
        ),
        npz("missing sensing", Npz::F64(vec![ok_x()]), "sensing"),
        npz(
            "x_star not 2-d",
            Npz::F64(vec![("x_star", vec![6], vec![1.0; 6]), ok_sensing()]),
            "x_star",
        ),
        npz(
            "sensing of the wrong shape",
            Npz::F64(vec![ok_x(), ("sensing", vec![2, 3, 2], vec![1.0; 12])]),
            "sensing",
        ),
        npz(
            "NaN in x_star",
            Npz::F64(vec![
                ("x_star", vec![2, 3], vec![1., f64::NAN, 0., 0., 0., 0.]),
                ok_sensing(),
            ]),
            "x_star",
        ),
        npz(
            "inf in sensing",
            Npz::F64(vec![
                ok_x(),
                ("sensing", vec![2, 2, 3], vec![f64::INFINITY; 12]),
            ]),
            "sensing",
        ),
        // float32 is read (as its f64 values); integers are refused saying what to write
        npz("integer x_star", Npz::IntXStar, "astype(np.float64)"),
        npz(
            "y of the wrong length",
            Npz::F64(vec![ok_x(), ok_sensing(), ("y", vec![3], vec![0.0; 3])]),
            "`y`",
        ),
        npz(
            "u0 of the wrong shape",
            Npz::F64(vec![
                ok_x(),
                ok_sensing(),
                ("u0", vec![3, 2], vec![0.1; 6]),
                ("v0", vec![3, 2], vec![0.1; 6]),
            ]),
            "u0",
        ),
        npz(
            "v0 inconsistent with u0",
            Npz::F64(vec![
                ok_x(),
                ok_sensing(),
                ("u0", vec![2, 2], vec![0.1; 4]),
                ("v0", vec![3, 1], vec![0.1; 3]),
            ]),
            "v0",
        ),
        npz("not an archive", Npz::Garbage, "problem file"),
    ]
}

#[test]
fn every_bad_input_exits_with_its_status_names_the_field_and_writes_nothing() {
    let cases = cases();
    assert!(cases.len() >= 30);
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut cmd = Command::cargo_bin("gdflow").unwrap();
        cmd.args(case.args).arg("--quiet").arg("--out").arg(&out);
        if let Some(text) = case.toml {
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        if let Some(file) = &case.npz {
            let path = dir.path().join("p.npz");
            write_npz(&path, file);
            cmd.arg("--problem").arg(path);
        }
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(case.code),
            "{}: exit status; stderr: {stderr}",
            case.name
        );
        assert!(
            stderr.contains(case.names),
            "{}: stderr does not name `{}`: {stderr}",
            case.name,
            case.names
        );
        assert!(!stderr.contains("panicked"), "{}: {stderr}", case.name);
        assert!(!out.exists(), "{}: created {}", case.name, out.display());
    }
}

#[test]
fn out_directory_with_files_is_left_untouched_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("summary.json"), b"last week's results").unwrap();
    let small = [
        "run",
        "--n1",
        "6",
        "--n2",
        "5",
        "--rank",
        "1",
        "--measurements",
        "30",
        "--steps",
        "20",
        "--quiet",
    ];
    let output = Command::cargo_bin("gdflow")
        .unwrap()
        .args(small)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("out") && stderr.contains("--force"),
        "{stderr}"
    );
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "nothing added: {names:?}");
    assert_eq!(
        std::fs::read(out.join("summary.json")).unwrap(),
        b"last week's results"
    );
    // with --force the run goes ahead and replaces what it writes
    Command::cargo_bin("gdflow")
        .unwrap()
        .args(small)
        .arg("--force")
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    assert_ne!(
        std::fs::read(out.join("summary.json")).unwrap(),
        b"last week's results"
    );
}

#[test]
fn out_below_a_regular_file_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let output = Command::cargo_bin("gdflow")
        .unwrap()
        .args(["run", "--quiet", "--out"])
        .arg(file.join("sub"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("out"));
}

#[test]
fn width_below_rank_is_allowed_with_a_warning_that_says_why() {
    let output = Command::cargo_bin("gdflow")
        .unwrap()
        .args([
            "run",
            "--quiet",
            "--n1",
            "6",
            "--n2",
            "5",
            "--rank",
            "3",
            "--width",
            "2",
            "--measurements",
            "30",
            "--steps",
            "10",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("width k = 2 < rank r = 3"),
        "{stderr}"
    );
}

#[test]
fn diverging_gd_is_a_result_with_its_step_and_a_finite_csv() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    Command::cargo_bin("gdflow")
        .unwrap()
        .args([
            "run",
            "--quiet",
            "--n1",
            "8",
            "--n2",
            "6",
            "--rank",
            "2",
            "--measurements",
            "40",
        ])
        .args(["--alpha", "0.1", "--eta", "5", "--steps", "200", "--out"])
        .arg(&out)
        .assert()
        .success();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["gd"]["status"], "diverged");
    let step = summary["gd"]["step"].as_u64().unwrap();
    assert!(step > 0 && step < 200, "diverged at step {step}");
    assert_eq!(summary["flow"]["status"], "completed");
    let csv = std::fs::read_to_string(out.join("trajectory.csv")).unwrap();
    let mut gd_steps = 0;
    for line in csv.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        for c in &cells[1..] {
            // empty cells: quantities not computed here (sharpness, the central flow's)
            if c.is_empty() {
                continue;
            }
            let v: f64 = c.parse().unwrap();
            assert!(v.is_finite(), "non-finite cell in {line}");
        }
        if cells[0] == "gd" {
            gd_steps += 1;
            assert!(cells[1].parse::<u64>().unwrap() < step);
        }
    }
    assert_eq!(
        gd_steps, step,
        "every iterate before the divergent one is kept"
    );
}

/// 40·40·700 = 1.12M stored entries: above the size where the operator splits its work
/// across threads.
#[test]
fn trajectory_is_identical_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let run = |threads: &str| {
        let out = dir.path().join(threads);
        Command::cargo_bin("gdflow")
            .unwrap()
            .args([
                "run",
                "--quiet",
                "--n1",
                "40",
                "--n2",
                "40",
                "--measurements",
                "700",
            ])
            .args(["--steps", "30", "--eta", "0.1", "--out"])
            .arg(&out)
            .env("RAYON_NUM_THREADS", threads)
            .assert()
            .success();
        std::fs::read(out.join("trajectory.csv")).unwrap()
    };
    assert_eq!(run("1"), run("2"));
}
