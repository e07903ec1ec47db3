"""Saving fitted networks without pickle: JSON metadata plus tensors.

``pickle``/``joblib`` remain the way to persist anything (pipelines, searches)
between trusted parties: loading a pickle runs code chosen by whoever wrote
the file. :func:`save` / :func:`load` write one network estimator as a file
that ``torch.load(..., weights_only=True)`` reads: strings, numbers and
tensors only, so loading runs no code from the file, and a checksum refuses
files that were altered or truncated.
"""

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

FORMAT = 1  # bump when the layout changes; load() reads every format <= FORMAT


def save(estimator, path):
    """Save a fitted sknets network estimator to ``path``.

    Parameters
    ----------
    estimator : sknets estimator
        A fitted ``MLPClassifier``, ``MLPRegressor`` or other sknets network
        estimator whose parameters are plain values (numbers, strings, tuples).
    path : str or path-like
        The file to write (conventionally ``*.sknets``).

    Returns
    -------
    path : pathlib.Path
        The file written.

    See Also
    --------
    load : Read the file back.

    Notes
    -----
    Use pickle or joblib for pipelines and searches you trust; use this format
    to share a single model with people who should not have to trust you.
    The optimizer's state is not saved: ``warm_start`` after loading restarts
    it, as scikit-learn's ``fit`` does.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from sknets import MLPClassifier, save, load
    >>> X = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    >>> clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0)
    >>> clf = clf.fit(X, [0, 1, 1, 0])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = save(clf, d + "/model.sknets")
    ...     again = load(d + "/model.sknets")
    >>> bool((again.predict_proba(X) == clf.predict_proba(X)).all())
    True
    """
    from sknets import __version__
    from sknets._base import _BaseNet

    if not isinstance(estimator, _BaseNet):
        raise TypeError(
            f"save() writes sknets network estimators; got {type(estimator).__name__}."
            " Use joblib.dump for pipelines and other objects."
        )
    estimator._check_is_fitted_for_save()
    tensors = {}
    meta = {
        "class": type(estimator).__name__,
        "sknets_version": __version__,
        "params": _encode(estimator.get_params(deep=False), tensors, "param", "params"),
        "fitted": _encode(estimator._fitted_state(), tensors, "fitted", "fitted"),
    }
    for name, value in estimator.module_.state_dict().items():
        tensors[f"module/{name}"] = value.detach().cpu().contiguous()
    text = json.dumps(meta, sort_keys=True)
    payload = {
        "sknets_format": FORMAT,
        "meta": text,
        "tensors": tensors,
        "sha256": _digest(text, tensors),
    }
    path = Path(path)
    torch.save(payload, path)
    return path


def load(path, *, device=None):
    """Load an estimator written by :func:`save`, running no code from the file.

    Parameters
    ----------
    path : str or path-like
        The file.
    device : str or torch.device, default=None
        Where to put the model. None keeps the saved ``device`` when it exists
        here, else falls back to the CPU with a warning.

    Returns
    -------
    estimator : sknets estimator
        The fitted estimator, predicting exactly as the saved one.

    Raises
    ------
    ValueError
        When the file is not an sknets model, was altered, or was written by
        a newer, incompatible version of sknets.
    """
    import sknets

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupted zip, pickle with code, not a file...
        raise ValueError(f"{path} is not a readable sknets model file: {exc}") from exc
    if not isinstance(payload, dict) or "sknets_format" not in payload:
        raise ValueError(f"{path} is not an sknets model file.")
    fmt = payload["sknets_format"]
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise ValueError(
            f"{path} was written in sknets file format {fmt}, newer than this "
            f"sknets {sknets.__version__} reads (format <= {FORMAT}). Upgrade sknets."
        )
    text, tensors = payload.get("meta"), payload.get("tensors")
    if not isinstance(text, str) or not isinstance(tensors, dict):
        raise ValueError(f"{path} is not a valid sknets model file.")
    if payload.get("sha256") != _digest(text, tensors):
        raise ValueError(
            f"{path} failed its checksum: the file was altered or is incomplete."
        )
    meta = json.loads(text)
    classes = {
        name: getattr(sknets, name)
        for name in sknets.__all__
        if isinstance(getattr(sknets, name), type)
    }
    cls = classes.get(meta.get("class"))
    if cls is None:
        raise ValueError(
            f"{path} holds an unknown estimator class {meta.get('class')!r}."
        )
    params = _decode(meta["params"], tensors)
    estimator = cls(**params)
    if device is not None:
        estimator.set_params(device=device)
    module_state = {
        k[len("module/") :]: v for k, v in tensors.items() if k.startswith("module/")
    }
    try:
        estimator._restore_fitted(_decode(meta["fitted"], tensors), module_state)
    except ValueError as exc:
        if "CUDA" not in str(exc) or device is not None:
            raise
        warnings.warn(
            f"{path} was saved with device={estimator.device!r}, which is not "
            "available here; loading it on the CPU."
        )
        estimator.set_params(device="cpu")
        estimator._restore_fitted(_decode(meta["fitted"], tensors), module_state)
    return estimator


# ----------------------------------------------------------------- encoding


def _encode(value, tensors, prefix, where):
    """JSON-able structure; numeric arrays go to ``tensors`` by reference."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else {"__float__": repr(v)}
    if isinstance(value, tuple):
        return {
            "__tuple__": [
                _encode(v, tensors, f"{prefix}/{i}", where) for i, v in enumerate(value)
            ]
        }
    if isinstance(value, list):
        return [
            _encode(v, tensors, f"{prefix}/{i}", where) for i, v in enumerate(value)
        ]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {
            k: _encode(v, tensors, f"{prefix}/{k}", where) for k, v in value.items()
        }
    if isinstance(value, torch.dtype):
        return {"__torch_dtype__": str(value).replace("torch.", "")}
    if isinstance(value, torch.device):
        return {"__torch_device__": str(value)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            tensors[prefix] = torch.from_numpy(np.ascontiguousarray(value)).clone()
            return {"__ndarray__": prefix, "dtype": value.dtype.str}
        if value.dtype.kind in "OU" and all(isinstance(v, str) for v in value.ravel()):
            return {"__strarray__": value.tolist(), "dtype": value.dtype.str}
    raise TypeError(
        f"save() cannot store {where} value {value!r} of type {type(value).__name__} "
        "without pickle; use joblib.dump for this estimator."
    )


def _decode(value, tensors):
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__float__" in value:
        return float(value["__float__"])
    if "__torch_dtype__" in value:
        return getattr(torch, value["__torch_dtype__"])
    if "__torch_device__" in value:
        return torch.device(value["__torch_device__"])
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy().astype(np.dtype(value["dtype"]))
    if "__strarray__" in value:
        return np.array(value["__strarray__"], dtype=np.dtype(value["dtype"]))
    return {k: _decode(v, tensors) for k, v in value.items()}


def _digest(text, tensors):
    h = hashlib.sha256(text.encode())
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            return None
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(
            t.detach()
            .cpu()
            .contiguous()
            .reshape(-1)
            .view(torch.uint8)
            .numpy()
            .tobytes()
        )
    return h.hexdigest()
