"""Many multi-layer perceptrons of one shape, stacked into one module."""

import torch
from torch import nn

from sknets.modules._mlp import ACTIVATIONS
from sknets.modules._products import stacked_affine


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
    block per member, and each layer is one stacked product (``torch.baddbmm``'s
    value, :func:`~sknets.modules._products.stacked_affine`). Members never
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
        Each member's dropout probability after each hidden layer.
    generators : sequence of torch.Generator or None, default=None
        Member ``m``'s dropout masks come from ``generators[m]`` alone, drawn
        as its own network's ``nn.Dropout`` would draw them (one
        ``bernoulli_`` per layer and batch, over its real rows): from the
        generator state its own ``fit`` has after initialization, a member
        draws the masks of its own ``fit``. None: torch's global generator.

    Attributes
    ----------
    row_counts : torch.Tensor or None
        Rows of each member in the current batch (the others are padding);
        set by the training loop before each forward pass with dropout.
    """

    def __init__(self, members, activation, dropout, generators=None):
        super().__init__()
        layers = [_linears(m) for m in members]
        # each member's state-dict names (dropout layers shift the indices)
        self.keys = [[(f"{n}.weight", f"{n}.bias") for n, _ in ls] for ls in layers]
        self.weights = nn.ParameterList(
            nn.Parameter(
                torch.stack(
                    [ls[i][1].weight.detach().t() for ls in layers]
                ).contiguous()
            )
            for i in range(len(self.keys[0]))
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([ls[i][1].bias.detach() for ls in layers]))
            for i in range(len(self.keys[0]))
        )
        self.activation = ACTIVATIONS[activation]()
        # keep probabilities as Python floats: ``1 - p`` exactly as nn.Dropout
        self.keep = [[1.0 - float(p) for p in row] for row in dropout]
        n_hidden = len(self.keys[0]) - 1
        self.dropped = [any(k[i] < 1 for k in self.keep) for i in range(n_hidden)]
        self.generators = None if generators is None else list(generators)
        self.row_counts = None

    def _mask(self, i, h):
        """Inverted-dropout factors of layer ``i``, member by member."""
        M, B, H = h.shape
        mask = torch.zeros_like(h)
        counts = [B] * M if self.row_counts is None else self.row_counts.tolist()
        for m in range(M):
            keep, n = self.keep[m][i], int(counts[m])
            if keep >= 1:
                mask[m] = 1
            elif n:
                gen = None if self.generators is None else self.generators[m]
                noise = torch.empty((n, H), dtype=h.dtype, device=h.device)
                mask[m, :n] = noise.bernoulli_(keep, generator=gen).div_(keep)
        return mask

    @property
    def n_members(self):
        """Number of stacked networks."""
        return self.weights[0].shape[0]

    def forward(self, X):
        h = X
        last = len(self.weights) - 1
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = stacked_affine(b.unsqueeze(1), h, W)
            if i < last:
                h = self.activation(h)
                if self.training and self.dropped[i]:
                    h = h * self._mask(i, h)
        return h

    def member_state(self, m):
        """Member ``m``'s weights as the ``state_dict`` of its own network."""
        state = {}
        for (wkey, bkey), W, b in zip(
            self.keys[m], self.weights, self.biases, strict=True
        ):
            state[wkey] = W[m].detach().t().clone()
            state[bkey] = b[m].detach().clone()
        return state

    def load_member_state(self, m, state):
        """Set member ``m``'s weights from its own network's ``state_dict``.

        The inverse of :meth:`member_state`.
        """
        with torch.no_grad():
            for (wkey, bkey), W, b in zip(
                self.keys[m], self.weights, self.biases, strict=True
            ):
                W[m].copy_(state[wkey].t())
                b[m].copy_(state[bkey])

    def keep_members(self, index):
        """Keep the members ``index`` only (in that order), in place.

        The kept weights become new parameters: an optimizer over the old
        ones must be rebuilt (``_StackedOptimizer.kept``).
        """
        index = list(index)
        at = torch.as_tensor(index, device=self.weights[0].device)
        self.weights = nn.ParameterList(
            nn.Parameter(W.detach()[at].clone()) for W in self.weights
        )
        self.biases = nn.ParameterList(
            nn.Parameter(b.detach()[at].clone()) for b in self.biases
        )
        self.keys = [self.keys[i] for i in index]
        self.keep = [self.keep[i] for i in index]
        self.dropped = [
            any(k[i] < 1 for k in self.keep) for i in range(len(self.dropped))
        ]
        if self.generators is not None:
            self.generators = [self.generators[i] for i in index]
        self.row_counts = None

    def penalized(self):
        """The weight tensors (biases are not penalized), ``(M, in, out)`` each."""
        return list(self.weights)
