"""Per-layer table of a torch module: output shape and parameter counts."""

import pandas as pd
import torch


def layer_summary(module, input_shape):
    """Run one dummy batch through ``module`` and tabulate its leaf layers.

    Parameters
    ----------
    module : torch.nn.Module
        The network (left in the train/eval mode it was in).
    input_shape : tuple of int
        Shape of the dummy input, batch dimension first.

    Returns
    -------
    table : pandas.DataFrame
        Columns ``layer`` (qualified name), ``type``, ``output_shape`` (without
        the batch dimension), ``params``, ``trainable``; a last ``Total`` row
        sums the parameters (``trainable`` there counts trainable ones).
    """
    param = next(module.parameters())
    shapes, hooks = {}, []
    for name, layer in module.named_modules():
        if name and not list(layer.children()):
            hooks.append(layer.register_forward_hook(_record(shapes, name)))
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            module(torch.zeros(input_shape, dtype=param.dtype, device=param.device))
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()
    rows = []
    for name, layer in module.named_modules():
        if name in shapes:
            params = list(layer.parameters(recurse=False))
            n = sum(p.numel() for p in params)
            rows.append(
                {
                    "layer": name,
                    "type": type(layer).__name__,
                    "output_shape": shapes[name],
                    "params": n,
                    "trainable": sum(p.numel() for p in params if p.requires_grad),
                }
            )
    table = pd.DataFrame(
        rows, columns=["layer", "type", "output_shape", "params", "trainable"]
    )
    total = {
        "layer": "Total",
        "type": "",
        "output_shape": "",
        "params": int(sum(p.numel() for p in module.parameters())),
        "trainable": int(
            sum(p.numel() for p in module.parameters() if p.requires_grad)
        ),
    }
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def _record(shapes, name):
    def hook(layer, inputs, output):
        if isinstance(output, torch.Tensor):
            shapes[name] = tuple(output.shape[1:])

    return hook
