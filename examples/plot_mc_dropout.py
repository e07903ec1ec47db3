"""
===============================================
Predictive uncertainty with Monte Carlo dropout
===============================================

``predict_proba`` of an :class:`sknets.MLPClassifier` trained with ``dropout``
is deterministic: dropout is active only while training. Keeping it switched
on at prediction time and averaging many stochastic forward passes (Gal and
Ghahramani, 2016) gives a predictive distribution whose spread tells how sure
the network is about each sample.

sknets has no public method for this yet, so the example reaches into the
fitted PyTorch module (``module_``), puts it in training mode, and runs the
passes itself. The network has no batch normalization, so training mode
changes only the dropout layers.
"""

# %%
# A network with dropout
# ----------------------
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from sknets import MLPClassifier

warnings.filterwarnings("ignore", category=ConvergenceWarning)
torch.set_num_threads(1)  # tiny network on tiny data: one thread is fastest

digits = load_digits()
X = (digits.data / 16.0).astype(np.float32)
X_train, X_test, y_train, y_test, img_train, img_test = train_test_split(
    X,
    digits.target,
    digits.images,
    train_size=500,
    stratify=digits.target,
    random_state=0,
)
clf = MLPClassifier(
    (128,),
    dropout=0.3,
    max_iter=40,
    learning_rate_init=0.005,
    random_state=0,
    device="cpu",
).fit(X_train, y_train)
print(f"test accuracy (dropout off): {clf.score(X_test, y_test):.3f}")

# %%
# Many passes with dropout on
# ---------------------------
# ``module_`` returns raw scores (logits); the softmax is applied here. The
# passes are seeded inside ``torch.random.fork_rng`` so the example gives the
# same numbers every run without changing torch's global random state.
module = clf.module_
param = next(module.parameters())
X_t = torch.as_tensor(X_test, dtype=param.dtype, device=param.device)
n_passes = 100
module.train()  # dropout on
try:
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)
        probas = torch.stack(
            [torch.softmax(module(X_t), dim=1) for _ in range(n_passes)]
        )
finally:
    module.eval()  # always back to the deterministic network
probas = probas.double().numpy()  # shape (n_passes, n_samples, n_classes)

mean_proba = probas.mean(axis=0)
y_pred = clf.classes_[mean_proba.argmax(axis=1)]
entropy = -(mean_proba * np.log(np.clip(mean_proba, 1e-12, None))).sum(axis=1)
print(f"test accuracy (MC average): {np.mean(y_pred == y_test):.3f}")

# %%
# Uncertain predictions are the wrong ones
# ----------------------------------------
# Sorting the test digits by the entropy of their averaged prediction and
# keeping only the most certain ones raises the accuracy: the network knows
# where it is guessing.
order = np.argsort(entropy)
kept = np.arange(1, len(order) + 1) / len(order)
accuracy = np.cumsum(y_pred[order] == y_test[order]) / np.arange(1, len(order) + 1)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
wrong = y_pred != y_test
ax1.hist(
    [entropy[~wrong], entropy[wrong]],
    bins=20,
    label=["correct", "wrong"],
    stacked=True,
)
ax1.set(xlabel="Predictive entropy (nats)", ylabel="Test digits")
ax1.legend()
ax2.plot(kept, accuracy)
ax2.set(
    xlabel="Fraction of test digits kept (most certain first)",
    ylabel="Accuracy on the kept digits",
)
fig.tight_layout()

# %%
# The eight most uncertain test digits
# ------------------------------------
# Each title gives the true label, the MC prediction, and the spread (standard
# deviation over the passes) of the predicted class's probability.
fig, axes = plt.subplots(1, 8, figsize=(10, 2))
for ax, i in zip(axes, order[::-1][:8], strict=True):
    k = mean_proba[i].argmax()
    ax.imshow(img_test[i], cmap="gray_r")
    ax.set_title(
        f"true {y_test[i]}\npred {y_pred[i]}\n±{probas[:, i, k].std():.2f}",
        fontsize=9,
    )
    ax.axis("off")
fig.tight_layout()
plt.show()
