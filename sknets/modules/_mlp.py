"""A fully connected network with optional dropout and batch normalization."""

import math

import numpy as np
import torch
from torch import nn

from sknets._sparse import csr_t_matmul

ACTIVATIONS = {
    "identity": nn.Identity,
    "logistic": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
}


def glorot_init_(module, activation="relu"):
    """Initialize every ``Linear`` and ``Conv`` layer as scikit-learn's MLP does.

    Weights and biases are drawn uniformly from ``[-b, b]`` with
    ``b = sqrt(6 / (fan_in + fan_out))`` (``sqrt(2 / ...)`` for the logistic
    activation), the Glorot scheme used by ``sklearn.neural_network``.
    """
    factor = 2.0 if activation == "logistic" else 6.0
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            receptive = layer.weight[0, 0].numel() if layer.weight.dim() > 2 else 1
            fan_in = layer.weight.shape[1] * receptive
            fan_out = layer.weight.shape[0] * receptive
            bound = math.sqrt(factor / (fan_in + fan_out))
            with torch.no_grad():
                # drawn in logical order, so any memory layout gets the same values
                weight = torch.empty_like(
                    layer.weight, memory_format=torch.contiguous_format
                )
                layer.weight.copy_(weight.uniform_(-bound, bound))
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound)
    return module


class _CSRMatmul(torch.autograd.Function):
    """``X @ Wt`` for a CPU sparse CSR ``X`` and an ``(in, out)`` weight.

    The product runs in torch's CSR kernel (MKL, all threads); the weight
    gradient ``X.T @ grad`` in scipy's, which reads ``X``'s arrays as the
    CSC matrix ``X.T`` (torch's own sparse backward is more than 20x slower
    here: 1.7 ms against 0.07 ms for 128 x 10,000 at 1.3% density). A
    column-major ``Wt`` (the transposed view of a usual ``Linear`` weight)
    costs a transposing copy of the gradient.
    """

    @staticmethod
    def forward(ctx, X, weight_t):
        ctx.arrays = (
            X.crow_indices().numpy(),
            X.col_indices().numpy(),
            X.values().numpy(),
        )
        ctx.n_cols = X.shape[1]
        ctx.column_major = not weight_t.is_contiguous()
        return X @ weight_t.detach()

    @staticmethod
    def backward(ctx, grad):
        grad_wt = csr_t_matmul(*ctx.arrays, ctx.n_cols, grad.detach().numpy())
        if ctx.column_major:  # give autograd the strides of the weight itself
            return None, torch.from_numpy(np.ascontiguousarray(grad_wt.T)).t()
        return None, torch.from_numpy(grad_wt)


class SparseInputLinear(nn.Linear):
    """A ``Linear`` layer that also multiplies sparse CSR batches.

    Dense input takes the usual path; CSR input on the CPU goes through
    torch's CSR kernel with a scipy gradient (see :class:`_CSRMatmul`), on
    other devices through torch's sparse kernels. The input is never densified.

    With ``input_major=True`` the trained parameter is ``weight_t``, the
    ``(in_features, out_features)`` transpose (the layout of scikit-learn's
    ``coefs_``), and ``weight`` is its transposed view. The sparse product
    reads it row by row and scipy writes its gradient without a transposing
    copy, while the optimizer still sees a contiguous tensor: for a wide
    sparse input that is a large part of the cost of a batch. For dense
    input the usual layout is faster, so it stays the default. State dicts
    hold ``weight`` in either layout, so they load into both.
    """

    def __init__(self, in_features, out_features, bias=True, input_major=False):
        super().__init__(in_features, out_features, bias=bias)
        if input_major:
            weight = self.weight.detach().t().contiguous()
            del self.weight
            self.weight_t = nn.Parameter(weight)
        self.register_state_dict_post_hook(_weight_to_state_dict)
        self.register_load_state_dict_pre_hook(_weight_from_state_dict)

    @property
    def weight(self):
        try:
            return nn.Module.__getattr__(self, "weight")
        except AttributeError:  # the input-major layout
            return nn.Module.__getattr__(self, "weight_t").t()

    def forward(self, X):
        if X.layout == torch.sparse_csr and X.device.type == "cpu":
            # weight.t() is weight_t itself (as a view) in the input-major layout
            return _CSRMatmul.apply(X, self.weight.t()) + self.bias
        return super().forward(X)


def _weight_to_state_dict(module, state_dict, prefix, local_metadata):
    """State dicts hold ``weight`` (out, in) whatever the layout, before ``bias``."""
    key = prefix + "weight_t"
    if key in state_dict:
        bias = state_dict.pop(prefix + "bias", None)
        state_dict[prefix + "weight"] = state_dict.pop(key).t()
        if bias is not None:
            state_dict[prefix + "bias"] = bias


def _weight_from_state_dict(module, state_dict, prefix, *args):
    """A saved ``weight`` goes into ``weight_t`` in the input-major layout."""
    if hasattr(module, "weight_t") and prefix + "weight" in state_dict:
        state_dict[prefix + "weight_t"] = state_dict.pop(prefix + "weight").t()


class SettledModeMixin:
    """``train(mode)`` returns at once when every submodule is in ``mode`` already.

    skorch puts the module in train mode before every batch; torch's
    ``Module.train`` sets the flag on every submodule each time (about 20 us
    for a small MLP, 2% of a digits batch). The result is the same.
    """

    def train(self, mode=True):
        if all(m.training == mode for m in self.modules()):
            return self
        return super().train(mode)


class MLPModule(SettledModeMixin, nn.Module):
    """Multi-layer perceptron: ``Linear -> [BatchNorm] -> activation -> [Dropout]``.

    Parameters
    ----------
    n_features : int
        Width of the input.
    hidden_layer_sizes : sequence of int
        Width of each hidden layer.
    n_outputs : int
        Width of the output (raw scores, no output activation).
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Activation of the hidden layers.
    dropout : float or sequence of float, default=0.0
        Dropout probability after each hidden layer (one value for all, or
        one per hidden layer).
    batch_norm : bool, default=False
        Whether to normalize each hidden layer's pre-activations.
    sparse_input : bool, default=False
        Lay out the first weight for sparse CSR input (see
        :class:`SparseInputLinear`); either kind of input works either way.
    """

    def __init__(
        self,
        n_features,
        hidden_layer_sizes,
        n_outputs,
        activation="relu",
        dropout=0.0,
        batch_norm=False,
        sparse_input=False,
    ):
        super().__init__()
        sizes = [n_features, *hidden_layer_sizes]
        dropouts = _per_layer(dropout, len(hidden_layer_sizes), "dropout")

        def linear(fan_in, fan_out):  # the first one takes the input, maybe sparse
            if not layers:
                return SparseInputLinear(fan_in, fan_out, input_major=sparse_input)
            return nn.Linear(fan_in, fan_out)

        layers = []
        for fan_in, fan_out, p in zip(sizes[:-1], sizes[1:], dropouts, strict=True):
            layers.append(linear(fan_in, fan_out))
            if batch_norm:
                layers.append(nn.BatchNorm1d(fan_out))
            layers.append(ACTIVATIONS[activation]())
            if p > 0:
                layers.append(nn.Dropout(p))
        layers.append(linear(sizes[-1], n_outputs))
        self.layers = nn.Sequential(*layers)
        glorot_init_(self, activation)

    def forward(self, X):
        return self.layers(X)


def _per_layer(value, n_layers, name):
    """Broadcast a scalar setting to one value per layer."""
    if isinstance(value, (int, float)):
        return [float(value)] * n_layers
    values = [float(v) for v in value]
    if len(values) != n_layers:
        raise ValueError(
            f"{name} has {len(values)} values but there are {n_layers} layers; "
            f"give one value, or one per layer."
        )
    return values
