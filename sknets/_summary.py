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
    table : LayerSummary
        A :class:`pandas.DataFrame` with columns ``layer`` (qualified name),
        ``type``, ``output_shape`` (without the batch dimension), ``params``,
        ``trainable`` (the trainable share of ``params``); a last ``Total`` row
        sums the parameters. Its ``str`` is an aligned text table.
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
    return LayerSummary(pd.concat([table, pd.DataFrame([total])], ignore_index=True))


class LayerSummary(pd.DataFrame):
    """The layer table returned by ``summary()``: a DataFrame that prints neatly.

    It is a plain :class:`pandas.DataFrame` for every computation (anything
    derived from it, a slice or a sum, is an ordinary DataFrame); only its
    text form differs: one aligned line per layer, parameter counts with
    thousands separators, and the totals (trainable and frozen) at the bottom.
    """

    @property
    def _constructor(self):
        return pd.DataFrame

    def to_text(self):
        """The table as aligned text, totals at the bottom.

        Returns
        -------
        text : str
            One header line, one line per layer, and a totals line.
        """
        cols = ["layer", "type", "output_shape", "params", "trainable"]
        if (
            list(self.columns) != cols
            or not len(self)
            or self["layer"].iloc[-1] != "Total"
        ):
            return pd.DataFrame.__repr__(self)
        body, total = self.iloc[:-1], self.iloc[-1]
        header = ("Layer", "Type", "Output shape", "Params", "Trainable")
        rows = [
            (
                str(r.layer),
                str(r.type),
                _shape(r.output_shape),
                f"{int(r.params):,}",
                f"{int(r.trainable):,}",
            )
            for r in body.itertuples(index=False)
        ]
        widths = [
            max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header)
        ]

        def line(cells):
            left = [c.ljust(w) for c, w in zip(cells[:3], widths[:3], strict=True)]
            right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:], strict=True)]
            return "  ".join(left + right).rstrip()

        width = sum(widths) + 2 * (len(widths) - 1)
        n_total, n_train = int(total["params"]), int(total["trainable"])
        lines = [line(header), "=" * width]
        lines += [line(row) for row in rows]
        lines += [
            "=" * width,
            f"Total params: {n_total:,}  (trainable: {n_train:,}, "
            f"frozen: {n_total - n_train:,})",
        ]
        return "\n".join(lines)

    def __repr__(self):
        return self.to_text()

    def __str__(self):
        return self.to_text()


def _shape(shape):
    return str(tuple(int(d) for d in shape)) if isinstance(shape, tuple) else str(shape)


def _record(shapes, name):
    def hook(layer, inputs, output):
        if isinstance(output, torch.Tensor):
            shapes[name] = tuple(output.shape[1:])

    return hook
