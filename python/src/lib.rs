//! `gdflow._gdflow`: the library's experiments for the Python package `gdflow` (python/gdflow).
//!
//! The package passes the keywords of a call as JSON (TOML's keys, snake_case) and a problem
//! as a path, as generator keys or as the bytes of a `.npz` file; this module reads them
//! exactly as the command line reads its flags and files, runs the experiment on a thread of
//! its own with the GIL released, and hands back the tables the command line writes — parsed
//! from the very CSV text, so that every value equals the file's — as NumPy arrays.
//!
//! Ctrl-C: the calling thread wakes every 100 ms to let Python see its signals; on
//! KeyboardInterrupt it asks the library to stop ([`gdflow::dynamics::stop`]), which every
//! step loop honours within a step, and re-raises.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use serde::de::DeserializeOwned;

use gdflow::config::{CheckArgs, ConfigArgs, SweepArgs, CHECK_KEYS, KNOWN_KEYS, SWEEP_KEYS};
use gdflow::dynamics::stop;
use gdflow::experiments::{progress, Command, RunExtras, Setup};
use gdflow::results::table::Table;
use gdflow::results::{check as check_results, run as run_results, sweep as sweep_results};

/// A library error as Python's ValueError, with the command line's message.
fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Keys (a JSON object) as `T`; a value that does not fit names its key.
fn parse_keys<T: DeserializeOwned + Default>(json: &str) -> PyResult<T> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(value_error)?;
    let serde_json::Value::Object(map) = &value else {
        return Err(value_error("keys must be a dict"));
    };
    // one key at a time first, so that an error says which key it is about
    for (k, v) in map {
        let mut one = serde_json::Map::new();
        one.insert(k.clone(), v.clone());
        if let Err(e) = serde_json::from_value::<T>(serde_json::Value::Object(one)) {
            let why = e.to_string();
            let why = why.split(" at line").next().unwrap_or(&why);
            return Err(value_error(format!("invalid value for `{k}`: {why}")));
        }
    }
    serde_json::from_value(value).map_err(value_error)
}

/// The problem: a `.npz` in memory (with the label its errors carry), or whatever the keys
/// say (`problem = path`, or generated).
struct Input {
    args: ConfigArgs,
    npz: Option<(Vec<u8>, String)>,
}

impl Input {
    fn new(keys: &str, npz: Option<Vec<u8>>, label: &str) -> PyResult<Self> {
        Ok(Self {
            args: parse_keys(keys)?,
            npz: npz.map(|b| (b, label.to_string())),
        })
    }
    fn setup(&self, command: Command, force: bool) -> gdflow::Result<Setup> {
        match &self.npz {
            Some((bytes, label)) => Setup::with_problem_bytes(&self.args, command, bytes, label),
            None => Setup::new(&self.args, command, force),
        }
    }
}

/// Run `work` on a thread of its own with the GIL released, showing progress through
/// `on_progress(message, unit, position, length)` every 100 ms; KeyboardInterrupt stops it.
fn in_background<T: Send + 'static>(
    py: Python<'_>,
    on_progress: Option<Bound<'_, PyAny>>,
    work: impl FnOnce() -> gdflow::Result<T> + Send + 'static,
) -> PyResult<T> {
    stop::clear();
    let (tx, rx) = mpsc::channel();
    // a receiver is not Sync: the waits below borrow it from another thread's point of view
    let rx = std::sync::Mutex::new(rx);
    let recv = |timeout: Option<Duration>| {
        let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
        match timeout {
            Some(t) => rx.recv_timeout(t),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        }
    };
    // a pool of its own for every call: a process forked by Python (ProcessPoolExecutor)
    // must not inherit a global pool whose threads did not survive the fork
    let pool = rayon::ThreadPoolBuilder::new()
        .build()
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let handle = std::thread::spawn(move || {
        let _ = tx.send(pool.install(work));
    });
    loop {
        match py.detach(|| recv(Some(Duration::from_millis(100)))) {
            Ok(result) => {
                let _ = handle.join();
                // the last position, so that even a short run shows where it ended
                if let Some(cb) = &on_progress {
                    let (msg, unit, pos, len) = progress::current();
                    cb.call1((msg, unit, pos, len))?;
                }
                return result.map_err(value_error);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    stop::request();
                    let _ = py.detach(|| recv(None));
                    let _ = handle.join();
                    stop::clear();
                    return Err(interrupt);
                }
                if let Some(cb) = &on_progress {
                    let (msg, unit, pos, len) = progress::current();
                    cb.call1((msg, unit, pos, len))?;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let why = match handle.join() {
                    Err(panic) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                    Ok(()) => String::new(),
                };
                return Err(PyRuntimeError::new_err(format!(
                    "gdflow stopped unexpectedly (a bug; please report it): {why}"
                )));
            }
        }
    }
}

/// Set `command` up from `input` and run `experiment` on it off the GIL
/// ([`in_background`]), writing its files with `write` when the keys name an `out`.
fn experiment<'py, R: Send + 'static>(
    py: Python<'py>,
    input: Input,
    command: Command,
    force: bool,
    on_progress: Option<Bound<'py, PyAny>>,
    run: impl FnOnce(&Setup, bool) -> gdflow::Result<R> + Send + 'static,
    write: fn(&R, &Path) -> gdflow::Result<()>,
) -> PyResult<R> {
    let show = on_progress.is_some();
    in_background(py, on_progress, move || {
        let setup = input.setup(command, force)?;
        let result = run(&setup, show)?;
        if let Some(dir) = &setup.config.out {
            write(&result, dir)?;
        }
        Ok(result)
    })
}

/// A CSV table as a dict of column name → NumPy array: integers as int64, numbers as float64
/// (an empty cell is NaN), anything else as a list of str; plus `_order`, the column names.
fn columns<'py>(py: Python<'py>, csv: &[u8], what: &str) -> PyResult<Bound<'py, PyDict>> {
    let table = Table::from_csv(csv, Path::new(what)).map_err(value_error)?;
    let out = PyDict::new(py);
    let order = PyList::empty(py);
    for (c, name) in table.columns.iter().enumerate() {
        let cells: Vec<&str> = table.rows.iter().map(|r| r[c].as_str()).collect();
        let is_int = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'-');
        let value: Bound<'py, PyAny> = if !cells.is_empty() && cells.iter().all(is_int) {
            let v: Vec<i64> = cells.iter().map(|s| s.parse().unwrap_or(0)).collect();
            PyArray1::from_vec(py, v).into_any()
        } else if cells
            .iter()
            .all(|s| s.is_empty() || s.parse::<f64>().is_ok())
        {
            let v: Vec<f64> = cells
                .iter()
                .map(|s| s.parse().unwrap_or(f64::NAN))
                .collect();
            PyArray1::from_vec(py, v).into_any()
        } else {
            PyList::new(py, cells)?.into_any()
        };
        out.set_item(name, value)?;
        order.append(name)?;
    }
    out.set_item("_order", order)?;
    Ok(out)
}

fn json(what: &str, value: &impl serde::Serialize) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| value_error(format!("{what}: {e}")))
}

/// `gdflow run`: the trajectory's columns, summary.json's text, the states when kept.
#[pyfunction]
#[pyo3(signature = (keys, npz=None, label="<arrays>", force=false, on_progress=None))]
fn run<'py>(
    py: Python<'py>,
    keys: &str,
    npz: Option<Vec<u8>>,
    label: &str,
    force: bool,
    on_progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let input = Input::new(keys, npz, label)?;
    let result = experiment(
        py,
        input,
        Command::Run,
        force,
        on_progress,
        |setup, show| {
            let extras = RunExtras {
                progress: show,
                ..RunExtras::default()
            };
            gdflow::run(setup, &extras)
        },
        run_results::write_run,
    )?;
    let out = PyDict::new(py);
    let csv = run_results::trajectory_csv(&result).map_err(value_error)?;
    out.set_item("trajectory", columns(py, &csv, "trajectory.csv")?)?;
    out.set_item("summary", json("summary.json", &result.summary)?)?;
    let states = PyDict::new(py);
    for (name, shape, data) in run_results::states_arrays(&result) {
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let array = PyArray1::from_vec(py, data).reshape(dims)?;
        states.set_item(name, array)?;
    }
    out.set_item("states", states)?;
    if !result.ensemble.is_empty() {
        let csv = gdflow::results::ensemble::ensemble_csv(&result.ensemble).map_err(value_error)?;
        out.set_item("ensemble", columns(py, &csv, "ensemble.csv")?)?;
    }
    Ok(out)
}

/// The files of a sweep as Python values: sweep.csv, deviation.csv (and weak_error.csv) as columns,
/// summary.json as text, and every file's bytes (for the executor's shards).
fn sweep_output<'py>(
    py: Python<'py>,
    result: &gdflow::SweepResult,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let points = sweep_results::sweep_csv(&result.summary).map_err(value_error)?;
    let deviation = sweep_results::deviation_csv(&result.deviations).map_err(value_error)?;
    out.set_item("points", columns(py, &points, "sweep.csv")?)?;
    out.set_item("deviation", columns(py, &deviation, "deviation.csv")?)?;
    if let Some(w) = &result.summary.weak {
        let weak = gdflow::results::ensemble::weak_error_csv(&w.points).map_err(value_error)?;
        out.set_item("weak_error", columns(py, &weak, "weak_error.csv")?)?;
    }
    out.set_item("summary", json("summary.json", &result.summary)?)?;
    Ok(out)
}

/// `gdflow sweep` (one shard of it when `sweep_keys` names one); `out` also writes its files.
#[pyfunction]
#[pyo3(signature = (keys, sweep_keys, npz=None, label="<arrays>", force=false, on_progress=None))]
fn sweep<'py>(
    py: Python<'py>,
    keys: &str,
    sweep_keys: &str,
    npz: Option<Vec<u8>>,
    label: &str,
    force: bool,
    on_progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let input = Input::new(keys, npz, label)?;
    let sweep_args: SweepArgs = parse_keys(sweep_keys)?;
    let result = experiment(
        py,
        input,
        Command::Sweep,
        force,
        on_progress,
        move |setup, show| gdflow::sweep(setup, &sweep_args, show),
        sweep_results::write_sweep,
    )?;
    sweep_output(py, &result)
}

/// `gdflow merge`: the sweep of shard directories, as [`sweep`] returns it.
#[pyfunction]
fn merge<'py>(py: Python<'py>, dirs: Vec<PathBuf>) -> PyResult<Bound<'py, PyDict>> {
    let result = in_background(py, None, move || gdflow::experiments::merge(&dirs))?;
    sweep_output(py, &result)
}

/// `gdflow check`: checks.csv's rows, summary.json's text and the run's trajectory.
#[pyfunction]
#[pyo3(signature = (keys, check_keys, npz=None, label="<arrays>", force=false, on_progress=None))]
fn check<'py>(
    py: Python<'py>,
    keys: &str,
    check_keys: &str,
    npz: Option<Vec<u8>>,
    label: &str,
    force: bool,
    on_progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let input = Input::new(keys, npz, label)?;
    let check_args: CheckArgs = parse_keys(check_keys)?;
    check_results::CheckSettings::resolve(&check_args).map_err(value_error)?;
    let result = experiment(
        py,
        input,
        Command::Check,
        force,
        on_progress,
        move |setup, show| gdflow::check(setup, &check_args, show),
        check_results::write_check,
    )?;
    let out = PyDict::new(py);
    let rows = check_results::checks_csv(&result.summary).map_err(value_error)?;
    out.set_item("rows", columns(py, &rows, "checks.csv")?)?;
    out.set_item("summary", json("summary.json", &result.summary)?)?;
    let csv = run_results::trajectory_csv(&result.run).map_err(value_error)?;
    out.set_item("trajectory", columns(py, &csv, "trajectory.csv")?)?;
    Ok(out)
}

/// The problem the keys describe (generated, or read from `problem`/`npz` and completed as a
/// run would complete it), as the bytes of its `.npz` file.
#[pyfunction]
#[pyo3(signature = (keys, npz=None, label="<arrays>"))]
fn problem_npz<'py>(
    py: Python<'py>,
    keys: &str,
    npz: Option<Vec<u8>>,
    label: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let input = Input::new(keys, npz, label)?;
    let bytes = in_background(py, None, move || {
        input.setup(Command::Run, false)?.problem.to_npz_bytes()
    })?;
    Ok(PyBytes::new(py, &bytes))
}

/// The keys each call takes: (configuration, sweep, check).
#[pyfunction]
fn keys() -> (Vec<&'static str>, Vec<&'static str>, Vec<&'static str>) {
    let config = KNOWN_KEYS
        .iter()
        .copied()
        .filter(|k| !matches!(*k, "sweep" | "check"))
        .collect();
    (config, SWEEP_KEYS.to_vec(), CHECK_KEYS.to_vec())
}

/// The crate's version (provenance).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _gdflow(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(problem_npz, m)?)?;
    m.add_function(wrap_pyfunction!(keys, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
