"""Bad input, failing training, devices, interrupts and safe persistence."""

import pickle
import re
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.datasets import load_digits, make_multilabel_classification
from sklearn.preprocessing import StandardScaler

import sknets
from sknets import MLPClassifier, MLPRegressor, load, save
from sknets._base import _BaseNet
from sknets._data import ArrayDataset
from sknets._device import resolve_device
from tests.test_common import CHECK_SETTINGS

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X)[:300], y[:300]


def _estimators():
    for cls, settings in CHECK_SETTINGS.items():
        yield pytest.param(cls, settings[0], id=cls.__name__)


def _fit_data(est, X, y):
    if is_regressor(est):
        return X, y.astype(float)
    if is_classifier(est):
        return X, y
    return X, None


# ------------------------------------------------------- the bad-input matrix

FIT_CASES = {
    "nan": (
        lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X),
        None,
        r"NaN",
    ),
    "inf": (
        lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.inf, X),
        None,
        r"infinity|inf",
    ),
    "1d": (lambda X: X[:, 0], None, r"2D|1D|dimension|shape"),
    "empty": (lambda X: X[:0], lambda y: y[:0], r"0 sample|empty|minimum"),
    "length_mismatch": (lambda X: X, lambda y: y[:-1], r"inconsistent|samples"),
    "strings": (
        lambda X: X.astype(str).astype(object) + "x",
        None,
        r"string|convert|float|dtype",
    ),
    "complex": (lambda X: X + 1j, None, r"[Cc]omplex"),
}
PREDICT_CASES = {
    "nan": FIT_CASES["nan"][0],
    "wrong_n_features": lambda X: X[:, :-1],
    "1d": FIT_CASES["1d"][0],
    "empty": FIT_CASES["empty"][0],
    "strings": FIT_CASES["strings"][0],
    "complex": FIT_CASES["complex"][0],
}
PREDICT_MESSAGES = {
    "nan": r"NaN",
    "wrong_n_features": r"features|shape",
    "1d": r"2D|1D|dimension|shape",
    "empty": r"0 sample|empty|minimum",
    "strings": r"string|convert|float|dtype",
    "complex": r"[Cc]omplex",
}


def _no_training(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("training started before the input was rejected")

    monkeypatch.setattr("sknets._engine.SkorchNet.partial_fit", boom)


@pytest.mark.parametrize("case", sorted(FIT_CASES))
@pytest.mark.parametrize("cls, params", list(_estimators()))
def test_fit_rejects_bad_input_before_training(cls, params, case, data, monkeypatch):
    X, y = data
    est = cls(**params)
    X, y = _fit_data(est, X, y)
    make_X, make_y, message = FIT_CASES[case]
    Xb = make_X(X)
    yb = y if (make_y is None or y is None) else make_y(y)
    if y is None and case == "length_mismatch":
        pytest.skip("transformers take no y")
    if case == "nan" and est.__sklearn_tags__().input_tags.allow_nan:
        est.fit(Xb, yb)  # missing values are data here (tests/test_tabular.py)
        assert np.isfinite(est.predict(Xb)).all()
        return
    _no_training(monkeypatch)
    with pytest.raises((ValueError, TypeError), match=message) as info:
        est.fit(Xb, yb)
    assert not isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("case", sorted(PREDICT_CASES))
@pytest.mark.parametrize("cls, params", list(_estimators()))
def test_predict_methods_reject_bad_input(cls, params, case, data):
    X, y = data
    est = cls(**params)
    est.fit(*_fit_data(est, X, y))
    Xb = PREDICT_CASES[case](X)
    methods = [
        m
        for m in ("predict", "predict_proba", "predict_log_proba", "transform", "score")
        if hasattr(est, m)
    ]
    assert methods
    if case == "nan" and est.__sklearn_tags__().input_tags.allow_nan:
        assert np.isfinite(est.predict(Xb)).all()  # missing values are data
        return
    for name in methods:
        args = (Xb, y[: len(Xb)]) if name == "score" else (Xb,)
        with pytest.raises(
            (ValueError, TypeError), match=PREDICT_MESSAGES[case]
        ) as info:
            getattr(est, name)(*args)
        assert not isinstance(info.value, RuntimeError), name


@pytest.mark.parametrize(
    "cls, params", [p for p in _estimators() if is_classifier(p.values[0]())]
)
def test_a_single_class_fits_and_is_predicted(cls, params, data):
    # as scikit-learn's MLPClassifier: one logistic output, the class always
    X, _ = data
    est = cls(**params).fit(X, np.full(len(X), 7))
    assert list(est.classes_) == [7]
    assert (est.predict(X) == 7).all() and est.score(X, np.full(len(X), 7)) == 1.0
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(1), 1.0)


def test_partial_fit_labels_never_seen(data):
    X, y = data
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier(**FAST).partial_fit(X, y)
    clf = MLPClassifier(**FAST).partial_fit(X, y, classes=np.arange(10))
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X, y + 10)


@pytest.mark.parametrize("layout", ["strided view", "fortran", "sparse"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_in_any_layout_are_refused(layout, bad, data):
    X, y = data
    clf = MLPClassifier(**FAST).fit(X, y)
    Xbad = X.copy()
    Xbad[7, 3] = bad
    if layout == "strided view":  # neither C- nor F-contiguous
        Xbad = np.repeat(Xbad, 2, axis=1)[:, ::2]
    elif layout == "fortran":
        Xbad = np.asfortranarray(Xbad)
    else:
        Xbad = sp.csr_matrix(Xbad)
    match = "NaN" if np.isnan(bad) else "infinity"
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**FAST).fit(Xbad, y)
    with pytest.raises(ValueError, match=match):
        clf.predict(Xbad)


def test_finite_values_whose_sum_overflows_are_accepted():
    """The fast check sums X; a sum that overflows must not look like inf."""
    X = np.full((40, 3), np.finfo(np.float32).max / 2, dtype=np.float32)
    X[::2] *= -0.5
    y = np.arange(40) % 2
    clf = MLPClassifier(**FAST).fit(X / 1e38, y)
    assert clf.predict(X).shape == (40,)


def test_values_that_overflow_float32_are_refused(data):
    X, y = data
    huge = X.copy()
    huge[0, 0] = 1e39
    with pytest.raises(ValueError, match="too large for float32"):
        MLPClassifier(dtype="float32", **FAST).fit(huge, y)
    clf = MLPClassifier(dtype="float32", **FAST).fit(X, y)
    with pytest.raises(ValueError, match="too large for float32"):
        clf.predict(huge)
    # float64 computation represents them: no error
    MLPRegressor(**FAST).fit(huge / 1e30, y.astype(float))


# ----------------------------------------------- what a failed fit leaves


def _state(est, X):
    return est.predict_proba(X).copy(), est.n_features_in_, list(est.classes_)


def test_failed_fit_leaves_a_fitted_estimator_unchanged(data):
    X, y = data
    clf = MLPClassifier(**FAST).fit(X, y)
    before = _state(clf, X)
    continuous = np.linspace(0.0, 1.0, len(X))  # not class labels
    for bad_X, bad_y in [(X[:, :5] * np.nan, y), (X[:, :7], continuous)]:
        with pytest.raises(ValueError):
            clf.fit(bad_X, bad_y)
        after = _state(clf, X)
        np.testing.assert_array_equal(after[0], before[0])
        assert after[1:] == before[1:]


def test_failed_first_fit_leaves_the_estimator_unfitted(data):
    X, y = data
    clf = MLPClassifier(**FAST)
    with pytest.raises(ValueError):
        clf.fit(X, np.linspace(0.0, 1.0, len(X)))  # not class labels
    assert not any(k.endswith("_") for k in vars(clf))


def test_diverged_warm_fit_restores_weights_history_and_optimizer(data):
    X, y = data
    reg = MLPRegressor(solver="sgd", warm_start=True, **FAST).fit(X, y.astype(float))
    before = reg.predict(X)
    n_history = len(reg.history_)
    reg.set_params(learning_rate_init=1e8)
    with pytest.raises(ValueError, match="diverged"):
        reg.fit(X * 1e4, y * 1e4)
    np.testing.assert_array_equal(reg.predict(X), before)
    assert len(reg.history_) == len(reg.net_.history) == n_history


def test_cuda_out_of_memory_is_reraised_with_advice(data, monkeypatch):
    X, y = data
    clf = MLPClassifier(**FAST).fit(X, y)
    before = clf.predict_proba(X)

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr("sknets._engine.SkorchNet.train_step", oom)
    with pytest.raises(torch.OutOfMemoryError, match="smaller batch_size"):
        clf.fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_keyboard_interrupt_from_a_callback_stops_training_like_skorch(data):
    """A callback ends skorch's loop by raising KeyboardInterrupt: a clean stop.

    (A user's Ctrl-C is a signal and is re-raised: tests/test_interrupt.py.)
    """
    X, y = data

    def interrupt(epoch, net, monitor, stopping):
        if epoch == 2:
            raise KeyboardInterrupt

    clf = MLPClassifier(**{**FAST, "max_iter": 10})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning: it stopped
        clf._fit(X, y, None, incremental=False, epoch_callback=interrupt)
    assert clf.n_iter_ == 2 and [r["epoch"] for r in clf.history_] == [1, 2]
    assert len(clf.net_.history) == 2
    assert clf.predict(X).shape == (len(X),)


# -------------------------------------------------------------------- devices


def test_device_resolution_with_simulated_cuda(monkeypatch):
    assert resolve_device("auto") == torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="2 CUDA device"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match="not a valid device"):
        resolve_device("gpu0")


def test_model_saved_on_cuda_loads_on_cpu_only_machine(data):
    """Simulated: the pickled net says 'cuda'; without CUDA it maps to the CPU."""
    if torch.cuda.is_available():
        pytest.skip("simulates a machine without CUDA")
    X, y = data
    clf = MLPClassifier(**FAST).fit(X, y)
    expected = clf.predict_proba(X)
    clf.net_.device = "cuda"
    with pytest.warns(UserWarning, match="no CUDA devices are available"):
        again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), expected)
    assert next(again.module_.parameters()).device.type == "cpu"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_model_moves_to_cpu_and_pickles(data, tmp_path):
    X, y = data
    clf = MLPClassifier(**{**FAST, "device": "cuda"}).fit(X, y)
    expected = clf.predict_proba(X)
    clf.set_params(device="cpu")
    assert next(clf.module_.parameters()).device.type == "cpu"
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-5)
    clf.set_params(device="cuda")
    joblib.dump(clf, tmp_path / "m.joblib")
    np.testing.assert_allclose(
        joblib.load(tmp_path / "m.joblib").predict_proba(X), expected, rtol=1e-5
    )


def test_set_params_device_after_fit_keeps_predictions(data):
    X, y = data
    clf = MLPClassifier(**FAST).fit(X, y)
    expected = clf.predict_proba(X)
    clf.set_params(device="cpu")
    np.testing.assert_array_equal(clf.predict_proba(X), expected)
    with pytest.raises(ValueError):
        clf.set_params(device="nonsense")


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize(
    "kind",
    ["strings", "regressor", "multilabel", "batchnorm", "early_stopping", "sparse"],
)
def test_save_load_round_trip_identical_predictions(kind, data, tmp_path):
    X, y = data
    if kind == "strings":
        X = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
        est = MLPClassifier(**FAST).fit(X, np.array(list("abcdefghij"))[y])
    elif kind == "regressor":
        est = MLPRegressor(**FAST).fit(X, np.c_[y, -y].astype(float))
    elif kind == "multilabel":
        X, Y = make_multilabel_classification(n_samples=100, random_state=0)
        est = MLPClassifier(**FAST).fit(X, Y)
    elif kind == "batchnorm":
        est = MLPClassifier(batch_norm=True, dropout=0.3, **FAST).fit(X, y)
    elif kind == "sparse":  # the first weight is stored input-major
        X = sp.csr_matrix(np.where(X > 0.5, X, 0.0))
        est = MLPClassifier(**FAST).fit(X, y)
    else:
        est = MLPClassifier(**{**FAST, "max_iter": 20}, early_stopping=True).fit(X, y)
    path = save(est, tmp_path / "model.sknets")
    again = load(path)
    assert type(again) is type(est)
    assert again.get_params() == est.get_params()
    method = "predict_proba" if hasattr(est, "predict_proba") else "predict"
    np.testing.assert_array_equal(getattr(again, method)(X), getattr(est, method)(X))
    np.testing.assert_array_equal(again.predict(X), est.predict(X))
    params = [name for name, _ in again.module_.named_parameters()]
    assert params == [name for name, _ in est.module_.named_parameters()]
    for attr in (
        "n_features_in_",
        "n_iter_",
        "t_",
        "loss_curve_",
        "history_",
        "out_activation_",
    ):
        assert getattr(again, attr) == getattr(est, attr), attr
    if hasattr(est, "feature_names_in_"):
        np.testing.assert_array_equal(again.feature_names_in_, est.feature_names_in_)


def test_loaded_model_continues_training(data, tmp_path):
    X, y = data
    est = MLPClassifier(warm_start=True, **FAST).fit(X, y)
    again = load(save(est, tmp_path / "m.sknets"))
    again.fit(X, y)
    assert len(again.loss_curve_) == 2 * FAST["max_iter"]
    assert again.t_ == 2 * est.t_


def test_tampered_files_are_refused(data, tmp_path):
    X, y = data
    path = save(MLPClassifier(**FAST).fit(X, y), tmp_path / "m.sknets")
    payload = torch.load(path, weights_only=True)
    name = next(k for k in payload["tensors"] if k.startswith("module/"))
    payload["tensors"][name] = payload["tensors"][name] + 1.0
    torch.save(payload, tmp_path / "edited.sknets")
    with pytest.raises(ValueError, match="checksum"):
        load(tmp_path / "edited.sknets")

    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "flipped.sknets").write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        load(tmp_path / "flipped.sknets")

    payload = torch.load(path, weights_only=True)
    payload["sknets_format"] = 99
    torch.save(payload, tmp_path / "future.sknets")
    with pytest.raises(ValueError, match=re.escape("format 99")):
        load(tmp_path / "future.sknets")


def test_pickles_with_code_are_refused(data, tmp_path):
    X, y = data
    joblib.dump(MLPClassifier(**FAST).fit(X, y), tmp_path / "m.joblib")
    with pytest.raises(ValueError, match="not a readable sknets model"):
        load(tmp_path / "m.joblib")


def test_save_refuses_what_it_cannot_store_without_pickle(data, tmp_path):
    X, y = data
    with pytest.raises(Exception, match="fitted|not fitted"):
        save(MLPClassifier(), tmp_path / "unfitted.sknets")
    est = MLPClassifier(**{**FAST, "random_state": np.random.RandomState(0)}).fit(X, y)
    with pytest.raises(TypeError, match="joblib"):
        save(est, tmp_path / "rs.sknets")
    # a scikit-learn estimator alone is now stored with skops (issue 16)
    pytest.importorskip("skops")
    scaler = load(save(StandardScaler().fit(X), tmp_path / "scaler.sknets"))
    np.testing.assert_array_equal(scaler.mean_, X.mean(axis=0))


def test_every_network_estimator_round_trips(data, tmp_path):
    X, y = data
    for cls, settings in CHECK_SETTINGS.items():
        if not issubclass(cls, _BaseNet):
            continue
        est = cls(**settings[0])
        try:
            est.fit(*_fit_data(est, X, y))
            path = save(est, tmp_path / f"{cls.__name__}.sknets")
        except TypeError as exc:  # a parameter that needs pickle (e.g. a module)
            assert "joblib" in str(exc)
            continue
        np.testing.assert_array_equal(load(path).predict(X), est.predict(X))


# ---------------------------------------------------------------- large data


def test_memmap_input_is_not_copied(data, tmp_path):
    X, y = data
    path = tmp_path / "X.dat"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)
    dataset = ArrayDataset(ro, y, device="cpu", dtype=torch.float32)
    assert dataset.X.data_ptr() == ro.ctypes.data
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The given NumPy array")
        from_mm = MLPClassifier(**FAST).fit(ro, y)
    in_memory = MLPClassifier(**FAST).fit(np.asarray(X, dtype=np.float32), y)
    np.testing.assert_array_equal(from_mm.predict_proba(ro), in_memory.predict_proba(X))


def test_data_larger_than_gpu_memory_streams_from_host(monkeypatch):
    """Simulated: a device with too little free memory keeps X on the host."""
    from sknets import _data

    X = np.random.RandomState(0).normal(size=(50, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    on_device = MLPClassifier(**FAST).fit(X, y)
    monkeypatch.setattr(_data, "fits_on_device", lambda X, dtype, device: False)
    ds = ArrayDataset(X, y, device="cpu", dtype=torch.float32)
    assert ds.host
    Xb, (yb, _) = ds.take(torch.arange(10))
    assert Xb.shape == (10, 4) and yb.shape == (10,)
    streamed = MLPClassifier(**FAST).fit(X, y)
    np.testing.assert_array_equal(streamed.predict_proba(X), on_device.predict_proba(X))


def test_public_api_lists_save_and_load():
    assert {"save", "load"} <= set(sknets.__all__)
    assert clone(MLPClassifier()).get_params() == MLPClassifier().get_params()
