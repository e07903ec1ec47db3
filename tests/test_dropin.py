"""Behaviours of scikit-learn's MLP that sknets' MLPs reproduce, side by side."""

import re
import warnings

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor

from sknets import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.usefixtures("quiet_one_thread")


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.rand(60, 4)
    return X, X @ np.array([1.0, -1.0, 0.5, 2.0]), X[:, 0] > 0.5


def _error(estimator, *args):
    with pytest.raises(ValueError) as info:
        estimator.fit(*args)
    return str(info.value)


@pytest.mark.parametrize(
    "labels, rare", [((True, False), "False"), (("spam", "ham"), "ham")]
)
def test_stratification_errors_name_the_users_labels(data, labels, rare):
    X, _, _ = data
    y = np.array([labels[0]] * (len(X) - 1) + [labels[1]])
    kw = dict(early_stopping=True, max_iter=2)
    theirs = _error(SkMLPClassifier(**kw), X, y)
    ours = _error(MLPClassifier(device="cpu", **kw), X, y)
    # scikit-learn's message; where it names the classes (scikit-learn >= 1.7),
    # the rare label itself, not its code
    assert ours.split(":")[0] == theirs.split(":")[0]
    assert "'0'" not in ours and "'1'" not in ours
    if "Classes with too few members" in theirs:
        assert rare in ours.split(":")[-1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predictions_keep_the_input_precision(data, dtype):
    X, y_reg, y_clf = data
    X = X.astype(dtype)
    kw = dict(max_iter=3, random_state=0)
    pairs = [
        (
            SkMLPRegressor(**kw).fit(X, y_reg).predict(X),
            MLPRegressor(**kw).fit(X, y_reg).predict(X),
        ),
        (
            SkMLPClassifier(**kw).fit(X, y_clf).predict_proba(X),
            MLPClassifier(**kw).fit(X, y_clf).predict_proba(X),
        ),
    ]
    for theirs, ours in pairs:
        assert ours.dtype == theirs.dtype == dtype
        assert ours.shape == theirs.shape
    clf = MLPClassifier(**kw).fit(X, y_clf)
    assert np.allclose(clf.predict_log_proba(X), np.log(clf.predict_proba(X)))
    assert re.match("float", str(clf.predict_log_proba(X).dtype))
    # other input precision at predict time: NumPy's promotion, as scikit-learn
    other = X.astype(np.float64 if dtype == np.float32 else np.float32)
    sk = SkMLPRegressor(**kw).fit(X, y_reg)
    assert (
        MLPRegressor(**kw).fit(X, y_reg).predict(other).dtype == sk.predict(other).dtype
    )


def test_validation_loss_curve_with_early_stopping(data):
    from sklearn.metrics import log_loss

    X, _, y = data
    clf = MLPClassifier(
        early_stopping=True, max_iter=5, n_iter_no_change=100, random_state=0
    ).fit(X, y)
    assert len(clf.validation_loss_curve_) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.validation_loss_curve_ == [r["valid_loss"] for r in clf.history_]
    # the last epoch's weights are the restored best ones only at the best epoch
    last = MLPClassifier(
        early_stopping=True, max_iter=5, n_iter_no_change=100, random_state=0
    )
    last.set_params(max_iter=clf.best_epoch_).fit(X, y)
    assert last.validation_loss_curve_ == clf.validation_loss_curve_[: clf.best_epoch_]
    assert np.isfinite(log_loss(y, clf.predict_proba(X)))
    assert MLPClassifier(max_iter=2).fit(X, y).validation_loss_curve_ is None


@pytest.mark.parametrize("limit", [{"max_fun": 3, "max_iter": 200}, {"max_iter": 2}])
def test_lbfgs_warns_when_its_budget_runs_out(data, limit):
    from sklearn.exceptions import ConvergenceWarning

    X, y, _ = data
    for est in (SkMLPRegressor, MLPRegressor):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est(solver="lbfgs", random_state=0, **limit).fit(X, y)
        assert any(issubclass(w.category, ConvergenceWarning) for w in caught), est
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MLPRegressor(solver="lbfgs", max_iter=500, max_fun=15000, tol=1e-2).fit(X, y)
    assert not any(issubclass(w.category, ConvergenceWarning) for w in caught)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_single_class_fits_as_sklearns(data, early_stopping):
    X, _, _ = data
    # integer labels: scikit-learn < 1.7's own early stopping fails on a single
    # string class (np.isnan on its predictions)
    y = np.full(len(X), 7)
    kw = dict(max_iter=3, early_stopping=early_stopping, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SkMLPClassifier(**kw).fit(X, y)
        ours = MLPClassifier(device="cpu", **kw).fit(X, y)
    assert list(ours.classes_) == list(theirs.classes_)
    assert ours.n_outputs_ == theirs.n_outputs_ == 1
    assert ours.out_activation_ == theirs.out_activation_
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.predict_proba(X).shape == theirs.predict_proba(X).shape
    if early_stopping:
        assert ours.best_validation_score_ == theirs.best_validation_score_ == 1.0
    # and a single string class, which scikit-learn >= 1.7 fits the same way
    names = np.array(["only"] * len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = MLPClassifier(device="cpu", **kw).fit(X, names)
    assert (fitted.predict(X) == "only").all()
