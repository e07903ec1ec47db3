"""
=========================================================
Grid search over epochs, hidden sizes and regularization
=========================================================

The main demo: a ``Pipeline`` of ``StandardScaler`` and
:class:`sknets.MLPClassifier` searched over the number of epochs
(``max_iter``), the hidden layer sizes, the L2 strength (``alpha``) and
``dropout`` on scikit-learn's bundled digits, next to scikit-learn's own
``MLPClassifier`` on the same grid without dropout (it has none).

The sknets search is :class:`sknets.model_selection.GridSearchCV`, a drop-in
for scikit-learn's that trains each network once per fold to the largest
``max_iter``, scores the smaller epoch counts on the way, and trains the runs
of networks of one width (all folds, ``alpha`` and ``dropout`` values) as the
members of one stacked network. Its ``cv_results_`` are scikit-learn's
search's over the same estimator (each member even draws the dropout masks of
its own fit).

The script prints one table, the best candidate of each search and what each
search ran, so that the two times compare like with like.
"""

# %%
# The two searches
# ----------------
# The same data, folds (``cv=3``), preprocessing and grid for both; sknets
# adds ``dropout`` in ``[0.0, 0.3]``, so it has twice the candidates. Short
# trainings (5 to 20 epochs) are the point of the grid, so the
# ``ConvergenceWarning`` that both MLPs raise for each of them is switched off.
import time
import warnings

import pandas as pd
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV as SklearnGridSearchCV
from sklearn.neural_network import MLPClassifier as SklearnMLP
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sknets import MLPClassifier
from sknets.model_selection import GridSearchCV

warnings.filterwarnings("ignore", category=ConvergenceWarning)
X, y = load_digits(return_X_y=True)

grid = {
    "mlp__max_iter": [5, 10, 20],
    "mlp__hidden_layer_sizes": [(32,), (128,)],
    "mlp__alpha": [1e-4, 1e-2],
}


def search(search_cls, mlp, extra=None):
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", mlp)])
    gs = search_cls(pipe, {**grid, **(extra or {})}, cv=3, return_train_score=True)
    start = time.perf_counter()
    gs.fit(X, y)
    return gs, time.perf_counter() - start


sknets_search, sknets_time = search(
    GridSearchCV,
    MLPClassifier(random_state=0, device="cpu"),
    {"mlp__dropout": [0.0, 0.3]},
)
sklearn_search, sklearn_time = search(SklearnGridSearchCV, SklearnMLP(random_state=0))

# %%
# Accuracy per hidden size and number of epochs
# ---------------------------------------------
# One row per ``hidden_layer_sizes`` x ``max_iter`` cell, sorted by depth,
# width, then epochs. ``test`` is the mean accuracy on the held-out fold over
# the 3 folds, ``train`` the mean on the training folds; each side shows its
# best candidate of the cell and that candidate's regularization.


def best_per_cell(search, reg):
    """Best candidate of each (hidden sizes, max_iter) cell, by test score."""
    res = search.cv_results_
    best = {}
    for i, params in enumerate(res["params"]):
        cell = (params["mlp__hidden_layer_sizes"], params["mlp__max_iter"])
        if (
            cell not in best
            or res["mean_test_score"][i] > res["mean_test_score"][best[cell]]
        ):
            best[cell] = i
    return {
        cell: {
            "test": f"{res['mean_test_score'][i]:.3f}",
            "train": f"{res['mean_train_score'][i]:.3f}",
            **{name: str(res["params"][i]["mlp__" + name]) for name in reg},
        }
        for cell, i in best.items()
    }


ours = best_per_cell(sknets_search, ["alpha", "dropout"])
theirs = best_per_cell(sklearn_search, ["alpha"])
cells = sorted(ours, key=lambda cell: (len(cell[0]), cell[0], cell[1]))
table = pd.concat(
    {
        "sknets": pd.DataFrame([ours[c] for c in cells]),
        "scikit-learn": pd.DataFrame([theirs[c] for c in cells]),
    },
    axis=1,
)
table.index = pd.MultiIndex.from_tuples(
    [(str(hidden), epochs) for hidden, epochs in cells],
    names=["hidden_layer_sizes", "max_iter"],
)
print(
    f"Digits ({X.shape[0]} images of 8x8 pixels, 10 classes): mean 3-fold "
    "cross-validated accuracy\nof StandardScaler + MLPClassifier, best "
    "regularization per row\n"
)
print(table.to_string())


# %%
# The best candidates and what each search ran
# --------------------------------------------
# A "fit" is one candidate on one training fold, as scikit-learn counts them;
# the times are the whole ``fit`` of each search, refit of the best candidate
# included, on the CPU.
def best_line(name, gs):
    params = ", ".join(
        f"{k.removeprefix('mlp__')}={v}" for k, v in gs.best_params_.items()
    )
    return f"  {name:<13}{gs.best_score_:.3f}  ({params})"


def work_line(name, gs, seconds):
    n_candidates = len(gs.cv_results_["params"])
    n_fits = n_candidates * gs.n_splits_
    return (
        f"  {name:<13}{n_candidates} candidates x {gs.n_splits_} folds = "
        f"{n_fits} fits + 1 refit in {seconds:.1f} s = "
        f"{seconds / (n_fits + 1):.2f} s per fit"
    )


stacks = sknets_search.stacking_["stacks"]
print("\nBest mean test accuracy:")
print(best_line("sknets", sknets_search))
print(best_line("scikit-learn", sklearn_search))
print("\nWork and time:")
print(work_line("sknets", sknets_search, sknets_time))
print(
    f"{'':15}(trained as {sum(stacks)} networks to {max(grid['mlp__max_iter'])} "
    f"epochs in {len(stacks)} stacked networks,\n{'':15}the smaller max_iter "
    "values scored on the way)"
)
print(work_line("scikit-learn", sklearn_search, sklearn_time))
print(
    "sknets ran twice the candidates of scikit-learn (dropout 0.0 and 0.3); "
    "compare the\ntimes per fit, not the totals."
)
