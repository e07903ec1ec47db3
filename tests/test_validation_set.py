"""fit(X, y, X_val=, y_val=, sample_weight_val=): a validation set of one's own."""

import numpy as np
import pytest
import sklearn
from numpy.testing import assert_allclose
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, r2_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sknets import ConvNetClassifier, MLPClassifier, MLPRegressor

pytestmark = pytest.mark.usefixtures("quiet_one_thread")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return X[:300], y[:300], X[300:500], y[300:500]


KW = dict(
    hidden_layer_sizes=(16,),
    learning_rate_init=0.01,
    max_iter=15,
    n_iter_no_change=3,
    tol=1e-3,
    random_state=0,
    device="cpu",
)


def test_early_stopping_on_the_given_set(digits):
    X, y, X_val, y_val = digits
    clf = MLPClassifier(early_stopping=True, **KW).fit(X, y, X_val=X_val, y_val=y_val)
    # the restored (best) model scores exactly its best validation score on X_val
    assert clf.best_validation_score_ == pytest.approx(
        accuracy_score(y_val, clf.predict(X_val)), abs=1e-12
    )
    assert clf.validation_scores_[clf.best_epoch_ - 1] == clf.best_validation_score_
    assert len(clf.validation_loss_curve_) == clf.n_iter_
    # all of X trains (no validation_fraction split): t_ counts every row
    assert clf.t_ == clf.n_iter_ * len(X)


def test_without_early_stopping_the_set_is_scored_each_epoch(digits):
    X, y, X_val, y_val = digits
    clf = MLPClassifier(**KW).fit(X, y, X_val=X_val, y_val=y_val)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.validation_scores_[-1] == pytest.approx(
        accuracy_score(y_val, clf.predict(X_val)), abs=1e-12
    )
    plain = MLPClassifier(**KW).fit(X, y)
    for a, b in zip(clf.coefs_, plain.coefs_, strict=True):
        assert_allclose(a, b, rtol=0, atol=0)  # scoring changes no weight
    assert plain.validation_scores_ is None


def test_sample_weight_val_weighs_the_score(digits):
    X, y, X_val, y_val = digits
    w = np.where(y_val < 5, 3.0, 1.0)
    clf = MLPClassifier(**KW).fit(X, y, X_val=X_val, y_val=y_val, sample_weight_val=w)
    expected = accuracy_score(y_val, clf.predict(X_val), sample_weight=w)
    assert clf.validation_scores_[-1] == pytest.approx(expected, abs=1e-12)


def test_regressor_scores_r2(digits):
    X, _, X_val, _ = digits
    y, y_val = X @ np.arange(64) / 64, X_val @ np.arange(64) / 64
    reg = MLPRegressor(early_stopping=True, **KW).fit(X, y, X_val=X_val, y_val=y_val)
    assert reg.best_validation_score_ == pytest.approx(
        r2_score(y_val, reg.predict(X_val)), abs=1e-9
    )


def test_convnet_takes_a_validation_set(digits):
    X, y, X_val, y_val = digits
    kw = dict(filters=(4,), hidden_layer_sizes=(), input_shape=(1, 8, 8))
    clf = ConvNetClassifier(max_iter=2, random_state=0, device="cpu", **kw)
    clf.fit(X, y, X_val=X_val, y_val=y_val)
    assert len(clf.validation_scores_) == 2


def test_bad_validation_sets_are_rejected_before_training(digits):
    X, y, X_val, y_val = digits
    with pytest.raises(ValueError, match="X_val and y_val go together"):
        MLPClassifier(**KW).fit(X, y, X_val=X_val)
    with pytest.raises(ValueError, match="features"):
        MLPClassifier(**KW).fit(X, y, X_val=X_val[:, :10], y_val=y_val)
    with pytest.raises(ValueError, match="classes not in the training data"):
        MLPClassifier(**KW).fit(X, y, X_val=X_val, y_val=y_val + 10)


def test_pipeline_transforms_the_validation_set(digits):
    X, y, X_val, y_val = digits
    with sklearn.config_context(enable_metadata_routing=True):
        mlp = MLPClassifier(early_stopping=True, **KW).set_fit_request(
            X_val=True, y_val=True
        )
        pipe = Pipeline(
            [("scale", StandardScaler()), ("mlp", mlp)], transform_input=["X_val"]
        )
        pipe.fit(X, y, X_val=X_val, y_val=y_val)
    fitted = pipe.named_steps["mlp"]
    assert fitted.best_validation_score_ == pytest.approx(
        accuracy_score(y_val, pipe.predict(X_val)), abs=1e-12
    )


def test_scoring_is_the_epoch_score_and_the_stopping_criterion(digits):
    from sklearn.metrics import log_loss, mean_squared_error

    X, y, X_val, y_val = digits
    clf = MLPClassifier(early_stopping=True, scoring="neg_log_loss", **KW)
    clf.fit(X, y, X_val=X_val, y_val=y_val)
    assert clf.best_validation_score_ == pytest.approx(
        -log_loss(y_val, clf.predict_proba(X_val), labels=clf.classes_), abs=1e-9
    )
    assert all(s < 0 for s in clf.validation_scores_)
    assert clf.validation_scores_[clf.best_epoch_ - 1] == max(clf.validation_scores_)

    # the internal split, and a callable scorer
    calls = []

    def scorer(est, X_, y_):
        calls.append(len(X_))
        return -np.mean(est.predict(X_) != y_)

    split = MLPClassifier(
        early_stopping=True, validation_fraction=0.2, scoring=scorer, **KW
    ).fit(X, y)
    assert len(calls) == split.n_iter_ and set(calls) == {60}
    assert split.validation_scores_ == [
        -s for s in map(lambda c: -c, split.validation_scores_)
    ]

    reg_y, reg_y_val = X @ np.arange(64) / 64, X_val @ np.arange(64) / 64
    reg = MLPRegressor(early_stopping=True, scoring="neg_mean_squared_error", **KW)
    reg.fit(X, reg_y, X_val=X_val, y_val=reg_y_val)
    assert reg.best_validation_score_ == pytest.approx(
        -mean_squared_error(reg_y_val, reg.predict(X_val)), rel=1e-9
    )


def test_default_scoring_is_scikit_learns(digits):
    X, y, X_val, y_val = digits
    a = MLPClassifier(early_stopping=True, **KW).fit(X, y, X_val=X_val, y_val=y_val)
    b = MLPClassifier(early_stopping=True, scoring="accuracy", **KW)
    b.fit(X, y, X_val=X_val, y_val=y_val)
    assert_allclose(a.validation_scores_, b.validation_scores_, atol=1e-12)
