"""Convert the Keras SqueezeNet v1.1 ImageNet weights to a torch state dict.

The Keras file (``squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5``,
from the MIT-licensed ``keras-squeezenet`` project) stores HWIO kernels; the
output is a float32 ``.safetensors`` (or ``.pt``) state dict that
:class:`sknets.modules.SqueezeNet11` loads with ``load_state_dict``; pass its
path as ``weights``. sknets bundles the same weights in float16 (the default,
``weights='default'``); ``make_bundled_weights.py`` regenerates that file with
:func:`convert`.

Usage::

    python scripts/convert_squeezenet_keras.py IN.h5 [OUT.safetensors|OUT.pt]

Needs ``h5py`` (and ``safetensors`` for a ``.safetensors`` output):
``pip install "sknets[vision]"``.
"""

import argparse
import sys
from pathlib import Path

import torch


def convert(h5_path):
    """Read the Keras HDF5 file and return a SqueezeNet11 state dict.

    Parameters
    ----------
    h5_path : str or path-like
        The Keras weights file.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        Keys as in :class:`sknets.modules.SqueezeNet11` (``features.conv1.weight``,
        ``features.fire2.squeeze.weight``, ...), kernels in OIHW layout.
    """
    import h5py

    def layer(f, name):
        group = f[name]
        arrays = {}

        def visit(key, obj):
            if isinstance(obj, h5py.Dataset):
                arrays[key] = obj[()]

        group.visititems(visit)
        kernel = [v for v in arrays.values() if v.ndim == 4]
        bias = [v for v in arrays.values() if v.ndim == 1]
        if len(kernel) != 1 or len(bias) != 1:
            raise ValueError(f"layer {name!r}: expected one kernel and one bias")
        # Keras HWIO -> torch OIHW
        w = torch.from_numpy(kernel[0]).permute(3, 2, 0, 1).contiguous()
        return w.float(), torch.from_numpy(bias[0]).float().contiguous()

    out = {}
    with h5py.File(h5_path, "r") as f:
        w, b = layer(f, "conv1")
        out["features.conv1.weight"], out["features.conv1.bias"] = w, b
        for i in range(2, 10):
            for keras, ours in (
                ("squeeze1x1", "squeeze"),
                ("expand1x1", "expand1x1"),
                ("expand3x3", "expand3x3"),
            ):
                w, b = layer(f, f"fire{i}/{keras}")
                out[f"features.fire{i}.{ours}.weight"] = w
                out[f"features.fire{i}.{ours}.bias"] = b
    return out


def save(state_dict, path):
    """Write ``state_dict`` as ``.safetensors`` or, for any other suffix, torch.save."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state_dict, str(path))
    else:
        torch.save(state_dict, path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("h5", help="Keras SqueezeNet v1.1 weights (.h5)")
    parser.add_argument(
        "out",
        nargs="?",
        default=None,
        help="output file (default: squeezenet1_1_imagenet_float32.safetensors)",
    )
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        out = "squeezenet1_1_imagenet_float32.safetensors"
    state = convert(args.h5)
    from sknets.modules import SqueezeNet11

    SqueezeNet11().load_state_dict(state)  # strict: every key matches
    print(f"wrote {save(state, out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
