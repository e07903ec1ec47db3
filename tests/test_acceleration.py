"""Opt-in speed settings: ``compile`` (torch.compile) and ``autocast`` (bfloat16)."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import load_digits
from sklearn.utils._param_validation import InvalidParameterError

from sknets import ConvNetClassifier, MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# dynamo traces the module but runs it eagerly: the plumbing, in seconds
EAGER = {"backend": "eager"}
FAST = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:400] / 16).astype(np.float32), y[:400]


@pytest.fixture
def compile_calls(monkeypatch):
    """Record every torch.compile call (the compiled function still runs)."""
    calls = []
    real = torch.compile

    def spy(module, **options):
        calls.append((module, options))
        return real(module, **options)

    monkeypatch.setattr(torch, "compile", spy)
    return calls


def test_compile_runs_the_compiled_module_with_the_same_results(digits, compile_calls):
    X, y = digits
    eager = MLPClassifier(**FAST).fit(X, y)
    compiled = MLPClassifier(compile=EAGER, **FAST).fit(X, y)
    assert [(m, o) for m, o in compile_calls] == [(compiled.module_, EAGER)]
    np.testing.assert_allclose(compiled.loss_curve_, eager.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(
        compiled.predict_proba(X), eager.predict_proba(X), rtol=1e-5, atol=1e-7
    )
    assert len(compile_calls) == 1  # prediction reuses the compiled module


def test_compiled_model_pickles_without_compiled_code(digits, compile_calls):
    X, y = digits
    clf = MLPClassifier(compile=EAGER, **FAST).fit(X, y)
    expected = clf.predict_proba(X)
    blob = pickle.dumps(clf)
    again = pickle.loads(blob)
    assert "_compiled" not in again.net_.__dict__
    np.testing.assert_array_equal(again.predict_proba(X), expected)
    assert len(compile_calls) == 2  # compiled again on the first prediction


def test_compile_can_be_switched_off_after_fit(digits, compile_calls):
    X, y = digits
    clf = MLPClassifier(compile=EAGER, **FAST).fit(X, y)
    expected = clf.predict_proba(X)
    clf.set_params(compile=False)
    np.testing.assert_array_equal(clf.predict_proba(X), expected)
    assert len(compile_calls) == 1


def test_sparse_batches_are_not_compiled(digits, compile_calls):
    X, y = digits
    dense = MLPClassifier(**FAST).fit(X, y)
    clf = MLPClassifier(compile=EAGER, **FAST).fit(sp.csr_matrix(X), y)
    assert compile_calls == []
    np.testing.assert_allclose(
        clf.predict_proba(X), dense.predict_proba(X), rtol=1e-5, atol=1e-7
    )


def _input_dtypes(module):
    """Output dtypes of every Linear/Conv layer for batches of several rows.

    (A one-row pass in the module's own precision sizes the batches.)
    """
    seen = []

    def record(layer, args, out):
        if out.shape[0] > 1:
            seen.append(out.dtype)

    for layer in module.modules():
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            layer.register_forward_hook(record)
    return seen


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor, ConvNetClassifier])
def test_autocast_computes_layers_in_bfloat16(Est, digits):
    X, y = digits
    extra = {"input_shape": (8, 8), "filters": (4,)} if Est is ConvNetClassifier else {}
    kw = {**FAST, **extra}
    plain = Est(**kw).fit(X, y)
    mixed = Est(autocast=True, **kw).fit(X, y)
    seen = _input_dtypes(mixed.module_)
    out = mixed.predict(X)
    assert seen and set(seen) == {torch.bfloat16}
    assert out.dtype == plain.predict(X).dtype
    assert {p.dtype for p in mixed.module_.parameters()} == {torch.float32}
    # the same training, to bfloat16 precision
    np.testing.assert_allclose(mixed.loss_curve_, plain.loss_curve_, rtol=0.05)
    assert not np.allclose(mixed.loss_curve_, plain.loss_curve_, rtol=1e-7)


def test_autocast_probabilities_keep_the_network_precision(digits):
    X, y = digits
    clf = MLPClassifier(autocast=True, dtype="float64", **FAST).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    "params", [{"compile": "yes"}, {"compile": 1.5}, {"autocast": "bfloat16"}]
)
def test_invalid_acceleration_settings_are_refused(params, digits):
    X, y = digits
    with pytest.raises(InvalidParameterError):
        MLPClassifier(**params, **FAST).fit(X, y)


@pytest.mark.slow
def test_inductor_compile_matches_eager(digits):
    """The real compiler (needs a C++ compiler; about 10 s on 2 cores)."""
    X, y = digits
    eager = ConvNetClassifier(input_shape=(8, 8), filters=(4,), **FAST).fit(X, y)
    compiled = ConvNetClassifier(
        input_shape=(8, 8), filters=(4,), compile=True, **FAST
    ).fit(X, y)
    np.testing.assert_allclose(compiled.loss_curve_, eager.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(
        compiled.predict_proba(X), eager.predict_proba(X), rtol=1e-4, atol=1e-6
    )


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"
)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("kind", ["sparse mlp", "convnet"])
def test_cuda_paths_match_the_cpu(kind, digits):
    """CSR batches and channels-last convolutions on the GPU."""
    X, y = digits
    if kind == "sparse mlp":
        X = sp.csr_matrix(np.where(X > 0.5, X, 0.0))
        make = lambda device: MLPClassifier(**{**FAST, "device": device})  # noqa: E731
    else:
        make = lambda device: ConvNetClassifier(  # noqa: E731
            input_shape=(8, 8), filters=(4,), **{**FAST, "device": device}
        )
    gpu, cpu = make("cuda").fit(X, y), make("cpu").fit(X, y)
    assert next(gpu.module_.parameters()).is_cuda
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-3)
    assert (gpu.predict(X) == cpu.predict(X)).mean() > 0.95


@pytest.mark.cuda
@needs_cuda
def test_cuda_compile_and_autocast_train_and_predict(digits):
    X, y = digits
    clf = MLPClassifier(compile=True, autocast=True, **{**FAST, "device": "cuda"})
    clf.fit(X, y)
    plain = MLPClassifier(**{**FAST, "device": "cuda"}).fit(X, y)
    np.testing.assert_allclose(clf.loss_curve_, plain.loss_curve_, rtol=0.05)
    assert (clf.predict(X) == plain.predict(X)).mean() > 0.9
