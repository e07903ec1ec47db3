"""Losses and outputs with scikit-learn's MLP definitions.

Per-sample losses, their weighted mean (skorch's ``criterion=WeightedLoss``),
the penalized weights, output activations (``predict_nonlinearity=
Probabilities``) and the validation score of early stopping.
"""

import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score
from torch import nn


def sample_losses(raw, y, out_activation, label_smoothing=0.0):
    """Per-sample loss with scikit-learn's MLP definitions.

    ``softmax``: cross-entropy (``y`` holds class indices); ``logistic``:
    binary cross-entropy summed over outputs; ``identity``: half squared error
    averaged over outputs; ``exp``: half Poisson deviance summed over outputs.
    ``label_smoothing`` ``e`` (classification): the targets are ``(1 - e)``
    of the true ones plus ``e`` spread uniformly over the classes (``e / 2``
    each of 0 and 1 for a logistic output), as ``F.cross_entropy``'s.
    """
    e = float(label_smoothing)
    if out_activation == "softmax":
        # log-sum-exp minus the true logit: F.cross_entropy's value to an ulp,
        # in half its time on narrow outputs (its log_softmax runs per row)
        true = raw.gather(1, y.long().unsqueeze(1)).squeeze(1)
        if e:  # minus the smoothed targets' mean logit
            return raw.logsumexp(1) - (1 - e) * true - e * raw.mean(1)
        return raw.logsumexp(1) - true
    if out_activation == "logistic":
        y = y.to(raw.dtype).reshape(raw.shape)
        if e:
            y = y * (1 - e) + e / 2
        return F.binary_cross_entropy_with_logits(raw, y, reduction="none").sum(1)
    y = y.to(raw.dtype).reshape(raw.shape)
    if out_activation == "identity":
        return 0.5 * ((raw - y) ** 2).mean(1)
    if out_activation == "exp":
        return (torch.xlogy(y, y) - y * raw - y + torch.exp(raw)).sum(1)
    raise ValueError(f"unknown output activation {out_activation!r}")


def weighted_mean(losses, w):
    """``sum(w * l) / sum(w)``, or the plain mean without weights."""
    if w is None:
        return losses.mean()
    return (w * losses).sum() / w.sum()


def penalized_weights(module):
    """Weights of the linear and convolutional layers (biases and norms excluded).

    The parameters themselves: an input-major first layer's ``weight_t`` (its
    sums of squares and of absolute values are the weight's); a stacked
    module's ``(members, in, out)`` weights (its ``penalized()``).
    """
    if hasattr(module, "penalized"):
        return list(module.penalized())
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    return [
        getattr(m, "weight_t", None) if hasattr(m, "weight_t") else m.weight
        for m in module.modules()
        if isinstance(m, kinds)
    ]


def output_activation(raw, out_activation):
    """Turn raw network outputs into predictions (probabilities for classifiers)."""
    if out_activation == "softmax":
        return torch.softmax(raw, dim=1)
    if out_activation == "logistic":
        return torch.sigmoid(raw)
    if out_activation == "exp":
        return torch.exp(raw)
    return raw


class WeightedLoss(nn.Module):
    """skorch's criterion: ``sum(w * l) / sum(w)`` of :func:`sample_losses`.

    ``y_true`` is the ``(y, w)`` pair of a batch (``w`` None: the plain mean),
    or the ``(y, w, counts)`` of a stacked batch (``raw`` is ``(members, rows,
    outputs)``): then each member's weighted mean, a ``(members,)`` tensor
    (padding rows have weight 0; a member without rows has loss 0). An
    ensemble trained on one set of rows gives ``raw`` of shape ``(rows,
    members, outputs)`` with a ``(y, w)`` pair: the loss of a row is the mean
    of its members' losses. ``label_smoothing`` (classification) smooths
    the targets of every loss it computes, training and validation.
    """

    def __init__(self, out_activation="identity", label_smoothing=0.0):
        super().__init__()
        self.out_activation = out_activation
        self.label_smoothing = float(label_smoothing)

    def forward(self, raw, y_true):
        if len(y_true) == 3:
            return self._per_member(raw, *y_true[:2])
        y, w = y_true
        if raw.dim() == 3:  # an ensemble's (rows, members, outputs)
            return weighted_mean(self._ensemble(raw, y), w)
        if self.label_smoothing:
            return weighted_mean(
                sample_losses(raw, y, self.out_activation, self.label_smoothing), w
            )
        if w is None:  # the same means, in one reduction (fewer kernels)
            act = self.out_activation
            if act == "softmax":
                return F.cross_entropy(raw, y)
            if act == "logistic":
                y = y.to(raw.dtype).reshape(raw.shape)
                total = F.binary_cross_entropy_with_logits(raw, y, reduction="sum")
                return total / raw.shape[0]
            if act == "identity":
                return 0.5 * F.mse_loss(raw, y.to(raw.dtype).reshape(raw.shape))
        return weighted_mean(sample_losses(raw, y, self.out_activation), w)

    def _ensemble(self, raw, y):
        """Each row's mean over the members of their losses, ``(rows,)``."""
        B, k = raw.shape[:2]
        losses = sample_losses(
            raw.reshape(B * k, raw.shape[2]),
            y.repeat_interleave(k, dim=0),
            self.out_activation,
            self.label_smoothing,
        )
        return losses.reshape(B, k).mean(1)

    def _per_member(self, raw, y, w):
        M, B = raw.shape[:2]
        losses = sample_losses(
            raw.reshape(M * B, *raw.shape[2:]),
            y.reshape(M * B, *y.shape[2:]),
            self.out_activation,
        ).reshape(M, B)
        total = w.sum(1)
        return (w * losses).sum(1) / total.clamp_min(torch.finfo(total.dtype).tiny)


class Probabilities:
    """skorch's ``predict_nonlinearity``: what the estimator's predictions use.

    Softmax rows, sigmoid columns (one output: the two columns ``[1 - p, p]``
    of a binary ``predict_proba``), ``exp`` for Poisson, identity otherwise, so
    that ``net_.predict_proba(X)`` equals the classifier's ``predict_proba``.
    """

    def __init__(self, out_activation):
        self.out_activation = out_activation

    def __call__(self, raw):
        out = output_activation(raw, self.out_activation)
        if self.out_activation == "logistic" and out.shape[1] == 1:
            out = torch.cat([1 - out, out], dim=1)
        return out


def validation_score(name, raw, y, w, out_activation):
    """``'accuracy'`` (subset accuracy for multilabel), ``'r2'`` or ``'loss'``.

    ``'loss'`` is minus the weighted mean loss (higher is better, as for the
    others): a smooth criterion where a small validation set makes accuracy
    jump by whole rows.
    """
    if name == "loss":
        return -float(weighted_mean(sample_losses(raw, y, out_activation), w))
    if name == "accuracy":
        if out_activation == "softmax":
            correct = raw.argmax(1) == y
        else:
            correct = ((raw > 0) == (y.reshape(raw.shape) > 0)).all(1)
        correct = correct.to(raw.dtype)
        return float(correct.mean() if w is None else (w * correct).sum() / w.sum())
    pred = output_activation(raw, out_activation)
    w = None if w is None else w.cpu().numpy()
    return r2_score(y.cpu().numpy(), pred.cpu().numpy(), sample_weight=w)
