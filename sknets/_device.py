"""Devices: what ``device=`` means, and moving a fitted net between devices."""

import torch


def resolve_device(device):
    """Turn the ``device`` parameter into a ``torch.device`` that exists here.

    ``'auto'`` is CUDA when available, else CPU. Anything torch cannot parse,
    or a CUDA/MPS device this machine lacks, is a ``ValueError``.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid device; use 'auto', 'cpu', 'cuda' "
            f"or 'cuda:<index>'."
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                f"machine; use device='cpu' or device='auto'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(
                f"device={device!r} was requested but MPS is not available."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device={device!r} is not supported; use 'cpu' or 'cuda'.")
    return dev


def move_net(net, device):
    """Move a fitted skorch net (module and optimizer state) to ``device``."""
    if torch.device(net.device) == device and all(
        p.device == device for p in net.module_.parameters()
    ):
        return
    state = net.optimizer_.state_dict()
    net.module_.to(device)
    net.optimizer_.load_state_dict(state)  # casts moment buffers to the new device
    net.set_params(device=device)
