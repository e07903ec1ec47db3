"""Hash-stable pickling of torch modules held as estimator parameters.

torch pickles a tensor's storage under its memory address, so equal modules
pickle to different bytes and joblib's hashing (``Pipeline(memory=...)``)
misses its cache. :class:`_BackbonePickleMixin` pickles a module-valued
``backbone`` parameter by value instead.
"""

import io
import pickle

import torch
from torch import nn


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


class _BackbonePickleMixin:
    """Pickle a module-valued ``backbone`` parameter in a hash-stable form."""

    def __getstate__(self):
        state = dict(super().__getstate__())  # never the live __dict__
        if isinstance(state.get("backbone"), nn.Module):
            state["backbone"] = _ModuleBytes(state["backbone"])
        return state

    def __setstate__(self, state):
        if isinstance(state.get("backbone"), _ModuleBytes):
            state = {**state, "backbone": state["backbone"].load()}
        super().__setstate__(state)
