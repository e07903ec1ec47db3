"""Convolutional network classifier for images and signals given as flat rows."""

import math
from numbers import Integral

from sklearn.base import ClassifierMixin

from sknets import _catalog, _docs
from sknets._base import _BaseNet
from sknets._compat import Interval, StrOptions
from sknets._heads import CLASS_WEIGHT_CONSTRAINT, _ClassifierNet
from sknets._images import _flatten_images
from sknets.modules import ConvNetModule


def _module_shape(shape):
    """The ``(C, L)`` or ``(C, H, W)`` shape the module works on, channels first.

    ``(L,)`` is a 1-channel signal, ``(H, W)`` a 1-channel image and
    ``(C, H, W)`` a C-channel image; an image of height 1 is a signal, so
    ``(C, 1, L)`` describes a C-channel signal.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        shape = (1, *shape)
    elif len(shape) == 2:
        shape = (1, *shape)
    if len(shape) == 3 and shape[1] == 1:
        shape = (shape[0], shape[2])
    return shape


def _as_ints(value, name, allow_empty=False):
    values = [value] if isinstance(value, Integral) else list(value)
    if (not values and not allow_empty) or any(
        not isinstance(v, Integral) or isinstance(v, bool) or v < 1 for v in values
    ):
        raise ValueError(
            f"{name} must be a positive int or a non-empty sequence of positive "
            f"ints; got {value!r}."
        )
    return [int(v) for v in values]


@_catalog.register("estimator")
class ConvNetClassifier(ClassifierMixin, _ClassifierNet):
    __doc__ = _docs.fill(
        """Convolutional neural network classifier trained with PyTorch.

    Convolutional blocks (convolution, optional batch normalization,
    activation, optional residual unit, pooling, optional dropout) followed
    by a dense head, for 1-D signals and 2-D images. The data stay ordinary
    scikit-learn input: flat rows of ``n_features`` values that the network
    reshapes to ``input_shape`` itself, so the estimator works after
    transformers in a :class:`~sklearn.pipeline.Pipeline` and inside
    :class:`~sklearn.model_selection.GridSearchCV`. Arrays of images
    (``(n_samples, H, W)``, ``(n_samples, H, W, C)`` or
    ``(n_samples, C, H, W)``) are accepted too. Binary, multiclass and
    multilabel (indicator ``y``) problems; dense, pandas and sparse input.

    Parameters
    ----------
    filters : int or array-like of int, default=(32, 64)
        Output channels of each convolutional block; one block per value.

    kernel_size : int or array-like of int, default=3
        Size of the convolution windows: one int, or one per spatial
        dimension (``(kh, kw)`` for images).

    strides : int or array-like of int, default=1
        Stride of the convolutions, one int or one per spatial dimension.

    padding : {{'valid', 'same'}}, default='valid'
        'valid': no padding, a side of ``n`` becomes
        ``floor((n - kernel_size) / strides) + 1``; 'same': zero padding so
        that it becomes ``ceil(n / strides)`` (``n`` at stride 1).

    pooling : {{'max', 'avg'}} or None, default='max'
        Pooling after each block; None for none.

    pool_size : int or array-like of int, default=2
        Pooling window, which is also the pooling stride: a side of ``n``
        becomes ``floor(n / pool_size)``.

    hidden_layer_sizes : array-like of int, default=(64,)
        Width of each hidden layer of the dense head (``()`` for none).

    activation : {{'identity', 'logistic', 'tanh', 'relu'}}, default='relu'
        Activation of the convolutional blocks and dense hidden layers.

    residual : bool, default=False
        Follow each block's convolution with a residual unit: two 'same'
        convolutions with an identity shortcut,
        ``x -> act(x + conv(act(conv(x))))`` (with batch normalization after
        each convolution when ``batch_norm=True``), so deeper stacks train.

    input_shape : tuple of int, default=None
        Shape of one sample, channels first: ``(H, W)`` or ``(C, H, W)`` for
        images, ``(L,)`` for 1-channel signals and ``(C, 1, L)`` for
        C-channel signals. Flat input must have ``prod(input_shape)``
        features, in C order (``X_images.reshape(n_samples, -1)``). None
        takes the shape of N-D input, and treats each row of 2-D input as a
        1-channel signal of ``n_features`` values. Image arrays
        ``(n_samples, H, W)``, ``(n_samples, H, W, C)`` or
        ``(n_samples, C, H, W)`` are read by the image input rule that all
        image estimators share (user guide, *Image input*); ``input_shape``
        decides between channels last and channels first where both would
        do.

{training}
{scoring}
{callbacks}
{class_weight}
    Attributes
    ----------
    classes_ : ndarray or list of ndarray of shape (n_classes,)
        Class labels for each output.

    filters_ : ndarray of shape (filters[0], C, *kernel_size)
        The learned first-layer convolution filters (a copy).

    input_shape_ : tuple of int
        The shape the network gives each sample: ``(C, L)`` for signals,
        ``(C, H, W)`` for images.

{fitted}
    See Also
    --------
    MLPClassifier : A fully connected network with the same training
        parameters.

    Notes
    -----
    ``dropout`` and ``batch_norm`` apply to every hidden layer: each
    convolutional block and each dense hidden layer, so a ``dropout`` array
    has ``len(filters) + len(hidden_layer_sizes)`` values. ``n_layers_``
    counts the input, the blocks, the dense hidden layers and the output.

    No side of a feature map is allowed to fall below 1: with
    ``padding='valid'`` a kernel larger than the current side is shrunk to
    it, and so is a pooling window (a window of 1 is skipped). This is what
    lets the network run on inputs of any size, a single feature included;
    :meth:`summary` shows the shapes actually used.

    Weights are initialized as in scikit-learn's MLP (Glorot uniform) and the
    loss and penalty are the MLP's; ``alpha`` penalizes convolution kernels
    and dense weights, not biases.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sknets import ConvNetClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X, y = X[:300] / 16, y[:300]
    >>> clf = ConvNetClassifier(filters=(8,), hidden_layer_sizes=(32,),
    ...                         input_shape=(8, 8), max_iter=20,
    ...                         learning_rate_init=0.01, random_state=0)
    >>> clf = clf.fit(X, y)
    >>> clf.filters_.shape
    (8, 1, 3, 3)
    >>> clf.predict(X[:5])
    array([0, 1, 2, 3, 4])
    >>> bool(clf.score(X, y) > 0.9)
    True
    >>> clf.summary()["output_shape"].tolist()[:4]
    [(1, 8, 8), (8, 6, 6), (8, 6, 6), (8, 3, 3)]
    """,
        training=_docs.TRAINING,
        class_weight=_docs.CLASS_WEIGHT,
        scoring=_docs.SCORING,
        callbacks=_docs.CALLBACKS,
        fitted=_docs.FITTED,
    )

    _parameter_constraints: dict = {
        **_BaseNet._parameter_constraints,
        **CLASS_WEIGHT_CONSTRAINT,
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "filters": ["array-like", Interval(Integral, 1, None, closed="left")],
        "kernel_size": ["array-like", Interval(Integral, 1, None, closed="left")],
        "strides": ["array-like", Interval(Integral, 1, None, closed="left")],
        "padding": [StrOptions({"valid", "same"})],
        "pooling": [StrOptions({"max", "avg"}), None],
        "pool_size": ["array-like", Interval(Integral, 1, None, closed="left")],
        "residual": ["boolean"],
        "input_shape": ["array-like", None],
    }

    def __init__(
        self,
        filters=(32, 64),
        kernel_size=3,
        *,
        strides=1,
        padding="valid",
        pooling="max",
        pool_size=2,
        hidden_layer_sizes=(64,),
        activation="relu",
        residual=False,
        input_shape=None,
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
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.pooling = pooling
        self.pool_size = pool_size
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.residual = residual
        self.input_shape = input_shape
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.l1_ratio = l1_ratio
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.device = device
        self.dtype = dtype
        self.compile = compile
        self.autocast = autocast
        self.class_weight = class_weight
        self.scoring = scoring
        self.callbacks = callbacks

    # ---------------------------------------------------------------- checks

    def _check_params(self):
        super()._check_params()
        _as_ints(self.filters, "filters")
        _as_ints(self.hidden_layer_sizes, "hidden_layer_sizes", allow_empty=True)
        for name in ("kernel_size", "strides", "pool_size"):
            _as_ints(getattr(self, name), name)
        if self.input_shape is not None:
            shape = _as_ints(self.input_shape, "input_shape")
            if not 1 <= len(shape) <= 3:
                raise ValueError(
                    "input_shape must be (L,), (H, W) or (C, H, W); got "
                    f"{self.input_shape!r}."
                )

    # ----------------------------------------------------------------- input

    def _flatten_input(self, X, reset):
        """Flat rows of ``X`` by the image input rule (see ``sknets._images``).

        Returns ``(X, sample_shape)``: flat 2-D ``X`` and the module shape of
        N-D input (None for input that was already 2-D or not array-like).
        N-D input must have the sample shape of ``input_shape`` in ``fit``
        and that of ``input_shape_`` afterwards.
        """
        name = type(self).__name__
        if not reset:
            expected = self.input_shape_
            source = f"{name} (fitted, input_shape_={self.input_shape_})"
        elif self.input_shape is not None:
            expected = _module_shape(self.input_shape)
            source = f"{name}(input_shape={tuple(self.input_shape)})"
        else:
            expected = source = None
        if expected is not None and len(expected) == 2:  # (C, L): (C, 1, L)
            expected = (expected[0], 1, expected[1])
        X, shape = _flatten_images(X, expected, source)
        return X, None if shape is None else _module_shape(shape)

    def _resolve_input_shape(self, n_features, sample_shape):
        if sample_shape is not None:
            return sample_shape
        if self.input_shape is None:
            return (1, n_features)
        shape = _module_shape(self.input_shape)
        if math.prod(shape) != n_features:
            raise ValueError(
                f"X has {n_features} features but input_shape="
                f"{tuple(self.input_shape)} needs prod(input_shape) = "
                f"{math.prod(shape)}."
            )
        return shape

    def _validate_X(self, X, reset):
        X, _ = self._flatten_input(X, reset)
        return super()._validate_X(X, reset)

    def _validate_Xy(self, X, y, reset, **kwargs):
        X, sample_shape = self._flatten_input(X, reset)
        X, y = super()._validate_Xy(X, y, reset, **kwargs)
        if reset:
            self.input_shape_ = self._resolve_input_shape(X.shape[1], sample_shape)
        return X, y

    # ---------------------------------------------------------------- module

    def _build_module(self, n_features, n_outputs, sparse_input=False):
        return ConvNetModule(
            self.input_shape_,
            n_outputs,
            filters=_as_ints(self.filters, "filters"),
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            pooling=self.pooling,
            pool_size=self.pool_size,
            hidden_layer_sizes=self._hidden_sizes(),
            activation=self.activation,
            dropout=self.dropout,
            batch_norm=self.batch_norm,
            residual=self.residual,
        )

    def _set_model_attributes(self):
        self.filters_ = self.module_.conv1.weight.detach().cpu().numpy().copy()
        self.n_layers_ = len(_as_ints(self.filters, "filters")) + (
            len(self._hidden_sizes()) + 2
        )

    def __sklearn_tags__(self):
        return self._multilabel_tags(super().__sklearn_tags__())
