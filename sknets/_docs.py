"""Docstring fragments shared by the estimators (one source for shared parameters)."""

ARCHITECTURE = """\
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer.

    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Activation function of the hidden layers.
"""

TRAINING = """\
    solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
        The optimizer: ``torch.optim.LBFGS`` (full batch, strong-Wolfe line
        search), ``torch.optim.SGD`` or ``torch.optim.Adam``.

    alpha : float, default=0.0001
        Strength of the weight penalty, scaled exactly as in scikit-learn's
        MLP: ``alpha * ((1 - l1_ratio) / 2 * ||W||^2 + l1_ratio * |W|_1) / n``
        per batch of ``n`` samples (sum of weights with ``sample_weight``).
        Biases and normalization parameters are not penalized.

    batch_size : int or 'auto', default='auto'
        Size of minibatches; ``'auto'`` is ``min(200, n_samples)``. Ignored by
        'lbfgs', which uses the full batch.

    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Learning-rate schedule for ``solver='sgd'``, as in scikit-learn.

    learning_rate_init : float, default=0.001
        Initial learning rate ('sgd' and 'adam').

    power_t : float, default=0.5
        Exponent of the 'invscaling' schedule.

    max_iter : int, default=200
        Maximum number of epochs ('sgd', 'adam') or of L-BFGS iterations.

    shuffle : bool, default=True
        Whether to shuffle samples in each epoch.

    random_state : int, RandomState instance or None, default=None
        Seeds weight initialization, dropout, shuffling and the early-stopping
        split. An int gives the same model run after run on CPU; the global
        torch random state is left untouched.

    tol : float, default=1e-4
        Tolerance for the stopping rules (see ``n_iter_no_change``).

    verbose : bool or int, default=False
        Print scikit-learn's MLP lines to standard output: ``Iteration N,
        loss = ...`` per epoch, ``Validation score: ...`` with early stopping,
        and why training stopped; ``verbose=2`` adds a progress bar over the
        batches of each epoch (on standard error, shown only when it is a
        terminal).

    warm_start : bool, default=False
        Reuse the previous solution as initialization for the next ``fit``.

    momentum : float, default=0.9
        Momentum for 'sgd'.

    nesterovs_momentum : bool, default=True
        Whether 'sgd' uses Nesterov's momentum.

    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when its
        score (accuracy or R^2) has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and restore the best weights. The held-out
        part is split from the data given to ``fit``, so a cross-validation
        test fold is never used.

    validation_fraction : float, default=0.1
        Share of the training data held out for early stopping.

    beta_1 : float, default=0.9
        Adam's first-moment decay.

    beta_2 : float, default=0.999
        Adam's second-moment decay.

    epsilon : float, default=1e-8
        Adam's numerical stability constant.

    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` before stopping ('sgd',
        'adam'), or before dividing the learning rate by 5 ('adaptive').

    max_fun : int, default=15000
        Maximum number of loss evaluations for 'lbfgs'.

    l1_ratio : float, default=0.0
        Share of L1 in the penalty (0: scikit-learn's pure L2, 1: pure L1).

    dropout : float or array-like of float, default=0.0
        Dropout probability after each hidden layer (one value, or one per
        hidden layer). Active only while training: ``predict`` is
        deterministic.

    batch_norm : bool, default=False
        Batch-normalize the pre-activations of each hidden layer.

    device : str or torch.device, default='auto'
        Where to train and predict: 'cpu', 'cuda', 'cuda:1', ...; 'auto' picks
        CUDA when it is available.

    dtype : {'float32', 'float64'} or None, default=None
        Precision of the computation. None follows the input as scikit-learn's
        MLP does: float32 data is computed in float32, anything else in
        float64. Pass float32 data or ``dtype='float32'`` for speed (about 2x on
        CPU, more on most GPUs).

    compile : bool or dict, default=False
        Run the network's forward passes through ``torch.compile`` (a dict
        gives its keyword arguments, e.g. ``{'mode': 'max-autotune'}``).
        Compiling takes seconds to minutes once per fitted network and pays on
        GPUs over long trainings; the fitted model pickles without the
        compiled code. Sparse batches are not compiled.

    autocast : bool, default=False
        Run forward passes under bfloat16 ``torch.autocast`` (mixed
        precision); losses and outputs stay in the network's precision. Pays
        on GPUs with bfloat16 units; on most CPUs it is slower.
"""

FITTED = """\
    loss_ : float
        The loss (with the penalty) of the last epoch.

    best_loss_ : float or None
        The minimum loss reached; None with ``early_stopping=True``.

    loss_curve_ : list of float
        The loss of each epoch (stochastic solvers only).

    validation_scores_ : list of float or None
        Validation score of each epoch with ``early_stopping=True``.

    validation_loss_curve_ : list of float or None
        Validation loss (the loss alone, without the penalty) of each epoch
        with ``early_stopping=True``.

    best_validation_score_ : float or None
        The best validation score with ``early_stopping=True``.

    best_epoch_ : int or None
        With ``early_stopping=True``: the epoch (counted from 1, over all
        fits of a warm start) of the best validation score, whose weights
        the network keeps.

    t_ : int
        Number of training samples seen by the solver.

    n_features_in_ : int
        Number of features seen during fit.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    n_iter_ : int
        Number of epochs (or L-BFGS iterations) run by the last fit.

    n_layers_ : int
        Number of layers.

    n_outputs_ : int
        Number of outputs.

    out_activation_ : str
        Name of the output activation.

    history_ : list of dict
        One record per epoch: ``epoch``, ``train_loss``, ``dur`` (seconds) and,
        with ``early_stopping``, ``valid_loss`` and ``valid_score``.

    net_ : skorch.NeuralNet
        The skorch net that trained the model.

    module_ : torch.nn.Module
        The trained PyTorch module.
"""


def fill(doc, **parts):
    """Insert the shared fragments into a class docstring."""
    return doc.format(**parts)


CLASS_WEIGHT = """\
    class_weight : dict, list of dict, 'balanced' or None, default=None
        Weights of the classes, multiplying ``sample_weight`` as in
        scikit-learn's linear models: ``'balanced'`` weighs each class by
        ``n_samples / (n_classes * count)`` (the same model as passing
        ``sklearn.utils.class_weight.compute_sample_weight('balanced', y)``),
        a dict ``{label: weight}`` by its values (1 for classes it leaves
        out); for multilabel ``y``, a list of dicts, one per output. Not
        ``'balanced'`` with ``partial_fit``.
"""

SCORING = """\
    scoring : str, callable or None, default=None
        The validation score of every epoch (``history_``,
        ``validation_scores_``) and of ``early_stopping``: None is
        scikit-learn's MLP behaviour (accuracy for classifiers, R^2 for
        regressors); a scorer name (``'neg_log_loss'``, ``'f1_macro'``,
        ...) or a callable ``scorer(estimator, X_val, y_val)`` as in
        scikit-learn's searches. Computed on the validation set only
        (``early_stopping=True`` or ``X_val`` given), higher is better.
"""

CALLBACKS = """\
    callbacks : list of skorch callbacks or None, default=None
        skorch callbacks (``skorch.callbacks.Callback`` instances, or
        ``(name, callback)`` pairs) run inside the training loop after
        sknets' own, e.g. ``LRScheduler`` with any torch scheduler,
        ``GradientNormClipping``, ``Checkpoint``, ``EarlyStopping`` on any
        history key, loggers. Each fit runs copies (the parameter is never
        changed); the fitted ones are in ``net_.callbacks_``.
"""

# the pretrained-backbone estimators' image parameters
PRETRAINED_IMAGES = """\
    backbone : str, torch.nn.Module or callable, default='squeezenet1_1'
        The pretrained network: a built-in name (``'squeezenet1_1'``,
        ``'resnet20_cifar'``, ``'resnet56_cifar'``), a torchvision model name
        (``'resnet18'``, ...; only where torchvision imports), any
        ``torch.nn.Module`` (copied in ``fit``, never modified), or a class or
        function that returns one (called in ``fit``).

    weights : str, path-like or None, default='default'
        Where the pretrained weights come from. ``'default'``: the backbone's
        usual weights. For ``'squeezenet1_1'`` (ImageNet, MIT license) and
        ``'resnet20_cifar'`` (CIFAR-10, BSD-2-Clause) they are bundled with
        sknets (float16); for ``'resnet56_cifar'`` they are downloaded on
        first use (SHA-256 checked) into the cache folder ``$SKNETS_HOME``
        (default ``~/.cache/sknets``) and read from there afterwards; for a
        module, its own current weights; for a torchvision name, the file in
        torch's hub cache. A weight set's name (``'squeezenet1_1_imagenet'``,
        ``'resnet20_cifar10'``, ``'resnet56_cifar10'``) is resolved the same
        way, any other name as ``<name>.safetensors`` (or ``.pt``, ``.pth``,
        ``.th``) in the cache folder. A path to a ``.pt``/``.pth``/``.th``
        (``torch.load(weights_only=True)``) or ``.safetensors`` state dict is
        read as it is; None gives a random initialization seeded by
        ``random_state``. ``SKNETS_OFFLINE=1`` forbids downloads and
        ``SKNETS_WEIGHTS_URL`` names a mirror (user guide, *Transfer
        learning*). Missing weights raise a ``FileNotFoundError``, an
        unreachable server a ``ConnectionError``, each saying which file to
        put where.

    layer : str or None, default=None
        Name of the module (as in ``backbone.named_modules()``) whose output
        gives the features, global-average pooled when it is a feature map.
        None: the penultimate layer, i.e. the input of the backbone's last
        module (the pooled features before the classifier).

    input_shape : tuple of int or None, default=None
        Shape ``(channels, height, width)`` or ``(height, width)`` of each
        flat row of a 2-D ``X``. Not needed for image arrays of shape
        ``(n, H, W)``, ``(n, H, W, C)`` or ``(n, C, H, W)``, which are read
        by the image input rule that all image estimators share (user guide,
        *Image input*). Without it, rows of a 2-D ``X`` go to a user module
        as they are.

    resize : 'auto', int, tuple of int or None, default='auto'
        Size the images are resized to (bilinear) before the backbone;
        ``'auto'`` is the backbone's native size (224 for SqueezeNet, 32 for
        the CIFAR ResNets, none for a user module); None keeps the size.

    normalize : bool, default=True
        Apply the backbone's own input normalization (e.g. BGR mean-pixel
        subtraction for SqueezeNet, ImageNet mean/std for the ResNets).
        ``uint8`` input is always mapped to ``[0, 1]`` first; float input is
        taken to be in ``[0, 1]`` already.
"""
