"""gdflow in a notebook: a problem, GD beside its gradient flow, a figure.

    pip install ./python matplotlib      # from the repository root
    python examples/python/quickstart.py # writes quickstart.png
"""
import matplotlib

matplotlib.use("Agg")  # no display needed; drop this line in a notebook
import matplotlib.pyplot as plt

import gdflow

# A rank-2 target of 20×20 seen through 400 Gaussian measurements, small random start.
problem = gdflow.Problem.generate(n1=20, n2=20, rank=2, measurements=400, alpha=1e-3, seed=1)

# GD with η = 0.2 for 300 steps against the gradient flow to t = 60, then its modified flow.
plain = gdflow.run(problem, eta=0.2, steps=300)
modified = gdflow.run(problem, eta=0.2, steps=300, flow="modified")

gd, flow = plain.rows("gd"), plain.rows("flow")
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
left.semilogy(gd["t"], gd["rel_error"], label="GD, η = 0.2")
left.semilogy(flow["t"], flow["rel_error"], "--", label="gradient flow")
left.set(xlabel="t = jη", ylabel="‖X − X*‖ / ‖X*‖", title="relative error")
left.legend()
right.semilogy(gd["t"], gd["distance_rel"], label="to the gradient flow")
right.semilogy(modified.rows("gd")["t"], modified.rows("gd")["distance_rel"],
               label="to the modified flow")
right.set(xlabel="t = jη", ylabel="‖X_j − X(t_j)‖ / ‖X*‖", title="GD's distance to its limits")
right.legend()
fig.savefig("quickstart.png", dpi=150)

print(plain)
print(f"max distance to the gradient flow: {plain.summary['distance']['max_relative']:.2e} of ‖X*‖")
print(f"max distance to the modified flow: {modified.summary['distance']['max_relative']:.2e} of ‖X*‖")
