"""A tabular network: embeddings of categories and numbers, k members as one."""

import math

import torch
from torch import nn

from sknets.modules._mlp import ACTIVATIONS


class PeriodicEmbeddings(nn.Module):
    """Each number as ``ReLU(Linear([cos(2 pi c x), sin(2 pi c x)]))``.

    The periodic embeddings of Gorishniy et al. (2022, "PLR"): per feature,
    ``n_frequencies`` trainable frequencies ``c ~ N(0, sigma)`` and its own
    linear layer to ``dim`` values.

    Parameters
    ----------
    n_features : int
        Numeric features embedded.
    dim : int
        Values per feature out.
    n_frequencies : int, default=16
        Frequencies per feature.
    sigma : float, default=0.1
        Standard deviation of the initial frequencies.
    """

    def __init__(self, n_features, dim, n_frequencies=16, sigma=0.1):
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, n_frequencies) * sigma)
        bound = 1.0 / math.sqrt(2 * n_frequencies)
        self.weight = nn.Parameter(
            torch.empty(n_features, 2 * n_frequencies, dim).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(n_features, dim).uniform_(-bound, bound))

    def forward(self, x):  # (B, F) -> (B, F * dim)
        angle = 2 * math.pi * self.frequencies * x.unsqueeze(-1)
        periodic = torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)
        out = torch.einsum("bfp,fpd->bfd", periodic, self.weight) + self.bias
        return torch.relu(out).flatten(1)


class PiecewiseLinearEmbeddings(nn.Module):
    """Each number as a linear term plus a linear map of its bin encoding.

    The piecewise-linear embeddings of Gorishniy et al. (2022, "PLE"), in the
    form TabM uses them (``rtdl_num_embeddings``' version "B", no
    activation): for feature ``f`` with bin edges ``b_0 < ... < b_T``, the
    encoding has one value per bin, ``(x - b_{t-1}) / (b_t - b_{t-1})``
    clipped into ``[0, 1]`` (the first bin is not clipped below, the last one
    not above), and the embedding is ``x w_f + c_f + E_f(x) V_f + d_f`` with
    ``V_f`` zero at first, so that training starts from linear embeddings.

    Parameters
    ----------
    bins : sequence of array-like
        Each feature's bin edges, increasing, at least two.
    dim : int
        Values per feature out.
    """

    def __init__(self, bins, dim):
        super().__init__()
        n_bins = [len(edges) - 1 for edges in bins]
        if min(n_bins) < 1:
            raise ValueError("every feature needs at least two bin edges")
        F, T = len(bins), max(n_bins)
        left = torch.zeros(F, T, dtype=torch.float64)
        width = torch.ones(F, T, dtype=torch.float64)
        low = torch.zeros(F, T, dtype=torch.float64)
        high = torch.ones(F, T, dtype=torch.float64)
        for f, edges in enumerate(bins):
            edges = torch.as_tensor(edges, dtype=torch.float64)
            n = len(edges) - 1
            left[f, :n], width[f, :n] = edges[:-1], edges.diff()
            low[f, 0], high[f, n - 1] = -math.inf, math.inf
            high[f, n:] = 0.0  # padding: clamped into [0, 0]
        dtype = torch.get_default_dtype()
        self.register_buffer("left", left.to(dtype))
        self.register_buffer("inverse_width", width.reciprocal().to(dtype))
        self.register_buffer("low", low.to(dtype))
        self.register_buffer("high", high.to(dtype))
        bound = 1.0 / math.sqrt(dim)  # rtdl's LinearEmbeddings
        self.linear_weight = nn.Parameter(torch.empty(F, dim).uniform_(-bound, bound))
        self.linear_bias = nn.Parameter(torch.empty(F, dim).uniform_(-bound, bound))
        self.weight = nn.Parameter(torch.zeros(F, T, dim))
        bound = 1.0 / math.sqrt(T)
        self.bias = nn.Parameter(torch.empty(F, dim).uniform_(-bound, bound))

    def encode(self, x):  # (B, F) -> (B, F, T)
        t = (x.unsqueeze(-1) - self.left) * self.inverse_width
        return torch.clamp(t, self.low, self.high)

    def forward(self, x):  # (B, F) -> (B, F * dim)
        linear = x.unsqueeze(-1) * self.linear_weight + self.linear_bias
        out = torch.einsum("bft,ftd->bfd", self.encode(x), self.weight) + self.bias
        return (linear + out).flatten(1)


def combine(raw, out_activation):
    """The raw outputs whose activation is the mean of the members' activations.

    ``raw`` is ``(rows, members, outputs)``; the result ``(rows, outputs)``:
    log-mean-softmax for ``'softmax'``, the logit of the mean sigmoid for
    ``'logistic'``, log-mean-exp for ``'exp'``, the mean otherwise.
    """
    k = raw.shape[1]
    log_k = math.log(k)
    if out_activation == "softmax":
        return torch.logsumexp(torch.log_softmax(raw, dim=-1), dim=1) - log_k
    if out_activation == "logistic":
        log_p = torch.logsumexp(nn.functional.logsigmoid(raw), dim=1) - log_k
        log_q = torch.logsumexp(nn.functional.logsigmoid(-raw), dim=1) - log_k
        return log_p - log_q
    if out_activation == "exp":
        return torch.logsumexp(raw, dim=1) - log_k
    return raw.mean(1)


class TabularModule(nn.Module):
    """Embeddings, then ``n_members`` networks trained as one (TabM-mini).

    Input rows are those of :class:`~sknets._tabular_encoding.TabularEncoder`:
    ``n_numeric`` scaled numbers, ``n_indicators`` missing-value indicators,
    then one integer code per categorical column (``0``: missing or unseen).
    Categories go through learned embeddings, numbers optionally through
    :class:`PeriodicEmbeddings`. Then the ensemble of Gorishniy et al. (2025,
    "TabM", the *mini* variant): each member scales the input by its own
    vector (initialized to random signs), the hidden layers are shared, and
    each member has its own output layer, so that ``k`` members cost one
    network on ``k`` times the rows.

    In training mode the output is ``(rows, members, outputs)``, one loss per
    member; in eval mode ``(rows, outputs)``, the raw values whose output
    activation is the mean of the members' (see :func:`combine`). The
    ensemble is one network to the training loop (its size is
    ``ensemble_size``; ``n_members`` would mark a search's stack).

    Parameters
    ----------
    n_numeric, n_indicators : int
        Numeric and indicator columns of the input.
    cardinalities : sequence of int
        Codes of each categorical column (its categories plus the 0 row).
    hidden_layer_sizes : sequence of int
        Widths of the shared hidden layers.
    n_outputs : int
        Outputs of each member.
    n_members : int, default=1
        Members of the ensemble.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Activation of the hidden layers.
    dropout : float, default=0.0
        Dropout probability after each hidden layer.
    embedding_dim : int, default=16
        Largest embedding of a category (a column with ``c`` codes gets
        ``min(embedding_dim, c)`` values).
    numeric_embedding : {'periodic', 'piecewise_linear', None}, default=None
        How numbers enter: as they are, or through
        :class:`PeriodicEmbeddings` or :class:`PiecewiseLinearEmbeddings` of
        ``numeric_embedding_dim`` values each.
    numeric_embedding_dim : int, default=8
        Values per number of the embeddings.
    bins : sequence of array-like or None, default=None
        Bin edges of each number, for ``'piecewise_linear'``.
    out_activation : str, default='identity'
        What turns raw outputs into predictions, for the eval-mode mean.
    """

    def __init__(
        self,
        n_numeric,
        n_indicators,
        cardinalities,
        hidden_layer_sizes,
        n_outputs,
        *,
        n_members=1,
        activation="relu",
        dropout=0.0,
        embedding_dim=16,
        numeric_embedding=None,
        numeric_embedding_dim=8,
        bins=None,
        out_activation="identity",
    ):
        super().__init__()
        self.n_numeric, self.n_indicators = int(n_numeric), int(n_indicators)
        self.ensemble_size, self.out_activation = int(n_members), out_activation
        self.periodic = self.piecewise = None  # the numbers' embedding, if any
        width = self.n_numeric + self.n_indicators
        if numeric_embedding not in (None, "periodic", "piecewise_linear"):
            raise ValueError(f"unknown numeric_embedding {numeric_embedding!r}")
        if numeric_embedding == "periodic" and self.n_numeric:
            self.periodic = PeriodicEmbeddings(self.n_numeric, numeric_embedding_dim)
        elif numeric_embedding == "piecewise_linear" and self.n_numeric:
            if bins is None or len(bins) != self.n_numeric:
                raise ValueError("piecewise_linear needs the bins of every number")
            self.piecewise = PiecewiseLinearEmbeddings(bins, numeric_embedding_dim)
        if self.periodic is not None or self.piecewise is not None:
            width += self.n_numeric * (numeric_embedding_dim - 1)
        self.embeddings = nn.ModuleList()
        for c in cardinalities:
            dim = min(int(embedding_dim), int(c))
            emb = nn.Embedding(int(c), dim)
            nn.init.normal_(emb.weight, std=1.0 / math.sqrt(dim))
            self.embeddings.append(emb)
            width += dim
        self.scale = nn.Parameter(
            torch.randint(0, 2, (self.ensemble_size, width)).mul(2).sub(1).float()
        )
        layers = []
        for h in hidden_layer_sizes:
            layers += [nn.Linear(width, int(h)), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            width = int(h)
        self.hidden = nn.Sequential(*layers)
        bound = 1.0 / math.sqrt(width)
        self.head_weight = nn.Parameter(
            torch.empty(self.ensemble_size, width, n_outputs).uniform_(-bound, bound)
        )
        self.head_bias = nn.Parameter(
            torch.empty(self.ensemble_size, n_outputs).uniform_(-bound, bound)
        )

    def penalized(self):
        """The weights ``alpha`` penalizes: the hidden layers' and the heads'."""
        linears = [m.weight for m in self.hidden if isinstance(m, nn.Linear)]
        return [*linears, self.head_weight]

    def embed(self, X):
        """The rows as the members' common input, ``(rows, width)``."""
        n_num = self.n_numeric + self.n_indicators
        numbers = X[:, : self.n_numeric]
        # modules pickled before piecewise-linear embeddings have no .piecewise
        embedding = self.periodic or getattr(self, "piecewise", None)
        parts = [numbers if embedding is None else embedding(numbers)]
        parts.append(X[:, self.n_numeric : n_num])
        codes = X[:, n_num:].long()
        parts += [emb(codes[:, i]) for i, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=1)

    def forward(self, X):
        h = self.embed(X).unsqueeze(1) * self.scale  # (B, k, width)
        h = self.hidden(h)
        raw = torch.einsum("bkh,kho->bko", h, self.head_weight) + self.head_bias
        if self.training:
            return raw
        return combine(raw, self.out_activation)
