"""Multi-layer perceptrons: drop-in supersets of scikit-learn's MLP estimators."""

import scipy.sparse as sp
import torch
from sklearn.base import ClassifierMixin, RegressorMixin
from torch import nn

from sknets import _catalog, _docs
from sknets._base import _BaseNet
from sknets._compat import StrOptions
from sknets._engine import seeded
from sknets._heads import _ClassifierNet, _RegressorNet
from sknets._members import can_stack, stack_key
from sknets.modules import MLPModule, StackedMLP
from sknets.modules._mlp import _per_layer


class _MLPMixin:
    """What the two MLP estimators share: the module and ``coefs_``/``intercepts_``."""

    _sparse_batches = True  # the first Linear multiplies CSR batches directly

    def _build_module(self, n_features, n_outputs, sparse_input=False):
        return MLPModule(
            n_features,
            self._hidden_sizes(),
            n_outputs,
            activation=self.activation,
            dropout=self.dropout,
            batch_norm=self.batch_norm,
            sparse_input=sparse_input,
        )

    def _widest_activation(self, module, n_features):
        # every layer of an MLPModule but its Linears keeps its input's width
        # (each search pick-up would otherwise pay a dry run)
        return max(
            layer.out_features
            for layer in module.modules()
            if isinstance(layer, nn.Linear)
        )

    def _stack_signature(self, prepared):
        """What members must share to be stacked with this fit, or None."""
        if (
            self.batch_norm
            or sp.issparse(prepared.X)
            or prepared.valid is not None
            or self.scoring is not None  # scorers see one network at a time
            or self.callbacks  # callbacks see one network at a time
        ):
            return None
        plan = prepared.plan
        if not can_stack(plan):
            return None
        return (
            type(self).__qualname__,
            prepared.X.shape[1],
            tuple(self._hidden_sizes()),
            self.activation,
            prepared.n_outputs,
            stack_key(plan),
        )

    def _stack(self, prepared_members):
        """One StackedMLP of ``(estimator, prepared)`` pairs, each freshly drawn."""
        modules, dropout, generators = [], [], []
        n_hidden = len(self._hidden_sizes())
        for est, prepared in prepared_members:
            plan = prepared.plan
            generator = torch.Generator(plan.device)
            with seeded(plan.torch_seed):
                modules.append(est._new_module(prepared))
                if plan.device.type == "cpu":  # where its own fit goes on drawing
                    generator.set_state(torch.get_rng_state())
                else:
                    generator.manual_seed(plan.torch_seed)
            generators.append(generator)
            dropout.append(_per_layer(est.dropout, n_hidden, "dropout"))
        return StackedMLP(modules, self.activation, dropout, generators)

    def _set_model_attributes(self):
        layers = [m for m in self.module_.modules() if isinstance(m, nn.Linear)]
        self.coefs_ = [m.weight.detach().cpu().numpy().T.copy() for m in layers]
        self.intercepts_ = [m.bias.detach().cpu().numpy().copy() for m in layers]
        self.n_layers_ = len(self._hidden_sizes()) + 2


def _init_params(self, **params):
    for name, value in params.items():
        setattr(self, name, value)


@_catalog.register("estimator")
class MLPClassifier(ClassifierMixin, _MLPMixin, _ClassifierNet):
    __doc__ = _docs.fill(
        """Multi-layer perceptron classifier trained with PyTorch.

    A drop-in superset of :class:`sklearn.neural_network.MLPClassifier`: the
    same parameters, defaults, fitted attributes and methods, plus
    ``l1_ratio``, ``dropout``, ``batch_norm``, ``device`` and ``dtype``.
    Binary, multiclass and multilabel (indicator ``y``) problems; dense,
    pandas and sparse input.

    Parameters
    ----------
{architecture}
{training}
{scoring}
{callbacks}
{class_weight}
    Attributes
    ----------
    classes_ : ndarray or list of ndarray of shape (n_classes,)
        Class labels for each output.

    coefs_ : list of ndarray of shape (n_in, n_out)
        Weight matrix of each layer (a copy of the module's weights).

    intercepts_ : list of ndarray of shape (n_out,)
        Bias vector of each layer.

{fitted}
    See Also
    --------
    MLPRegressor : The regressor with the same network.
    sklearn.neural_network.MLPClassifier : The NumPy implementation this one
        mirrors.

    Notes
    -----
    The loss is scikit-learn's: cross-entropy for softmax outputs, binary
    cross-entropy summed over outputs for logistic ones, averaged over the
    samples with their weights, plus the penalty. Training runs in a skorch
    ``NeuralNet`` (the fitted ``net_``) whose batches are sliced from tensors
    placed on ``device`` once.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknets import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300,
    ...                     learning_rate_init=0.01, random_state=0).fit(X, y)
    >>> clf.predict(X[:3])
    array([0, 0, 0])
    >>> bool(clf.score(X, y) > 0.9)
    True
    """,
        architecture=_docs.ARCHITECTURE,
        training=_docs.TRAINING,
        class_weight=_docs.CLASS_WEIGHT,
        scoring=_docs.SCORING,
        callbacks=_docs.CALLBACKS,
        fitted=_docs.FITTED,
    )

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        l1_ratio=0.0,
        dropout=0.0,
        batch_norm=False,
        device="auto",
        dtype=None,
        compile=False,
        autocast=False,
        class_weight=None,
        scoring=None,
        callbacks=None,
    ):
        _init_params(self, **{k: v for k, v in locals().items() if k != "self"})

    def __sklearn_tags__(self):
        return self._multilabel_tags(super().__sklearn_tags__())


@_catalog.register("estimator")
class MLPRegressor(RegressorMixin, _MLPMixin, _RegressorNet):
    __doc__ = _docs.fill(
        """Multi-layer perceptron regressor trained with PyTorch.

    A drop-in superset of :class:`sklearn.neural_network.MLPRegressor`: the
    same parameters, defaults, fitted attributes and methods, plus
    ``l1_ratio``, ``dropout``, ``batch_norm``, ``device`` and ``dtype``.
    Single- and multi-output regression; dense, pandas and sparse input.

    Parameters
    ----------
    loss : {{'squared_error', 'poisson'}}, default='squared_error'
        Half squared error, or half Poisson deviance with an exponential
        output (non-negative ``y``).

{architecture}
{training}
{scoring}
{callbacks}
    Attributes
    ----------
    coefs_ : list of ndarray of shape (n_in, n_out)
        Weight matrix of each layer (a copy of the module's weights).

    intercepts_ : list of ndarray of shape (n_out,)
        Bias vector of each layer.

{fitted}
    See Also
    --------
    MLPClassifier : The classifier with the same network.
    sklearn.neural_network.MLPRegressor : The NumPy implementation this one
        mirrors.

    Examples
    --------
    >>> import numpy as np
    >>> from sknets import MLPRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-1, 1, size=(200, 3))
    >>> y = X @ np.array([1.0, -2.0, 0.5])
    >>> reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=500,
    ...                    learning_rate_init=0.01, random_state=0).fit(X, y)
    >>> bool(reg.score(X, y) > 0.95)
    True
    """,
        architecture=_docs.ARCHITECTURE,
        training=_docs.TRAINING,
        scoring=_docs.SCORING,
        callbacks=_docs.CALLBACKS,
        fitted=_docs.FITTED,
    )

    _parameter_constraints: dict = {
        **_BaseNet._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        l1_ratio=0.0,
        dropout=0.0,
        batch_norm=False,
        device="auto",
        dtype=None,
        compile=False,
        autocast=False,
        scoring=None,
        callbacks=None,
    ):
        _init_params(self, **{k: v for k, v in locals().items() if k != "self"})
