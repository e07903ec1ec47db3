"""ONNX export (onnxruntime parity) and torch modules of fitted estimators."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sknets import (
    ConvNetClassifier,
    FineTunedClassifier,
    MLPClassifier,
    MLPRegressor,
    PretrainedFeatureExtractor,
)
from sknets.onnx import to_torch

ATOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread(quiet_one_thread):
    yield


def _ort():
    pytest.importorskip("skl2onnx")
    return pytest.importorskip("onnxruntime")


def _session(onx):
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onx.SerializeToString(), options)


def _run(onx, X):
    session = _session(onx)
    return session.run(None, {session.get_inputs()[0].name: X})


def _data(n=60, n_features=5, seed=0):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, n_features))


# ------------------------------------------------------------------ classifiers


@pytest.mark.parametrize("n_classes", [2, 3])
def test_pipeline_with_string_labels_matches_predict_proba(n_classes):
    _ort()
    from sknets.onnx import to_onnx

    X = _data() * 10 + 3  # the scaler matters
    labels = np.array(["ant", "bee", "cat"])[:n_classes]
    y = labels[np.argmax(X[:, :n_classes], axis=1)]
    pipe = make_pipeline(
        StandardScaler(),
        MLPClassifier(
            (8, 6),
            activation="tanh",
            batch_norm=True,
            dropout=0.2,
            max_iter=30,
            random_state=0,
        ),
    ).fit(X, y)  # float64: trained in float64
    onx = to_onnx(pipe, X[:1], options={"zipmap": False})
    assert [o.name for o in onx.graph.output] == ["label", "probabilities"]
    X_test = _data(n=17, seed=1) * 10 + 3  # another batch size than X[:1]
    label, proba = _run(onx, X_test)
    assert label.dtype == object and proba.shape == (17, n_classes)
    np.testing.assert_allclose(proba, pipe.predict_proba(X_test), atol=ATOL)
    np.testing.assert_array_equal(label, pipe.predict(X_test))


def test_int_labels_float32_input_and_zipmap():
    _ort()
    from sknets.onnx import to_onnx

    X = _data().astype(np.float32)
    y = np.array([3, 7, 9])[np.argmax(X[:, :3], axis=1)]
    clf = MLPClassifier((8,), max_iter=20, random_state=0).fit(X, y)
    label, zipped = _run(to_onnx(clf, X[:1]), X[:9])
    np.testing.assert_array_equal(label, clf.predict(X[:9]))
    assert label.dtype == np.int64
    assert set(zipped[0]) == {3, 7, 9}
    proba = np.array([[row[c] for c in clf.classes_] for row in zipped])
    np.testing.assert_allclose(proba, clf.predict_proba(X[:9]), atol=ATOL)


@pytest.mark.parametrize(
    "options, names",
    [
        (None, ["output_label", "output_probability"]),
        ({"zipmap": "columns"}, ["output_label", "sa", "sb", "sc"]),
        ({"zipmap": False, "nocl": True}, ["label", "probabilities"]),
        (
            {"zipmap": False, "output_class_labels": True},
            ["label", "probabilities", "class_labels"],
        ),
    ],
)
def test_classifier_options_with_float64_input(options, names):
    _ort()
    from sknets.onnx import to_onnx

    X = _data()
    y = np.array(["a", "b", "c"])[np.argmax(X[:, :3], axis=1)]
    clf = MLPClassifier((6,), max_iter=10, random_state=0).fit(X, y)
    onx = to_onnx(clf, X[:1], options=options)
    assert [o.name for o in onx.graph.output] == names
    outputs = _run(onx, X[:4])
    proba = clf.predict_proba(X[:4])
    if options is None:  # ZipMap: one dict per row (float32 values)
        got = np.array([[row[c] for c in clf.classes_] for row in outputs[1]])
    elif options["zipmap"] == "columns":
        got = np.column_stack(outputs[1:])
    else:
        got = outputs[1]
    np.testing.assert_allclose(got, proba, atol=ATOL)
    if options is not None and options.get("nocl"):
        np.testing.assert_array_equal(clf.classes_[outputs[0]], clf.predict(X[:4]))
    else:
        np.testing.assert_array_equal(outputs[0], clf.predict(X[:4]))


def test_multilabel():
    _ort()
    from sknets.onnx import to_onnx

    X = _data().astype(np.float32)
    Y = (X[:, :3] > 0).astype(int)
    clf = MLPClassifier((16,), max_iter=30, random_state=0).fit(X, Y)
    label, proba = _run(to_onnx(clf, X[:1], options={"zipmap": False}), X)
    np.testing.assert_allclose(proba, clf.predict_proba(X), atol=ATOL)
    np.testing.assert_array_equal(label, clf.predict(X))


def test_convnet_trained_in_float64_runs_in_float32():
    _ort()
    from sknets.onnx import to_onnx

    rng = np.random.RandomState(0)
    X = rng.uniform(size=(40, 64))  # float64: the network is float64
    y = np.where(X[:, :32].sum(1) > X[:, 32:].sum(1), "left", "right")
    clf = ConvNetClassifier(
        filters=(4,),
        hidden_layer_sizes=(8,),
        input_shape=(8, 8),
        batch_norm=True,
        residual=True,
        max_iter=3,
        random_state=0,
    ).fit(X, y)
    assert clf.filters_.dtype == np.float64
    onx = to_onnx(clf, X[:1], options={"zipmap": False})
    inits = {i.data_type for i in onx.graph.initializer}
    assert 11 not in inits  # no float64 weights
    X_test = rng.uniform(size=(7, 64))
    label, proba = _run(onx, X_test)
    np.testing.assert_allclose(proba, clf.predict_proba(X_test), atol=ATOL)
    np.testing.assert_array_equal(label, clf.predict(X_test))


def test_fine_tuned_classifier_with_uint8_pixels():
    _ort()
    from sknets.onnx import to_onnx

    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (12, 3 * 8 * 8), dtype=np.uint8)
    y = np.repeat([0, 1], 6)
    clf = FineTunedClassifier(
        "resnet20_cifar",
        weights=None,
        input_shape=(3, 8, 8),
        resize=None,
        head_epochs=1,
        max_iter=1,
        random_state=0,
    ).fit(X, y)
    label, proba = _run(to_onnx(clf, X[:1], options={"zipmap": False}), X[:5])
    np.testing.assert_allclose(proba, clf.predict_proba(X[:5]), atol=ATOL)
    np.testing.assert_array_equal(label, clf.predict(X[:5]))


# ------------------------------------------------------------------ regressors


@pytest.mark.parametrize(
    "n_outputs, loss", [(1, "squared_error"), (2, "squared_error"), (1, "poisson")]
)
def test_regressor(n_outputs, loss):
    _ort()
    from sknets.onnx import to_onnx

    X = _data()
    y = np.abs(X[:, :n_outputs] + X[:, 1:2])
    reg = MLPRegressor(loss=loss, hidden_layer_sizes=(8,), max_iter=20).fit(
        X, y.ravel() if n_outputs == 1 else y
    )
    onx = to_onnx(reg, X[:2].astype(np.float32))
    assert [o.name for o in onx.graph.output] == ["variable"]
    (pred,) = _run(onx, X[:11].astype(np.float32))
    assert pred.shape == (11, n_outputs)
    np.testing.assert_allclose(
        pred, reg.predict(X[:11]).reshape(11, n_outputs), atol=ATOL, rtol=1e-5
    )


def test_double_input_gives_double_outputs():
    _ort()
    from sknets.onnx import to_onnx

    X = _data()
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(
        X, X[:, 0]
    )
    (pred,) = _run(to_onnx(reg, X[:1]), X[:3])
    assert pred.dtype == np.float64
    np.testing.assert_allclose(pred.ravel(), reg.predict(X[:3]), atol=ATOL)


# ------------------------------------------------------------------ features


def test_pretrained_feature_extractor():
    _ort()
    from sknets.onnx import to_onnx

    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (3, 3 * 8 * 8), dtype=np.uint8)
    ext = PretrainedFeatureExtractor(
        "resnet20_cifar", weights=None, input_shape=(3, 8, 8), random_state=0
    ).fit(X)  # resized to 32 x 32, the backbone's size
    X_test = rng.randint(0, 256, (6, 3 * 8 * 8), dtype=np.uint8)
    (features,) = _run(to_onnx(ext, X[:1]), X_test)
    assert features.shape == (6, ext.n_features_out_)
    np.testing.assert_allclose(features, ext.transform(X_test), atol=ATOL)


# ------------------------------------------------------------------ errors


def test_errors():
    _ort()
    from sknets.onnx import to_onnx

    X = _data()
    with pytest.raises(NotFittedError):
        to_onnx(MLPClassifier(), X[:1])
    with pytest.raises(NotFittedError):
        to_onnx(make_pipeline(StandardScaler(), MLPRegressor()), X[:1])
    with pytest.raises(TypeError, match="estimator"):
        to_onnx(object(), X[:1])
    clf = MLPClassifier((4,), max_iter=2).fit(X, X[:, 0] > 0)
    with pytest.raises(ValueError, match="3 features, but MLPClassifier"):
        to_onnx(clf, X[:1, :3])
    with pytest.raises(ValueError, match="needs X"):
        to_onnx(clf)
    conv = ConvNetClassifier(filters=(2,), hidden_layer_sizes=(), max_iter=1)
    conv.fit(X[:, :4].reshape(-1, 2, 2), X[:, 0] > 0)
    with pytest.raises(ValueError, match="flat rows"):
        to_onnx(conv, X[:1, :4].reshape(1, 2, 2))
    with pytest.raises(TypeError, match="fitted sknets estimator"):
        to_torch(StandardScaler().fit(X))
    with pytest.raises(NotFittedError):
        to_torch(MLPRegressor())


@pytest.mark.slow  # the torch.export-based exporter takes seconds
def test_torchscript_failure_falls_back_to_dynamo(monkeypatch):
    _ort()
    pytest.importorskip("onnxscript")
    from sknets.onnx import _graph, to_onnx

    def fail(*args):
        raise RuntimeError("no TorchScript exporter here")

    monkeypatch.setitem(_graph._EXPORT, "torchscript", fail)
    X = _data(n=30, n_features=6)
    clf = ConvNetClassifier(filters=(2,), hidden_layer_sizes=(), max_iter=1)
    clf.fit(X, X[:, 0] > 0)
    label, proba = _run(to_onnx(clf, X[:1], options={"zipmap": False}), X[:4])
    np.testing.assert_allclose(proba, clf.predict_proba(X[:4]), atol=ATOL)


# ------------------------------------------------------------------ torch


def test_to_torch_exports_with_torch_export():
    X = _data(n=40, n_features=16)
    y = X[:, 0] > 0
    clf = ConvNetClassifier(
        filters=(2,), hidden_layer_sizes=(4,), input_shape=(4, 4), max_iter=2
    ).fit(X, y)
    module = to_torch(clf)
    assert not module.training
    assert all(p.dtype == torch.float32 for p in module.parameters())
    assert clf.filters_.dtype == np.float64  # the estimator's own network is kept
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        module, (torch.zeros(2, 16),), dynamic_shapes=({0: batch},)
    )
    X_test = torch.from_numpy(X[:5].astype(np.float32))
    np.testing.assert_allclose(
        program.module()(X_test).numpy(), clf.predict_proba(X[:5]), atol=ATOL
    )


def test_to_torch_outputs():
    X = _data(n_features=48).astype(np.float32)
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(
        X, X[:, :2]
    )
    out = to_torch(reg)(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, reg.predict(X), atol=ATOL)
    ext = PretrainedFeatureExtractor(
        "resnet20_cifar", weights=None, input_shape=(3, 4, 4), resize=None
    ).fit(X[:2, :48])
    out = to_torch(ext)(torch.from_numpy(X[:3, :48] ** 2)).numpy()
    np.testing.assert_allclose(out, ext.transform(X[:3, :48] ** 2), atol=ATOL)
