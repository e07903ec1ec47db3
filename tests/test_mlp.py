"""Behaviour of MLPClassifier / MLPRegressor: each parameter does what it says."""

import io
import pickle
import re
import warnings
from contextlib import redirect_stdout
from inspect import signature

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn import neural_network
from sklearn.base import clone
from sklearn.datasets import load_digits, make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from sknets import MLPClassifier, MLPRegressor
from sknets._data import ArrayDataset

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = dict(hidden_layer_sizes=(16,), random_state=0, device="cpu")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X)[:600], y[:600]


@pytest.fixture(scope="module")
def regression():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 5))
    y = X @ rng.normal(size=5) + 0.1 * rng.normal(size=300)
    return X, y


def _l2(est):
    return sum(float((c**2).sum()) for c in est.coefs_)


# ----------------------------------------------------------------- drop-in


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (MLPClassifier, neural_network.MLPClassifier),
        (MLPRegressor, neural_network.MLPRegressor),
    ],
)
def test_superset_of_sklearn_parameters_with_equal_defaults(ours, theirs):
    sk_params = theirs().get_params()
    our_params = ours().get_params()
    assert set(sk_params) <= set(our_params)
    for name, value in sk_params.items():
        assert our_params[name] == value, name
    extra = set(our_params) - set(sk_params)
    assert {"l1_ratio", "dropout", "batch_norm", "device"} <= extra


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (MLPClassifier, neural_network.MLPClassifier),
        (MLPRegressor, neural_network.MLPRegressor),
    ],
)
def test_fitted_attributes_match_sklearn(ours, theirs, digits):
    X, y = digits
    if ours is MLPRegressor:
        y = y.astype(float)
    kw = dict(hidden_layer_sizes=(8, 4), max_iter=3, random_state=0)
    a, b = ours(**kw, device="cpu").fit(X, y), theirs(**kw).fit(X, y)
    for attr in (
        "loss_",
        "best_loss_",
        "loss_curve_",
        "t_",
        "n_iter_",
        "n_layers_",
        "n_outputs_",
        "out_activation_",
        "n_features_in_",
    ):
        assert hasattr(a, attr) and hasattr(b, attr), attr
    assert (a.n_iter_, a.t_, a.n_layers_, a.n_outputs_, a.out_activation_) == (
        b.n_iter_,
        b.t_,
        b.n_layers_,
        b.n_outputs_,
        b.out_activation_,
    )
    assert [c.shape for c in a.coefs_] == [c.shape for c in b.coefs_]
    assert [c.shape for c in a.intercepts_] == [c.shape for c in b.intercepts_]
    assert len(a.loss_curve_) == len(b.loss_curve_) == 3


def test_loss_matches_sklearn_definition_at_initialization(digits):
    """With the network's own weights copied into sklearn's MLP, both losses agree."""
    X, y = digits
    ours = MLPClassifier(
        hidden_layer_sizes=(8,),
        max_iter=1,
        alpha=0.1,
        solver="sgd",
        learning_rate_init=1e-12,
        batch_size=600,
        shuffle=False,
        **{k: v for k, v in FAST.items() if k != "hidden_layer_sizes"},
    ).fit(X, y)
    theirs = neural_network.MLPClassifier(
        hidden_layer_sizes=(8,), max_iter=1, alpha=0.1
    ).fit(X, y)
    theirs.coefs_, theirs.intercepts_ = ours.coefs_, ours.intercepts_
    theirs._label_binarizer.fit(y)
    Y = theirs._label_binarizer.transform(y)
    # scikit-learn 1.7 added sample_weight to this private method
    has_weights = "sample_weight" in signature(theirs._backprop).parameters
    weights = [None] if has_weights else []
    loss, *_ = theirs._backprop(
        X,
        Y,
        *weights,
        [X] + [None] * 2,
        [None] * 2,
        [np.empty_like(c) for c in ours.coefs_],
        [np.empty_like(c) for c in ours.intercepts_],
    )
    assert ours.loss_ == pytest.approx(loss, rel=1e-6)


# ------------------------------------------------------------------ targets


def test_binary_multiclass_and_string_labels(digits):
    X, y = digits
    labels = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )[y]
    clf = MLPClassifier(max_iter=50, **FAST).fit(X, labels)
    assert clf.out_activation_ == "softmax"
    assert set(clf.predict(X)) <= set(labels)
    assert clf.score(X, labels) > 0.9
    proba = clf.predict_proba(X)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))

    binary = MLPClassifier(max_iter=50, **FAST).fit(X, y > 4)
    assert binary.out_activation_ == "logistic" and binary.n_outputs_ == 1
    assert binary.predict_proba(X).shape == (len(X), 2)
    assert binary.score(X, y > 4) > 0.85


def test_multilabel_indicator_targets():
    X, Y = make_multilabel_classification(n_samples=300, n_classes=4, random_state=0)
    clf = MLPClassifier(max_iter=200, learning_rate_init=0.01, **FAST).fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4
    pred = clf.predict(X)
    assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}
    assert clf.predict_proba(X).shape == Y.shape
    assert clf.score(X, Y) > 0.6  # subset accuracy


def test_single_and_multi_output_regression(regression):
    X, y = regression
    reg = MLPRegressor(max_iter=300, learning_rate_init=0.01, **FAST).fit(X, y)
    assert reg.predict(X).shape == (300,)
    assert reg.score(X, y) > 0.95
    Y = np.c_[y, -2 * y]
    multi = MLPRegressor(max_iter=300, learning_rate_init=0.01, **FAST).fit(X, Y)
    assert multi.predict(X).shape == (300, 2) and multi.n_outputs_ == 2
    assert multi.score(X, Y) > 0.95


def test_poisson_loss_predicts_positive_counts():
    rng = np.random.RandomState(0)
    X = rng.uniform(size=(300, 3))
    y = rng.poisson(np.exp(X @ np.array([1.0, -1.0, 0.5])))
    reg = MLPRegressor(
        loss="poisson", max_iter=200, learning_rate_init=0.01, **FAST
    ).fit(X, y)
    assert reg.out_activation_ == "exp"
    assert (reg.predict(X) > 0).all()
    with pytest.raises(ValueError, match="non-negative"):
        MLPRegressor(loss="poisson", **FAST).fit(X, -y - 1.0)


# ------------------------------------------------------------ regularization


def test_larger_alpha_shrinks_weights(digits):
    X, y = digits
    small = MLPClassifier(alpha=1e-5, max_iter=50, learning_rate_init=0.01, **FAST).fit(
        X, y
    )
    large = MLPClassifier(alpha=10.0, max_iter=50, learning_rate_init=0.01, **FAST).fit(
        X, y
    )
    assert _l2(large) < 0.5 * _l2(small)


def test_l1_ratio_gives_sparser_weights(digits):
    X, y = digits
    kw = dict(alpha=1.0, max_iter=50, learning_rate_init=0.01, **FAST)
    l2 = MLPClassifier(l1_ratio=0.0, **kw).fit(X, y)
    l1 = MLPClassifier(l1_ratio=1.0, **kw).fit(X, y)
    l1_norm = lambda est: sum(np.abs(c).sum() for c in est.coefs_)  # noqa: E731
    near_zero = lambda est: np.mean(np.abs(est.coefs_[0]) < 1e-2)  # noqa: E731
    assert l1_norm(l1) < l1_norm(l2)
    assert near_zero(l1) > near_zero(l2)


def test_dropout_changes_training_but_predict_is_deterministic(digits):
    X, y = digits
    plain = MLPClassifier(max_iter=10, **FAST).fit(X, y)
    dropped = MLPClassifier(max_iter=10, dropout=0.5, **FAST).fit(X, y)
    assert not np.allclose(plain.coefs_[0], dropped.coefs_[0])
    assert dropped.loss_ > plain.loss_  # noisier training loss
    np.testing.assert_array_equal(dropped.predict_proba(X), dropped.predict_proba(X))


def test_dropout_per_layer_and_batch_norm_layers(digits):
    X, y = digits
    clf = MLPClassifier(
        hidden_layer_sizes=(16, 8),
        dropout=(0.1, 0.2),
        batch_norm=True,
        max_iter=5,
        random_state=0,
        device="cpu",
    ).fit(X, y)
    table = clf.summary()
    assert list(table["type"]).count("BatchNorm1d") == 2
    assert list(table["type"]).count("Dropout") == 2
    assert [m.p for m in clf.module_.modules() if isinstance(m, torch.nn.Dropout)] == [
        0.1,
        0.2,
    ]
    with pytest.raises(ValueError, match="dropout has 3 values"):
        MLPClassifier(hidden_layer_sizes=(16, 8), dropout=(0.1, 0.1, 0.1)).fit(X, y)


# ------------------------------------------------------------------ training


def test_early_stopping_restores_best_weights(digits):
    X, y = digits
    clf = MLPClassifier(
        early_stopping=True,
        max_iter=200,
        n_iter_no_change=3,
        learning_rate_init=0.05,
        **FAST,
    ).fit(X, y)
    assert clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_ < 200
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_epoch_ == 1 + int(np.argmax(clf.validation_scores_))
    # the restored model reproduces the best validation score on the same split
    from sklearn.model_selection import train_test_split

    _, X_val, _, y_val = train_test_split(
        X, y, test_size=0.1, random_state=_split_rng()
    )
    assert clf.score(X_val, y_val) == pytest.approx(clf.best_validation_score_)


def _split_rng():
    rng = np.random.RandomState(0)
    rng.randint(np.iinfo(np.int32).max, size=2)  # the two torch seeds drawn first
    return rng


def test_tol_stops_training_early(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = MLPClassifier(max_iter=500, tol=1e-2, n_iter_no_change=2, **FAST).fit(
            X, y
        )
    assert clf.n_iter_ < 500
    assert clf.best_loss_ == min(clf.loss_curve_)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(max_iter=2, **FAST).fit(X, y)


def test_warm_start_continues_training(digits):
    X, y = digits
    clf = MLPClassifier(max_iter=5, warm_start=True, **FAST).fit(X, y)
    first = clf.loss_curve_[-1]
    clf.fit(X, y)
    assert len(clf.loss_curve_) == 10
    assert clf.loss_curve_[5] < clf.loss_curve_[0]
    assert clf.loss_ < first
    cold = MLPClassifier(max_iter=5, **FAST).fit(X, y)
    cold.fit(X, y)
    assert len(cold.loss_curve_) == 5


def test_partial_fit_trains_one_epoch(digits):
    X, y = digits
    clf = MLPClassifier(**FAST)
    clf.partial_fit(X, y, classes=np.unique(y))
    assert clf.n_iter_ == 1 and clf.t_ == len(X)
    before = clf.coefs_[0].copy()
    clf.partial_fit(X, y)
    assert clf.t_ == 2 * len(X) and len(clf.loss_curve_) == 2
    assert clf.loss_curve_[1] < clf.loss_curve_[0]
    assert not np.allclose(before, clf.coefs_[0])
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X, y + 100)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    reg = MLPRegressor(**FAST).partial_fit(X, y.astype(float))
    assert reg.n_iter_ == 1


def test_sgd_learning_rate_schedules(digits):
    X, y = digits
    inv = MLPClassifier(
        solver="sgd",
        learning_rate="invscaling",
        max_iter=3,
        learning_rate_init=0.1,
        **FAST,
    ).fit(X, y)
    lr = inv.net_.optimizer_.param_groups[0]["lr"]
    assert lr == pytest.approx(0.1 / (inv.t_ + 1) ** 0.5)
    adaptive = MLPClassifier(
        solver="sgd",
        learning_rate="adaptive",
        max_iter=60,
        tol=10.0,
        n_iter_no_change=1,
        learning_rate_init=0.1,
        **FAST,
    ).fit(X, y)
    assert adaptive.net_.optimizer_.param_groups[0]["lr"] < 0.1 / 5


def test_lbfgs_solver(regression):
    X, y = regression
    reg = MLPRegressor(solver="lbfgs", max_iter=200, **FAST).fit(X, y)
    assert reg.score(X, y) > 0.99
    assert 1 <= reg.n_iter_ <= 200
    assert not hasattr(reg, "loss_curve_")


def test_sample_weight_zero_equals_dropping_samples(digits):
    X, y = digits
    w = np.ones(len(X))
    w[::3] = 0
    kw = dict(max_iter=5, batch_size=1000, shuffle=False, **FAST)
    weighted = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    dropped = MLPClassifier(**kw).fit(X[w > 0], y[w > 0])
    np.testing.assert_allclose(
        weighted.predict_proba(X), dropped.predict_proba(X), rtol=1e-6, atol=1e-8
    )


def test_diverging_loss_raises_and_keeps_previous_model(regression):
    X, y = regression
    with pytest.raises(ValueError, match="diverged"):
        MLPRegressor(solver="sgd", learning_rate_init=1e6, max_iter=50, **FAST).fit(
            X * 1e3, y * 1e3
        )
    est = MLPRegressor(solver="sgd", max_iter=5, warm_start=True, **FAST).fit(X, y)
    before = est.predict(X)
    est.set_params(learning_rate_init=1e6)
    with pytest.raises(ValueError, match="diverged"):
        est.fit(X * 1e3, y * 1e3)
    np.testing.assert_array_equal(est.predict(X), before)
    assert np.isfinite(est.coefs_[0]).all()


def test_keyboard_interrupt_keeps_completed_epochs(digits):
    X, y = digits

    def interrupt(epoch, net, monitor, stopping):
        if epoch == 3:
            raise KeyboardInterrupt

    clf = MLPClassifier(max_iter=20, **FAST)
    clf._validate_params()
    clf._fit(X, y, None, incremental=False, epoch_callback=interrupt)
    assert clf.n_iter_ == 3 and len(clf.history_) == 3
    three = MLPClassifier(max_iter=3, **FAST).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), three.predict_proba(X))


@pytest.mark.parametrize("early_stopping", [False, True])
def test_verbose_prints_scikit_learns_lines(digits, early_stopping):
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    X, y = digits
    kw = dict(max_iter=4, verbose=1, early_stopping=early_stopping, tol=10.0)
    kw["n_iter_no_change"] = 2

    def shape_of(est):
        out = io.StringIO()
        with redirect_stdout(out):
            est.fit(X, y)
        # the numbers differ (another implementation); the lines do not
        lines = out.getvalue().splitlines()
        return [re.sub(r"\d+(\.\d+)?", "N", line) for line in lines]

    ours = shape_of(MLPClassifier(**kw, **FAST))
    theirs = shape_of(SkMLPClassifier(random_state=0, **kw))
    assert ours == theirs
    assert ours[0] == "Iteration N, loss = N" and ours[-1].endswith("Stopping.")
    quiet = io.StringIO()
    with redirect_stdout(quiet):
        MLPClassifier(max_iter=2, **FAST).fit(X, y)
    assert quiet.getvalue() == ""


def test_history_records_each_epoch(digits):
    X, y = digits
    clf = MLPClassifier(
        max_iter=6, early_stopping=True, n_iter_no_change=100, **FAST
    ).fit(X, y)
    assert [r["epoch"] for r in clf.history_] == list(range(1, 7))
    assert all(
        {"train_loss", "valid_loss", "valid_score", "dur"} <= set(r)
        for r in clf.history_
    )
    assert [r["train_loss"] for r in clf.history_] == clf.loss_curve_


# --------------------------------------------------------------------- input


def test_pandas_input_sets_feature_names(digits):
    X, y = digits
    df = pd.DataFrame(X, columns=[f"px{i}" for i in range(X.shape[1])])
    clf = MLPClassifier(max_iter=3, **FAST).fit(df, pd.Series(y))
    np.testing.assert_array_equal(clf.feature_names_in_, df.columns)
    np.testing.assert_array_equal(clf.predict(df), clf.predict(X))


def test_list_input(digits):
    X, y = digits
    clf = MLPClassifier(max_iter=3, **FAST).fit(X[:50].tolist(), y[:50].tolist())
    assert clf.predict(X[:5].tolist()).shape == (5,)


def test_sparse_input_matches_dense_and_densifies_per_batch(digits, monkeypatch):
    X, y = digits
    X = np.where(np.abs(X) > 1, X, 0.0)
    kw = dict(max_iter=3, batch_size=64, **FAST)
    dense = MLPClassifier(**kw).fit(X, y)
    rows = []
    original = ArrayDataset.take

    def spy(self, index):
        Xb, rest = original(self, index)
        if self.sparse:
            rows.append(Xb.shape[0])
        return Xb, rest

    monkeypatch.setattr(ArrayDataset, "take", spy)
    sparse = MLPClassifier(**kw).fit(sp.csr_matrix(X), y)
    assert rows and max(rows) <= 64
    np.testing.assert_allclose(
        sparse.predict_proba(sp.csc_matrix(X)),
        dense.predict_proba(X),
        rtol=1e-6,
        atol=1e-9,
    )


def test_dtype_follows_input_or_is_forced(digits):
    X, y = digits
    c64 = MLPClassifier(max_iter=2, **FAST).fit(X, y)
    c32 = MLPClassifier(max_iter=2, **FAST).fit(X.astype(np.float32), y)
    forced = MLPClassifier(max_iter=2, dtype="float32", **FAST).fit(X, y)
    assert c64.coefs_[0].dtype == np.float64
    assert c32.coefs_[0].dtype == np.float32
    assert forced.coefs_[0].dtype == np.float32
    assert c32.predict_proba(X).dtype == np.float64


def test_float32_input_is_not_copied(digits):
    X, y = digits
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    data = ArrayDataset(X32, y, device="cpu", dtype=torch.float32)
    assert data.X.data_ptr() == X32.ctypes.data


# ------------------------------------------------------------------ contract


def test_same_random_state_same_model_and_clone_refit(digits):
    X, y = digits
    a = MLPClassifier(max_iter=5, dropout=0.2, **FAST).fit(X, y)
    b = MLPClassifier(max_iter=5, dropout=0.2, **FAST).fit(X, y)
    c = clone(a).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.predict_proba(X), c.predict_proba(X))
    other = MLPClassifier(max_iter=5, dropout=0.2, **{**FAST, "random_state": 1}).fit(
        X, y
    )
    assert not np.allclose(a.predict_proba(X), other.predict_proba(X))


def test_fit_leaves_global_torch_rng_untouched(digits):
    X, y = digits
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    MLPClassifier(max_iter=2, dropout=0.3, **FAST).fit(X, y)
    np.testing.assert_array_equal(torch.rand(3), expected)


def test_pickle_and_joblib_round_trip(digits, tmp_path):
    X, y = digits
    clf = MLPClassifier(max_iter=3, **FAST).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    joblib.dump(clf, tmp_path / "m.joblib")
    loaded = joblib.load(tmp_path / "m.joblib")
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    stopped = MLPClassifier(max_iter=3, early_stopping=True, **FAST).fit(X, y)
    assert stopped.net_.train_split is None  # the validation rows are not kept
    assert len(pickle.dumps(stopped)) < X.nbytes / 4  # nor any training data


def test_unfitted_raises_not_fitted(digits):
    X, _ = digits
    for method in ("predict", "predict_proba", "summary"):
        with pytest.raises(NotFittedError):
            m = getattr(MLPClassifier(), method)
            m() if method == "summary" else m(X)


@pytest.mark.parametrize(
    "X_bad, y_bad, match",
    [
        (np.array([[np.nan, 1.0]] * 4), [0, 1, 0, 1], "NaN"),
        (np.array([[np.inf, 1.0]] * 4), [0, 1, 0, 1], "infinity"),
        (np.array([1.0, 2.0, 3.0, 4.0]), [0, 1, 0, 1], "2D array"),
        (np.empty((0, 3)), [], "0 sample"),
        (np.ones((4, 2)), [0, 1, 0], "inconsistent numbers of samples"),
    ],
)
def test_bad_input_raises_before_training(X_bad, y_bad, match, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr("sknets._engine.SkorchNet.partial_fit", boom)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**FAST).fit(X_bad, y_bad)


def test_wrong_n_features_at_predict(digits):
    X, y = digits
    clf = MLPClassifier(max_iter=2, **FAST).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :10])


@pytest.mark.parametrize(
    "params",
    [
        {"hidden_layer_sizes": (0,)},
        {"hidden_layer_sizes": (-3, 4)},
        {"alpha": -1.0},
        {"batch_size": 0},
        {"batch_size": 1.5},
        {"dropout": 1.0},
        {"dropout": -0.1},
        {"l1_ratio": 2.0},
        {"solver": "rmsprop"},
        {"device": "tpu"},
        {"device": "cuda:7"},
        {"dtype": "float16"},
    ],
)
def test_invalid_parameters_are_value_errors(params, digits):
    X, y = digits
    with pytest.raises((ValueError, InvalidParameterError)):
        MLPClassifier(**{**FAST, **params}).fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error(digits):
    X, y = digits
    with pytest.raises(ValueError, match="CUDA is not available"):
        MLPClassifier(device="cuda").fit(X, y)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_matches_cpu_closely(digits):
    X, y = digits
    gpu = MLPClassifier(max_iter=5, **{**FAST, "device": "cuda"}).fit(X, y)
    cpu = MLPClassifier(max_iter=5, **FAST).fit(X, y)
    assert next(gpu.module_.parameters()).is_cuda
    assert (gpu.predict(X) == cpu.predict(X)).mean() > 0.95


@pytest.mark.slow
def test_issue_grid_search_beats_sklearn_on_digits():
    """The issue's grid: sknets with dropout >= sklearn's MLP without it."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    X, y = load_digits(return_X_y=True)
    grid = {
        "mlp__max_iter": [5, 10, 20],
        "mlp__hidden_layer_sizes": [(32,), (128,)],
        "mlp__alpha": [1e-4, 1e-2],
    }

    def best(mlp, extra):
        pipe = Pipeline([("scale", StandardScaler()), ("mlp", mlp)])
        return GridSearchCV(pipe, {**grid, **extra}, cv=3).fit(X, y).best_score_

    ours = best(
        MLPClassifier(random_state=0, device="cpu"), {"mlp__dropout": [0.0, 0.3]}
    )
    theirs = best(neural_network.MLPClassifier(random_state=0), {})
    assert ours >= theirs


def test_batches_are_sliced_not_collated_per_sample(digits, monkeypatch):
    X, y = digits

    def per_sample(self, i):
        raise AssertionError("per-sample __getitem__ on the training path")

    monkeypatch.setattr(ArrayDataset, "__getitem__", per_sample)
    clf = MLPClassifier(max_iter=2, batch_size=32, **FAST).fit(X, y)
    assert clf.predict(X).shape == (len(X),)


def test_verbose_2_shows_a_batch_progress_bar(digits, monkeypatch):
    import tqdm.auto

    updates = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total = total

        def update(self, n=1):
            updates.append(self.total)

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    X, y = digits
    out = io.StringIO()
    with redirect_stdout(out):
        MLPClassifier(max_iter=2, batch_size=100, verbose=2, **FAST).fit(X, y)
    assert updates == [6] * 12  # 600 rows / 100 = 6 batches, 2 epochs
    lines = out.getvalue().splitlines()
    assert len([ln for ln in lines if ln.startswith("Iteration ")]) == 2


def test_partial_fit_calls_draw_new_batches_reproducibly(digits):
    X, y = digits

    def run():
        clf = MLPClassifier(dropout=0.3, batch_size=50, **FAST)
        seeds = []
        for _ in range(3):
            clf.partial_fit(X, y, classes=np.unique(y))
            seeds.append(clf.net_.iterator_train__seed)
        return clf, seeds

    a, seeds_a = run()
    b, seeds_b = run()
    assert len(set(seeds_a)) == 3  # a new shuffle order and dropout masks each call
    assert seeds_a == seeds_b
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


@pytest.mark.parametrize(
    "kwargs, n_outputs",
    [
        ({"hidden_layer_sizes": (5, 40, 3)}, 1),
        ({"hidden_layer_sizes": (2,), "batch_norm": True, "dropout": 0.2}, 9),
        ({"hidden_layer_sizes": (16, 4), "activation": "tanh"}, 30),
    ],
)
def test_prediction_batches_are_sized_by_the_measured_widest_layer(kwargs, n_outputs):
    # the MLP names its widest activation without the dry run that measures it
    from sknets._predicting import widest_activation

    rng = np.random.RandomState(0)
    X, Y = rng.rand(40, 7), rng.rand(40, n_outputs)
    est = MLPRegressor(max_iter=2, random_state=0, **kwargs).fit(X, Y.squeeze())
    assert est._widest_activation(est.module_, 7) == widest_activation(est.module_, 7)
