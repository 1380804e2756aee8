"""What a user would otherwise write for an SGD ensemble: N replicas of mini-batch SGD on a
gdflow `.npz` problem, vectorised over a replica axis with NumPy (batched matmul), the mean,
standard deviation and 95% interval of the loss and the relative error at every recorded step.

    python benches/numpy_sgd_ensemble.py PROBLEM.npz N BATCH ETA STEPS RECORD_EVERY

Each replica draws its batch of BATCH measurements without replacement at every step; every
replica starts from the problem's u0, v0, as `gdflow run --optimizer sgd --replicas N` does.
A step gathers each replica's rows (N·b rows of the sensing matrix, a copy) — cheaper than two
full (N × n1n2) · (n1n2 × m) products while b ≪ m. A record takes the full residuals of all
replicas in one product (N × n1n2 by n1n2 × m).

numpy comes from PyPI, installed outside the project for the measurement (e.g. `python -m
venv /tmp/venv && /tmp/venv/bin/pip install numpy`). Prints `compute_seconds`, the time after
the imports and the problem load, and the last record's statistics.
"""
import sys
import time

import numpy as np


def main():
    path = sys.argv[1]
    n_rep, batch, eta, steps, every = (
        int(sys.argv[2]),
        int(sys.argv[3]),
        float(sys.argv[4]),
        int(sys.argv[5]),
        int(sys.argv[6]),
    )
    d = np.load(path)
    x_star, sensing, y, u0, v0 = d["x_star"], d["sensing"], d["y"].ravel(), d["u0"], d["v0"]
    start = time.perf_counter()
    m, n1, n2 = sensing.shape
    A = sensing.reshape(m, n1 * n2)
    rng = np.random.default_rng(0)
    U = np.broadcast_to(u0, (n_rep,) + u0.shape).copy()
    V = np.broadcast_to(v0, (n_rep,) + v0.shape).copy()
    target_norm = np.linalg.norm(x_star)
    records = []
    for j in range(steps + 1):
        X = U @ V.transpose(0, 2, 1)  # (N, n1, n2)
        flat = X.reshape(n_rep, -1)
        if j % every == 0 or j == steps:
            R = flat @ A.T - y  # (N, m)
            loss = 0.5 * np.einsum("nm,nm->n", R, R)
            rel = np.linalg.norm(flat - x_star.ravel(), axis=1) / target_norm
            stats = []
            for q in (loss, rel):
                mean, std = q.mean(), q.std(ddof=1) if n_rep > 1 else 0.0
                stats.append((mean, std, 1.96 * std / np.sqrt(n_rep)))
            records.append((j, stats))
        if j == steps:
            break
        # each replica's batch: the b smallest of m uniform draws (without replacement)
        idx = np.argpartition(rng.random((n_rep, m)), batch - 1, axis=1)[:, :batch]
        Ab = A[idx]  # (N, b, n1n2)
        r = (Ab @ flat[:, :, None])[:, :, 0] - y[idx]
        G = (m / batch) * (r[:, None, :] @ Ab)[:, 0, :].reshape(n_rep, n1, n2)
        U, V = U - eta * G @ V, V - eta * G.transpose(0, 2, 1) @ U
    seconds = time.perf_counter() - start
    print(f"compute_seconds {seconds:.6f}")
    j, ((lm, ls, lc), (em, es, ec)) = records[-1]
    print(f"step {j}: loss {lm:.6e} ± {lc:.2e}, rel_error {em:.6e} ± {ec:.2e}")


if __name__ == "__main__":
    main()
