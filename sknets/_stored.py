"""What a stored estimator may hold, and the checks that hold it to that.

The limits and dtypes a file may use, the classes it may name
(:mod:`sknets._catalog`), the decoding of its JSON and arrays, each class's
table of parameters and fitted attributes, and :func:`_rebuild`, which makes
the estimator from checked content. Shared by :func:`sknets.load` and the
skops states (:mod:`sknets._skops`); every refusal is a ``_Refused``
(a ``ValueError``) with its reason.
"""

import json
import math
import re
import warnings
import zipfile
from dataclasses import fields

import numpy as np
import torch

from sknets import _catalog
from sknets._fitted import _HISTORY_KEYS
from sknets._restore import Refused as _Refused

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


def _mask(v):
    if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype != np.bool_:
        raise _Refused("expected a 1-D boolean array")
    return v


def _category(v):
    if isinstance(v, float) and not math.isfinite(v):
        raise _Refused(f"a category is {v!r}")
    if not isinstance(v, (str, int, float, bool)):
        raise _Refused(f"a category is {v!r}, not a string, number or bool")
    return v


def _encoding(v):
    """A tabular network's encoder (see ``TabularEncoder.to_state``)."""
    keys = {"names", "categorical", "centers", "scales", "with_indicator", "categories"}
    if not isinstance(v, dict) or set(v) - {"bins"} != keys:
        raise _Refused(f"unexpected table encoding {v!r}")
    names, categorical = v["names"], v["categorical"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _Refused("the encoding's column names are not strings")
    if not isinstance(categorical, list) or len(categorical) != len(names):
        raise _Refused("the encoding's categorical flags do not match its columns")
    if not all(isinstance(c, bool) for c in categorical):
        raise _Refused("the encoding's categorical flags are not bools")
    n_numeric = len(names) - sum(categorical)
    for key in ("centers", "scales"):
        if len(_numbers(v[key])) != n_numeric or not all(
            math.isfinite(x) for x in v[key]
        ):
            raise _Refused(f"the encoding's {key} do not match its numeric columns")
    flags = v["with_indicator"]
    if not isinstance(flags, list) or len(flags) != n_numeric:
        raise _Refused("the encoding's indicators do not match its numeric columns")
    if not all(isinstance(f, bool) for f in flags):
        raise _Refused("the encoding's indicator flags are not bools")
    categories = v["categories"]
    if not isinstance(categories, list) or len(categories) != sum(categorical):
        raise _Refused("the encoding's categories do not match its columns")
    for kept in categories:
        if not isinstance(kept, list) or len(kept) > 2**16:
            raise _Refused("a column's categories are not a list")
        for c in kept:
            _category(c)
    if "bins" in v:  # piecewise-linear embeddings' bin edges, per numeric column
        bins = v["bins"]
        if not isinstance(bins, list) or len(bins) != n_numeric:
            raise _Refused("the encoding's bins do not match its numeric columns")
        for edges in bins:
            edges = _numbers(edges)
            pairs = zip(edges[:-1], edges[1:], strict=True)
            if not 2 <= len(edges) <= 2**12 or not all(
                math.isfinite(a) and a < b for a, b in pairs
            ):
                raise _Refused("a column's bin edges are not increasing numbers")
    return v


def _target(v):
    """A tabular regressor's target standardization: ``mean``, ``scale``."""
    if not isinstance(v, dict) or set(v) != {"mean", "scale"}:
        raise _Refused(f"unexpected target scaling {v!r}")
    mean, scale = _numbers(v["mean"]), _numbers(v["scale"])
    if len(mean) != len(scale) or not all(x > 0 for x in scale):
        raise _Refused("the target scaling is not a mean and a positive scale")
    return v


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
    "TabularClassifier": {**_NET, "classes_": _classes_of, "is_categorical_": _mask},
    "TabularRegressor": {**_NET, "is_categorical_": _mask},
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
    "TabularClassifier": _REQUIRED | {"classes_", "is_categorical_"},
    "TabularRegressor": _REQUIRED | {"is_categorical_"},
}
#: Per class: the private extra state beside the classifiers' ``y_type``.
_EXTRA = {
    "TabularClassifier": {"encoding": _encoding},
    "TabularRegressor": {"encoding": _encoding, "target": _target},
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
    checks = _EXTRA.get(cls.__name__, {})
    expected = {"y_type"} if "classes_" in _SCHEMAS[cls.__name__] else set()
    if not isinstance(extra, dict) or set(extra) != expected | set(checks):
        raise _Refused(f"unexpected extra state {extra!r}.")
    if "y_type" in expected:
        _choice("binary", "multiclass", "multilabel-indicator")(extra["y_type"])
    for key, check in checks.items():
        check(extra[key])


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
