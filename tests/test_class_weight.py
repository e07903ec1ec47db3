"""class_weight on the classifiers: scikit-learn's linear-model semantics."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import model_selection as skms
from sklearn.datasets import load_digits
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.class_weight import compute_sample_weight

from sknets import ConvNetClassifier, MLPClassifier
from sknets.model_selection import GridSearchCV

pytestmark = pytest.mark.usefixtures("quiet_one_thread")


@pytest.fixture(scope="module")
def imbalanced():
    """Digits 0-2 with class 0 kept whole and classes 1, 2 thinned out."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.RandomState(0)
    keep = (
        (y == 0)
        | ((y == 1) & (rng.rand(len(y)) < 0.3))
        | ((y == 2) & (rng.rand(len(y)) < 0.15))
    )
    return X[keep] / 16.0, y[keep]


def _mlp(**params):
    base = dict(
        hidden_layer_sizes=(8,),
        batch_size=32,
        learning_rate_init=0.01,
        max_iter=5,
        random_state=0,
        device="cpu",
    )
    return MLPClassifier(**{**base, **params})


def _assert_same_model(a, b):
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        assert_allclose(wa, wb, rtol=0, atol=1e-12)
    assert_allclose(a.loss_curve_, b.loss_curve_, rtol=0, atol=1e-12)


def test_balanced_is_the_balanced_sample_weight(imbalanced):
    X, y = imbalanced
    balanced = _mlp(class_weight="balanced").fit(X, y)
    weighted = _mlp().fit(X, y, sample_weight=compute_sample_weight("balanced", y))
    _assert_same_model(balanced, weighted)
    plain = _mlp().fit(X, y)
    assert not np.allclose(balanced.coefs_[0], plain.coefs_[0])


def test_dict_multiplies_sample_weight(imbalanced):
    X, y = imbalanced
    sw = np.random.RandomState(1).uniform(0.5, 2.0, size=len(y))
    class_weight = {0: 0.5, 2: 3.0}  # class 1 left out: weight 1
    ours = _mlp(class_weight=class_weight).fit(X, y, sample_weight=sw)
    expected = sw * np.select([y == 0, y == 2], [0.5, 3.0], 1.0)
    _assert_same_model(ours, _mlp().fit(X, y, sample_weight=expected))


def test_balanced_puts_more_probability_on_rare_classes(imbalanced):
    X, y = imbalanced
    plain = _mlp().fit(X, y).predict_proba(X)
    balanced = _mlp(class_weight="balanced").fit(X, y).predict_proba(X)
    # the rare classes 1 and 2 weigh as much as class 0 in the loss
    assert balanced[:, 1:].sum(1).mean() > plain[:, 1:].sum(1).mean()


def test_string_labels_and_multilabel(imbalanced):
    X, y = imbalanced
    names = np.array(["zero", "one", "two"])[y]
    ours = _mlp(class_weight={"two": 4.0}).fit(X, names)
    _assert_same_model(
        ours, _mlp().fit(X, names, sample_weight=np.where(y == 2, 4.0, 1.0))
    )

    Y = np.column_stack([y == 1, y == 2]).astype(int)
    class_weight = [{0: 1.0, 1: 3.0}, {0: 1.0, 1: 5.0}]
    multi = _mlp(class_weight=class_weight).fit(X, Y)
    sw = compute_sample_weight(class_weight, Y)
    _assert_same_model(multi, _mlp().fit(X, Y, sample_weight=sw))


def test_partial_fit_takes_dicts_not_balanced(imbalanced):
    X, y = imbalanced
    with pytest.raises(ValueError, match="not supported for partial_fit"):
        _mlp(class_weight="balanced").partial_fit(X, y, classes=np.unique(y))
    ours = _mlp(class_weight={1: 2.0}).partial_fit(X, y, classes=np.unique(y))
    sw = np.where(y == 1, 2.0, 1.0)
    theirs = _mlp().partial_fit(X, y, classes=np.unique(y), sample_weight=sw)
    _assert_same_model(ours, theirs)


@pytest.mark.parametrize("bad", ["balance", 3, {0: "x"}])
def test_invalid_class_weight_is_rejected_before_training(imbalanced, bad):
    X, y = imbalanced
    with pytest.raises((InvalidParameterError, ValueError, TypeError)):
        _mlp(class_weight=bad).fit(X, y)


def test_convnet_class_weight(imbalanced):
    X, y = imbalanced
    kw = dict(
        filters=(4,),
        hidden_layer_sizes=(),
        input_shape=(1, 8, 8),
        max_iter=2,
        batch_size=32,
        random_state=0,
        device="cpu",
    )
    balanced = ConvNetClassifier(class_weight="balanced", **kw).fit(X, y)
    weighted = ConvNetClassifier(**kw).fit(
        X, y, sample_weight=compute_sample_weight("balanced", y)
    )
    assert_allclose(balanced.predict_proba(X), weighted.predict_proba(X), atol=1e-12)


def test_search_over_class_weight_matches_sklearn(imbalanced):
    X, y = imbalanced
    grid = {"class_weight": [None, "balanced", {1: 3.0}], "max_iter": [2, 4]}
    kw = dict(cv=3, scoring="balanced_accuracy", refit=False)
    ours = GridSearchCV(_mlp(), grid, **kw).fit(X, y)
    theirs = skms.GridSearchCV(_mlp(), grid, **kw).fit(X, y)
    assert ours.stacking_["members"] > 0
    for key in ("mean_test_score", "split0_test_score", "split2_test_score"):
        assert_allclose(ours.cv_results_[key], theirs.cv_results_[key], atol=1e-10)
    assert_array_equal(
        ours.cv_results_["rank_test_score"], theirs.cv_results_["rank_test_score"]
    )
