"""Pickling of estimators: the live state for pickle, a portable one for skops.

:class:`_PortableStateMixin` gives every sknets estimator two states.
``pickle``, ``copy`` and joblib go through ``__reduce_ex__`` and keep the live
objects (the skorch net, the optimizer's state, user callbacks). skops reads
``__getstate__``/``__setstate__`` (its public extension point for objects):
there the state is the portable one that :func:`sknets.save` writes, JSON
text and NumPy arrays, and ``__setstate__`` rebuilds the estimator through
the same checks as :func:`sknets.load`.

torch pickles a tensor's storage under its memory address, so equal modules
pickle to different bytes and joblib's hashing (``Pipeline(memory=...)``)
misses its cache. :class:`_BackbonePickleMixin` pickles a module-valued
``backbone`` parameter by value instead.
"""

import copyreg
import io
import pickle

import torch
from sklearn.base import BaseEstimator
from torch import nn

_PORTABLE = "__sknets_portable__"  # the key that marks a portable state
_CODEC = {}  # "state" and "restore": sknets._persistence registers them


def register_portable(state, restore):
    """Set the portable state's writer and reader (:mod:`sknets._persistence`).

    ``state(estimator)`` returns the portable state; ``restore(estimator,
    state)`` makes the estimator the one it describes. Registered when
    persistence is imported (``import sknets`` does), so that pickling here
    does not import the layer above.
    """
    _CODEC["state"], _CODEC["restore"] = state, restore


def _codec(name):
    if name not in _CODEC:  # only without sknets/__init__ (never in practice)
        raise RuntimeError("import sknets first: its persistence is not loaded.")
    return _CODEC[name]


def _rebuild_tensor(array, dtype, requires_grad, parameter):
    t = torch.from_numpy(array).to(getattr(torch, dtype))
    if parameter:
        return nn.Parameter(t, requires_grad=requires_grad)
    return t.requires_grad_(requires_grad)


class _StablePickler(pickle.Pickler):
    """Pickle tensors by value (as NumPy arrays), not by storage address."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
            name = str(obj.dtype).removeprefix("torch.")
            if name not in ("bfloat16",) and not obj.is_sparse:
                array = obj.detach().numpy()
                parameter = isinstance(obj, nn.Parameter)
                return _rebuild_tensor, (array, name, obj.requires_grad, parameter)
        return NotImplemented


class _ModuleBytes:
    """A module parameter as bytes that are equal for equal modules.

    torch pickles a tensor's storage under its memory address, so a module and
    its deep copy (what ``clone`` gives) never hash alike in joblib, and
    ``Pipeline(memory=...)`` would miss its cache. These bytes do not depend
    on addresses.
    """

    def __init__(self, module):
        buffer = io.BytesIO()
        _StablePickler(buffer, protocol=4).dump(module)
        self.data = buffer.getvalue()

    def load(self):
        return pickle.loads(self.data)


class _PortableStateMixin:
    """Live state for pickle and copy, portable state for skops (see the module).

    Subclasses extend :meth:`_pickle_state` (not ``__getstate__``) to change
    what pickle stores.
    """

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self._pickle_state()

    def __reduce__(self):
        return self.__reduce_ex__(2)

    def _pickle_state(self):
        """What pickle and copy store: scikit-learn's estimator state."""
        return BaseEstimator.__getstate__(self)

    def __getstate__(self):
        return _codec("state")(self)

    def __setstate__(self, state):
        if isinstance(state, dict) and _PORTABLE in state:
            _codec("restore")(self, state)
        else:
            BaseEstimator.__setstate__(self, state)


class _BackbonePickleMixin(_PortableStateMixin):
    """Pickle a module-valued ``backbone`` parameter in a hash-stable form."""

    def _pickle_state(self):
        state = dict(super()._pickle_state())  # never the live __dict__
        if isinstance(state.get("backbone"), nn.Module):
            state["backbone"] = _ModuleBytes(state["backbone"])
        return state

    def __setstate__(self, state):
        if isinstance(state.get("backbone"), _ModuleBytes):
            state = {**state, "backbone": state["backbone"].load()}
        super().__setstate__(state)
