"""Regenerate the weights bundled in ``sknets/weights/`` from the originals.

The package ships two small weight sets as float16 ``.safetensors`` files,
each with its license text beside it:

- ``squeezenet1_1_imagenet.safetensors``: the SqueezeNet v1.1 ImageNet trunk
  of the MIT-licensed ``keras-squeezenet`` project
  (``squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5``), converted by
  ``convert_squeezenet_keras.py`` (HWIO kernels to OIHW);
- ``resnet20_cifar10.safetensors``: ResNet-20 for CIFAR-10 from the
  BSD-2-Clause ``pytorch_resnet_cifar10`` project (``resnet20-12fca82f.th``).

The originals are checked against their SHA-256 first; the output is the
same bytes on every run. Usage::

    python scripts/make_bundled_weights.py [--data DATA] [--out OUT]

``DATA`` defaults to ``../shared/data`` (holding ``weights/``), ``OUT`` to
``sknets/weights``.

Needs ``h5py`` and ``safetensors`` (``pip install "sknets[vision]"``).
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from convert_squeezenet_keras import convert  # noqa: E402

# name -> (original file under data/weights, its SHA-256, license file, license)
SOURCES = {
    "squeezenet1_1_imagenet": (
        "squeezenet1_1_imagenet/squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "17154246284f555591549ac2c83e127abfbf4307dc4b0060fdaa2931d0fa38da",
        "squeezenet1_1_imagenet/LICENSE_DeepCognition_keras-squeezenet",
        "MIT",
    ),
    "resnet20_cifar10": (
        "resnet_cifar10/resnet20-12fca82f.th",
        "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
        "resnet_cifar10/LICENSE",
        "BSD-2-Clause",
    ),
}


def sha256(path):
    """SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def original_state(name, data):
    """The float32 state dict of weight set ``name``, read from ``data/weights``.

    Parameters
    ----------
    name : str
        A key of ``SOURCES``.
    data : path-like
        The shared data folder (holding ``weights/``).

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        Keys as the sknets backbone expects them.
    """
    from sknets._weights import load_state_dict

    rel, expected, _, _ = SOURCES[name]
    path = Path(data) / "weights" / rel
    found = sha256(path)
    if found != expected:
        raise ValueError(f"{path} has SHA-256 {found}, expected {expected}.")
    if name == "squeezenet1_1_imagenet":
        return convert(path)
    return load_state_dict(path)


def to_float16(state):
    """Floating-point tensors as float16, contiguous; the others unchanged."""
    return {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in state.items()
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=ROOT / ".." / "shared" / "data", type=Path)
    parser.add_argument("--out", default=ROOT / "sknets" / "weights", type=Path)
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    from sknets.modules._backbones import BACKBONES

    factories = {default: factory for factory, default in BACKBONES.values()}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (rel, expected, license_file, license_name) in SOURCES.items():
        state = to_float16(original_state(name, args.data))
        factories[name]().load_state_dict(state)  # strict: every key matches
        out = args.out / f"{name}.safetensors"
        provenance = {
            "source": Path(rel).name,
            "source_sha256": expected,
            "license": license_name,
            "conversion": "float32 -> float16, scripts/make_bundled_weights.py",
        }
        # one metadata entry: safetensors writes several in no fixed order
        metadata = {"sknets": json.dumps(provenance, sort_keys=True)}
        save_file(state, str(out), metadata=metadata)
        out.chmod(0o644)
        shutil.copyfile(
            Path(args.data) / "weights" / license_file, args.out / f"LICENSE_{name}"
        )
        print(f"wrote {out} ({out.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
