"""What a user would otherwise write: GD and the gradient flow on a gdflow `.npz` problem with
NumPy and SciPy's DOP853, compared at t_j = j·η (the issue-13 protocol).

    python benches/scipy_reference.py PROBLEM.npz [ETA STEPS RTOL ATOL]

numpy and scipy come from PyPI, installed outside the project for the measurement
(e.g. `python -m venv /tmp/venv && /tmp/venv/bin/pip install numpy scipy`).
"""
import sys
import time

import numpy as np
from scipy.integrate import solve_ivp


def main():
    path = sys.argv[1]
    eta, steps = float(sys.argv[2]) if len(sys.argv) > 2 else 0.25, int(sys.argv[3]) if len(sys.argv) > 3 else 400
    rtol, atol = (float(sys.argv[4]), float(sys.argv[5])) if len(sys.argv) > 5 else (1e-8, 1e-20)
    d = np.load(path)
    x_star, sensing, y, u0, v0 = d["x_star"], d["sensing"], d["y"], d["u0"], d["v0"]
    # the computation is timed from here: after the imports and the problem load, as a
    # notebook user who has both already experiences it
    start = time.perf_counter()
    m, n1, n2 = sensing.shape
    k = u0.shape[1]
    A = sensing.reshape(m, n1 * n2)
    nrhs = [0]

    def grad(U, V):
        r = A @ (U @ V.T).ravel() - y
        return (A.T @ r).reshape(n1, n2), 0.5 * r @ r

    def rhs(t, z):
        nrhs[0] += 1
        U, V = z[: n1 * k].reshape(n1, k), z[n1 * k :].reshape(n2, k)
        G, _ = grad(U, V)
        return np.concatenate([(-G @ V).ravel(), (-G.T @ U).ravel()])

    times = eta * np.arange(steps + 1)
    z0 = np.concatenate([u0.ravel(), v0.ravel()])
    sol = solve_ivp(rhs, (0.0, times[-1]), z0, method="DOP853", t_eval=times, rtol=rtol, atol=atol)

    # GD, and both dynamics' loss and relative error at every t_j, and their distance
    U, V = u0.copy(), v0.copy()
    norm = np.linalg.norm(x_star)
    dist = 0.0
    for j in range(steps + 1):
        G, loss = grad(U, V)
        Uf = sol.y[: n1 * k, j].reshape(n1, k)
        Vf = sol.y[n1 * k :, j].reshape(n2, k)
        Xf = Uf @ Vf.T
        _, loss_flow = grad(Uf, Vf)
        X = U @ V.T
        err_gd, err_flow = np.linalg.norm(X - x_star) / norm, np.linalg.norm(Xf - x_star) / norm
        dist = max(dist, np.linalg.norm(X - Xf))
        U, V = U - eta * G @ V, V - eta * G.T @ U
    seconds = time.perf_counter() - start
    print(f"rel_error GD {err_gd:.3e} flow {err_flow:.3e}, loss {loss:.3e} {loss_flow:.3e}, "
          f"max distance {dist:.4e}, DOP853 {sol.nfev} rhs ({sol.status})")
    print(f"compute_seconds {seconds:.9f}")


if __name__ == "__main__":
    main()
