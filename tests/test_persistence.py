"""sknets.save / sknets.load: trees, skops, atomic writes, formats, pretrained."""

import errno
import json
import os
import pickle
import random
import signal
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from sknets import (
    ConvNetClassifier,
    FineTunedClassifier,
    MLPClassifier,
    MLPRegressor,
    PretrainedFeatureExtractor,
    TabularClassifier,
    TabularRegressor,
    load,
    save,
)
from sknets._persistence import _digest

pytestmark = pytest.mark.usefixtures("quiet_one_thread")

DATA = Path(__file__).parent / "data"
FAST = {"hidden_layer_sizes": (5,), "max_iter": 3, "random_state": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 4))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, (12, 8, 8, 3), dtype=np.uint8), np.arange(12) % 2


def _tensors(path):
    return torch.load(path, weights_only=True)["tensors"]


# ------------------------------------------------------------ single models


def test_weights_are_stored_once(data, tmp_path):
    X, y = data
    clf = MLPClassifier(**FAST).fit(X, y)
    names = set(_tensors(save(clf, tmp_path / "m.sknets")))
    assert names == {f"module/{k}" for k in clf.module_.state_dict()} | {
        "fitted/classes_"
    }
    again = load(tmp_path / "m.sknets")
    for a, b in zip(
        again.coefs_ + again.intercepts_, clf.coefs_ + clf.intercepts_, strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert again.n_layers_ == clf.n_layers_


def test_format_1_files_still_load():
    """A file written by the format-1 save (tests/data/README.md) loads, checked."""
    expected = np.load(DATA / "format1_mlp_expected.npz")
    clf = load(DATA / "format1_mlp.sknets")
    # probabilities to float64 rounding, not bit for bit
    # (BLAS kernels differ between CPUs: AVX-512 and AVX2 differ by an ulp)
    np.testing.assert_allclose(
        clf.predict_proba(expected["X"]), expected["proba"], rtol=1e-12, atol=0
    )
    assert clf.classes_.tolist() == ["maybe", "no", "yes"]
    assert clf.feature_names_in_.tolist() == ["a", "b", "c"]
    assert [c.shape for c in clf.coefs_] == [(3, 4), (4, 3)]  # rebuilt, not read


def test_format_1_files_go_through_the_same_checks(tmp_path):
    payload = torch.load(DATA / "format1_mlp.sknets", weights_only=True)
    meta = json.loads(payload["meta"])
    meta["fitted"]["predict"] = 1
    payload["meta"] = json.dumps(meta)
    payload["sha256"] = _digest(payload["meta"], payload["tensors"])
    torch.save(payload, tmp_path / "edited.sknets")
    with pytest.raises(ValueError, match="unknown fitted attribute"):
        load(tmp_path / "edited.sknets")


def test_lbfgs_and_class_weight_dicts_round_trip(data, tmp_path):
    X, y = data
    clf = MLPClassifier(solver="lbfgs", class_weight={0: 1.0, 1: 2.0}, **FAST)
    clf.fit(X, y)
    again = load(save(clf, tmp_path / "m.sknets"))
    assert again.class_weight == {0: 1.0, 1: 2.0}
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_validation_set_and_early_stopping_attributes_round_trip(data, tmp_path):
    X, y = data
    reg = MLPRegressor(early_stopping=True, **{**FAST, "max_iter": 6})
    reg.fit(X[:30], y[:30].astype(float), X_val=X[30:], y_val=y[30:].astype(float))
    again = load(save(reg, tmp_path / "m.sknets"))
    for name in (
        "validation_scores_",
        "validation_loss_curve_",
        "best_validation_score_",
        "best_epoch_",
        "history_",
    ):
        assert getattr(again, name) == getattr(reg, name), name
    np.testing.assert_array_equal(again.predict(X), reg.predict(X))


def test_saved_cuda_model_loads_on_the_cpu(data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("simulates a machine without CUDA")
    X, y = data
    clf = MLPClassifier(**FAST).fit(X, y)
    payload = torch.load(save(clf, tmp_path / "m.sknets"), weights_only=True)
    meta = json.loads(payload["meta"])
    meta["params"]["device"] = "cuda"
    payload["meta"] = json.dumps(meta)
    payload["sha256"] = _digest(payload["meta"], payload["tensors"])
    torch.save(payload, tmp_path / "cuda.sknets")
    with pytest.warns(UserWarning, match="loading it on the CPU"):
        again = load(tmp_path / "cuda.sknets")
    assert again.device == "cpu"
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    with pytest.raises(ValueError, match="CUDA"):
        load(tmp_path / "cuda.sknets", device="cuda")


def test_unstorable_parameters_are_refused_at_save(images, tmp_path):
    X, y = images
    from sknets.modules._backbones import BACKBONES

    clf = FineTunedClassifier(
        BACKBONES["resnet20_cifar"][0](), resize=None, head_epochs=1, max_iter=1
    ).fit(X, y)
    with pytest.raises(TypeError, match="joblib"):
        save(clf, tmp_path / "m.sknets")
    assert not (tmp_path / "m.sknets").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "cls",
    [
        MLPClassifier,
        MLPRegressor,
        ConvNetClassifier,
        FineTunedClassifier,
        PretrainedFeatureExtractor,
        TabularClassifier,
        TabularRegressor,
    ],
)
def test_stored_fitted_attributes_are_the_documented_ones(cls):
    """load's table per class: documented attributes, stored or rebuilt."""
    docscrape = pytest.importorskip("numpydoc.docscrape")
    from sknets._stored import _DERIVED, _SCHEMAS

    documented = {p.name for p in docscrape.ClassDoc(cls)["Attributes"]}
    stored = set(_SCHEMAS[cls.__name__])
    assert stored <= documented
    live = {"net_", "module_", "backbone_"}  # rebuilt objects, not values
    assert documented - stored <= _DERIVED | live


# --------------------------------------------------------------- pretrained


@pytest.fixture
def weights_file(tmp_path, monkeypatch):
    """A resnet20_cifar weights file, and an empty SKNETS_HOME."""
    from sknets.modules._backbones import BACKBONES

    torch.manual_seed(0)
    path = tmp_path / "weights" / "resnet20.pt"
    path.parent.mkdir()
    torch.save(BACKBONES["resnet20_cifar"][0]().state_dict(), path)
    monkeypatch.setenv("SKNETS_HOME", str(tmp_path / "empty_home"))
    return path


def _no_weights_files(monkeypatch):
    from sknets import _weights

    def refuse(*args, **kwargs):
        raise AssertionError(f"load read a weights file: {args}")

    monkeypatch.setattr(_weights, "load_state_dict", refuse)
    monkeypatch.setattr(_weights, "_find_weights", refuse)


def test_fine_tuned_loads_without_its_pretrained_weights(
    images, weights_file, tmp_path, monkeypatch
):
    X, y = images
    clf = FineTunedClassifier(
        "resnet20_cifar",
        weights=str(weights_file),
        resize=None,
        head_epochs=1,
        max_iter=2,
        random_state=0,
        device="cpu",
    ).fit(X, y)
    path = save(clf, tmp_path / "ft.sknets")
    weights_file.unlink()
    _no_weights_files(monkeypatch)
    again = load(path)
    assert again.weights == str(weights_file)  # kept as a value, never opened
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert again.image_shape_ == clf.image_shape_


def test_feature_extractor_loads_without_its_pretrained_weights(
    images, weights_file, tmp_path, monkeypatch
):
    X, _ = images
    ext = PretrainedFeatureExtractor(
        "resnet20_cifar", weights=str(weights_file), device="cpu"
    ).fit(X)
    path = save(ext, tmp_path / "ext.sknets")
    weights_file.unlink()
    _no_weights_files(monkeypatch)
    again = load(path)
    np.testing.assert_array_equal(again.transform(X), ext.transform(X))
    assert again.n_features_out_ == ext.n_features_out_
    assert (
        again.get_feature_names_out().tolist() == ext.get_feature_names_out().tolist()
    )


# --------------------------------------------------------------------- trees


def test_pipeline_round_trips(data, tmp_path):
    pytest.importorskip("skops")
    X, y = data
    pipe = make_pipeline(StandardScaler(), MLPClassifier(**FAST)).fit(X, y)
    again = load(save(pipe, tmp_path / "pipe.sknets"))
    assert isinstance(again, Pipeline)
    np.testing.assert_array_equal(again.predict_proba(X), pipe.predict_proba(X))


def test_column_transformer_feature_union_and_search_round_trip(tmp_path):
    pytest.importorskip("skops")
    rng = np.random.RandomState(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=60),
            "b": rng.normal(size=60),
            "c": rng.choice(["x", "y", "z"], 60),
        }
    )
    y = frame["a"] * 2 + (frame["c"] == "x")
    columns = ColumnTransformer(
        [("num", StandardScaler(), ["a", "b"]), ("cat", OneHotEncoder(), ["c"])]
    )
    union = FeatureUnion([("scaled", StandardScaler()), ("raw", "passthrough")])
    pipe = make_pipeline(columns, union, MLPRegressor(**FAST))
    search = GridSearchCV(pipe, {"mlpregressor__alpha": [1e-4, 1e-2]}, cv=2)
    search.fit(frame, y)
    # skops < 0.12 (the newest for numpy < 1.25) does not trust this list
    # subclass of scikit-learn 1.6's ColumnTransformer; later ones do
    trusted = ["sklearn.compose._column_transformer._RemainderColsList"]
    for obj in (search.best_estimator_, pipe.fit(frame, y)):
        again = load(save(obj, tmp_path / "tree.sknets"), trusted=trusted)
        np.testing.assert_array_equal(again.predict(frame), obj.predict(frame))


def test_untrusted_types_in_a_tree_are_refused_until_trusted(data, tmp_path):
    pytest.importorskip("skops")
    X, y = data
    pipe = make_pipeline(FunctionTransformer(_double), MLPClassifier(**FAST)).fit(X, y)
    path = save(pipe, tmp_path / "pipe.sknets")
    with pytest.raises(ValueError, match="test_persistence._double"):
        load(path)
    again = load(path, trusted=[f"{__name__}._double"])
    np.testing.assert_array_equal(again.predict_proba(X), pipe.predict_proba(X))


def _double(X):
    return 2 * X


def test_sknets_searches_round_trip(data, tmp_path):
    pytest.importorskip("skops")
    from sknets.model_selection import GridSearchCV as EpochGridSearchCV

    X, y = data
    search = EpochGridSearchCV(MLPClassifier(**FAST), {"max_iter": [2, 3]}, cv=2).fit(
        X, y
    )
    path = save(search, tmp_path / "search.sknets")
    with pytest.raises(ValueError, match="_PassthroughScorer"):
        load(path)  # scikit-learn's own helpers that skops does not trust
    trusted = [  # which ones depends on the skops and scikit-learn versions
        "sklearn.metrics._scorer._PassthroughScorer",
        "sklearn.model_selection._split.StratifiedKFold",
        "sklearn.utils._metadata_requests.MetadataRequest",
        "sklearn.utils._metadata_requests.MethodMetadataRequest",
    ]
    again = load(path, trusted=trusted)
    assert type(again) is EpochGridSearchCV
    assert again.best_params_ == search.best_params_
    np.testing.assert_array_equal(again.predict_proba(X), search.predict_proba(X))


def test_skops_io_stores_sknets_estimators(data, images, tmp_path):
    skops_io = pytest.importorskip("skops.io")
    X, y = data
    clf = MLPClassifier(**FAST).fit(X, y)
    pipe = make_pipeline(StandardScaler(), clf).fit(X, y)
    skops_io.dump(pipe, tmp_path / "pipe.skops")
    untrusted = skops_io.get_untrusted_types(file=tmp_path / "pipe.skops")
    assert untrusted == ["sknets._mlp.MLPClassifier"]
    with pytest.raises(Exception, match="Untrusted types"):
        skops_io.load(tmp_path / "pipe.skops")
    again = skops_io.load(tmp_path / "pipe.skops", trusted=untrusted)
    np.testing.assert_array_equal(again.predict_proba(X), pipe.predict_proba(X))

    ims, labels = images
    cnn = ConvNetClassifier(filters=(2,), **FAST).fit(ims, labels)
    data_ = skops_io.dumps(cnn)
    again = skops_io.loads(data_, trusted=[ConvNetClassifier])
    np.testing.assert_array_equal(again.predict_proba(ims), cnn.predict_proba(ims))
    # unfitted estimators (a search's ``estimator``) keep their parameters
    search = GridSearchCV(MLPClassifier(**FAST), {"alpha": [1e-4, 1e-3]})
    again = skops_io.loads(skops_io.dumps(search), trusted=[MLPClassifier])
    assert again.estimator.get_params() == search.estimator.get_params()


def test_pickle_still_keeps_the_live_net(data):
    """pickle/copy go through ``__reduce_ex__``: optimizer state and all."""
    X, y = data
    clf = MLPClassifier(**FAST).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    assert again.net_.optimizer_.state_dict()["state"]  # Adam's moments
    clf.partial_fit(X, y)
    again.partial_fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


# ------------------------------------------------------------- atomic writes


def _two_models(data):
    X, y = data
    big = {**FAST, "hidden_layer_sizes": (300, 300), "max_iter": 1}
    a = MLPClassifier(**big).fit(X, y)
    b = MLPClassifier(**{**big, "random_state": 1}).fit(X, y)
    return a, b


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_during_save_never_leaves_a_broken_file(data, tmp_path):
    """SIGKILL at random moments of a save loop: the file always loads."""
    X, _ = data
    a, b = _two_models(data)
    path = tmp_path / "m.sknets"
    save(a, path)
    expected = [m.predict_proba(X) for m in (a, b)]
    rng = random.Random(0)
    for _ in range(20):
        pid = os.fork()
        if pid == 0:  # the child saves until it is killed
            try:
                while True:
                    save(b, path)
                    save(a, path)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        proba = load(path).predict_proba(X)
        assert any(np.array_equal(proba, e) for e in expected)
    # a killed writer can leave only its own temporary file behind
    others = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(n.startswith(".m.sknets.") and n.endswith(".part") for n in others)


def test_full_disk_keeps_the_previous_file(data, tmp_path, monkeypatch):
    X, _ = data
    a, b = _two_models(data)
    path = save(a, tmp_path / "m.sknets")
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left.*previous file") as info:
        save(b, path)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.sknets"]  # no temp file
    monkeypatch.undo()
    np.testing.assert_array_equal(load(path).predict_proba(X), a.predict_proba(X))


@pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform == "darwin",
    reason="needs os.fork and RLIMIT_FSIZE",
)
def test_file_size_limit_mid_write_keeps_the_previous_file(data, tmp_path):
    """A real write error from the kernel (RLIMIT_FSIZE: EFBIG) while writing."""
    import resource

    X, _ = data
    a, b = _two_models(data)
    path = save(a, tmp_path / "m.sknets")
    before = path.read_bytes()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2,) * 2)
            try:
                save(b, path)
            except OSError as exc:
                code = 0 if exc.errno == errno.EFBIG and "unchanged" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.sknets"]
    np.testing.assert_array_equal(load(path).predict_proba(X), a.predict_proba(X))


def test_save_keeps_the_file_mode(data, tmp_path):
    X, y = data
    clf = MLPClassifier(**FAST).fit(X, y)
    path = save(clf, tmp_path / "m.sknets")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    path.chmod(0o600)
    save(clf, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
