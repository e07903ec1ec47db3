"""A module rebuilt from stored weights, checked before it takes memory.

Used by ``sknets.load`` and skops (through the estimators'
``_restore_fitted``): the estimators build their networks here, below
persistence, which only reads and checks the files.
"""

import torch

from sknets._engine import seeded


class Refused(ValueError):
    """A stored file, state or weights that ``load`` does not accept (and why)."""


def restore_module(build, state):
    """The module ``build()`` returns, holding the weights ``state``.

    ``build()`` runs first on the ``meta`` device, where modules have shapes
    but no memory, and its state dict must have exactly the names, shapes and
    dtypes of ``state``; only then is the module materialized on the CPU and
    filled. A network that its (checked) parameters describe as far larger
    than its weights is thus refused before anything is allocated.
    """
    try:
        with torch.device("meta"):
            skeleton = build()
    except Exception as exc:
        raise Refused(
            f"the parameters do not build a network ({type(exc).__name__}: {exc})."
        ) from None
    expected = skeleton.state_dict()
    if set(expected) != set(state):
        missing, extra = (
            sorted(set(expected) - set(state)),
            sorted(set(state) - set(expected)),
        )
        raise Refused(
            f"the weights do not match the network its parameters build: missing "
            f"{missing[:5]}, unexpected {extra[:5]}."
        )
    for name, t in expected.items():
        if tuple(t.shape) != tuple(state[name].shape) or t.dtype != state[name].dtype:
            raise Refused(
                f"weight {name!r} is {state[name].dtype} {tuple(state[name].shape)}; "
                f"the network its parameters build has {t.dtype} {tuple(t.shape)}."
            )
    persistent = {name for name, _ in skeleton.named_buffers()} <= set(state)
    if not persistent:  # buffers the state dict does not hold: build for real
        with seeded():
            module = build()
    else:
        module = skeleton.to_empty(device="cpu")
    module.load_state_dict(state)
    return module
