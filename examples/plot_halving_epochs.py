"""
=====================================================
Successive halving with epochs as the budget
=====================================================

Successive halving starts every candidate with a small budget, keeps the
best third, gives those three times the budget, and so on. With networks the
natural budget is the number of epochs:
:class:`sknets.model_selection.HalvingGridSearchCV` with
``resource="max_iter"`` trains all candidates of a fold as the members
of stacked networks, eliminates at each rung, and lets the survivors go on
from where they are, where scikit-learn's ``HalvingGridSearchCV`` would
retrain every survivor from scratch at every rung. The rungs, the survivors
and every score are the same as scikit-learn's halving over the same
estimator (``benchmarks/bench_halving.py`` runs both on this grid and prints
the time each took and the largest score difference).

Here: 27 candidates (3 hidden sizes x 3 ``alpha`` x 3 learning rates) on
scikit-learn's digits, rungs of 5, 15, 45 and 135 epochs, 3 folds.
"""

# %%
# The search
# ----------
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from sknets import MLPClassifier
from sknets.model_selection import HalvingGridSearchCV

warnings.filterwarnings("ignore", category=ConvergenceWarning)
torch.set_num_threads(1)  # small networks: one thread per stack is fastest

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)  # float32 data trains in float32

grid = {
    "hidden_layer_sizes": [(32,), (64,), (128,)],
    "alpha": [1e-4, 1e-3, 1e-2],
    "learning_rate_init": [1e-3, 3e-3, 1e-2],
}
search = HalvingGridSearchCV(
    MLPClassifier(random_state=0),
    grid,
    resource="max_iter",
    min_resources=5,
    max_resources=135,
    factor=3,
    cv=3,
    n_jobs=2,
)
start = time.perf_counter()
search.fit(X, y)
print(f"searched in {time.perf_counter() - start:.1f} s")
print("epochs per rung:    ", search.n_resources_)
print("candidates per rung:", search.n_candidates_)
print("members per stack:  ", search.stacking_["stacks"])
print("best:", search.best_params_, f"accuracy {search.best_score_:.3f}")

# %%
# Each candidate's cross-validated accuracy at each rung it reached
# ------------------------------------------------------------------
# One row of ``cv_results_`` per candidate and rung. A candidate's line ends at
# the last rung it was trained to: the eliminated ones stop early, the
# survivors carry on training from their previous rung.
results = pd.DataFrame(search.cv_results_)
results["candidate"] = results["params"].map(
    lambda p: tuple(sorted((k, str(v)) for k, v in p.items() if k != "max_iter"))
)
fig, ax = plt.subplots(figsize=(7, 4.5))
colors = {str(h): f"C{i}" for i, h in enumerate(grid["hidden_layer_sizes"])}
for candidate, rows in results.groupby("candidate", sort=False):
    rows = rows.sort_values("n_resources")
    hidden = dict(candidate)["hidden_layer_sizes"]
    last = rows["iter"].max() == results["iter"].max()
    ax.plot(
        rows["n_resources"],
        rows["mean_test_score"],
        marker="o",
        color=colors[hidden],
        alpha=1.0 if last else 0.35,
        linewidth=2.5 if last else 1.0,
    )
for hidden, color in colors.items():
    ax.plot([], [], color=color, label=f"hidden_layer_sizes={hidden}")
ax.set_xscale("log")
ax.set_xticks(search.n_resources_, [str(r) for r in search.n_resources_])
ax.set_xlabel("epochs (max_iter) at the rung")
ax.set_ylabel("mean accuracy on the held-out folds")
ax.set_title("27 candidates, halved at every rung: survivors train on")
ax.legend(loc="lower right")
fig.tight_layout()
plt.show()

# %%
# The survivors, rung by rung
# ---------------------------
table = results.pivot_table(
    index="candidate", columns="n_resources", values="mean_test_score"
)
table = table.sort_values(list(table.columns)[::-1], ascending=False)
table.index = [", ".join(f"{k}={v}" for k, v in c) for c in table.index]
print(table.head(9).round(3).to_string())
