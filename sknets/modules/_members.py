"""Many multi-layer perceptrons of one shape, stacked into one module."""

import torch
from torch import nn

from sknets.modules._mlp import ACTIVATIONS


def _linears(module):
    return [
        (name, layer)
        for name, layer in module.named_modules()
        if isinstance(layer, nn.Linear)
    ]


class StackedMLP(nn.Module):
    """``M`` fully connected networks of one shape, computed as one.

    Layer ``i`` holds the weights of every member as one ``(M, in, out)``
    tensor and the biases as ``(M, out)``; a batch is ``(M, B, in)``, a row
    block per member, and each layer is one ``torch.baddbmm``. Members never
    mix: the output block of member ``m`` depends on its input block and its
    weights only, so the gradient of a sum of per-member losses is each
    member's own gradient.

    Parameters
    ----------
    members : sequence of torch.nn.Module
        Initialized networks with the same ``nn.Linear`` shapes, in order, no
        other parameters (e.g. :class:`~sknets.modules.MLPModule` without
        batch normalization). Their weights are copied, once.
    activation : {'identity', 'logistic', 'tanh', 'relu'}
        Activation of the hidden layers.
    dropout : array-like of shape (M, n_hidden_layers)
        Each member's dropout probability after each hidden layer. The masks
        of all members are drawn at once, from ``generator``.
    generator : torch.Generator or None, default=None
        Where the dropout masks come from (None: torch's global generator).
    """

    def __init__(self, members, activation, dropout, generator=None):
        super().__init__()
        self.generator = generator
        layers = [_linears(m) for m in members]
        self.keys = [(f"{n}.weight", f"{n}.bias") for n, _ in layers[0]]
        self.weights = nn.ParameterList(
            nn.Parameter(
                torch.stack(
                    [ls[i][1].weight.detach().t() for ls in layers]
                ).contiguous()
            )
            for i in range(len(self.keys))
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([ls[i][1].bias.detach() for ls in layers]))
            for i in range(len(self.keys))
        )
        self.activation = ACTIVATIONS[activation]()
        keep = 1.0 - torch.as_tensor(dropout, dtype=self.weights[0].dtype)
        self.register_buffer("keep", keep.reshape(len(members), -1), persistent=False)
        self.dropped = [bool((self.keep[:, i] < 1).any()) for i in range(keep.shape[1])]

    @property
    def n_members(self):
        """Number of stacked networks."""
        return self.weights[0].shape[0]

    def forward(self, X):
        h = X
        last = len(self.weights) - 1
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b.unsqueeze(1), h, W)
            if i < last:
                h = self.activation(h)
                if self.training and self.dropped[i]:
                    keep = self.keep[:, i].view(-1, 1, 1)
                    draw = torch.rand(
                        h.shape,
                        generator=self.generator,
                        dtype=h.dtype,
                        device=h.device,
                    )
                    h = h * (draw < keep) / keep
        return h

    def member_state(self, m):
        """Member ``m``'s weights as the ``state_dict`` of its own network."""
        state = {}
        for (wkey, bkey), W, b in zip(
            self.keys, self.weights, self.biases, strict=True
        ):
            state[wkey] = W[m].detach().t().clone()
            state[bkey] = b[m].detach().clone()
        return state

    def penalized(self):
        """The weight tensors (biases are not penalized), ``(M, in, out)`` each."""
        return list(self.weights)
