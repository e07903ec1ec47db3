"""Weight files and backbones: bundled defaults, the cache folder, downloads.

A named weight set (``'squeezenet1_1_imagenet'``, ``'resnet20_cifar10'``,
``'resnet56_cifar10'``, or any name of a file put in the cache folder) is
resolved in this order:

1. the files bundled with the package (``sknets/weights/``: the small
   defaults, float16 safetensors, with their license texts beside them);
2. the cache folder :func:`weights_home` (``$SKNETS_HOME``, else the user
   cache folder), where a file ``<name>.safetensors`` (or ``.pt``, ``.pth``,
   ``.th``) or a file downloaded earlier is found;
3. a download from the weight set's published location (or the mirror named
   by ``$SKNETS_WEIGHTS_URL``) into the cache folder, checked against its
   SHA-256 and written atomically; never with ``SKNETS_OFFLINE=1``.

A path is read as a ``.safetensors`` or ``torch.save`` state dict.
:func:`make_backbone` builds a built-in backbone, a torchvision model or a copy
of a user module and loads its weights.
"""

import copy
import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from sknets.modules._backbones import BACKBONES

_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".th")

# akamaster/pytorch_resnet_cifar10 (BSD-2-Clause), as published on GitHub.
_AKAMASTER = (
    "https://raw.githubusercontent.com/akamaster/pytorch_resnet_cifar10/master/"
    "pretrained_models/"
)
_TIMEOUT = 30.0  # seconds without an answer before a download gives up
_CHUNK = 1 << 16


@dataclass(frozen=True)
class WeightSet:
    """One named set of pretrained weights and where it comes from.

    Parameters
    ----------
    name : str
        The name ``weights=`` takes (``'default'`` maps to it).
    bundled : str or None
        File name in the package's ``weights`` folder; None when not bundled.
    filename : str or None
        File name at the published location and in the cache folder.
    sha256 : str or None
        SHA-256 of ``filename``; a download that does not match is deleted.
    url : str or None
        The published location of ``filename`` (the folder, ending in ``/``).
    license : str
        The license of the weights (its text lies beside the bundled file).
    """

    name: str
    bundled: str | None
    filename: str | None
    sha256: str | None
    url: str | None
    license: str

    def download_url(self):
        """The URL to fetch ``filename`` from: ``$SKNETS_WEIGHTS_URL`` or ``url``."""
        base = os.environ.get("SKNETS_WEIGHTS_URL") or self.url
        if not base or not self.filename:
            return None
        return f"{base.rstrip('/')}/{self.filename}"


WEIGHT_SETS = {
    ws.name: ws
    for ws in (
        WeightSet(
            name="squeezenet1_1_imagenet",
            bundled="squeezenet1_1_imagenet.safetensors",
            filename=None,  # published as Keras HDF5 only (converted to bundle it)
            sha256=None,
            url=None,
            license="MIT",
        ),
        WeightSet(
            name="resnet20_cifar10",
            bundled="resnet20_cifar10.safetensors",
            filename="resnet20-12fca82f.th",
            sha256="12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
            url=_AKAMASTER,
            license="BSD-2-Clause",
        ),
        WeightSet(
            name="resnet56_cifar10",
            bundled=None,
            filename="resnet56-4bfd9763.th",
            sha256="4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
            url=_AKAMASTER,
            license="BSD-2-Clause",
        ),
    )
}


def weights_home():
    """Folder where named weights are cached and looked up.

    ``$SKNETS_HOME`` when set, else the platform's user cache folder:
    ``$XDG_CACHE_HOME/sknets`` or ``~/.cache/sknets`` on Linux,
    ``~/Library/Caches/sknets`` on macOS, ``%LOCALAPPDATA%\\sknets\\Cache`` on
    Windows.

    Returns
    -------
    path : pathlib.Path
        The folder (it may not exist).

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> from sknets._weights import weights_home
    >>> with mock.patch.dict(os.environ, {"SKNETS_HOME": "/data/sknets"}):
    ...     print(weights_home())
    /data/sknets
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


def _offline():
    return os.environ.get("SKNETS_OFFLINE", "").strip().lower() not in (
        "",
        "0",
        "false",
        "no",
        "off",
    )


# ----------------------------------------------------------------- reading

# safetensors dtype names (https://github.com/huggingface/safetensors, "Format")
_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_safetensors(path):
    """Read a ``.safetensors`` file without the ``safetensors`` package.

    The format is an 8-byte little-endian header length, a JSON header
    mapping each name to its ``dtype``, ``shape`` and ``data_offsets``, then
    the raw little-endian bytes. Used where ``safetensors`` is not installed,
    so that the bundled defaults load with the core dependencies only.
    """
    data = Path(path).read_bytes()
    bad = f"{path} is not a valid .safetensors file"
    if len(data) < 8:
        raise ValueError(f"{bad}: it is only {len(data)} bytes long.")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError(f"{bad}: its header length ({n}) exceeds the file.")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{bad}: its header is not JSON ({exc}).") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{bad}: its header is not a JSON object.")
    body = memoryview(data)[8 + n :]
    state = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = _ST_DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{bad}: bad entry for {key!r} ({exc!r}).") from exc
        count = 1
        for s in shape:
            count *= s
        size = torch.empty((), dtype=dtype).element_size()
        if not 0 <= start <= end <= len(body) or end - start != count * size:
            raise ValueError(f"{bad}: the offsets of {key!r} do not fit its shape.")
        if count == 0:
            state[key] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(bytearray(body[start:end]), dtype=dtype)
        if sys.byteorder != "little" and size > 1:  # pragma: no cover
            flat = flat.view(torch.uint8).view(-1, size).flip(1).view(dtype)
        state[key] = flat.reshape(shape)
    return state


def load_state_dict(path):
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file.

    ``torch.load`` runs with ``weights_only=True`` on the CPU. A checkpoint
    holding a ``'state_dict'`` entry is unwrapped and ``module.`` prefixes
    (``DataParallel``) are stripped. ``.safetensors`` files are read with
    the ``safetensors`` package when it is installed and by a small reader of
    the same format otherwise.

    Parameters
    ----------
    path : str or path-like
        The weights file.

    Returns
    -------
    state_dict : dict of str to torch.Tensor

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from sknets._weights import load_state_dict
    >>> path = Path(tempfile.mkdtemp()) / "w.pt"
    >>> torch.save({"state_dict": {"module.w": torch.ones(2)}}, path)
    >>> load_state_dict(path)
    {'w': tensor([1., 1.])}
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            state = _read_safetensors(path)
        else:
            state = load_file(str(path))
    else:
        state = torch.load(path, weights_only=True, map_location="cpu")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict.")
    return {k.removeprefix("module."): v for k, v in state.items()}


# ----------------------------------------------------------------- downloading


class _Progress:
    """A progress bar on stderr: tqdm when installed, else one rewritten line."""

    def __init__(self, total, desc, enabled):
        self.total, self.desc, self.done = total, desc, 0
        self.bar = None
        self.enabled = enabled
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._line()
        else:
            self.bar = tqdm(
                total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024
            )

    def _line(self, end=""):
        size = f"/{self.total / 2**20:.1f}" if self.total else ""
        sys.stderr.write(f"\r{self.desc}: {self.done / 2**20:.1f}{size} MiB{end}")
        sys.stderr.flush()

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            self._line()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._line("\n")


def _download(url, dest, sha256, *, progress=None, timeout=_TIMEOUT):
    """Fetch ``url`` into ``dest`` through a temporary file, checking its SHA-256.

    The bytes go to a temporary file in ``dest``'s folder, which is renamed
    to ``dest`` only when the whole file has arrived and its checksum
    matches; on any failure the temporary file is deleted and ``dest`` is left
    as it was. ``progress=None`` shows a progress bar when stderr is a
    terminal.
    """
    dest = Path(dest)
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
        )
    except OSError as exc:
        raise OSError(
            f"Cannot write the weights to {dest.parent} ({exc}). Set SKNETS_HOME "
            f"to a writable folder."
        ) from exc
    tmp = Path(tmp)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "sknets"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    total = int(response.headers.get("Content-Length") or 0)
                    bar = _Progress(total, f"Downloading {dest.name}", progress)
                    try:
                        while chunk := response.read(_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
                    finally:
                        bar.close()
            except urllib.error.HTTPError as exc:
                raise ConnectionError(
                    f"Downloading {url} failed: the server answered {exc.code} "
                    f"{exc.reason}."
                ) from exc
            except (
                urllib.error.URLError,
                http.client.HTTPException,
                TimeoutError,
                ConnectionError,
            ) as exc:
                reason = getattr(exc, "reason", exc)
                raise ConnectionError(
                    f"Downloading {url} failed: the server cannot be reached "
                    f"({reason})."
                ) from exc
            out.flush()
            os.fsync(out.fileno())
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ValueError(
                f"The file downloaded from {url} has SHA-256 {digest.hexdigest()}, "
                f"not the expected {sha256}; it was deleted. The download may "
                f"have been corrupted, or the mirror (SKNETS_WEIGHTS_URL) serves "
                f"another file."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


# ----------------------------------------------------------------- resolving


def _is_path(weights):
    weights = str(weights)
    return (
        Path(weights).suffix in _WEIGHT_SUFFIXES
        or os.sep in weights
        or "/" in weights
        or Path(weights).exists()
    )


def _bundled(ws):
    """Path of the bundled file of ``ws``, or None."""
    if ws is None or ws.bundled is None:
        return None
    path = resources.files("sknets") / "weights" / ws.bundled
    return Path(str(path)) if path.is_file() else None


def _put_it_there(home, names):
    return (
        f"put the file at {home / names[0]}, set SKNETS_HOME to the folder that "
        f"holds it, pass its path as weights='/path/to/file', or pass "
        f"weights=None for a randomly initialized network"
    )


def _find_weights(weights, backbone_name):
    """Path of the weights file for ``weights`` (a path or a name), or an error."""
    if _is_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Weights file {str(path)!r} does not exist. Pass the path of an "
                f"existing .safetensors/.pt/.pth/.th file, a weight set's name "
                f"({', '.join(WEIGHT_SETS)}), or weights=None for a randomly "
                f"initialized {backbone_name}."
            )
        return path
    ws = WEIGHT_SETS.get(weights)
    bundled = _bundled(ws)
    if bundled is not None:
        return bundled
    home = weights_home()
    names = [f"{weights}{suffix}" for suffix in _WEIGHT_SUFFIXES]
    if ws is not None and ws.filename:
        names.append(ws.filename)
    for name in names:
        if (home / name).is_file():
            return home / name
    url = ws.download_url() if ws is not None else None
    if url is None:
        known = ", ".join(WEIGHT_SETS)
        raise FileNotFoundError(
            f"Pretrained weights {weights!r} for backbone {backbone_name!r} were "
            f"not found in {home} ({', '.join(names)}), and sknets knows no place "
            f"to download them from (the weight sets it knows: {known}). To use "
            f"them, {_put_it_there(home, names)}."
        )
    dest = home / ws.filename
    if _offline():
        raise FileNotFoundError(
            f"Pretrained weights {weights!r} for backbone {backbone_name!r} are not "
            f"in {home}, and SKNETS_OFFLINE is set, so they are not downloaded. "
            f"Download {url} on a connected machine and put it at {dest}, unset "
            f"SKNETS_OFFLINE to download it on first use, or pass weights=None "
            f"for a randomly initialized network."
        )
    try:
        return _download(url, dest, ws.sha256)
    except ConnectionError as exc:
        raise ConnectionError(
            f"{exc} Pretrained weights {weights!r} are downloaded on first use into "
            f"{home}. Download {url} on a connected machine and put it at {dest}, "
            f"point SKNETS_WEIGHTS_URL at a mirror that serves {ws.filename}, or "
            f"pass weights=None for a randomly initialized network."
        ) from exc.__cause__


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
                f"torchvision's default weights for {name!r} are not in torch's hub "
                f"cache, where sknets reads them from (it leaves downloading them "
                f"to torchvision). Run torchvision.models.get_model({name!r}, "
                f"weights='DEFAULT') once to fetch {enum.url} into {cached}, pass "
                f"a file as weights=..., or weights=None for a randomly "
                f"initialized network."
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
    factory, default_name = BACKBONES[backbone]
    module = factory()
    if weights is not None:
        name = default_name if weights == "default" else weights
        _load_into(module, _find_weights(name, backbone))
    return module, dict(module.preprocessing)
