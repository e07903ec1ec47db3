"""
=============================================================
Regularization compared: where each network starts to overfit
=============================================================

A large network trained long enough on little data memorizes it: the
training loss keeps falling while the validation loss turns and rises. To make
the lesson plain on a small, clean data set, a quarter of the training labels
are replaced by random ones -- noise that a network can only learn by heart.
This example trains the same 256-256 :class:`sknets.MLPClassifier` on 600
such digits five ways -- no regularization, an L2 penalty (``alpha``), an L1 penalty
(``alpha`` with ``l1_ratio=1``), ``dropout``, and a smaller network instead --
and reads the validation loss of every epoch from ``history_``.

``early_stopping=True`` holds out 30% of the training data and records the
validation loss and accuracy each epoch; a very large ``n_iter_no_change``
keeps it from stopping, so every run shows all its epochs, and at the end the
weights of the best-scoring epoch are restored (``best_epoch_``).
"""

# %%
# Data and the five networks
# --------------------------
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from sknets import MLPClassifier
from sknets.inspection import TrainingHistoryDisplay

warnings.filterwarnings("ignore", category=ConvergenceWarning)
torch.set_num_threads(1)  # tiny networks on tiny data: one thread is fastest

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)  # float32 data trains in float32
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=600, stratify=y, random_state=0
)
rng = np.random.RandomState(0)
noisy = rng.rand(len(y_train)) < 0.25
y_train = y_train.copy()
y_train[noisy] = rng.randint(0, 10, noisy.sum())  # the test labels stay clean

common = dict(
    max_iter=60,
    learning_rate_init=0.002,
    early_stopping=True,
    validation_fraction=0.3,
    n_iter_no_change=1000,  # never stop early: show every epoch
    random_state=0,
    device="cpu",
)
models = {
    "none": MLPClassifier((256, 256), alpha=0.0, **common),
    "L2 (alpha=1)": MLPClassifier((256, 256), alpha=1.0, **common),
    "L1 (alpha=0.05)": MLPClassifier((256, 256), alpha=0.05, l1_ratio=1.0, **common),
    "dropout 0.5": MLPClassifier((256, 256), alpha=0.0, dropout=0.5, **common),
    "smaller (16,)": MLPClassifier((16,), alpha=0.0, **common),
}
for model in models.values():
    model.fit(X_train, y_train)

# %%
# Validation loss per epoch
# -------------------------
# The dot on each curve is its lowest validation loss: from there on the
# network fits the training set better and the held-out set worse. (The
# held-out 30% carries the same label noise, so no curve gets near zero.)
# The unregularized network turns first and climbs steepest; dropout delays
# the turn; the L2 and L1 penalties keep the curve flat; the small network is
# still improving after 60 epochs.
fig, ax = plt.subplots(figsize=(7, 4.5))
for name, model in models.items():
    epochs = [row["epoch"] for row in model.history_]
    valid_loss = np.array([row["valid_loss"] for row in model.history_])
    (line,) = ax.plot(epochs, valid_loss, label=name)
    turn = int(valid_loss.argmin())
    ax.plot(epochs[turn], valid_loss[turn], "o", color=line.get_color())
ax.set(xlabel="Epoch", ylabel="Validation loss", ylim=(1.2, 2.2))
ax.set_title("Validation loss, 600 digits with 25% random labels")
ax.legend()
fig.tight_layout()

# %%
# The numbers
# -----------
# ``turns at`` is the epoch of the lowest validation loss; ``rise after`` is
# how much the validation loss grew from there to the last epoch. The test
# accuracy is that of the restored weights of ``best epoch``, which early
# stopping picks by validation *accuracy*, not loss, so the two epochs differ.
rows = []
for name, model in models.items():
    valid_loss = np.array([row["valid_loss"] for row in model.history_])
    rows.append(
        {
            "regularization": name,
            "turns at": int(valid_loss.argmin()) + 1,
            "min valid loss": valid_loss.min(),
            "rise after": valid_loss[-1] - valid_loss.min(),
            "final train loss": model.history_[-1]["train_loss"],
            "best epoch": model.best_epoch_,
            "test accuracy": model.score(X_test, y_test),
        }
    )
print(pd.DataFrame(rows).set_index("regularization").round(3).to_string())

# %%
# Training and validation loss side by side
# -----------------------------------------
# :class:`~sknets.inspection.TrainingHistoryDisplay` draws both losses of one
# network and marks the epoch whose weights early stopping kept. Without
# regularization the training loss falls far below the validation loss as the
# random labels are learned by heart; with dropout the gap opens later and
# less.
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
TrainingHistoryDisplay.from_estimator(models["none"], ax=ax1, name="none")
TrainingHistoryDisplay.from_estimator(models["dropout 0.5"], ax=ax2, name="dropout 0.5")
ax1.set_ylim(0, 2.5)
fig.tight_layout()
plt.show()
