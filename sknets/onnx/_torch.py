"""Fitted sknets estimators as plain, exportable torch modules."""

import copy

import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from sknets.modules._images import ImageFeatures

# what each kind of output does to the network's raw output
_HEADS = ("softmax", "logistic", "binary", "exp", "identity", "features")


class ExportedNetwork(nn.Module):
    """A fitted network and its output activation, for flat float32 rows.

    The module that :func:`to_torch` returns: ``forward`` maps a float32
    batch of shape ``(n_samples, n_features_in_)`` to class probabilities,
    predictions or features, with no scikit-learn code on the way. It holds a
    copy of the estimator's network, in eval mode, on the CPU, in float32,
    without gradients.

    Parameters
    ----------
    network : torch.nn.Module
        Maps flat rows to raw outputs (scores, predictions or features).

    head : {'softmax', 'logistic', 'binary', 'exp', 'identity', 'features'}
        What is applied to the raw outputs: softmax over the classes,
        a sigmoid for each label, a sigmoid whose probability ``p`` becomes
        the two columns ``[1 - p, p]``, ``exp`` (Poisson regression),
        nothing, or a flattening to ``(n_samples, n_features)``.

    Attributes
    ----------
    network : torch.nn.Module
        The network.

    head : str
        The output activation.

    Examples
    --------
    >>> import torch
    >>> from sknets.onnx import ExportedNetwork
    >>> net = ExportedNetwork(torch.nn.Linear(3, 1), head="binary")
    >>> net(torch.zeros(2, 3)).shape
    torch.Size([2, 2])
    """

    def __init__(self, network, head):
        super().__init__()
        if head not in _HEADS:
            raise ValueError(f"head must be one of {_HEADS}; got {head!r}.")
        self.network = network
        self.head = head

    def forward(self, X):
        """Probabilities, predictions or features of a batch of flat rows.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, n_features_in_)
            float32 rows, as the estimator takes them.

        Returns
        -------
        out : torch.Tensor of shape (n_samples, n_outputs)
            What ``head`` makes of the network's output.
        """
        out = self.network(X)
        if self.head == "softmax":
            return torch.softmax(out, dim=1)
        if self.head == "logistic":
            return torch.sigmoid(out)
        if self.head == "binary":
            p = torch.sigmoid(out)
            return torch.cat([1 - p, p], dim=1)
        if self.head == "exp":
            return torch.exp(out)
        if self.head == "features":
            return out.reshape(out.shape[0], -1)
        return out


def _sknets_estimator_types():
    from sknets import (
        ConvNetClassifier,
        FineTunedClassifier,
        MLPClassifier,
        MLPRegressor,
        PretrainedFeatureExtractor,
    )

    return (
        MLPClassifier,
        MLPRegressor,
        ConvNetClassifier,
        FineTunedClassifier,
        PretrainedFeatureExtractor,
    )


def _head(model):
    """The output activation of a fitted sknets estimator (see ExportedNetwork)."""
    from sknets import PretrainedFeatureExtractor

    if isinstance(model, PretrainedFeatureExtractor):
        return "features"
    activation = model.out_activation_
    if activation == "logistic" and model.n_outputs_ == 1:
        return "binary"  # one logit: the two probabilities predict_proba gives
    return activation


def _network(model):
    """A float32, eval-mode, gradient-free CPU copy of the fitted network."""
    network = copy.deepcopy(model.module_).to("cpu", torch.float32).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    for m in network.modules():
        if isinstance(m, ImageFeatures):
            m.early_exit = False  # no exception raised in forward: exportable
    return network


def to_torch(model):
    """A fitted sknets estimator as a plain torch module, ready for ``torch.export``.

    The module maps flat float32 rows, a tensor of shape
    ``(n_samples, n_features_in_)``, to what the estimator computes:
    ``predict_proba`` for classifiers (binary ones included: two columns),
    the predictions of regressors as ``(n_samples, n_outputs)``, the features
    of :class:`~sknets.PretrainedFeatureExtractor`. It works on a copy of the
    network, in float32, in eval mode (dropout off, batch normalization with
    its running statistics), on the CPU and without gradients, whatever
    precision and device the estimator was trained with; move it with
    ``.to(...)`` as any module. Labels are not part of it:
    ``model.classes_[proba.argmax(1)]`` (for multilabel problems,
    ``proba > 0.5``). Preprocessing steps of a ``Pipeline`` are not either;
    :func:`to_onnx` converts whole pipelines.

    Parameters
    ----------
    model : estimator
        A fitted :class:`~sknets.MLPClassifier`, :class:`~sknets.MLPRegressor`,
        :class:`~sknets.ConvNetClassifier`,
        :class:`~sknets.FineTunedClassifier` or
        :class:`~sknets.PretrainedFeatureExtractor`.

    Returns
    -------
    module : ExportedNetwork
        The network and its output activation, in eval mode.

    See Also
    --------
    to_onnx : The estimator, or a whole pipeline, as an ONNX graph.

    Notes
    -----
    Image estimators take flat rows here as everywhere (the network reshapes
    them to ``input_shape_`` or ``image_shape_``); ``uint8`` pixels must be
    mapped to ``[0, 1]`` first (``X / 255``), as the estimators do. Inputs
    are not validated: the module is what ``torch.export.export``,
    TorchScript or ``torch.compile`` see.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from sknets import MLPClassifier
    >>> from sknets.onnx import to_torch
    >>> X = np.random.RandomState(0).normal(size=(40, 3)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> clf = MLPClassifier((8,), max_iter=5, random_state=0).fit(X, y)
    >>> module = to_torch(clf)
    >>> proba = module(torch.from_numpy(X)).numpy()
    >>> bool(np.allclose(proba, clf.predict_proba(X), atol=1e-6))
    True
    >>> program = torch.export.export(module, (torch.from_numpy(X[:2]),))
    """
    if not isinstance(model, _sknets_estimator_types()):
        raise TypeError(
            "to_torch takes a fitted sknets estimator (MLPClassifier, "
            "MLPRegressor, ConvNetClassifier, FineTunedClassifier or "
            f"PretrainedFeatureExtractor); got {type(model).__name__}. For a "
            "Pipeline, use sknets.onnx.to_onnx."
        )
    check_is_fitted(model)
    return ExportedNetwork(_network(model), _head(model)).eval()
