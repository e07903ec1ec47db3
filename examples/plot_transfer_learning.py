"""
=====================================================
Transfer learning with a pretrained feature extractor
=====================================================

:class:`sknets.PretrainedFeatureExtractor` is a scikit-learn transformer:
images in, the activations of a pretrained network out. Followed by a
``StandardScaler`` and a ``LogisticRegression`` in a ``Pipeline`` it makes a
classifier whose only trained part is linear.

Here the backbone is a ResNet-20 trained on CIFAR-10 (32 x 32 colour
photographs), applied to scikit-learn's 8 x 8 grey digits, which the
extractor resizes to 32 x 32 and repeats over three channels. Its weights are
bundled with sknets (``weights='default'``), so the example runs offline. The
same network with random weights is the baseline.
"""

# %%
# Data and weights
# ----------------
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sknets import PretrainedFeatureExtractor

warnings.filterwarnings("ignore", message=".*lbfgs failed to converge.*")
torch.set_num_threads(1)  # small batches of small images: one thread is enough

digits = load_digits()
images = (digits.images / 16.0).astype(np.float32)  # (n, 8, 8) in [0, 1]
X_train, X_test, y_train, y_test = train_test_split(
    images[:900],
    digits.target[:900],
    train_size=600,
    stratify=digits.target[:900],
    random_state=0,
)


# %%
# Three classifiers
# -----------------
# Logistic regression on the raw pixels, on the features of a randomly
# initialized ResNet-20, and on the features of the pretrained one.


def features_then_linear(weights):
    return make_pipeline(
        PretrainedFeatureExtractor("resnet20_cifar", weights=weights, random_state=0),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    )


scores = {
    "raw pixels": LogisticRegression(max_iter=1000)
    .fit(X_train.reshape(len(X_train), -1), y_train)
    .score(X_test.reshape(len(X_test), -1), y_test),
    "random ResNet-20": features_then_linear(None)
    .fit(X_train, y_train)
    .score(X_test, y_test),
}
scores["pretrained ResNet-20"] = (
    features_then_linear("default").fit(X_train, y_train).score(X_test, y_test)
)
for name, score in scores.items():
    print(f"{name:22s} test accuracy {score:.3f}")

# %%
# What it shows
# -------------
# Features learned on CIFAR-10 photographs are clearly better than those of the
# same network with random weights: the pretraining, not the architecture,
# makes them useful. On 8 x 8 digits, though, the raw pixels are already an
# excellent representation and a linear model on them is hard to beat;
# transfer pays off when the images resemble what the backbone was trained on
# and there are too few labels to train a network from scratch.
# :class:`sknets.FineTunedClassifier` goes one step further and trains the
# backbone too.
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.barh(list(scores), list(scores.values()), color=["C7", "C1", "C0"])
ax.set(xlim=(0.5, 1.0), xlabel="Test accuracy (300 digits)")
for i, score in enumerate(scores.values()):
    ax.text(score + 0.005, i, f"{score:.3f}", va="center")
fig.tight_layout()
plt.show()
