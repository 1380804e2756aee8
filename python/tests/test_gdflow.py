"""The Python package against the command line, against NumPy computations of its own, and
under the inputs and interruptions a notebook user gives it."""

import concurrent.futures
import csv
import json
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest

import gdflow

SMALL = dict(n1=8, n2=7, rank=2, width=3, measurements=120, seed=3, alpha=0.01)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def assert_table_equals_csv(table, path):
    """Every cell of the CSV file equals the array's value exactly (empty cells are NaN)."""
    header, rows = read_csv(path)
    assert list(table) == header
    for c, name in enumerate(header):
        cells = [r[c] for r in rows]
        column = table[name]
        assert len(column) == len(cells), name
        if column.dtype.kind in "US":
            assert list(column) == cells, name
            continue
        expected = np.array([float(x) if x != "" else np.nan for x in cells])
        np.testing.assert_array_equal(column.astype(float), expected, err_msg=name)


# -- equality with the command line ---------------------------------------------------------

@pytest.mark.parametrize(
    "keys",
    [
        dict(eta=0.1, steps=60, record_every=3),
        dict(eta=0.1, steps=40, flow="modified"),
        dict(eta=0.05, steps=40, optimizer="heavy-ball", momentum=0.5),
    ],
)
def test_run_equals_the_command_line(cli, tmp_path, keys):
    problem = gdflow.Problem.generate(**SMALL)
    result = gdflow.run(problem, **keys)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SMALL, **keys}.items()]
    cli("run", *flags, "--out", tmp_path / "cli", "--quiet")
    assert_table_equals_csv(result.trajectory, tmp_path / "cli" / "trajectory.csv")
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    summary["config"].pop("out")
    for part in ("gd", "flow", "distance", "solver", "optimizer", "problem", "config", "seed"):
        assert result.summary[part] == summary[part], part


def test_loaded_problem_equals_the_command_line(cli, tmp_path):
    path = tmp_path / "p.npz"
    gdflow.Problem.generate(**SMALL).save(path)
    result = gdflow.run(gdflow.Problem.load(path), eta=0.1, steps=30)
    cli("run", "--problem", path, "--eta", 0.1, "--steps", 30, "--out", tmp_path / "o", "--quiet")
    assert_table_equals_csv(result.trajectory, tmp_path / "o" / "trajectory.csv")


def test_sweep_and_check_equal_the_command_line(cli, tmp_path):
    problem = gdflow.Problem.generate(**SMALL)
    s = gdflow.sweep(problem, etas=[0.05, 0.1], horizon=3.0)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    cli("sweep", *flags, "--etas", "0.05,0.1", "--horizon", 3, "--out", tmp_path / "s", "--quiet")
    assert_table_equals_csv(s.points, tmp_path / "s" / "sweep.csv")
    assert_table_equals_csv(s.deviation, tmp_path / "s" / "deviation.csv")
    c = gdflow.check(problem, eta=0.1, steps=50)
    out = cli("check", *flags, "--eta", 0.1, "--steps", 50, "--out", tmp_path / "c", "--quiet",
              check=False)
    assert out.returncode in (0, 3), out.stderr  # 3: a prediction failed
    assert_table_equals_csv(c.rows, tmp_path / "c" / "checks.csv")
    assert c.passed == (out.returncode == 0)


# -- the numbers, against NumPy ---------------------------------------------------------------

def test_states_distance_and_loss_against_numpy():
    problem = gdflow.Problem.generate(**SMALL)
    r = gdflow.run(problem, eta=0.1, steps=50, record_every=5, keep_states=True)
    A = problem.sensing.reshape(problem.sensing.shape[0], -1)
    y, x_star = problem.y, problem.x_star
    gd, flow = r.rows("gd"), r.rows("flow")
    sg, sf = r.states["gd"], r.states["flow"]
    np.testing.assert_array_equal(sg["step"], gd["step"])
    np.testing.assert_array_equal(sf["t"], flow["t"])
    for j in range(len(gd["step"])):
        x = sg["U"][j] @ sg["V"][j].T
        loss = 0.5 * np.sum((A @ x.ravel() - y) ** 2)
        assert abs(loss - gd["loss"][j]) <= 1e-10 * max(loss, 1e-300)
        d = np.linalg.norm(x - sf["U"][j] @ sf["V"][j].T)
        assert abs(d - gd["distance"][j]) <= 1e-10 * max(d, 1e-300) + 1e-15
        assert abs(gd["distance_rel"][j] - d / np.linalg.norm(x_star)) <= 1e-10 * d + 1e-15
    # the start is the problem's
    np.testing.assert_array_equal(sg["U"][0], problem.u0)
    np.testing.assert_array_equal(sg["V"][0], problem.v0)
    # GD's own recursion, written here: U ← U − ηGV, V ← V − ηGᵀU
    u, v = problem.u0.copy(), problem.v0.copy()
    n1, n2 = x_star.shape
    for _ in range(5):
        g = (A.T @ (A @ (u @ v.T).ravel() - y)).reshape(n1, n2)
        u, v = u - 0.1 * g @ v, v - 0.1 * g.T @ u
    np.testing.assert_allclose(sg["U"][1], u, rtol=0, atol=1e-13)


def test_pandas():
    pd = pytest.importorskip("pandas")
    r = gdflow.run(gdflow.Problem.generate(**SMALL), eta=0.1, steps=20)
    df = r.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert set(df["dynamics"]) == {"gd", "flow"}
    assert len(df) == 42


# -- NumPy's ways of writing arrays -------------------------------------------------------------

def _arrays():
    p = gdflow.Problem.generate(**SMALL)
    return dict(x_star=p.x_star, sensing=p.sensing, y=p.y, u0=p.u0, v0=p.v0)


def test_fortran_float32_flat_column_and_scalar_inputs_read_as_the_plain_ones():
    a = _arrays()
    m = a["y"].shape[0]
    plain = gdflow.run(gdflow.Problem.from_arrays(**a), eta=0.1, steps=20)
    fortran = dict(a, sensing=np.asfortranarray(a["sensing"]), u0=np.asfortranarray(a["u0"]))
    flat = dict(a, sensing=a["sensing"].reshape(m, -1), y=a["y"].reshape(m, 1))
    for variant in (fortran, flat):
        r = gdflow.run(gdflow.Problem.from_arrays(**variant), eta=0.1, steps=20)
        np.testing.assert_array_equal(r.trajectory["loss"], plain.trajectory["loss"])
    # float32 inputs are their float64 values
    a32 = {k: v.astype(np.float32) for k, v in a.items()}
    r32 = gdflow.run(gdflow.Problem.from_arrays(**a32), eta=0.1, steps=20)
    r64 = gdflow.run(
        gdflow.Problem.from_arrays(**{k: v.astype(np.float64) for k, v in a32.items()}),
        eta=0.1, steps=20,
    )
    np.testing.assert_array_equal(r32.trajectory["loss"], r64.trajectory["loss"])
    # alpha as NumPy writes a Python scalar (0-d)
    p = gdflow.Problem.from_arrays(x_star=a["x_star"], sensing=a["sensing"], alpha=1e-3)
    assert gdflow.run(p, eta=0.1, steps=5).summary["problem"]["start_scale"] == 1e-3


def test_saved_and_loaded_problem_is_the_same(tmp_path):
    p = gdflow.Problem.generate(**SMALL)
    p.save(tmp_path / "p.npz")
    with pytest.raises(FileExistsError):
        p.save(tmp_path / "p.npz")
    q = gdflow.Problem.load(tmp_path / "p.npz")
    for name in ("x_star", "sensing", "y", "u0", "v0"):
        np.testing.assert_array_equal(getattr(p, name), getattr(q, name))


# -- errors ----------------------------------------------------------------------------------

def test_unknown_keyword_is_a_type_error_naming_the_closest_key():
    with pytest.raises(TypeError, match="`steps`"):
        gdflow.run(stepz=10)
    with pytest.raises(TypeError, match="horizon"):
        gdflow.sweep(horizn=1.0)
    with pytest.raises(TypeError, match="`seed`"):
        gdflow.Problem.generate(sed=1)


@pytest.mark.parametrize(
    "keys, key",
    [
        (dict(eta=-0.1), "eta"),
        (dict(steps="many"), "steps"),
        (dict(flow="sideways"), "flow"),
        (dict(optimizer="adam"), "optimizer"),
        (dict(rtol=2.0), "rtol"),
    ],
)
def test_bad_value_is_a_value_error_naming_the_key(keys, key):
    with pytest.raises(ValueError, match=key):
        gdflow.run(gdflow.Problem.generate(**SMALL), **keys)


def test_bad_arrays_are_refused_saying_what_to_write():
    a = _arrays()
    with pytest.raises(ValueError, match="astype"):
        gdflow.Problem.from_arrays(**dict(a, sensing=a["sensing"].astype(np.int64)))
    with pytest.raises(ValueError, match="sensing"):
        gdflow.run(gdflow.Problem.from_arrays(**dict(a, sensing=a["sensing"][:, :3])), steps=2)


def test_a_key_of_a_generated_problem_is_not_silently_changed():
    with pytest.raises(ValueError, match="seed"):
        gdflow.run(gdflow.Problem.generate(seed=1, **{k: v for k, v in SMALL.items() if k != "seed"}), seed=2)


# -- the GIL, Ctrl-C -------------------------------------------------------------------------------

LONG = dict(n1=40, n2=40, rank=3, measurements=3000, eta=0.01, steps=2_000_000, record_every=1000)


def test_runs_release_the_gil():
    ticks = []
    done = threading.Event()

    def work():
        gdflow.run(**dict(LONG, steps=3000))
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    t.join()
    # the main thread ran throughout: no gap of more than 0.2 s between its ticks
    assert len(ticks) > 20
    assert np.max(np.diff(ticks)) < 0.2


def test_ctrl_c_stops_a_long_run_within_half_a_second():
    def interrupt():
        time.sleep(1.0)
        stamp.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    stamp = []
    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        gdflow.run(**LONG)
    assert time.perf_counter() - stamp[0] < 0.5


def test_progress_is_shown(capsys, monkeypatch):
    # without tqdm: a line on stderr, ending where the run ended
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)
    monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", None)
    gdflow.run(gdflow.Problem.generate(**SMALL), eta=0.1, steps=20, progress=True)
    err = capsys.readouterr().err
    assert "1000/1000" in err, err
    gdflow.run(gdflow.Problem.generate(**SMALL), eta=0.1, steps=20)
    assert capsys.readouterr().err == ""


def test_target_deviation_equals_the_command_line(cli, tmp_path):
    s = gdflow.sweep(gdflow.Problem.generate(**SMALL), etas=[0.05, 0.1], horizon=3.0,
                     target_deviation=0.02)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    cli("sweep", *flags, "--etas", "0.05,0.1", "--horizon", 3, "--target-deviation", 0.02,
        "--out", tmp_path / "s", "--quiet")
    expected = json.loads((tmp_path / "s" / "summary.json").read_text())["target_deviation"]
    got = s.summary["target_deviation"]
    for key in ("eta", "bracket", "deviation", "tolerance", "evaluations", "target"):
        assert got[key] == expected[key], key


# -- executors ----------------------------------------------------------------------------------

ETAS = [0.02, 0.04, 0.06, 0.08]


def test_sweep_on_a_process_pool_equals_the_unsharded_sweep():
    problem = gdflow.Problem.generate(**SMALL)
    whole = gdflow.sweep(problem, etas=ETAS, horizon=3.0)
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        split = gdflow.sweep(problem, etas=ETAS, horizon=3.0, executor=pool)
    for name, column in whole.points.items():
        if name in ("seconds",) or name.endswith("_seconds"):
            continue
        if column.dtype.kind in "US":
            assert list(split.points[name]) == list(column)
        else:
            np.testing.assert_array_equal(split.points[name], column, err_msg=name)
    for name, column in whole.deviation.items():
        np.testing.assert_array_equal(split.deviation[name], column, err_msg=name)


def test_sweep_on_dask_equals_the_unsharded_sweep():
    distributed = pytest.importorskip("dask.distributed")
    problem = gdflow.Problem.generate(**SMALL)
    whole = gdflow.sweep(problem, etas=ETAS, horizon=3.0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        split = gdflow.sweep(problem, etas=ETAS, horizon=3.0, executor=client, shards=2)
    for name in ("eta", "max_dev", "max_dev_modified", "final_dev"):
        np.testing.assert_array_equal(split.points[name], whole.points[name], err_msg=name)


def test_sgd_ensemble_equals_the_command_line(cli, tmp_path):
    keys = dict(eta=0.05, steps=30, record_every=10, optimizer="sgd", batch=12, replicas=6)
    r = gdflow.run(gdflow.Problem.generate(**SMALL), **keys)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SMALL, **keys}.items()]
    cli("run", *flags, "--out", tmp_path / "e", "--quiet")
    assert_table_equals_csv(r.ensemble, tmp_path / "e" / "ensemble.csv")
    assert set(r.ensemble["quantity"]) == {
        "loss", "rel_error", "balance_drift", "distance", "imbalance", "norm_excess"
    }
    assert (r.ensemble["n"] == 6).all()


def test_weak_sweep_equals_the_command_line_and_its_shards(cli, tmp_path):
    """sweep(replicas=N) for SGD gives weak_error.csv's columns; on a process pool (sharded by
    step size, merged) the same, value for value."""
    keys = dict(optimizer="sgd", batch=12, replicas=30, vary="start")
    problem = gdflow.Problem.generate(**SMALL)
    whole = gdflow.sweep(problem, etas=[0.02, 0.04], horizon=0.5, stability_steps=0, **keys)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SMALL, **keys}.items()]
    cli("sweep", *flags, "--etas=0.02,0.04", "--horizon=0.5", "--stability-steps=0",
        "--out", tmp_path / "w", "--quiet")
    assert_table_equals_csv(whole.weak_error, tmp_path / "w" / "weak_error.csv")
    assert set(whole.weak_error["limit"]) >= {"plain", "modified", "sme1", "sme2"}
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        split = gdflow.sweep(problem, etas=[0.02, 0.04], horizon=0.5, stability_steps=0,
                             executor=pool, **keys)
    for name, column in whole.weak_error.items():
        if column.dtype.kind in "US":
            assert list(split.weak_error[name]) == list(column)
        else:
            np.testing.assert_array_equal(split.weak_error[name], column, err_msg=name)
    assert gdflow.sweep(problem, etas=[0.02], horizon=0.5, stability_steps=0).weak_error == {}
