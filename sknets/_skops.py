"""The state skops stores for a sknets estimator: the same JSON and arrays as a file.

``skops.io.dump`` of a ``Pipeline`` or a search reads each sknets
estimator's ``__getstate__`` (:mod:`sknets._pickling`), which is
:func:`portable_state`; ``skops.io.load`` gives it back to
:func:`restore_portable`, through the checks of :func:`sknets.load`. The two
are registered with :mod:`sknets._pickling` when this module is imported
(``import sknets`` does).
"""

import json

import torch

from sknets._persistence import _c_order, _encode_estimator
from sknets._pickling import _PORTABLE, register_portable
from sknets._restore import Refused as _Refused
from sknets._stored import (
    _MAX_TENSORS,
    _READABLE,
    _TENSOR_DTYPES,
    FORMAT,
    MAX_META_CHARS,
    _check_array,
    _parse_json,
    _public_class,
    _rebuild,
)

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
