"""Transfer learning: pretrained-network features and fine-tuning, offline.

:class:`PretrainedFeatureExtractor` turns images into the activations of a
pretrained network; :class:`FineTunedClassifier` puts a new head on such a
network and trains it in two phases. The default weights of the small
built-in backbones are bundled with the package; others are read from local
files or downloaded once into the cache folder (``sknets._weights``).
"""

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from sknets import _catalog, _docs
from sknets._base import _BaseNet
from sknets._compat import Interval, fit_context
from sknets._device import resolve_device
from sknets._heads import CLASS_WEIGHT_CONSTRAINT, _ClassifierNet
from sknets._images import (
    PRETRAINED_CONSTRAINTS,
    _check_image_rows,
    _fold_uint8,
    _image_input,
    _target_size,
)
from sknets._pickling import _BackbonePickleMixin
from sknets._plan import Phase
from sknets._restore import restore_module
from sknets._validation import check_representable
from sknets._weights import make_backbone
from sknets.modules._images import FineTuneModule, ImageFeatures
from sknets.modules._mlp import MLPModule

# --------------------------------------------------------------------------- extractor


@_catalog.register("estimator")
class PretrainedFeatureExtractor(
    _BackbonePickleMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    BaseEstimator,
):
    __doc__ = _docs.fill(
        """Features from a pretrained network: images in, activations out.

    ``fit`` is cheap: it builds the backbone and loads its weights (the
    defaults are bundled; see ``weights``). ``transform`` runs the network in
    eval mode under ``torch.inference_mode()``, ``batch_size`` images at a
    time, and returns a 2-D array of the chosen layer's activations, ready
    for a linear model.

    Parameters
    ----------
{image}
    batch_size : int, default=64
        Images per forward pass. Features do not depend on it.

    device : str or torch.device, default='auto'
        Where the network runs: 'cpu', 'cuda', 'cuda:1', ...; 'auto' picks
        CUDA when it is available.

    random_state : int, RandomState instance or None, default=None
        Seeds the random initialization with ``weights=None``.

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The backbone with its weights loaded, in eval mode.

    module_ : torch.nn.Module
        Preprocessing, backbone and pooling in one module (it contains
        ``backbone_``).

    image_shape_ : tuple of int or None
        (channels, height, width) of the images seen in ``fit``.

    n_features_in_ : int
        Number of values per image seen during ``fit``.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    n_features_out_ : int
        Number of features ``transform`` returns.

    See Also
    --------
    FineTunedClassifier : Train a new head, and optionally the backbone.

    Notes
    -----
    The computation is float32; the output is float32 for float32 input and
    float64 otherwise. Input values too large for float32 raise a
    ``ValueError``. Put the extractor first in a ``Pipeline(memory=...)``
    so that a grid search over the later steps extracts features once.

    Examples
    --------
    >>> import numpy as np
    >>> from sknets import PretrainedFeatureExtractor
    >>> images = np.random.RandomState(0).randint(0, 256, (4, 16, 16, 3),
    ...                                           dtype=np.uint8)
    >>> ext = PretrainedFeatureExtractor("resnet20_cifar", weights=None,
    ...                                  random_state=0).fit(images)
    >>> ext.transform(images).shape
    (4, 64)
    >>> ext.get_feature_names_out()[:2]
    array(['pretrainedfeatureextractor0', 'pretrainedfeatureextractor1'],
          dtype=object)
    """,
        image=_docs.PRETRAINED_IMAGES,
    )

    _parameter_constraints: dict = {
        **PRETRAINED_CONSTRAINTS,
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        backbone="squeezenet1_1",
        *,
        weights="default",
        layer=None,
        input_shape=None,
        resize="auto",
        normalize=True,
        batch_size=64,
        device="auto",
        random_state=None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.input_shape = input_shape
        self.resize = resize
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    def _validate_images(self, X, reset):
        X, shape = _image_input(self, X, reset)
        X = validate_data(
            self, X, dtype=(np.float64, np.float32, np.uint8), reset=reset
        )
        check_representable(X, torch.float32)
        return X, shape

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Build the backbone and load its weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Images: flat rows (see ``input_shape``) or an image array. Only
            their shape is used, and that their values fit in float32.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted extractor.
        """
        X, shape = self._validate_images(X, reset=True)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            module = self._features_module(X.shape[1], shape, self.weights)
        module = module.to(resolve_device(self.device), torch.float32).eval()
        self.module_ = module
        self.image_shape_ = shape
        probe = self._run(np.zeros((1, X.shape[1]), dtype=np.float32))
        self.n_features_out_ = self._n_features_out = int(probe.shape[1])
        return self

    def _features_module(self, n_features, shape, weights):
        """The frozen feature module, its backbone's weights from ``weights``."""
        backbone, prep = make_backbone(self.backbone, weights)
        _check_image_rows(n_features, shape, prep, self.backbone)
        module = ImageFeatures(
            backbone,
            self.layer,
            shape,
            _target_size(self.resize, prep) if shape is not None else None,
            prep if self.normalize else None,
        )
        module.set_frozen(True)
        return module

    # ------------------------------------------------------------ persistence

    def _fitted_state(self):
        """Fitted attributes for ``sknets.save`` (the weights: ``module_``)."""
        return {
            k: v
            for k, v in self.__dict__.items()
            if k.endswith("_") and not k.startswith("_") and k != "module_"
        }

    def _restore_fitted(self, fitted, module_state):
        """Rebuild from :meth:`_fitted_state` and the module's saved weights.

        The backbone is built by name without its pretrained weights (the
        saved state holds them): no weights file is read.
        """
        for name, value in fitted.items():
            setattr(self, name, value)
        self._n_features_out = self.n_features_out_
        shape = self.image_shape_
        module = restore_module(
            lambda: self._features_module(self.n_features_in_, shape, None).to(
                dtype=torch.float32
            ),
            module_state,
        )
        self.module_ = module.to(resolve_device(self.device)).eval()
        return self

    @property
    def backbone_(self):
        return self.module_.backbone

    def _run(self, X):
        device = resolve_device(self.device)
        module = self.module_.to(device).eval()
        outs = []
        with torch.inference_mode():
            for start in range(0, X.shape[0], self.batch_size):
                rows = _fold_uint8(X[start : start + self.batch_size])
                with warnings.catch_warnings():
                    # read-only input (memmaps): nothing writes to the batch
                    warnings.filterwarnings("ignore", message="The given NumPy array")
                    batch = torch.from_numpy(rows)
                out = module(batch.to(device=device, dtype=torch.float32))
                outs.append(out.reshape(out.shape[0], -1).cpu())
        return torch.cat(outs).numpy()

    def transform(self, X):
        """Activations of ``layer`` for each image.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Images, as in ``fit``.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_out_)
            The features; float32 for float32 input, else float64.
        """
        check_is_fitted(self)
        X, _ = self._validate_images(X, reset=False)
        out = self._run(X)
        return out if X.dtype == np.float32 else out.astype(np.float64)

    def _pickle_state(self):
        state = dict(super()._pickle_state())  # never the live __dict__
        module = state.get("module_")
        if module is not None and any(
            p.device.type != "cpu" for p in module.parameters()
        ):
            state["module_"] = copy.deepcopy(module).cpu()
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.requires_fit = True
        tags.non_deterministic = self.random_state is None and self.weights is None
        return tags


# --------------------------------------------------------------------------- classifier


@_catalog.register("estimator")
class FineTunedClassifier(ClassifierMixin, _BackbonePickleMixin, _ClassifierNet):
    __doc__ = _docs.fill(
        """A pretrained backbone with a new classification head, fine-tuned.

    Training runs in two phases: ``head_epochs`` epochs with the backbone
    frozen (eval mode, no gradients: only the new head learns, at
    ``learning_rate_init``), then the remaining ``max_iter - head_epochs``
    epochs with every parameter trainable at ``fine_tune_lr``. With
    ``fine_tune_lr=None`` the backbone stays frozen throughout. The training
    parameters, early stopping and fitted attributes are those of
    :class:`MLPClassifier`; ``history_`` and ``loss_curve_`` cover both phases.

    Parameters
    ----------
{image}
    hidden_layer_sizes : array-like of shape (n_hidden,), default=()
        Hidden layers of the new head; ``()`` is a linear head on the
        backbone's features.

    activation : {{'identity', 'logistic', 'tanh', 'relu'}}, default='relu'
        Activation of the head's hidden layers.

    head_epochs : int, default=5
        Epochs of the first phase (backbone frozen).

    fine_tune_lr : float or None, default=1e-4
        Learning rate of the second phase, when the whole network trains.
        None keeps the backbone frozen for all ``max_iter`` epochs.

{training}
{scoring}
{callbacks}
{class_weight}
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.

    image_shape_ : tuple of int or None
        (channels, height, width) of the images seen in ``fit``.

{fitted}
    See Also
    --------
    PretrainedFeatureExtractor : Frozen features for any scikit-learn model.

    Notes
    -----
    ``partial_fit`` trains in one phase: the backbone is frozen when
    ``fine_tune_lr`` is None and trainable otherwise, at
    ``learning_rate_init``. ``uint8`` input is mapped to ``[0, 1]``; float
    input is taken to be in ``[0, 1]`` already. Batch normalization layers of
    a frozen backbone keep their running statistics.

    Examples
    --------
    >>> import numpy as np
    >>> from sknets import FineTunedClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randint(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    >>> y = np.repeat([0, 1], 10)
    >>> clf = FineTunedClassifier("resnet20_cifar", weights=None, resize=None,
    ...                           head_epochs=2, max_iter=3, random_state=0)
    >>> clf.fit(X, y).predict(X[:4]).shape
    (4,)
    >>> len(clf.history_)
    3
    """,
        image=_docs.PRETRAINED_IMAGES,
        training=_docs.TRAINING.replace(
            "max_iter : int, default=200", "max_iter : int, default=20"
        ),
        class_weight=_docs.CLASS_WEIGHT,
        scoring=_docs.SCORING,
        callbacks=_docs.CALLBACKS,
        fitted=_docs.FITTED,
    )

    _parameter_constraints: dict = {
        **_BaseNet._parameter_constraints,
        **CLASS_WEIGHT_CONSTRAINT,
        **PRETRAINED_CONSTRAINTS,
        "head_epochs": [Interval(Integral, 0, None, closed="left")],
        "fine_tune_lr": [None, Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        backbone="squeezenet1_1",
        *,
        weights="default",
        layer=None,
        input_shape=None,
        resize="auto",
        normalize=True,
        hidden_layer_sizes=(),
        activation="relu",
        head_epochs=5,
        fine_tune_lr=1e-4,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=20,
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
        for name, value in locals().items():
            if name != "self":
                setattr(self, name, value)

    # ------------------------------------------------------------ input

    def _images(self, X, reset):
        X, shape = _image_input(self, X, reset)
        if reset:
            self.image_shape_ = shape
        return X

    def _validate_X(self, X, reset):
        X = self._images(X, reset)
        X = validate_data(
            self, X, dtype=(np.float64, np.float32, np.uint8), reset=reset
        )
        return _fold_uint8(X)

    def _validate_Xy(self, X, y, reset, **kwargs):
        X = self._images(X, reset)
        X, y = validate_data(
            self,
            X,
            y,
            multi_output=True,
            dtype=(np.float64, np.float32, np.uint8),
            reset=reset,
            **kwargs,
        )
        return _fold_uint8(X), y

    # ------------------------------------------------------------ module

    def _build_module(self, n_features, n_outputs, sparse_input=False, pretrained=True):
        weights = self.weights if pretrained else None
        backbone, prep = make_backbone(self.backbone, weights)
        shape = self.image_shape_
        _check_image_rows(n_features, shape, prep, self.backbone)
        features = ImageFeatures(
            backbone,
            self.layer,
            shape,
            _target_size(self.resize, prep) if shape is not None else None,
            prep if self.normalize else None,
        )
        was_training = features.training
        features.eval()
        with torch.no_grad():
            width = features(torch.zeros(1, n_features)).reshape(1, -1).shape[1]
        features.train(was_training)
        head = MLPModule(
            width,
            self._hidden_sizes(),
            n_outputs,
            activation=self.activation,
            dropout=self.dropout,
            batch_norm=self.batch_norm,
        )
        return FineTuneModule(features, head)

    def _skeleton(self, n_features, n_outputs, sparse_input):
        """The module for saved weights: no pretrained weights file is read."""
        return self._build_module(n_features, n_outputs, sparse_input, pretrained=False)

    # ------------------------------------------------------------ training

    def _phases(self, first_pass, incremental):
        """The plan's phases: the head alone, then the whole network.

        ``fit`` trains ``head_epochs`` epochs with the backbone frozen at
        ``learning_rate_init`` (all ``max_iter`` when ``fine_tune_lr`` is
        None), then the rest with everything trainable at ``fine_tune_lr``,
        in one run on one validation split. A warm start continues in one
        phase: frozen at ``learning_rate_init`` when ``fine_tune_lr`` is None,
        else trainable at ``fine_tune_lr``. ``partial_fit`` trains in one
        phase, frozen only when ``fine_tune_lr`` is None, starting at
        ``learning_rate_init``.
        """
        frozen = self.fine_tune_lr is None
        if incremental:  # partial_fit: one phase, the optimizer's own lr after
            return (Phase(epochs=None, lr=self.learning_rate_init, frozen=frozen),)
        if not first_pass:
            lr = self.learning_rate_init if frozen else self.fine_tune_lr
            return (Phase(epochs=None, lr=lr, frozen=frozen),)
        if frozen:
            return (Phase(epochs=None, lr=self.learning_rate_init, frozen=True),)
        phases = []
        if self.head_epochs > 0:
            phases.append(
                Phase(epochs=self.head_epochs, lr=self.learning_rate_init, frozen=True)
            )
        if self.max_iter > self.head_epochs:
            phases.append(Phase(epochs=None, lr=self.fine_tune_lr, frozen=False))
        return tuple(phases)

    def _set_model_attributes(self):
        self.n_layers_ = len(self._hidden_sizes()) + 2  # the head's, as an MLP's

    def _predict_batch_rows(self, module, X):
        """A few images per forward pass (images are large)."""
        return self.batch_size if isinstance(self.batch_size, Integral) else 200

    def summary(self):
        """Layer table of the fitted network (backbone and head).

        Returns
        -------
        table : pandas.DataFrame
            One row per layer and a last ``Total`` row.
        """
        return super().summary()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags
