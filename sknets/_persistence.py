"""Saving fitted estimators without pickle: JSON text plus tensors.

``pickle``/``joblib`` keep everything between trusted parties, but loading a
pickle runs code chosen by whoever wrote the file. :func:`save` writes a file
that ``torch.load(..., weights_only=True)`` reads (strings, numbers and
tensors only) and :func:`load` reads it back through strict checks:

- a network estimator (or a :class:`~sknets.PretrainedFeatureExtractor`) is
  JSON text (its class, parameters and fitted attributes) plus the module's
  state dict, each weight stored once;
- any other estimator tree (``Pipeline``, ``ColumnTransformer``, a search's
  ``best_estimator_``...) is stored with skops, whose loader builds only
  types it trusts; the sknets estimators inside it store the same JSON and
  arrays through their ``__getstate__`` (see :mod:`sknets._pickling`), so
  ``skops.io.dump``/``skops.io.load`` work on them directly too.

:func:`load` accepts only what :func:`save` writes: known classes and
parameters (validated by each class's ``_parameter_constraints``), a
per-class table of fitted attributes with their types, whitelisted dtypes,
plain contiguous tensors whose shapes match the network the parameters build
(checked on the ``meta`` device, before any memory is allocated), and size
limits. Every refusal is a ``ValueError`` that says why.
"""

import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import tempfile
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch

from sknets import _catalog
from sknets._restore import Refused as _Refused
from sknets._stored import (
    _ARRAY_DTYPES,
    _DERIVED,
    _MAX_TENSORS,
    _READABLE,
    _SCHEMAS,
    FORMAT,
    MAX_META_CHARS,
    _check_container,
    _check_tensor,
    _classes,
    _parse_json,
    _public_class,
    _rebuild,
)
from sknets._version import __version__

# ======================================================================= save


def save(estimator, path):
    """Save a fitted estimator, or a tree of estimators, to ``path``.

    Parameters
    ----------
    estimator : estimator
        A fitted sknets estimator (``MLPClassifier``, ``MLPRegressor``,
        ``ConvNetClassifier``, ``FineTunedClassifier``,
        ``PretrainedFeatureExtractor``) whose parameters are plain values
        (numbers, strings, tuples, dicts of them); or any scikit-learn object
        that skops can store (a ``Pipeline``, ``ColumnTransformer``,
        ``FeatureUnion``, a search or its ``best_estimator_``...), with sknets
        estimators inside. The latter needs the ``skops`` package
        (``pip install sknets[persist]``).
    path : str or path-like
        The file to write (conventionally ``*.sknets``). It is written
        atomically: to a temporary file in the same folder, flushed to disk,
        then renamed over ``path``, so a crash or a full disk leaves any
        previous file at ``path`` intact.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    TypeError
        When a parameter or fitted attribute cannot be stored without pickle
        (a ``RandomState``, a callable, a ``torch.nn.Module`` backbone, user
        callbacks), or skops cannot store a part of the tree.
    OSError
        When the file cannot be written; the previous file is unchanged.

    See Also
    --------
    load : Read the file back.

    Notes
    -----
    The optimizer's state is not saved: ``warm_start`` after loading restarts
    it, as scikit-learn's ``fit`` does. A pretrained backbone is stored with
    the weights it has after ``fit``: loading needs no weights file.

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
    if _public_class(type(estimator)) is type(estimator):
        _require_fitted(estimator)
        meta, arrays = _encode_estimator(estimator, fitted=True)
        tensors = {name: _as_stored(a) for name, a in arrays.items()}
    else:
        skops_io = _skops("save() of a " + type(estimator).__name__)
        try:
            data = skops_io.dumps(estimator)
        except TypeError:
            raise
        except Exception as exc:  # skops' UnsupportedTypeException and others
            raise TypeError(
                f"skops cannot store this {type(estimator).__name__}: {exc}. Use "
                "joblib.dump between parties that trust each other."
            ) from exc
        meta = {
            "kind": "skops",
            "sknets_version": __version__,
            "skops_version": _skops_version(),
        }
        tensors = {"skops": torch.frombuffer(bytearray(data), dtype=torch.uint8)}
    text = json.dumps(meta, sort_keys=True, allow_nan=False)
    payload = {
        "sknets_format": FORMAT,
        "meta": text,
        "tensors": tensors,
        "sha256": _digest(text, tensors),
    }
    path = Path(os.fspath(path))
    _write_atomic(path, payload)
    return path


def _require_fitted(estimator):
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)


def _as_stored(value):
    """A tensor of its own storage, exactly its size (what load accepts)."""
    t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
    t = t.detach().cpu()
    if (
        t.storage_offset() != 0
        or not t.is_contiguous()
        or t.untyped_storage().nbytes() != t.numel() * t.element_size()
    ):
        t = t.clone(memory_format=torch.contiguous_format)
    return t


class _Sink:
    """A file wrapper that keeps the ``OSError`` torch's writer would hide."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self):
        self.file.flush()


def _new_file_mode(path):
    try:
        return os.stat(path).st_mode & 0o7777  # keep an existing file's mode
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _write_atomic(path, payload):
    """``torch.save(payload, path)``, all or nothing.

    The bytes go to a temporary file next to ``path`` (the same file system),
    flushed and ``fsync``'d, then ``os.replace`` puts it in place in one step;
    on any failure the temporary file is removed and ``path`` is untouched.
    """
    folder = path.parent
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            sink = _Sink(file)
            try:
                torch.save(payload, sink)
            except RuntimeError:
                if sink.error is not None:  # torch reports it as "unexpected pos"
                    raise sink.error from None
                raise
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(OSError, NotImplementedError):
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(
                exc.errno,
                f"Could not write {path}: {exc.strerror or exc}. Nothing was "
                "written; a previous file at that path is unchanged.",
            ) from exc
        raise
    with contextlib.suppress(OSError, AttributeError):
        dir_fd = os.open(folder, os.O_RDONLY)  # the rename itself, to disk
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ------------------------------------------------------------------ encoding


def _encode_estimator(estimator, fitted):
    """``(meta, arrays)`` of a sknets estimator: JSON-able dict, NumPy arrays.

    ``fitted=False`` stores an unfitted estimator's parameters alone (skops
    states of estimators inside a search, e.g.). Fitted attributes that the
    module determines (``coefs_``, ...) are not stored: load rebuilds them.
    """
    cls = _public_class(type(estimator))
    arrays = {}
    params = {
        k: _encode(v, None, f"params/{k}", "parameter")
        for k, v in estimator.get_params(deep=False).items()
    }
    meta = {
        "kind": "estimator",
        "class": cls.__name__,
        "sknets_version": __version__,
        "params": params,
        "fitted": None,
    }
    is_fitted = "n_features_in_" in estimator.__dict__
    if fitted or is_fitted:
        schema = _SCHEMAS[cls.__name__]
        state = estimator._fitted_state()
        unknown = set(state) - set(schema) - _DERIVED - {"_private"}
        if unknown:
            raise TypeError(  # a bug of sknets: _SCHEMAS must list them
                f"save() does not know how to store the fitted attribute(s) "
                f"{sorted(unknown)} of {cls.__name__}."
            )
        state = {k: v for k, v in state.items() if k in schema or k == "_private"}
        meta["fitted"] = _encode(state, arrays, "fitted", "fitted attribute")
        for name, value in estimator.module_.state_dict().items():
            arrays[f"module/{name}"] = value.detach().cpu()
    return meta, arrays


def _encode(value, arrays, prefix, where):
    """A JSON-able structure; numeric arrays go to ``arrays`` by reference."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (Integral, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (Real, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, tuple):
        return {
            "__tuple__": [
                _encode(v, arrays, f"{prefix}/{i}", where) for i, v in enumerate(value)
            ]
        }
    if isinstance(value, list):
        return [_encode(v, arrays, f"{prefix}/{i}", where) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {
                k: _encode(v, arrays, f"{prefix}/{k}", where) for k, v in value.items()
            }
        if all(isinstance(k, (str, Integral, Real)) for k in value):
            return {
                "__dict__": [
                    [
                        _encode(k, arrays, prefix, where),
                        _encode(v, arrays, prefix, where),
                    ]
                    for k, v in value.items()
                ]
            }
    if isinstance(value, np.ndarray):
        if value.dtype in _ARRAY_DTYPES and arrays is not None:
            arrays[prefix] = _c_order(value)
            return {"__ndarray__": prefix, "dtype": value.dtype.str}
        if value.dtype.kind in "biuf" and arrays is None:  # a parameter: a list
            return _encode(value.tolist(), arrays, prefix, where)
        if value.dtype.kind in "OU" and all(isinstance(v, str) for v in value.ravel()):
            if value.ndim == 1:
                return {"__strarray__": value.tolist(), "dtype": value.dtype.kind}
    raise TypeError(
        f"save() cannot store the {where} {prefix.split('/', 1)[-1]!r} = {value!r} "
        f"(type {type(value).__name__}) without pickle; use plain values, or "
        "joblib.dump between parties that trust each other."
    )


def _c_order(array):
    """``array`` in C order (unlike np.ascontiguousarray, 0-d stays 0-d)."""
    return array if array.flags.c_contiguous else array.copy(order="C")


def _digest(text, tensors):
    """sha256 of the JSON text and the tensors (names, dtypes, shapes, bytes).

    Only for tensors that passed :func:`_check_tensor` (plain, contiguous,
    their own storage): no copy is made.
    """
    h = hashlib.sha256(text.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


# ======================================================================= load


def load(path, *, device=None, trusted=None):
    """Load what :func:`save` wrote, running no code from the file.

    Parameters
    ----------
    path : str or path-like
        The file.
    device : str or torch.device, default=None
        Where to put the networks. None keeps the saved ``device`` when it
        exists here, else falls back to the CPU with a warning.
    trusted : list of str or type, default=None
        For a tree stored with skops: types to trust beyond skops' defaults
        and sknets' own estimators, as ``skops.io.load`` takes them (see
        ``skops.io.get_untrusted_types``). Ignored for a single estimator.

    Returns
    -------
    estimator : estimator
        The fitted estimator (or tree), predicting exactly as the saved one.

    Raises
    ------
    ValueError
        When the file is not one that :func:`save` writes, was altered or
        truncated, was written by a newer sknets, or holds anything outside
        what :func:`save` stores: unknown classes, parameters or fitted
        attributes, invalid parameter values, non-numeric dtypes, tensors
        that are views or whose shapes do not match the network, JSON text
        over 16 MiB, or types skops does not trust.

    See Also
    --------
    save : Write the file.

    Notes
    -----
    Loading allocates nothing the file does not hold: the network is first
    built on PyTorch's ``meta`` device and its state dict compared with the
    stored tensors, and only then filled with them. A pretrained backbone
    is rebuilt by name without its pretrained weights file (the file holds
    the fitted weights), and no path named in the file is ever opened.
    ``compile`` is set to False: call ``set_params(compile=True)`` to compile
    the loaded network again.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from sknets import MLPRegressor, save, load
    >>> X = np.arange(8.0).reshape(4, 2)
    >>> reg = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2,
    ...                    random_state=0).fit(X, X.sum(axis=1))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     again = load(save(reg, d + "/reg.sknets"))
    >>> bool((again.predict(X) == reg.predict(X)).all())
    True
    """
    try:
        path = Path(os.fspath(path))
    except TypeError as exc:
        raise TypeError(f"load() takes a path; got {type(path).__name__}.") from exc
    _check_container(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupted zip, pickle with code, not a file...
        raise ValueError(f"{path} is not a readable sknets model file: {exc}") from exc
    if not isinstance(payload, dict) or "sknets_format" not in payload:
        raise ValueError(f"{path} is not an sknets model file.")
    fmt = payload["sknets_format"]
    if type(fmt) is int and fmt > FORMAT:
        raise ValueError(
            f"{path} was written in sknets file format {fmt}, newer than this "
            f"sknets {__version__} reads (format <= {FORMAT}). Upgrade sknets."
        )
    try:
        return _load_payload(payload, device, trusted)
    except _Refused as exc:
        raise ValueError(f"{path} was refused: {exc}") from None
    except Exception as exc:  # a check that something slipped past: still a refusal
        raise ValueError(f"{path} was refused: {type(exc).__name__}: {exc}") from exc


def _load_payload(payload, device, trusted):
    if set(payload) != {"sknets_format", "meta", "tensors", "sha256"}:
        raise _Refused(f"unexpected entries {sorted(map(str, payload))}.")
    fmt = payload["sknets_format"]
    if type(fmt) is not int or fmt not in _READABLE:
        raise _Refused(f"unknown file format {fmt!r}; this sknets reads {_READABLE}.")
    text, tensors, sha = payload["meta"], payload["tensors"], payload["sha256"]
    if not isinstance(text, str) or len(text) > MAX_META_CHARS:
        raise _Refused(
            f"the JSON text must be a string of at most {MAX_META_CHARS} characters."
        )
    if type(tensors) is not dict or len(tensors) > _MAX_TENSORS:
        raise _Refused(f"the tensors must be a dict of at most {_MAX_TENSORS}.")
    for name, t in tensors.items():
        _check_tensor(name, t)
    if type(sha) is not str or not re.fullmatch("[0-9a-f]{64}", sha):
        raise _Refused("its checksum is not a sha256 hex digest.")
    if not hmac.compare_digest(sha, _digest(text, tensors)):
        raise _Refused("it failed its checksum: the file was altered or is incomplete.")
    meta = _parse_json(text)
    if not isinstance(meta, dict):
        raise _Refused("the JSON text is not an object.")
    kind = meta.get("kind", "estimator" if fmt == 1 else None)
    if kind == "skops" and fmt >= 2:
        return _load_tree(meta, tensors, trusted)
    if kind != "estimator":
        raise _Refused(f"unknown content kind {kind!r}.")
    cls = (
        _classes().get(meta.get("class"))
        if isinstance(meta.get("class"), str)
        else None
    )
    if cls is None:
        raise _Refused(f"unknown estimator class {meta.get('class')!r}.")
    return _rebuild(cls, meta, tensors, device, fmt, require_fitted=True)


# ---------------------------------------------------------- trees (skops)


def _skops(what):
    try:
        import skops.io as skops_io
    except ImportError as exc:
        raise ImportError(
            f"{what} needs skops, which cannot be imported ({exc}). Install it with "
            "`pip install sknets[persist]` (or `pip install skops`)."
        ) from exc
    return skops_io


def _skops_version():
    from importlib.metadata import version

    return version("skops")


def _trusted_sknets_types():
    """sknets' estimators (their state is checked) and searches (scikit-learn's)."""
    return [*_classes().values(), *_catalog.classes("search").values()]


def _load_tree(meta, tensors, trusted):
    if not set(meta) <= {"kind", "sknets_version", "skops_version"}:
        raise _Refused(f"unexpected entries {sorted(meta)}.")
    t = tensors.get("skops")
    if set(tensors) != {"skops"} or t.dtype != torch.uint8 or t.dim() != 1:
        raise _Refused("a skops tree is one 1-D uint8 tensor.")
    try:
        skops_io = _skops("Loading this file (an estimator tree stored with skops)")
    except ImportError as exc:
        raise _Refused(str(exc)) from None
    from skops.io.exceptions import UntrustedTypesFoundException

    data = t.numpy().tobytes()
    trust = _trusted_sknets_types() + list(trusted or [])
    try:
        return skops_io.loads(data, trusted=trust)
    except UntrustedTypesFoundException:
        names = sorted(
            set(skops_io.get_untrusted_types(data=data))
            - {f"{c.__module__}.{c.__name__}" for c in _trusted_sknets_types()}
            - {
                x if isinstance(x, str) else f"{x.__module__}.{x.__name__}"
                for x in trusted or []
            }
        )
        raise _Refused(
            f"it holds types that skops does not trust by default: {names}. If you "
            "trust them, pass them as load(path, trusted=[...])."
        ) from None
    except _Refused:
        raise
    except Exception as exc:
        raise _Refused(
            f"skops could not load it: {type(exc).__name__}: {exc}"
        ) from None
