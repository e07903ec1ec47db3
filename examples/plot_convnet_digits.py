"""
=================================================
A convolutional network on digits and its filters
=================================================

:class:`sknets.ConvNetClassifier` takes the same flat rows as every
scikit-learn estimator and reshapes them to images itself
(``input_shape=(8, 8)``), so it sits after a scaler in a ``Pipeline`` like any
other classifier. Here it learns 16 convolution filters of 3 x 3 pixels on
scikit-learn's 8 x 8 digits; the learned first-layer filters are in
``filters_`` and are shown as small images.
"""

# %%
# Fit and score
# -------------
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from sknets import ConvNetClassifier, MLPClassifier
from sknets.inspection import TrainingHistoryDisplay

warnings.filterwarnings("ignore", category=ConvergenceWarning)
torch.set_num_threads(1)  # small network on small data: one thread is fastest

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)
cnn = ConvNetClassifier(
    filters=(16,),
    kernel_size=3,
    padding="same",
    hidden_layer_sizes=(64,),
    input_shape=(8, 8),
    max_iter=30,
    learning_rate_init=0.01,
    early_stopping=True,
    n_iter_no_change=1000,  # run all 30 epochs, keep the best one
    random_state=0,
    device="cpu",
).fit(X_train, y_train)
mlp = MLPClassifier(
    (64,), max_iter=30, learning_rate_init=0.01, random_state=0, device="cpu"
).fit(X_train, y_train)
print(f"ConvNetClassifier test accuracy: {cnn.score(X_test, y_test):.3f}")
print(f"MLPClassifier     test accuracy: {mlp.score(X_test, y_test):.3f}")

# %%
# The layers
# ----------
# ``summary()`` lists each layer with its output shape (channels, height,
# width) and parameter count.
print(cnn.summary())

# %%
# Training history
# ----------------
TrainingHistoryDisplay.from_estimator(cnn, metrics=("loss", "score"))

# %%
# The learned first-layer filters
# -------------------------------
# ``filters_`` has shape ``(16, 1, 3, 3)``: 16 filters over the one grey
# channel. Red weights add the pixel's ink to the filter's response, blue ones
# subtract it; most filters are small edge and stroke detectors, and a few
# stay weak (near white): the network did not need them.
filters = cnn.filters_[:, 0]
limit = np.abs(filters).max()
fig, axes = plt.subplots(2, 8, figsize=(8, 2.4))
for k, ax in enumerate(axes.ravel()):
    ax.imshow(filters[k], cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(f"{k}", fontsize=8)
    ax.axis("off")
fig.suptitle("First-layer 3 x 3 filters")
fig.tight_layout()
plt.show()
