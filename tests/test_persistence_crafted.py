"""sknets.load refuses crafted files with a ValueError, allocating nothing large.

Each case starts from a file that ``save`` wrote, changes one thing the way an
attacker (or a broken writer) would, re-signs it when the change would
otherwise fail the checksum first, and expects a ``ValueError`` that names
the reason. One subprocess then loads every crafted file and reports its
peak memory, which must stay far below what the files claim.
"""

import copy
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch

from sknets import MLPClassifier, load, save
from sknets._persistence import _digest
from sknets._pickling import _PORTABLE

pytestmark = pytest.mark.usefixtures("quiet_one_thread")

FAST = {"hidden_layer_sizes": (4,), "max_iter": 2, "random_state": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(meta, tensors) of a saved 2-class MLPClassifier on 3 features."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(20, 3))
    y = np.arange(20) % 2
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(**FAST).fit(X, y)
    path = save(clf, tmp_path_factory.mktemp("base") / "m.sknets")
    payload = torch.load(path, weights_only=True)
    return json.loads(payload["meta"]), payload["tensors"]


def _payload(meta, tensors, fmt=2, sha=None):
    text = meta if isinstance(meta, str) else json.dumps(meta)
    return {
        "sknets_format": fmt,
        "meta": text,
        "tensors": tensors,
        "sha256": _digest(text, tensors) if sha is None else sha,
    }


UNSIGNED = "0" * 64  # for tensors that must be refused before any hashing


def _weight(tensors):
    return next(k for k in tensors if k.endswith("0.weight"))


def _edit_params(**changes):
    def build(meta, tensors):
        meta["params"].update(changes)
        return _payload(meta, tensors)

    return build


def _edit_fitted(**changes):
    def build(meta, tensors):
        meta["fitted"].update(changes)
        return _payload(meta, tensors)

    return build


def _as_class(name, **params):
    def build(meta, tensors):
        meta["class"] = name
        meta["params"].update(params)
        return _payload(meta, tensors)

    return build


def _tensor(change, sign=False):
    def build(meta, tensors):
        name = _weight(tensors)
        tensors[name] = change(tensors[name])
        return _payload(meta, tensors, sha=None if sign else UNSIGNED)

    return build


def _stride0(t):  # 2**34 float64 values (128 GiB) on an 8-byte storage
    return torch.zeros(1, dtype=t.dtype).expand(2**34)


def _offset_view(t):
    big = torch.zeros(t.numel() + 1000, dtype=t.dtype)
    return big[1000:].reshape(t.shape)


def _nested(meta, tensors):
    text = json.dumps(meta).replace('"relu"', "[" * 50_000 + "]" * 50_000)
    return _payload(text, tensors)


def _huge_json(meta, tensors):
    meta["params"]["activation"] = "x" * (17 * 2**20)
    return _payload(meta, tensors)


def _nan_token(meta, tensors):
    text = json.dumps(meta).replace('"alpha": 0.0001', '"alpha": NaN')
    assert "NaN" in text
    return _payload(text, tensors)


def _overflow_float(meta, tensors):
    text = json.dumps(meta).replace('"alpha": 0.0001', '"alpha": 1e999')
    return _payload(text, tensors)


def _huge_int(meta, tensors):
    text = json.dumps(meta).replace('"max_iter": 2', '"max_iter": ' + "9" * 5000)
    return _payload(text, tensors)


def _unreferenced(meta, tensors):
    tensors["fitted/zzz"] = torch.zeros(3)
    return _payload(meta, tensors)


def _object_array(meta, tensors):
    meta["fitted"]["classes_"] = {"__ndarray__": "fitted/classes_", "dtype": "|O"}
    return _payload(meta, tensors)


def _array_outside_fitted(meta, tensors):
    name = _weight(tensors)
    meta["fitted"]["classes_"] = {"__ndarray__": f"{name}", "dtype": "<f8"}
    return _payload(meta, tensors)


def _wide_strings(meta, tensors):  # format 1 wrote the dtype: a 4 GB one
    meta["fitted"]["classes_"] = {"__strarray__": ["a", "b"], "dtype": "<U1000000000"}
    del tensors["fitted/classes_"]
    return _payload(meta, tensors)


def _wider_first_layer(meta, tensors):  # 3 features saved, 3000 claimed
    meta["fitted"]["n_features_in_"] = 3000
    return _payload(meta, tensors)


def _sha(value):
    def build(meta, tensors):
        return {**_payload(meta, tensors), "sha256": value}

    return build


def _fmt(value):
    def build(meta, tensors):
        return _payload(meta, tensors, fmt=value)

    return build


def _payload_extra(meta, tensors):
    payload = _payload(meta, tensors)
    payload["code"] = "print('hi')"
    return payload


def _tensors_list(meta, tensors):
    return {**_payload(meta, tensors), "tensors": list(tensors.values())}


def _predict_replaced(meta, tensors):
    meta["fitted"]["predict"] = {"__torch_dtype__": "set_default_dtype"}
    return _payload(meta, tensors)


def _classes_mismatch(meta, tensors):
    meta["fitted"]["classes_"] = {"__strarray__": ["a", "b", "c"], "dtype": "O"}
    del tensors["fitted/classes_"]
    return _payload(meta, tensors)


def _private_extra(meta, tensors):
    meta["fitted"]["_private"]["hook"] = "os.system"
    return _payload(meta, tensors)


CASES = [
    # (id, builder, message the ValueError must match)
    ("format-0", _fmt(0), "unknown file format"),
    ("format-str", _fmt("2"), "unknown file format"),
    ("format-bool", _fmt(True), "unknown file format"),
    ("format-float", _fmt(2.0), "unknown file format"),
    ("format-newer", _fmt(99), "format 99, newer"),
    ("unknown-class", _as_class("Popen"), "unknown estimator class"),
    ("sklearn-class", _as_class("LogisticRegression"), "unknown estimator class"),
    (
        "torch-dtype-name",
        _edit_params(dtype={"__torch_dtype__": "set_default_dtype"}),
        "unknown value tag",
    ),
    ("unknown-tag", _edit_params(alpha={"__reduce__": ["os.system", "ls"]}), "tag"),
    ("unknown-param", _edit_params(module__fn="os.system"), "unknown parameter"),
    ("invalid-param", _edit_params(activation="gelu"), "invalid parameters"),
    ("nan-param", _edit_params(alpha={"__float__": "nan"}), "invalid parameters"),
    ("callbacks", _edit_params(callbacks=["os.system"]), "no callbacks"),
    ("extra-fitted-key", _edit_fitted(foo_=1), "unknown fitted attribute"),
    ("fitted-method-name", _predict_replaced, "unknown"),
    ("fitted-private-name", _edit_fitted(_label_binarizer=1), "unknown fitted"),
    ("fitted-net", _edit_fitted(net_=1), "unknown fitted"),
    ("fitted-wrong-type", _edit_fitted(n_features_in_="3"), "n_features_in_"),
    ("fitted-negative", _edit_fitted(t_=-1), "t_"),
    ("fitted-bool-int", _edit_fitted(n_outputs_=True), "n_outputs_"),
    (
        "fitted-missing",
        lambda m, t: (m["fitted"].pop("history_"), _payload(m, t))[1],
        "missing fitted",
    ),
    ("private-extra", _private_extra, "private fitted state"),
    ("classes-vs-outputs", _classes_mismatch, "do not match n_outputs_"),
    ("out-activation", _edit_fitted(out_activation_="softmax"), "out_activation_"),
    ("object-dtype-array", _object_array, "not a numeric one"),
    ("array-outside-fitted", _array_outside_fitted, "not a fitted tensor"),
    ("wide-string-dtype", _wide_strings, None),  # format 1: accepted, but narrow
    ("unreferenced-tensor", _unreferenced, "unexpected tensors"),
    ("shape-vs-layers", _edit_params(hidden_layer_sizes={"__tuple__": [5]}), "weight"),
    (
        "huge-layers-tiny-tensors",
        _edit_params(hidden_layer_sizes={"__tuple__": [60000, 60000]}),
        "do not match",
    ),
    ("many-layers", _edit_params(hidden_layer_sizes=[1] * 5000), "holds 5000"),
    ("n-features-vs-weights", _wider_first_layer, "weight"),
    ("stride-0-tensor", _tensor(_stride0), "not a contiguous tensor"),
    ("offset-view-tensor", _tensor(_offset_view), "not a contiguous tensor"),
    (
        "transposed-tensor",
        _tensor(lambda t: t.t().contiguous().t()),
        "not a contiguous tensor",
    ),
    ("complex-tensor", _tensor(lambda t: t.to(torch.complex64)), "dtype"),
    ("tensor-shape-edit", _tensor(lambda t: t[:2].clone(), sign=True), "weight"),
    ("tensor-dtype-edit", _tensor(lambda t: t.float(), sign=True), "float32"),
    ("deeply-nested-json", _nested, "nested"),
    ("huge-json", _huge_json, "at most"),
    ("nan-json-token", _nan_token, "NaN"),
    ("overflowing-float", _overflow_float, "out of range"),
    ("huge-int", _huge_int, "invalid"),
    ("sha-nan", _sha(float("nan")), "sha256"),
    ("sha-none", _sha(None), "sha256"),
    ("sha-list", _sha(["0" * 64]), "sha256"),
    ("sha-upper", _sha("A" * 64), "sha256"),
    ("sha-wrong", _sha("0" * 64), "checksum"),
    ("payload-extra-key", _payload_extra, "unexpected entries"),
    ("tensors-list", _tensors_list, "tensors must be a dict"),
    ("meta-not-str", lambda m, t: {**_payload(m, t), "meta": m}, "JSON text"),
    ("meta-not-object", lambda m, t: _payload("[1, 2]", t), "not an object"),
    (
        "backbone-path",
        _as_class("FineTunedClassifier", backbone="/etc/passwd"),
        "not a backbone name",
    ),
    (
        "backbone-relative",
        _as_class("FineTunedClassifier", backbone="../w.pt"),
        "not a backbone name",
    ),
    (
        "backbone-dotted",
        _as_class("FineTunedClassifier", backbone="torch.seed"),
        "not a backbone name",
    ),
    (
        "backbone-callable",
        _as_class("FineTunedClassifier", backbone={"__torch_dtype__": "seed"}),
        "unknown value tag",
    ),
    (
        "backbone-unknown",
        _as_class("FineTunedClassifier", backbone="nonet"),
        "backbone",
    ),
]


def _write(path, payload):
    torch.save(payload, path)
    return path


def _compressed(tmp_path, base_path):
    """The base file, its records deflated (torch never writes that)."""
    out = tmp_path / "deflated.sknets"
    with (
        zipfile.ZipFile(base_path) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_crafted_file_is_refused(case, base, tmp_path):
    name, build, match = case
    meta, tensors = copy.deepcopy(base)
    path = _write(tmp_path / f"{name}.sknets", build(meta, tensors))
    seed = torch.initial_seed()
    if match is None:  # accepted, harmlessly
        est = load(path)
        assert est.classes_.dtype.itemsize <= 4
        return
    with pytest.raises(ValueError, match=match):
        load(path)
    assert torch.initial_seed() == seed  # torch.seed() never ran


def test_crafted_containers_are_refused(base, tmp_path):
    meta, tensors = copy.deepcopy(base)
    good = _write(tmp_path / "good.sknets", _payload(meta, tensors))
    with pytest.raises(ValueError, match="compressed records"):
        load(_compressed(tmp_path, good))
    raw = good.read_bytes()
    (tmp_path / "truncated.sknets").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable"):
        load(tmp_path / "truncated.sknets")
    (tmp_path / "text.sknets").write_text("hello")
    with pytest.raises(ValueError, match="not a readable"):
        load(tmp_path / "text.sknets")
    with pytest.raises(ValueError, match="not a readable"):
        load(tmp_path / "missing.sknets")
    _write(tmp_path / "list.sknets", [1, 2, 3])
    with pytest.raises(ValueError, match="not an sknets model file"):
        load(tmp_path / "list.sknets")


def test_compile_in_a_file_is_turned_off(base, tmp_path):
    meta, tensors = copy.deepcopy(base)
    meta["params"]["compile"] = True
    est = load(_write(tmp_path / "c.sknets", _payload(meta, tensors)))
    assert est.compile is False
    assert est.net_.forward_compile is None


def test_crafted_skops_states_are_refused(base, tmp_path):
    """The skops route (``__setstate__``) runs the same checks."""
    skops_io = pytest.importorskip("skops.io")
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(20, 3)), np.arange(20) % 2
    clf = MLPClassifier(**FAST).fit(X, y)
    good = clf.__getstate__()
    assert set(good) == {_PORTABLE, "meta", "arrays"}
    cases = {
        "object array": {
            **good,
            "arrays": {**good["arrays"], "fitted/classes_": np.array([None, 1])},
        },
        "view": {
            **good,
            "arrays": {
                k: (np.zeros((8, 8))[:, :4] if k.endswith("0.weight") else v)
                for k, v in good["arrays"].items()
            },
        },
        "huge layers": {
            **good,
            "meta": good["meta"].replace(
                '"hidden_layer_sizes": {"__tuple__": [4]}',
                '"hidden_layer_sizes": {"__tuple__": [60000, 60000]}',
            ),
        },
        "format": {**good, _PORTABLE: 99},
    }
    for name, state in cases.items():
        fresh = MLPClassifier.__new__(MLPClassifier)
        with pytest.raises(ValueError, match="was refused"):
            fresh.__setstate__(state)
        assert "net_" not in fresh.__dict__, name
    # and through skops itself
    data = skops_io.dumps(clf)
    assert "sknets._mlp.MLPClassifier" in skops_io.get_untrusted_types(data=data)
    tampered = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as src,
        zipfile.ZipFile(tampered, "w") as dst,
    ):
        for info in src.infolist():
            content = src.read(info)
            if info.filename == "schema.json":
                content = content.replace(b"[4]", b"[60000, 60000]")
            dst.writestr(info, content)
    with pytest.raises(ValueError, match="do not match"):
        skops_io.loads(tampered.getvalue(), trusted=[MLPClassifier])


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, torch
    torch.set_num_threads(1)
    import sknets
    from sknets import load
    paths = sys.argv[1:]
    try:
        load(paths[0])  # warm up: imports and first-call costs
    except ValueError:
        pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    accepted = []
    for path in paths:
        try:
            load(path)
            accepted.append(path)
        except ValueError:
            pass
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kb": after - before, "accepted": accepted}))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="resource is POSIX-only")
def test_crafted_files_allocate_nothing_large(base, tmp_path):
    """Files that claim 14-128 GB are refused within a few MB of peak memory."""
    paths = []
    for name, build, match in CASES:
        if match is None or name == "huge-json":
            continue  # huge-json's 17 MB text is real: measured elsewhere
        meta, tensors = copy.deepcopy(base)
        paths.append(str(_write(tmp_path / f"{name}.sknets", build(meta, tensors))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, *paths],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["accepted"] == []
    # ru_maxrss is in KiB on Linux (bytes on macOS: the bound only gets looser)
    assert report["growth_kb"] < 200 * 1024, report
