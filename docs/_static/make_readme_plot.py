"""Render docs/_static/training_history.png, the plot shown in README.md.

Run from the repository root: ``python docs/_static/make_readme_plot.py``.
"""

import warnings

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from sknets import MLPClassifier  # noqa: E402
from sknets.inspection import TrainingHistoryDisplay  # noqa: E402

warnings.filterwarnings("ignore", category=ConvergenceWarning)
X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
X_train, _, y_train, _ = train_test_split(
    X, y, train_size=600, stratify=y, random_state=0
)
rng = np.random.RandomState(0)
noisy = rng.rand(len(y_train)) < 0.25
y_train = y_train.copy()
y_train[noisy] = rng.randint(0, 10, noisy.sum())
clf = MLPClassifier(
    (256, 256),
    alpha=0.0,
    max_iter=60,
    learning_rate_init=0.002,
    early_stopping=True,
    validation_fraction=0.3,
    n_iter_no_change=1000,
    random_state=0,
    device="cpu",
).fit(X_train, y_train)
display = TrainingHistoryDisplay.from_estimator(
    clf, name="MLPClassifier, 25% noisy digit labels"
)
display.figure_.set_size_inches(6.4, 3.6)
display.figure_.tight_layout()
display.figure_.savefig("docs/_static/training_history.png", dpi=80)
