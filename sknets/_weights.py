"""Weight files and backbones: where weights live, how they load, offline.

Named weights are looked up in :func:`weights_home`; a path is read as a
``.safetensors`` or ``torch.save`` state dict. :func:`make_backbone` builds a
built-in backbone, a torchvision model or a copy of a user module and loads
its weights. Nothing here ever downloads anything.
"""

import copy
import os
import sys
from pathlib import Path

import torch
from torch import nn

from sknets.modules._backbones import BACKBONES

_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".th")


def weights_home():
    """Folder where named weights are looked up.

    ``$SKNETS_HOME`` when set, else the platform's user cache folder:
    ``$XDG_CACHE_HOME/sknets`` or ``~/.cache/sknets`` on Linux,
    ``~/Library/Caches/sknets`` on macOS, ``%LOCALAPPDATA%\\sknets\\Cache`` on
    Windows.

    Returns
    -------
    path : pathlib.Path
        The folder (it may not exist).
    """
    env = os.environ.get("SKNETS_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
        return Path(base) / "sknets" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "sknets"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sknets"


def load_state_dict(path):
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file.

    ``torch.load`` runs with ``weights_only=True`` on the CPU. A checkpoint
    holding a ``'state_dict'`` entry is unwrapped and ``module.`` prefixes
    (``DataParallel``) are stripped.

    Parameters
    ----------
    path : str or path-like
        The weights file.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, weights_only=True, map_location="cpu")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_path(weights):
    weights = str(weights)
    return (
        Path(weights).suffix in _WEIGHT_SUFFIXES
        or os.sep in weights
        or "/" in weights
        or Path(weights).exists()
    )


def _find_weights(weights, backbone_name, hint=None):
    """Path of the weights file for ``weights`` (a path or a name), or an error."""
    if _is_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Weights file {str(path)!r} does not exist. sknets never downloads "
                f"weights: put the file there, or pass weights=None for a randomly "
                f"initialized {backbone_name}."
            )
        return path
    home = weights_home()
    for suffix in _WEIGHT_SUFFIXES:
        if (home / f"{weights}{suffix}").is_file():
            return home / f"{weights}{suffix}"
    how = f" To make it, {hint}." if hint else ""
    raise FileNotFoundError(
        f"Pretrained weights {weights!r} for backbone {backbone_name!r} were not "
        f"found, and sknets never downloads weights. Put the state dict at "
        f"{home / (weights + '.safetensors')} (or .pt/.pth/.th next to it).{how} "
        f"Set the SKNETS_HOME environment variable to use another folder than "
        f"{home}, pass the file's path as weights='/path/to/file.pt', or pass "
        f"weights=None for a randomly initialized network."
    )


def _load_into(module, path):
    state = load_state_dict(path)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"The weights in {path} do not fit the backbone {type(module).__name__}: "
            f"{exc}"
        ) from exc


def _reset_parameters(module):
    for m in module.modules():
        if hasattr(m, "reset_parameters") and m is not module:
            m.reset_parameters()
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()


def _torchvision_backbone(name, weights):
    """A torchvision model; its default weights only from torch's local hub cache."""
    try:
        import torchvision
    except Exception as exc:  # ImportError, or a torch/torchvision mismatch
        raise ValueError(
            f"Unknown backbone {name!r}. Built-in backbones: {sorted(BACKBONES)}. "
            f"torchvision model names need torchvision, which cannot be imported "
            f"here ({exc})."
        ) from exc
    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        raise ValueError(
            f"Unknown backbone {name!r}: neither built in ({sorted(BACKBONES)}) nor "
            f"a torchvision model."
        ) from exc
    enum = torchvision.models.get_model_weights(name).DEFAULT
    mean, std = enum.transforms().mean, enum.transforms().std
    size = enum.transforms().crop_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    prep = {
        "input_size": (3, int(size), int(size)),
        "mean": tuple(mean),
        "std": tuple(std),
        "pixel_scale": 1.0,
        "channel_order": "RGB",
    }
    if weights == "default":
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        if not cached.is_file():
            raise FileNotFoundError(
                f"torchvision's default weights for {name!r} are not in the local "
                f"cache and sknets never downloads weights. Put {Path(enum.url).name} "
                f"at {cached} (torchvision's own cache: `{name}(weights='DEFAULT')` "
                f"on a connected machine fills it), pass a file as weights=..., or "
                f"weights=None for a randomly initialized network."
            )
        _load_into(model, cached)
    elif weights is not None:
        _load_into(model, _find_weights(weights, name))
    return model, prep


def make_backbone(backbone, weights):
    """Build ``backbone`` and load ``weights``; return ``(module, preprocessing)``.

    Random initialization draws from torch's current random state, which the
    caller seeds. ``preprocessing`` is None for a user module.
    """
    if not isinstance(backbone, (str, nn.Module)):  # a class or factory
        module = backbone()
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"backbone={backbone!r} returned {type(module).__name__}, not a "
                f"torch.nn.Module."
            )
        backbone = module
    if isinstance(backbone, nn.Module):
        module = copy.deepcopy(backbone)
        if weights is None:
            _reset_parameters(module)
        elif weights != "default":
            _load_into(module, _find_weights(weights, type(backbone).__name__))
        return module, getattr(module, "preprocessing", None)
    if backbone not in BACKBONES:
        return _torchvision_backbone(backbone, weights)
    factory, default_name, hint = BACKBONES[backbone]
    module = factory()
    if weights is not None:
        name = default_name if weights == "default" else weights
        _load_into(module, _find_weights(name, backbone, hint))
    return module, dict(module.preprocessing)
