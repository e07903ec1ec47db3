"""
=========================================================
Grid search over epochs, hidden sizes and regularization
=========================================================

The main demo: a ``Pipeline`` of ``StandardScaler`` and
:class:`sknets.MLPClassifier` searched over the number of epochs
(``max_iter``), the hidden layer sizes, the L2 strength (``alpha``) and
``dropout`` on scikit-learn's bundled digits, next to scikit-learn's own
``MLPClassifier`` on the same grid without dropout.

The sknets search is :class:`sknets.model_selection.GridSearchCV`, a drop-in
for scikit-learn's that trains each network once per fold to the largest
``max_iter``, scores the smaller epoch counts on the way, and trains the runs
of networks of one width (all folds, ``alpha`` and ``dropout`` values) as the
members of one stacked network. Its ``cv_results_`` are scikit-learn's
search's over the same estimator (each member even draws the dropout masks of
its own fit).
"""

# %%
# The search
# ----------
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
# Mean test and train accuracy for each ``max_iter`` x ``hidden_layer_sizes``
# ---------------------------------------------------------------------------
# Each cell is the best over the regularization settings (``alpha``, and
# ``dropout`` for sknets).
results = pd.DataFrame(sknets_search.cv_results_)
results["hidden"] = results["param_mlp__hidden_layer_sizes"].astype(str)
table = results.groupby(["param_mlp__max_iter", "hidden"])[
    ["mean_test_score", "mean_train_score"]
].max()
table.index.names = ["max_iter", "hidden_layer_sizes"]
print(table.round(4).to_string())

print(
    f"\nsknets best:  {sknets_search.best_score_:.4f} "
    f"{sknets_search.best_params_}  ({sknets_time:.1f} s, "
    f"{len(results)} candidates)"
)
print(
    f"sklearn best: {sklearn_search.best_score_:.4f} "
    f"{sklearn_search.best_params_}  ({sklearn_time:.1f} s, "
    f"{len(sklearn_search.cv_results_['params'])} candidates)"
)
