"""callbacks=: skorch callbacks inside the training loop of every network."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from skorch.callbacks import Callback, EarlyStopping, LRScheduler

from sknets import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.usefixtures("quiet_one_thread")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


class Recorder(Callback):
    """Records the epochs and learning rates it sees."""

    def initialize(self):
        self.epochs, self.lrs = [], []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.epochs.append(len(net.history))
        self.lrs.append(net.optimizer_.param_groups[0]["lr"])


KW = dict(hidden_layer_sizes=(8,), max_iter=6, random_state=0, device="cpu")


def test_a_skorch_callback_sees_every_epoch(digits):
    X, y = digits
    recorder = Recorder()
    clf = MLPClassifier(callbacks=[("rec", recorder)], **KW).fit(X, y)
    seen = dict(clf.net_.callbacks_)["rec"]
    assert seen.epochs == list(range(1, clf.n_iter_ + 1)) == list(range(1, 7))
    assert not hasattr(recorder, "epochs")  # the parameter itself is untouched
    assert clf.get_params()["callbacks"][0][1] is recorder
    # copies: two fits do not share a callback's state
    again = MLPClassifier(callbacks=[("rec", recorder)], **KW).fit(X, y)
    assert dict(again.net_.callbacks_)["rec"].epochs == seen.epochs


def test_lr_scheduler_changes_training(digits):
    X, y = digits
    schedule = LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR, T_max=6)
    clf = MLPClassifier(callbacks=[schedule, ("rec", Recorder())], **KW).fit(X, y)
    lrs = dict(clf.net_.callbacks_)["rec"].lrs
    assert lrs[0] < KW.get("learning_rate_init", 1e-3) and lrs == sorted(
        lrs, reverse=True
    )
    plain = MLPClassifier(**KW).fit(X, y)
    assert not np.allclose(clf.coefs_[0], plain.coefs_[0])


def test_skorch_early_stopping_ends_training(digits):
    X, y = digits
    stop = EarlyStopping(monitor="train_loss", patience=1, threshold=10.0)
    reg = MLPRegressor(callbacks=[stop], **{**KW, "max_iter": 50}).fit(X, y * 1.0)
    assert reg.n_iter_ < 50 and len(reg.loss_curve_) == reg.n_iter_


def test_clone_and_pickle(digits):
    X, y = digits
    clf = MLPClassifier(callbacks=[("rec", Recorder())], **KW)
    twin = clone(clf)
    assert (
        twin.get_params()["callbacks"][0][1] is not clf.get_params()["callbacks"][0][1]
    )
    fitted = pickle.loads(pickle.dumps(twin.fit(X, y)))
    assert dict(fitted.net_.callbacks_)["rec"].epochs == list(range(1, 7))


@pytest.mark.parametrize("bad", [[lambda net: None], [("monitor", Recorder())]])
def test_bad_callbacks_are_rejected_before_training(digits, bad):
    X, y = digits
    with pytest.raises((TypeError, ValueError)):
        MLPClassifier(callbacks=bad, **KW).fit(X, y)
