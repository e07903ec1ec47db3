"""Prediction: outputs of a fitted network in large batches, in eval mode.

:class:`_PredictMixin` (a mixin of ``_BaseNet``) validates new rows, sizes
the batches by the network's widest activation (:func:`widest_activation`,
:func:`prediction_rows`) and runs them through :func:`predict_raw`; the
heads (:mod:`sknets._heads`) turn the outputs into labels, probabilities or
values.
"""

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.validation import check_is_fitted

from sknets._data import ArrayDataset, BatchIterator, as_tensor
from sknets._losses import output_activation
from sknets._summary import layer_summary
from sknets._validation import check_representable


def prediction_rows(width):
    """Rows per prediction batch for activations ``width`` values wide."""
    return int(np.clip(2**22 // max(width, 1), 64, 8192))


def widest_activation(module, n_features):
    """Largest number of values one input row produces in any layer of ``module``.

    Measured with forward hooks on one all-zero row, in eval mode.
    """
    param = next(module.parameters(), None)
    kw = {} if param is None else {"dtype": param.dtype, "device": param.device}
    widths = [0]

    def record(layer, args, out):
        if isinstance(out, torch.Tensor):
            widths.append(out.numel())

    hooks = [m.register_forward_hook(record) for m in module.modules()]
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            module(torch.zeros(1, n_features, **kw))
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()
    return max(widths)


def predict_raw(module, X, batch_size, forward=None):
    """Raw outputs of ``module`` for an :class:`ArrayDataset` or a batch, in eval mode.

    Batches are large and run under ``torch.inference_mode``, through
    ``forward`` (e.g. :meth:`SkorchNet.infer`) when given. A module in train
    mode is put in eval mode for the call and back afterwards; fitted modules
    are left in eval mode, so predictions toggle nothing.
    """
    forward = module if forward is None else forward
    was_training = module.training
    if was_training:
        module.eval()
    try:
        with torch.inference_mode():
            if isinstance(X, torch.Tensor):  # one batch, already a tensor
                return forward(X)
            if len(X) <= batch_size:  # one batch: no iterator
                return forward(X.take(slice(None))[0])
            outs = [
                forward(Xb)
                for Xb, _ in BatchIterator(X, max(int(batch_size), 1), False, 0)
            ]
    finally:
        if was_training:
            module.train()
    return torch.cat(outs) if len(outs) > 1 else outs[0]


class _PredictMixin:
    """Forward passes of the fitted network, and its layer table."""

    def summary(self):
        """Layer table of the fitted network.

        Returns
        -------
        table : pandas.DataFrame
            One row per layer (``layer``, ``type``, ``output_shape``,
            ``params``, ``trainable``) and a last ``Total`` row.
        """
        check_is_fitted(self)
        return layer_summary(self.module_, (1, self._module_width()))

    def _module_width(self):
        """Values per row that the module takes (the encoded width, for tables)."""
        return self.n_features_in_

    # -------------------------------------------------------------- predict

    def _widest_activation(self, module, n_features):
        """:func:`widest_activation` of ``module`` (a dry run; subclasses that
        know their layers' widths say it without one)."""
        return widest_activation(module, n_features)

    def _predict_batch_rows(self, module, X):
        """Rows of ``X`` per forward pass when predicting or validating.

        As many as keep the widest activation of a batch near 4 million
        values (16 MB of float32): few Python round trips, and intermediate
        results that stay in cache (a digit CNN predicts 2.8x faster in
        batches of 200 rows than in one batch of 10,000), between 64 and
        8192 rows. Sparse rows that the network multiplies directly count
        by their stored values, not their width.
        """
        n_features = X.shape[1]
        cached = self.__dict__.get("_widest")  # once per network
        if cached is None or cached[0] is not module or cached[1] != n_features:
            layers = self._widest_activation(module, n_features)
            cached = (
                module,
                n_features,
                layers,
                prediction_rows(max(layers, n_features)),
            )
            self._widest = cached
        if sp.issparse(X) and self._sparse_batches:
            return prediction_rows(max(cached[2], X.nnz / max(X.shape[0], 1)))
        return cached[3]

    def _forward(self, X):
        """Activated outputs, shape (n_samples, n_outputs).

        float32 when both the network and ``X`` are float32, else float64: the
        precision scikit-learn's MLP gives (NumPy's promotion of the two).
        """
        if "net_" not in self.__dict__:
            check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        dtype, device = self._dtype, self._device
        check_representable(X, dtype)
        net = self.net_
        rows = self._predict_batch_rows(net.module_, X)
        if X.shape[0] <= rows and not sp.issparse(X):
            data = as_tensor(X, dtype, device)  # one dense batch: no dataset
        else:
            data = ArrayDataset(
                X,
                device=device,
                dtype=dtype,
                lazy=True,
                sparse_batches=self._sparse_batches,
            )
        raw = predict_raw(net.module_, data, rows, net.infer)
        out = output_activation(raw, self.out_activation_)
        single = dtype == torch.float32 and X.dtype == np.float32
        return out.to(
            device="cpu", dtype=torch.float32 if single else torch.float64
        ).numpy()
