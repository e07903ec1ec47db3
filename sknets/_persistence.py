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
import warnings
import zipfile
from dataclasses import fields
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch

from sknets import _catalog
from sknets._pickling import _PORTABLE, register_portable
from sknets._restore import Refused as _Refused
from sknets._version import __version__

FORMAT = 2  # bump when the layout changes; load() reads every format in _READABLE
_READABLE = (1, 2)

#: Longest JSON text a file may hold (characters).
MAX_META_CHARS = 16 * 2**20
_MAX_DEPTH = 24  # nesting of the decoded JSON values
_MAX_SEQUENCE = 4096  # items of a list or tuple parameter (layers, filters, ...)
_MAX_TENSORS = 100_000
_MAX_NAME = 1024
_BIG_INT = 2**53

_TENSOR_DTYPES = {
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
}
# arrays that a fitted attribute or a skops state may hold (NumPy dtypes)
_ARRAY_DTYPES = {
    np.dtype(name)
    for name in (
        "bool",
        "uint8",
        "int8",
        "int16",
        "int32",
        "int64",
        "float16",
        "float32",
        "float64",
    )
}


def _classes():
    """The sknets estimator classes a file may name, by name."""
    return _catalog.classes("estimator")


def _public_class(cls):
    """The sknets class that ``cls`` is or derives from, or None."""
    for base in cls.__mro__:
        if _classes().get(base.__name__) is base:
            return base
    return None


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


def _check_container(path):
    """The file is a zip of stored (uncompressed) records: nothing inflates.

    torch.save writes records uncompressed; a compressed record could make
    ``torch.load`` allocate far more than the file's size.
    """
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable sknets model file: {exc}") from exc
    if len(records) > _MAX_TENSORS + 16:
        raise ValueError(f"{path} was refused: it holds {len(records)} records.")
    if any(r.compress_type != zipfile.ZIP_STORED for r in records):
        raise ValueError(f"{path} was refused: it holds compressed records.")
    if sum(r.file_size for r in records) > size:
        raise ValueError(f"{path} was refused: its records are larger than the file.")


def _check_tensor(name, t):
    """A plain CPU tensor of a whitelisted dtype that owns exactly its storage.

    Its size in bytes comes from its shape (numel x itemsize, never
    materialized) and must be that of its storage: views, stride-0
    (expanded) and offset tensors are refused before anything reads them.
    """
    if type(name) is not str or not name or len(name) > _MAX_NAME:
        raise _Refused(f"tensor name {str(name)[:80]!r} is not a short string.")
    if type(t) is not torch.Tensor:
        raise _Refused(f"tensor {name!r} is a {type(t).__name__}, not a tensor.")
    if t.layout != torch.strided or t.is_quantized or t.device.type != "cpu":
        raise _Refused(f"tensor {name!r} is not a dense CPU tensor.")
    if t.dtype not in _TENSOR_DTYPES:
        raise _Refused(f"tensor {name!r} has dtype {t.dtype}, not a stored one.")
    if t.dim() > 8:
        raise _Refused(f"tensor {name!r} has {t.dim()} dimensions.")
    nbytes = math.prod(int(s) for s in t.shape) * t.element_size()
    if (
        t.storage_offset() != 0
        or not t.is_contiguous()
        or t.untyped_storage().nbytes() != nbytes
    ):
        raise _Refused(
            f"tensor {name!r} of shape {tuple(t.shape)} is not a contiguous "
            "tensor of its own storage (a view, an expanded or offset tensor)."
        )


def _check_array(name, a):
    """The NumPy counterpart of :func:`_check_tensor`, for skops states."""
    if type(name) is not str or not name or len(name) > _MAX_NAME:
        raise _Refused(f"array name {str(name)[:80]!r} is not a short string.")
    if type(a) is not np.ndarray or a.dtype not in _ARRAY_DTYPES:
        raise _Refused(
            f"array {name!r} is a {type(a).__name__} of dtype "
            f"{getattr(a, 'dtype', None)}, not a numeric array."
        )
    if a.ndim > 8 or not a.flags.c_contiguous:
        raise _Refused(f"array {name!r} is not a contiguous array.")


def _parse_json(text):
    def no_constant(name):
        raise _Refused(f"the JSON text holds {name}, which save never writes.")

    def unique(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise _Refused("the JSON text repeats a key.")
        return dict(pairs)

    try:
        return json.loads(text, parse_constant=no_constant, object_pairs_hook=unique)
    except RecursionError:
        raise _Refused("the JSON text is nested too deeply.") from None
    except _Refused:
        raise
    except ValueError as exc:  # JSONDecodeError, too many digits
        raise _Refused(f"the JSON text is invalid: {exc}") from None


# ------------------------------------------------------------------ decoding


def _decode(value, tensors, used, depth=0):
    """Plain values back from their JSON form; never callables or objects."""
    if depth > _MAX_DEPTH:
        raise _Refused(f"values are nested more than {_MAX_DEPTH} deep.")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused("a number is out of range.")
        return value
    if isinstance(value, list):
        return [_decode(v, tensors, used, depth + 1) for v in value]
    if not isinstance(value, dict):  # pragma: no cover - json gives no other
        raise _Refused(f"unexpected value {value!r}.")
    tags = [k for k in value if k.startswith("__")]
    if not tags:
        return {k: _decode(v, tensors, used, depth + 1) for k, v in value.items()}
    tag = tags[0]
    body = value[tag]
    if tag == "__tuple__" and len(value) == 1 and isinstance(body, list):
        return tuple(_decode(v, tensors, used, depth + 1) for v in body)
    if tag == "__float__" and len(value) == 1 and body in ("inf", "-inf", "nan"):
        return float(body)
    if tag == "__dict__" and len(value) == 1 and isinstance(body, list):
        out = {}
        for item in body:
            if not (isinstance(item, list) and len(item) == 2):
                raise _Refused("a dict is not stored as key-value pairs.")
            key = _decode(item[0], tensors, used, depth + 1)
            if not isinstance(key, (str, int, float)) or key in out:
                raise _Refused(f"a dict key {key!r} is not a plain, unique key.")
            out[key] = _decode(item[1], tensors, used, depth + 1)
        return out
    if tag == "__torch_device__" and len(value) == 1 and isinstance(body, str):
        return body  # format 1; validated as the device parameter
    if tag == "__ndarray__" and set(value) == {"__ndarray__", "dtype"}:
        return _decode_array(body, value["dtype"], tensors, used)
    if tag == "__strarray__" and set(value) == {"__strarray__", "dtype"}:
        if not (isinstance(body, list) and all(isinstance(v, str) for v in body)):
            raise _Refused("a string array holds values that are not strings.")
        kind = value["dtype"] if isinstance(value["dtype"], str) else ""
        kind = kind.lstrip("<>|=")[:1]  # format 1 wrote a dtype, format 2 its kind
        if kind == "U":
            return np.array(body, dtype=str)  # as wide as its longest string
        if kind == "O":
            out = np.empty(len(body), dtype=object)
            out[:] = body
            return out
        raise _Refused(f"a string array has dtype {value['dtype']!r}.")
    raise _Refused(f"unknown value tag {tag!r}.")


def _decode_array(name, dtype, tensors, used):
    if not isinstance(name, str) or not name.startswith("fitted/"):
        raise _Refused(f"an array refers to {str(name)[:80]!r}, not a fitted tensor.")
    if name not in tensors:
        raise _Refused(f"an array refers to the missing tensor {name!r}.")
    try:
        declared = np.dtype(dtype) if isinstance(dtype, str) else None
    except TypeError:
        declared = None
    t = tensors[name]
    if declared not in _ARRAY_DTYPES or t.dtype == torch.bfloat16:
        raise _Refused(f"array {name!r} has dtype {dtype!r}, not a numeric one.")
    array = t.numpy()
    if array.dtype != declared:
        raise _Refused(f"array {name!r} is {array.dtype}, declared {declared}.")
    used.add(name)
    return array


# -------------------------------------------------------- what a class holds


def _is_int(v, low=0, high=_BIG_INT):
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _count(v):
    if not _is_int(v, 1):
        raise _Refused(f"expected a positive int, got {v!r}")
    return v


def _natural(v):
    if not _is_int(v, 0):
        raise _Refused(f"expected a non-negative int, got {v!r}")
    return v


def _number(v):
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise _Refused(f"expected a number, got {v!r}")
    return v


def _optional(check):
    def optional(v):
        return None if v is None else check(v)

    return optional


def _numbers(v):
    if not isinstance(v, list):
        raise _Refused(f"expected a list of numbers, got {type(v).__name__}")
    return [_number(x) for x in v]


def _choice(*options):
    def choice(v):
        if v not in options or not isinstance(v, str):
            raise _Refused(f"expected one of {options}, got {v!r}")
        return v

    return choice


_HISTORY_KEYS = ("epoch", "train_loss", "valid_loss", "valid_score", "dur")


def _history(v):
    if not isinstance(v, list):
        raise _Refused("expected a list of epochs")
    for row in v:
        if not isinstance(row, dict) or not set(row) <= set(_HISTORY_KEYS):
            raise _Refused(f"an epoch holds {row!r}")
        for x in row.values():
            _optional(_number)(x)
    return v


def _names(v):
    if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype.kind not in "OU":
        raise _Refused("expected a 1-D array of strings")
    return v.astype(object)


def _classes_of(v):
    if not isinstance(v, np.ndarray) or v.ndim != 1 or not 1 <= len(v):
        raise _Refused("expected a 1-D array of class labels")
    if len(np.unique(v)) != len(v):
        raise _Refused("class labels repeat")
    return v


def _shape(v, dims=(1, 2, 3)):
    if (
        not isinstance(v, tuple)
        or len(v) not in dims
        or not all(_is_int(s, 1, 2**20) for s in v)
        or math.prod(v) > 2**28
    ):
        raise _Refused(f"expected a shape of {dims} positive ints, got {v!r}")
    return v


_NET = {
    "n_features_in_": _count,
    "feature_names_in_": _names,
    "n_outputs_": _count,
    "out_activation_": _choice("identity", "logistic", "softmax", "exp"),
    "history_": _history,
    "t_": _natural,
    "loss_": _number,
    "n_iter_": _natural,
    "loss_curve_": _numbers,
    "validation_scores_": _optional(_numbers),
    "validation_loss_curve_": _optional(_numbers),
    "best_validation_score_": _optional(_number),
    "best_loss_": _optional(_number),
    "best_epoch_": _optional(_natural),
}
_REQUIRED = {"n_features_in_", "n_outputs_", "out_activation_", "history_", "t_"}
#: Per class: the fitted attributes a file may hold and how each is checked.
_SCHEMAS = {
    "MLPRegressor": _NET,
    "MLPClassifier": {**_NET, "classes_": _classes_of},
    "ConvNetClassifier": {
        **_NET,
        "classes_": _classes_of,
        "input_shape_": lambda v: _shape(v, (2, 3)),
    },
    "FineTunedClassifier": {
        **_NET,
        "classes_": _classes_of,
        "image_shape_": _optional(lambda v: _shape(v, (3,))),
    },
    "PretrainedFeatureExtractor": {
        "n_features_in_": _count,
        "feature_names_in_": _names,
        "image_shape_": _optional(lambda v: _shape(v, (3,))),
        "n_features_out_": _count,
    },
}
_SCHEMA_REQUIRED = {
    "PretrainedFeatureExtractor": {"n_features_in_", "n_features_out_"},
    "MLPRegressor": _REQUIRED,
}
# fitted attributes rebuilt from the module on load, never stored (format 1 did)
_DERIVED = {"coefs_", "intercepts_", "n_layers_", "filters_"}


def _check_private(cls, private):
    from sknets._epochs import StoppingState

    if not isinstance(private, dict):
        raise _Refused("the private fitted state is not an object.")
    allowed = {"dtype", "sparse_input", "batch_size", "monitor", "extra"}
    if not set(private) <= allowed or "dtype" not in private:
        raise _Refused(f"unexpected private fitted state {sorted(private)}.")
    _choice("float32", "float64")(private["dtype"])
    if not isinstance(private.get("sparse_input", False), bool):
        raise _Refused("sparse_input is not a bool.")
    _count(private.get("batch_size", 1))
    monitor = private.get("monitor", {})
    known = {f.name for f in fields(StoppingState)} - {"best_state"}
    if not isinstance(monitor, dict) or not set(monitor) <= known:
        raise _Refused(f"unexpected stopping state {monitor!r}.")
    for v in monitor.values():
        _optional(_number)(v)
    extra = private.get("extra", {})
    expected = {"y_type"} if "classes_" in _SCHEMAS[cls.__name__] else set()
    if not isinstance(extra, dict) or set(extra) != expected:
        raise _Refused(f"unexpected extra state {extra!r}.")
    if expected:
        _choice("binary", "multiclass", "multilabel-indicator")(extra["y_type"])


def _check_fitted(cls, fitted, fmt):
    """The fitted attributes of ``cls``'s table, each of its kind."""
    if not isinstance(fitted, dict):
        raise _Refused("the fitted attributes are not an object.")
    schema = _SCHEMAS[cls.__name__]
    fitted = dict(fitted)
    private = fitted.pop("_private", None)
    if fmt == 1:
        for name in _DERIVED:
            fitted.pop(name, None)
    unknown = set(fitted) - set(schema)
    if unknown:
        raise _Refused(
            f"unknown fitted attribute(s) {sorted(unknown)} for {cls.__name__}."
        )
    required = _SCHEMA_REQUIRED.get(cls.__name__, _REQUIRED | {"classes_"})
    missing = required - set(fitted)
    if missing:
        raise _Refused(f"missing fitted attribute(s) {sorted(missing)}.")
    for name, value in fitted.items():
        try:
            fitted[name] = schema[name](value)
        except _Refused as exc:
            raise _Refused(f"fitted attribute {name}: {exc}.") from None
    n_features = fitted["n_features_in_"]
    names = fitted.get("feature_names_in_")
    if names is not None and len(names) != n_features:
        raise _Refused("feature_names_in_ does not match n_features_in_.")
    for attr in ("input_shape_", "image_shape_"):
        shape = fitted.get(attr)
        if shape is not None and math.prod(shape) != n_features:
            raise _Refused(f"{attr} {shape} does not hold n_features_in_ values.")
    if cls.__name__ == "PretrainedFeatureExtractor":
        if private is not None:
            raise _Refused("unexpected private fitted state.")
        return fitted
    _check_private(cls, private)
    if "classes_" in fitted:
        y_type, n = private["extra"]["y_type"], len(fitted["classes_"])
        outputs = fitted["n_outputs_"]
        if (y_type == "binary" and (outputs != 1 or n > 2)) or (
            y_type != "binary" and outputs != n
        ):
            raise _Refused(f"{n} classes ({y_type}) do not match n_outputs_={outputs}.")
    fitted["_private"] = private
    return fitted


# ---------------------------------------------------------- the parameters


def _check_backbone(name):
    """A backbone given by name: built in, or a torchvision model name."""
    from sknets.modules._backbones import BACKBONES

    if not isinstance(name, str) or not re.fullmatch(
        r"[A-Za-z][A-Za-z0-9_]{0,63}", name
    ):
        raise _Refused(
            f"backbone {name!r} is not a backbone name (a file stores backbones "
            "by name, never as paths, modules or callables)."
        )
    if name in BACKBONES:
        return
    try:
        import torchvision
    except Exception as exc:
        raise _Refused(
            f"backbone {name!r} is not built in, and torchvision, which would "
            f"know it, cannot be imported here ({exc})."
        ) from None
    if name not in torchvision.models.list_models():
        raise _Refused(f"unknown backbone {name!r}.")


def _decode_params(cls, raw):
    if not isinstance(raw, dict):
        raise _Refused("the parameters are not an object.")
    names = set(cls().get_params(deep=False))
    unknown = set(raw) - names
    if unknown:
        raise _Refused(f"unknown parameter(s) {sorted(unknown)} for {cls.__name__}.")
    params = {}
    for name, value in raw.items():
        value = _decode(value, {}, set())
        if isinstance(value, (list, tuple, dict)) and len(value) > _MAX_SEQUENCE:
            raise _Refused(f"parameter {name} holds {len(value)} values.")
        params[name] = value
    if "backbone" in params:
        _check_backbone(params["backbone"])
    if params.get("weights") is not None and not isinstance(params["weights"], str):
        raise _Refused("weights is not a string or None.")
    if params.get("callbacks") is not None:
        raise _Refused("a file holds no callbacks.")
    if isinstance(params.get("scoring"), dict):
        raise _Refused("scoring is not a string or None.")
    if "compile" in params:
        params["compile"] = False  # compiling is the loader's choice, not the file's
    return params


def _make_estimator(cls, params, device):
    """``cls(**params)``, validated by the class's own parameter checks."""
    from sknets._device import resolve_device

    estimator = cls(**params)
    try:
        estimator._validate_params()  # scikit-learn's, from _parameter_constraints
        if hasattr(estimator, "_check_params"):
            estimator._check_params()
    except (ValueError, TypeError) as exc:
        raise _Refused(f"invalid parameters: {exc}") from None
    if device is not None:
        estimator.set_params(device=device)
    try:
        resolve_device(estimator.device)
    except ValueError as exc:
        if device is not None:
            raise
        warnings.warn(
            f"The estimator was saved with device={estimator.device!r}, which "
            f"is not available here ({exc}); loading it on the CPU."
        )
        estimator.set_params(device="cpu")
    return estimator


def _rebuild(cls, meta, tensors, device, fmt, require_fitted):
    """The estimator that ``meta`` and ``tensors`` describe, checked throughout."""
    allowed = {"kind", "class", "sknets_version", "params", "fitted"}
    if not set(meta) <= allowed or not {"class", "params", "fitted"} <= set(meta):
        raise _Refused(f"unexpected entries {sorted(meta)}.")
    if meta["class"] != cls.__name__:
        raise _Refused(f"it holds a {meta['class']!r}, not a {cls.__name__}.")
    estimator = _make_estimator(cls, _decode_params(cls, meta["params"]), device)
    if meta["fitted"] is None:
        if require_fitted or any(n.startswith("module/") for n in tensors):
            raise _Refused("it holds no fitted estimator.")
        if tensors:
            raise _Refused(f"unexpected tensors {sorted(tensors)[:5]}.")
        return estimator
    used = set()
    fitted = _decode(meta["fitted"], tensors, used)
    fitted = _check_fitted(cls, fitted, fmt)
    module_state = {
        name[len("module/") :]: t
        for name, t in tensors.items()
        if name.startswith("module/")
    }
    extra = set(tensors) - used - {f"module/{k}" for k in module_state}
    if fmt == 1:  # format 1 stored coefs_/intercepts_ twice
        extra = {
            n
            for n in extra
            if not n.startswith(("fitted/coefs_/", "fitted/intercepts_/"))
        }
    if extra:
        raise _Refused(f"unexpected tensors {sorted(extra)[:5]}.")
    try:
        estimator._restore_fitted(fitted, module_state)
    except _Refused:
        raise
    except Exception as exc:  # anything a checked file still trips on
        raise _Refused(
            f"the saved state does not rebuild a {cls.__name__}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if "out_activation_" in fitted:
        if fitted["out_activation_"] != estimator._output_activation():
            raise _Refused(
                f"out_activation_ {fitted['out_activation_']!r} is not the one "
                "its parameters and classes give."
            )
    return estimator


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


# ------------------------------------------------ skops states (__getstate__)


def portable_state(estimator):
    """The state skops stores for a sknets estimator: JSON text and arrays."""
    meta, arrays = _encode_estimator(estimator, fitted=False)
    for name, value in arrays.items():
        if isinstance(value, torch.Tensor):
            if value.dtype not in _TENSOR_DTYPES or value.dtype == torch.bfloat16:
                raise TypeError(
                    f"skops cannot store the {value.dtype} weight {name!r}; use "
                    "sknets.save for this estimator."
                )
            arrays[name] = _c_order(value.numpy())
    return {
        _PORTABLE: FORMAT,
        "meta": json.dumps(meta, sort_keys=True, allow_nan=False),
        "arrays": arrays,
    }


def restore_portable(estimator, state):
    """Become the estimator that :func:`portable_state` described (load's checks)."""
    try:
        cls = _public_class(type(estimator))
        if not isinstance(state, dict) or set(state) != {_PORTABLE, "meta", "arrays"}:
            raise _Refused(f"unexpected entries {sorted(map(str, state))}.")
        fmt = state[_PORTABLE]
        if type(fmt) is not int or fmt not in _READABLE or fmt < 2:
            raise _Refused(
                f"unknown state format {fmt!r}; this sknets reads {_READABLE}."
            )
        text, arrays = state["meta"], state["arrays"]
        if not isinstance(text, str) or len(text) > MAX_META_CHARS:
            raise _Refused("the JSON text is not a short enough string.")
        if not isinstance(arrays, dict) or len(arrays) > _MAX_TENSORS:
            raise _Refused("the arrays are not a dict.")
        for name, a in arrays.items():
            _check_array(name, a)
        tensors = {name: torch.from_numpy(a) for name, a in arrays.items()}
        meta = _parse_json(text)
        if not isinstance(meta, dict) or meta.get("kind") != "estimator":
            raise _Refused("it is not an estimator's state.")
        rebuilt = _rebuild(cls, meta, tensors, None, fmt, require_fitted=False)
    except _Refused as exc:
        raise ValueError(
            f"The stored state of a {type(estimator).__name__} was refused: {exc}"
        ) from None
    except Exception as exc:  # a check that something slipped past: still a refusal
        raise ValueError(
            f"The stored state of a {type(estimator).__name__} was refused: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    estimator.__dict__.update(rebuilt.__dict__)


# the estimators' pickling (sknets._pickling, a lower layer) stores and reads
# skops states through these
register_portable(portable_state, restore_portable)
