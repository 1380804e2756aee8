"""gdflow from Python: an optimiser beside its continuous limits on low-rank matrix sensing.

Every keyword is a key of gdflow's TOML configuration (the command line's flag with ``_`` for
``-``) and means exactly what the flag means; results equal the command line's files value for
value::

    import gdflow
    p = gdflow.Problem.generate(n1=20, n2=20, rank=2, seed=1)
    r = gdflow.run(problem=p, eta=0.1, steps=300, flow="modified")
    r.trajectory["distance_rel"]      # ‖X_j − X(t_j)‖/‖X*‖ on the method's rows
    r.summary["distance"]["max_relative"]
    df = r.to_pandas()

Runs release the GIL and stop on Ctrl-C within a step; ``progress=True`` shows progress (tqdm
when it is installed).
"""

from __future__ import annotations

import concurrent.futures
import difflib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _gdflow

__all__ = [
    "Problem",
    "RunResult",
    "SweepResult",
    "CheckResult",
    "run",
    "sweep",
    "check",
    "CONFIG_KEYS",
    "SWEEP_KEYS",
    "CHECK_KEYS",
    "__version__",
]

__version__: str = _gdflow.version()

_config, _sweep, _check = _gdflow.keys()
#: Keys of every command (the TOML file's top level).
CONFIG_KEYS: frozenset = frozenset(_config) - {"problem", "save_states"}
#: Keys of :func:`sweep` beside the configuration's (its ``[sweep]`` table).
SWEEP_KEYS: frozenset = frozenset(_sweep)
#: Keys of :func:`check` beside the configuration's (its ``[check]`` table).
CHECK_KEYS: frozenset = frozenset(_check)
#: The keys that describe a generated problem (:meth:`Problem.generate`).
PROBLEM_KEYS: frozenset = frozenset(
    {
        "n1", "n2", "rank", "width", "measurements", "alpha", "kappa", "profile",
        "singular_values", "operator", "sensing_precision", "noise", "seed", "symmetric",
    }
)

PathLike = Union[str, "os.PathLike[str]"]


def _unknown(function: str, key: str, known: Sequence[str]) -> TypeError:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return TypeError(f"{function}() got an unexpected keyword argument `{key}`{hint}")


def _plain(value: Any) -> Any:
    """A keyword's value as JSON: NumPy scalars and arrays, paths and tuples included."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _dumps(keys: Mapping[str, Any]) -> str:
    return json.dumps({k: _plain(v) for k, v in keys.items()}, allow_nan=True)


class Problem:
    """A sensing problem: a target X*, an operator 𝒜, observations y and a start (U0, V0).

    Made by :meth:`generate` (seeded, as the command line generates it), :meth:`load` (a
    ``.npz`` file) or :meth:`from_arrays`; pickles (for executors) as its keys, path or bytes.
    """

    def __init__(self, *, keys=None, path=None, npz=None, label="<arrays>"):
        self._keys: Dict[str, Any] = dict(keys or {})
        self._path: Optional[str] = path
        self._npz: Optional[bytes] = npz
        self._label = label
        self._arrays: Optional[Dict[str, np.ndarray]] = None

    @classmethod
    def generate(cls, **keys: Any) -> "Problem":
        """The problem ``gdflow run`` generates from these keys (n1, n2, rank, width,
        measurements, alpha, kappa, profile, singular_values, operator, sensing_precision,
        noise, seed, symmetric); defaults as the command line's."""
        for k in keys:
            if k not in PROBLEM_KEYS:
                raise _unknown("Problem.generate", k, PROBLEM_KEYS)
        p = cls(keys=keys)
        p._materialise()  # bad values are refused here, not at the first run
        return p

    @classmethod
    def load(cls, path: PathLike) -> "Problem":
        """A problem file (x_star, sensing, and optionally y, u0, v0, alpha), read as
        ``--problem`` reads it."""
        path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"problem file {path} does not exist")
        return cls(path=path)

    @classmethod
    def from_arrays(
        cls,
        *,
        x_star: Any,
        sensing: Any,
        y: Any = None,
        u0: Any = None,
        v0: Any = None,
        alpha: Any = None,
    ) -> "Problem":
        """A problem from NumPy arrays: x_star (n1, n2); sensing (m, n1, n2) or (m, n1·n2)
        (row i is A_i, as ``A.reshape(m, -1)`` lays it out); y (m,) or (m, 1); u0 (n1, k),
        v0 (n2, k); alpha a number. Float32 or float64, C or Fortran order; read exactly as a
        file holding these arrays is read."""
        arrays = {"x_star": x_star, "sensing": sensing, "y": y, "u0": u0, "v0": v0, "alpha": alpha}
        given = {}
        for name, value in arrays.items():
            if value is None:
                continue
            a = np.asarray(value)
            if a.dtype.kind in "iu" and name == "alpha":
                a = a.astype(np.float64)
            if a.dtype not in (np.float32, np.float64):
                raise ValueError(
                    f"`{name}` has dtype {a.dtype}: give float32 or float64 "
                    f"(`{name}.astype(np.float64)`)"
                )
            given[name] = a
        buffer = io.BytesIO()
        np.savez(buffer, **given)
        return cls(npz=buffer.getvalue(), label="<arrays>")

    # -- what a run needs -------------------------------------------------------------------
    def _call(self, keys: Dict[str, Any]) -> tuple:
        """The keys, the npz bytes and the label of a call on this problem."""
        keys = dict(keys)
        for k, v in self._keys.items():
            if k in keys and keys[k] != v:
                raise ValueError(
                    f"`{k}` is a key of the problem (generated with {k}={v!r}): give it to "
                    f"Problem.generate, or generate another problem"
                )
            keys[k] = v
        if self._path is not None:
            keys["problem"] = self._path
        return keys, self._npz, self._label

    def _materialise(self) -> Dict[str, np.ndarray]:
        if self._arrays is None:
            keys, npz, label = self._call({})
            data = _gdflow.problem_npz(_dumps(keys), npz, label)
            with np.load(io.BytesIO(data)) as f:
                self._arrays = {k: f[k] for k in f.files}
        return self._arrays

    @property
    def arrays(self) -> Dict[str, np.ndarray]:
        """x_star, sensing (m, n1, n2), y, u0, v0 (and alpha) as float64, as a run sees them."""
        return dict(self._materialise())

    x_star = property(lambda self: self._materialise()["x_star"], doc="The target X*.")
    sensing = property(lambda self: self._materialise()["sensing"], doc="A_i, (m, n1, n2).")
    y = property(lambda self: self._materialise()["y"], doc="The observations.")
    u0 = property(lambda self: self._materialise()["u0"], doc="The start U0 (n1, k).")
    v0 = property(lambda self: self._materialise()["v0"], doc="The start V0 (n2, k).")

    @property
    def shape(self) -> tuple:
        """(n1, n2, rank r, width k, measurements m)."""
        a = self._materialise()
        n1, n2 = a["x_star"].shape
        return n1, n2, int(np.linalg.matrix_rank(a["x_star"])), a["u0"].shape[1], a["y"].shape[0]

    def save(self, path: PathLike, *, force: bool = False) -> None:
        """Write the problem as a ``.npz`` file the command line reads (``--problem``)."""
        path = os.fspath(path)
        if os.path.exists(path) and not force:
            raise FileExistsError(f"{path} exists: pass force=True to replace it")
        keys, npz, label = self._call({})
        data = _gdflow.problem_npz(_dumps(keys), npz, label)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def __repr__(self) -> str:
        if self._path is not None:
            return f"Problem.load({self._path!r})"
        if self._npz is not None:
            return "Problem.from_arrays(...)"
        args = ", ".join(f"{k}={v!r}" for k, v in self._keys.items())
        return f"Problem.generate({args})"


def _columns(table: Dict[str, Any]) -> Dict[str, np.ndarray]:
    order = table.pop("_order")
    return {k: (np.asarray(table[k], dtype=str) if isinstance(table[k], list) else table[k]) for k in order}


def _pandas(columns: Mapping[str, np.ndarray]):
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_pandas() needs pandas: pip install pandas") from e
    return pd.DataFrame(dict(columns))


class RunResult:
    """What ``gdflow run`` writes: ``trajectory`` (trajectory.csv as column → array),
    ``summary`` (summary.json as a dict), ``states`` (with ``keep_states=True``:
    dynamics → {"U": (records, n1, k), "V": (records, n2, k), "step", "t"}), ``ensemble``
    (with ``replicas=N`` for a stochastic optimizer: ensemble.csv as column → array, columns
    dynamics, step, t, quantity, n, mean, std, ci95; empty otherwise)."""

    def __init__(self, raw: Dict[str, Any]):
        self.trajectory: Dict[str, np.ndarray] = _columns(raw["trajectory"])
        self.summary: Dict[str, Any] = json.loads(raw["summary"])
        self.ensemble: Dict[str, np.ndarray] = _columns(raw["ensemble"]) if "ensemble" in raw else {}
        self.states: Dict[str, Dict[str, np.ndarray]] = {}
        for name, array in raw["states"].items():
            dynamics, _, part = name.rpartition("_")
            if part == "step":
                array = array.astype(np.int64)
            self.states.setdefault(dynamics, {})[part] = array

    def rows(self, dynamics: str) -> Dict[str, np.ndarray]:
        """The columns of one dynamics' rows (``"gd"``, ``"flow"``, ``"gd_mean"``, …)."""
        mask = self.trajectory["dynamics"] == dynamics
        return {k: v[mask] for k, v in self.trajectory.items()}

    def to_pandas(self):
        """trajectory.csv as a pandas DataFrame."""
        return _pandas(self.trajectory)

    def __repr__(self) -> str:
        d = self.summary.get("distance") or {}
        return (
            f"<gdflow.RunResult {self.summary['optimizer']['name']} against "
            f"{self.summary['optimizer']['limit']}: {len(self.trajectory['step'])} rows, "
            f"max ‖X_j − X(t_j)‖/‖X*‖ = {d.get('max_relative', float('nan')):.3g}>"
        )


class SweepResult:
    """What ``gdflow sweep`` writes: ``points`` (sweep.csv), ``deviation`` (deviation.csv),
    ``weak_error`` (weak_error.csv with ``replicas=N`` for a stochastic optimizer: eta, limit,
    weak_error, ci95, resolved, variance_ratio; empty otherwise), ``summary`` (summary.json)."""

    def __init__(self, raw: Dict[str, Any]):
        self.points: Dict[str, np.ndarray] = _columns(raw["points"])
        self.deviation: Dict[str, np.ndarray] = _columns(raw["deviation"])
        self.weak_error: Dict[str, np.ndarray] = _columns(raw["weak_error"]) if "weak_error" in raw else {}
        self.summary: Dict[str, Any] = json.loads(raw["summary"])

    def to_pandas(self):
        """sweep.csv as a pandas DataFrame."""
        return _pandas(self.points)

    def __repr__(self) -> str:
        return f"<gdflow.SweepResult {len(self.points['eta'])} step sizes>"


class CheckResult:
    """What ``gdflow check`` writes: ``rows`` (checks.csv), ``summary``, ``trajectory``."""

    def __init__(self, raw: Dict[str, Any]):
        self.rows: Dict[str, np.ndarray] = _columns(raw["rows"])
        self.summary: Dict[str, Any] = json.loads(raw["summary"])
        self.trajectory: Dict[str, np.ndarray] = _columns(raw["trajectory"])

    @property
    def passed(self) -> bool:
        """Whether every applicable prediction held."""
        return bool(self.summary.get("passed"))

    def to_pandas(self):
        return _pandas(self.rows)


def _progress_display(show: bool) -> Optional[Callable[[str, str, int, int], None]]:
    """A callback that draws the run's progress: tqdm when it is installed, a line on stderr
    otherwise."""
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    state: Dict[str, Any] = {}

    def update(message: str, unit: str, position: int, length: int) -> None:
        if tqdm is not None:
            bar = state.get("bar")
            if bar is None or bar.total != length:
                if bar is not None:
                    bar.close()
                bar = state["bar"] = tqdm(total=length, unit=unit or "it")
            bar.set_description(message, refresh=False)
            bar.n = position
            bar.refresh()
        elif length:
            sys.stderr.write(f"\r{message} {position}/{length} {unit}   ")
            sys.stderr.flush()

    update.close = lambda: state["bar"].close() if state.get("bar") else None  # type: ignore
    return update


def _split(function: str, keys: Mapping[str, Any], extra: frozenset) -> tuple:
    config, other = {}, {}
    for k, v in keys.items():
        if k in extra:
            other[k] = v
        elif k in CONFIG_KEYS:
            config[k] = v
        else:
            raise _unknown(function, k, CONFIG_KEYS | extra)
    return config, other


def _problem(problem: Optional[Problem]) -> Problem:
    if problem is None:
        return Problem()
    if not isinstance(problem, Problem):
        raise TypeError(
            f"problem must be a gdflow.Problem (Problem.generate/load/from_arrays), "
            f"not {type(problem).__name__}"
        )
    return problem


def _call(function: Callable, progress: bool, *args: Any, **kw: Any) -> Dict[str, Any]:
    display = _progress_display(progress)
    try:
        return function(*args, on_progress=display, **kw)
    finally:
        if display is not None:
            display.close()  # type: ignore[attr-defined]


def run(
    problem: Optional[Problem] = None,
    *,
    keep_states: bool = False,
    progress: bool = False,
    force: bool = False,
    **keys: Any,
) -> RunResult:
    """``gdflow run``: the optimiser (``optimizer``, default GD) beside its limit (``flow``).

    ``keys`` are the configuration's keys (eta, steps, record_every, flow, optimizer, rtol,
    out, …). ``keep_states=True`` keeps U and V at every recorded step (``.states``).
    """
    config, _ = _split("run", keys, frozenset())
    if keep_states:
        config["save_states"] = True
    call, npz, label = _problem(problem)._call(config)
    raw = _call(_gdflow.run, progress, _dumps(call), npz, label, force)
    return RunResult(raw)


def _shard(problem: Problem, config: Dict[str, Any], sweep_keys: Dict[str, Any]) -> Dict[str, bytes]:
    """One shard of a sweep, on whichever worker runs it: its files' bytes."""
    with tempfile.TemporaryDirectory(prefix="gdflow-shard-") as tmp:
        out = os.path.join(tmp, "out")
        call, npz, label = problem._call({**config, "out": out})
        _gdflow.sweep(_dumps(call), _dumps(sweep_keys), npz, label, False)
        return {name: Path(out, name).read_bytes() for name in os.listdir(out) if not name.startswith(".")}


def sweep(
    problem: Optional[Problem] = None,
    *,
    etas: Optional[Sequence[float]] = None,
    executor: Optional[concurrent.futures.Executor] = None,
    shards: Optional[int] = None,
    progress: bool = False,
    force: bool = False,
    **keys: Any,
) -> SweepResult:
    """``gdflow sweep``: the method against its limits over step sizes (``etas`` or
    ``eta_range``), with the deviation's order in η.

    ``executor``: any ``concurrent.futures.Executor`` (ProcessPoolExecutor, dask.distributed's
    ``Client``, ray's or submitit's executors). The sweep is split into ``shards`` shards
    (default: one per step size, at most 16), each run there as ``--shard i/N``, and merged; the
    result equals the unsharded sweep's.
    """
    config, sweep_keys = _split("sweep", keys, SWEEP_KEYS)
    if etas is not None:
        sweep_keys["etas"] = list(etas)
    p = _problem(problem)
    if executor is None:
        if shards is not None:
            raise ValueError("`shards` splits the sweep for an executor: give executor= too")
        call, npz, label = p._call(config)
        raw = _call(_gdflow.sweep, progress, _dumps(call), _dumps(sweep_keys), npz, label, force)
        return SweepResult(raw)
    if "shard" in sweep_keys:
        raise ValueError("`shard` and executor= both split the sweep: give one")
    if "out" in config:
        raise ValueError("`out` with executor=: write the merged result yourself, or run without")
    n = shards if shards is not None else min(len(etas), 16) if etas is not None else 4
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"`shards` = {n!r}: give a positive integer")
    futures = [
        executor.submit(_shard, p, config, {**sweep_keys, "shard": f"{i}/{n}"}) for i in range(1, n + 1)
    ]
    with tempfile.TemporaryDirectory(prefix="gdflow-merge-") as tmp:
        dirs = []
        for i, future in enumerate(futures):
            files = future.result()
            d = os.path.join(tmp, f"shard{i}")
            os.makedirs(d)
            for name, data in files.items():
                Path(d, name).write_bytes(data)
            dirs.append(d)
        return SweepResult(_gdflow.merge(dirs))


def check(
    problem: Optional[Problem] = None,
    *,
    progress: bool = False,
    force: bool = False,
    **keys: Any,
) -> CheckResult:
    """``gdflow check``: the theory's predictions tested on a run (``.rows``, ``.passed``)."""
    config, check_keys = _split("check", keys, CHECK_KEYS)
    call, npz, label = _problem(problem)._call(config)
    raw = _call(_gdflow.check, progress, _dumps(call), _dumps(check_keys), npz, label, force)
    return CheckResult(raw)
