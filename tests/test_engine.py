"""The core: plan -> skorch net -> history, through skorch's public API.

The fitted ``net_`` is a working skorch net; no estimator parameter is ever
written during a fit; fine-tuning phases run on one validation split; warm
starts keep the split; a failed continuation is rolled back.
"""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, make_multilabel_classification
from sklearn.model_selection import GridSearchCV as SkGridSearchCV

from sknets import (
    ConvNetClassifier,
    FineTunedClassifier,
    MLPClassifier,
    MLPRegressor,
)
from sknets._base import _BaseNet
from sknets._engine import SkorchNet
from sknets._epochs import EpochMonitor
from sknets.model_selection import GridSearchCV

FAST = dict(hidden_layer_sizes=(16,), random_state=0, device="cpu")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:400] / 16).astype(np.float32), y[:400]


def _fitted(kind, digits):
    X, y = digits
    if kind == "multiclass":
        return MLPClassifier(max_iter=3, **FAST).fit(X, y), X
    if kind == "binary":
        return MLPClassifier(max_iter=3, **FAST).fit(X, y % 2), X
    if kind == "multilabel":
        Xm, Y = make_multilabel_classification(n_samples=80, random_state=0)
        return MLPClassifier(max_iter=3, **FAST).fit(Xm, Y), Xm
    if kind == "regression":
        return MLPRegressor(max_iter=3, **FAST).fit(X, y.astype(float)), X
    if kind == "sparse":
        Xs = sp.csr_matrix(X)
        return MLPClassifier(max_iter=3, **FAST).fit(Xs, y), Xs
    if kind == "convnet":
        clf = ConvNetClassifier(
            input_shape=(8, 8), filters=(4,), hidden_layer_sizes=(8,), max_iter=2,
            random_state=0, device="cpu",
        )  # fmt: skip
        return clf.fit(X, y), X
    raise ValueError(kind)


KINDS = ["multiclass", "binary", "multilabel", "regression", "sparse", "convnet"]


# ------------------------------------------------------------------ net_


@pytest.mark.parametrize("kind", KINDS)
def test_net_predicts_like_the_estimator(kind, digits):
    est, X = _fitted(kind, digits)
    assert isinstance(est.net_, SkorchNet)
    if hasattr(est, "predict_proba"):
        np.testing.assert_allclose(
            est.net_.predict_proba(X), est.predict_proba(X), rtol=1e-5, atol=1e-6
        )
        codes = est.net_.predict(X).argmax(1)
        if est.n_outputs_ == len(est.classes_) or est.n_outputs_ == 1:
            if np.ndim(est.classes_) == 1 and kind != "multilabel":
                np.testing.assert_array_equal(est.classes_[codes], est.predict(X))
    else:
        np.testing.assert_allclose(
            est.net_.predict(X).ravel(), est.predict(X), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_net_history_and_params_tell_the_truth(kind, digits):
    est, X = _fitted(kind, digits)
    net = est.net_
    assert len(net.history) == len(est.history_) == est.n_iter_
    assert [row["epoch"] for row in net.history] == [r["epoch"] for r in est.history_]
    np.testing.assert_allclose(net.history[:, "train_loss"], est.loss_curve_)
    params = net.get_params()
    assert params["batch_size"] == min(200, len(X))  # 'auto', resolved
    assert params["max_epochs"] == est.max_iter
    assert params["lr"] == est.learning_rate_init
    assert issubclass(params["optimizer"], torch.optim.Adam)
    assert [name for name, _ in net.callbacks_][-2:] == ["phases", "monitor"]


def test_net_save_params_and_load_params_round_trip(digits, tmp_path):
    est, X = _fitted("multiclass", digits)
    est.net_.save_params(f_params=tmp_path / "w.pt", f_history=tmp_path / "h.json")
    other = clone(est).set_params(max_iter=1, random_state=1).fit(*digits)
    assert not np.allclose(other.predict_proba(X), est.predict_proba(X))
    other.net_.load_params(f_params=tmp_path / "w.pt", f_history=tmp_path / "h.json")
    np.testing.assert_allclose(other.net_.predict_proba(X), est.predict_proba(X))
    assert len(other.net_.history) == len(est.history_)


def test_net_fit_keeps_training_with_skorch(digits):
    """skorch's own ``partial_fit`` on the fitted net goes on training."""
    est, X = _fitted("multiclass", digits)
    before = est.net_.predict_proba(X)
    from sknets._data import ArrayDataset

    data = ArrayDataset(X, np.asarray(digits[1]), dtype=torch.float32)
    est.net_.partial_fit(data, None)
    assert len(est.net_.history) == est.n_iter_ + est.net_.max_epochs
    assert not np.allclose(est.net_.predict_proba(X), before)


def test_validation_rows_are_not_kept_after_fit(digits):
    X, y = digits
    clf = MLPClassifier(max_iter=2, early_stopping=True, **FAST).fit(X, y)
    assert clf.net_.train_split is None
    assert clf.validation_scores_ and len(clf.validation_scores_) == clf.n_iter_


# ------------------------------------------------- parameters are only read


def _watch_parameter_writes(monkeypatch, classes):
    """Record every write to a constructor parameter while a network trains."""
    writes, training = [], []
    original_fit = _BaseNet._fit

    def fit(self, *args, **kwargs):
        training.append(self)
        try:
            return original_fit(self, *args, **kwargs)
        finally:
            training.pop()

    monkeypatch.setattr(_BaseNet, "_fit", fit)
    for cls in classes:
        names = set(cls._get_param_names())
        original = cls.__setattr__

        def spy(self, name, value, _names=names, _original=original):
            if training and name in _names and name in self.__dict__:
                writes.append((type(self).__name__, name))
            _original(self, name, value)

        monkeypatch.setattr(cls, "__setattr__", spy)
    return writes, training


def _ft(**kw):
    params = dict(
        backbone="resnet20_cifar", weights=None, resize=None, head_epochs=2,
        max_iter=4, fine_tune_lr=1e-3, learning_rate_init=1e-2, batch_size=8,
        random_state=0, device="cpu",
    )  # fmt: skip
    params.update(kw)
    return FineTunedClassifier(**params)


def _images(n=16):
    return np.random.RandomState(0).randint(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_no_parameter_is_written_during_any_fit(digits, monkeypatch):
    X, y = digits
    writes, training = _watch_parameter_writes(
        monkeypatch, [MLPClassifier, MLPRegressor, FineTunedClassifier]
    )
    clf = MLPClassifier(max_iter=2, warm_start=True, early_stopping=True, **FAST)
    clf.fit(X, y)
    clf.fit(X, y)  # warm start
    MLPClassifier(max_iter=2, **FAST).partial_fit(X, y, classes=np.unique(y))
    MLPRegressor(max_iter=2, solver="lbfgs", **FAST).fit(X, y.astype(float))
    images, labels = _images(), np.arange(16) % 2
    ft = _ft(early_stopping=True, validation_fraction=0.25).fit(images, labels)
    _ft(warm_start=True).fit(images, labels).fit(images, labels)
    _ft().partial_fit(images, labels, classes=[0, 1]).partial_fit(images, labels)
    GridSearchCV(MLPClassifier(**FAST), {"max_iter": [1, 2]}, cv=2).fit(X, y)
    SkGridSearchCV(MLPClassifier(**FAST), {"alpha": [1e-4, 1e-2]}, cv=2).fit(X, y)
    assert writes == [] and training == []
    params = _ft(early_stopping=True, validation_fraction=0.25).get_params()
    assert ft.get_params() == params


def test_plan_is_immutable(digits):
    X, y = digits
    clf = MLPRegressor(max_iter=1, **FAST)
    plan = clf._make_plan(len(X), incremental=False, first_pass=True, x_dtype=X.dtype)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.batch_size = 1
    with pytest.raises(TypeError):
        plan.optimizer_kwargs["eps"] = 1.0


# ----------------------------------------------------------- validation split


def _record_validation_rows(monkeypatch):
    seen = []
    original = EpochMonitor.on_epoch_end

    def spy(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        seen.append(
            (
                tuple(dataset_train.rows.tolist()),
                None if dataset_valid is None else tuple(dataset_valid.rows.tolist()),
            )
        )
        return original(self, net, dataset_train, dataset_valid, **kwargs)

    monkeypatch.setattr(EpochMonitor, "on_epoch_end", spy)
    return seen


def test_fine_tuning_phases_share_one_validation_split(monkeypatch):
    seen = _record_validation_rows(monkeypatch)
    images, labels = _images(20), np.arange(20) % 2
    clf = _ft(early_stopping=True, validation_fraction=0.25, n_iter_no_change=50)
    clf.fit(images, labels)
    assert len(seen) == clf.n_iter_ == 4  # both phases, one run
    assert len(set(seen)) == 1  # the same train and validation rows every epoch
    train_rows, valid_rows = seen[0]
    assert not set(train_rows) & set(valid_rows)
    assert sorted(train_rows + valid_rows) == list(range(20))
    # the second phase trains the backbone at fine_tune_lr
    assert all(p.requires_grad for p in clf.module_.parameters())
    assert clf.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_fine_tuning_first_phase_converged_moves_on_to_the_second(monkeypatch):
    images, labels = _images(), np.arange(16) % 2
    # tol so large that the head "converges" at once: the phase ends, the run goes on
    clf = _ft(head_epochs=3, max_iter=6, tol=1e9, n_iter_no_change=1).fit(
        images, labels
    )
    assert clf.n_iter_ < 6
    assert all(p.requires_grad for p in clf.module_.parameters())


def test_warm_start_keeps_the_validation_split(digits, monkeypatch):
    X, y = digits
    seen = _record_validation_rows(monkeypatch)
    clf = MLPClassifier(max_iter=2, early_stopping=True, warm_start=True, **FAST)
    clf.fit(X, y)
    clf.fit(X, y)
    assert len(seen) == 4 and len(set(seen)) == 1


def test_failed_partial_fit_is_rolled_back_in_place(digits):
    X, y = digits
    y = y.astype(float)
    reg = MLPRegressor(solver="sgd", learning_rate_init=0.01, **FAST)
    for _ in range(2):
        reg.partial_fit(X, y)
    before = reg.predict(X)
    optimizer = reg.net_.optimizer_
    moments = [
        v.clone() for s in optimizer.state.values() for v in s.values()
        if isinstance(v, torch.Tensor)
    ]  # fmt: skip
    n_epochs = len(reg.net_.history)
    with pytest.raises(ValueError, match="diverged"):
        reg.partial_fit(X * 1e6, y * 1e6)
    np.testing.assert_array_equal(reg.predict(X), before)
    after = [
        v for s in reg.net_.optimizer_.state.values() for v in s.values()
        if isinstance(v, torch.Tensor)
    ]  # fmt: skip
    assert reg.net_.optimizer_ is optimizer and len(after) == len(moments) > 0
    for a, b in zip(after, moments, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(reg.net_.history) == len(reg.history_) == n_epochs
    reg.partial_fit(X, y)  # and it goes on from there
    assert len(reg.history_) == n_epochs + 1


def test_fine_tuned_partial_fit_is_one_phase():
    images, labels = _images(), np.arange(16) % 2
    clf = _ft(fine_tune_lr=1e-3).partial_fit(images, labels, classes=[0, 1])
    assert all(p.requires_grad for p in clf.module_.parameters())  # not frozen
    assert clf.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(1e-2)
    frozen = _ft(fine_tune_lr=None).partial_fit(images, labels, classes=[0, 1])
    assert not any(p.requires_grad for p in frozen.module_.features.parameters())
