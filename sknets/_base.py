"""Shared estimator logic: validation, device, seeding, the skorch net, fitted state."""

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import assert_all_finite, check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import (
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from sknets._compat import (
    Interval,
    Options,
    StrOptions,
    check_partial_fit_first_call,
    check_sample_weight,
    fit_context,
)
from sknets._summary import layer_summary
from sknets._training import (
    ArrayDataset,
    EpochMonitor,
    SkorchNet,
    output_activation,
    predict_raw,
    widest_activation,
)

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_MONITOR_STATE = (
    "no_improvement_count",
    "best_loss",
    "best_score",
    "best_epoch",
    "t",
    "learning_rate",
)


def resolve_device(device):
    """Turn the ``device`` parameter into a ``torch.device`` that exists here.

    ``'auto'`` is CUDA when available, else CPU. Anything torch cannot parse,
    or a CUDA/MPS device this machine lacks, is a ``ValueError``.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid device; use 'auto', 'cpu', 'cuda' "
            f"or 'cuda:<index>'."
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                f"machine; use device='cpu' or device='auto'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(
                f"device={device!r} was requested but MPS is not available."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device={device!r} is not supported; use 'cpu' or 'cuda'.")
    return dev


def _assert_finite(X, estimator):
    """scikit-learn's NaN/inf check of ``X``, with its messages, summed by torch.

    A finite sum proves every value finite (scikit-learn's own shortcut);
    torch sums on all threads, 3x faster than NumPy on 10,000 MNIST rows,
    which matters next to a fast forward pass. Anything else gets
    scikit-learn's full check and error.
    """
    values = X.data if sp.issparse(X) else X
    if values.size == 0:
        return
    if values.flags.c_contiguous or values.flags.f_contiguous:
        with warnings.catch_warnings():  # read-only arrays are only read
            warnings.filterwarnings("ignore", message="The given NumPy array")
            total = torch.from_numpy(values).sum()
        if torch.isfinite(total):
            return
    assert_all_finite(values, input_name="X", estimator_name=type(estimator).__name__)


def _check_representable(X, dtype):
    """Refuse data that overflows the compute dtype (float64 -> float32)."""
    if dtype != torch.float32 or X.dtype != np.float64:
        return
    values = X.data if sp.issparse(X) else X
    if values.size and np.abs(values).max() > np.finfo(np.float32).max:
        raise ValueError(
            "X contains values too large for float32 (the compute dtype): "
            f"max |x| = {np.abs(values).max():.3g} > {np.finfo(np.float32).max:.3g}. "
            "Scale the data (e.g. StandardScaler) or use dtype='float64'."
        )


def _move_net(net, device):
    """Move a fitted skorch net (module and optimizer state) to ``device``."""
    if torch.device(net.device) == device and all(
        p.device == device for p in net.module_.parameters()
    ):
        return
    state = net.optimizer_.state_dict()
    net.module_.to(device)
    net.optimizer_.load_state_dict(state)  # casts moment buffers to the new device
    net.device = device


def _snapshot_net(net):
    monitor = net.callbacks_[0][1]
    return (
        copy.deepcopy(net.module_.state_dict()),
        copy.deepcopy(net.optimizer_.state_dict()),
        len(net.history),
        dict(monitor.__dict__),
        net.device,
    )


def _restore_net(net, snapshot):
    module_state, optim_state, n_epochs, monitor_state, device = snapshot
    net.module_.to(device)
    net.module_.load_state_dict(module_state)
    net.optimizer_.load_state_dict(optim_state)
    del net.history[n_epochs:]
    monitor = net.callbacks_[0][1]
    monitor.__dict__.clear()
    monitor.__dict__.update(monitor_state)
    net.device = device


def _check_solver(est):
    if est.solver not in _STOCHASTIC_SOLVERS:
        raise AttributeError(
            f"partial_fit is only available for stochastic optimizers. "
            f"{est.solver} is not stochastic."
        )
    return True


class _BaseNet(BaseEstimator):
    """Base class of every sknets network estimator.

    Subclasses store their parameters in ``__init__`` and implement
    ``_build_module(n_features, n_outputs, sparse_input)``; classification and
    regression specifics live in :class:`_ClassifierNet` and :class:`_RegressorNet`.
    The training engine is a skorch ``NeuralNet`` kept as the fitted
    attribute ``net_``.
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [
            Interval(Integral, 1, None, closed="left"),
            Options(Real, {np.inf}),
        ],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "dropout": [Interval(Real, 0, 1, closed="left"), "array-like"],
        "batch_norm": ["boolean"],
        "device": [str, torch.device],
        "dtype": [None, StrOptions({"float32", "float64"})],
        "compile": ["boolean", dict],
        "autocast": ["boolean"],
    }

    # ------------------------------------------------------------------ hooks

    # Whether the module takes torch sparse CSR batches (a first Linear layer
    # does); otherwise sparse rows are densified one batch at a time.
    _sparse_batches = False

    def _build_module(self, n_features, n_outputs, sparse_input):  # pragma: no cover
        """The untrained ``torch.nn.Module``; ``sparse_input``: X is sparse."""
        raise NotImplementedError

    def _set_model_attributes(self):
        """Copy architecture-specific fitted attributes from ``module_``."""

    def _validate_X(self, X, reset):
        X = validate_data(
            self,
            X,
            accept_sparse="csr",
            dtype=(np.float64, np.float32),
            ensure_all_finite=False,
            reset=reset,
        )
        _assert_finite(X, self)
        return X

    def _validate_Xy(self, X, y, reset, **kwargs):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse="csr",
            multi_output=True,
            dtype=(np.float64, np.float32),
            ensure_all_finite=False,
            reset=reset,
            **kwargs,
        )
        _assert_finite(X, self)
        return X, y

    # --------------------------------------------------------------- checks

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if any(s <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return sizes

    def _check_params(self):
        """Checks that ``_parameter_constraints`` cannot express."""
        self._hidden_sizes()
        dropout = np.ravel(np.asarray(self.dropout, dtype=float))
        if np.any(dropout < 0) or np.any(dropout >= 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")

    def _compute_dtype(self, X):
        if self.dtype is not None:
            return getattr(torch, self.dtype)
        return torch.float32 if X.dtype == np.float32 else torch.float64

    # ------------------------------------------------------------------ fit

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the network to data ``X`` and targets ``y``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data. Sparse rows are densified one batch at a time.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values (class labels, label indicator matrix, or numbers).
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights; the loss is ``sum(w * l) / sum(w)``.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, epoch_callback=None):
        """Shared body of ``fit`` and ``partial_fit``, all or nothing.

        A call that raises leaves the estimator exactly as it was before the
        call: unfitted if it was, else with its previous fitted state and
        weights. ``epoch_callback(epoch, net, monitor, stopping)`` is called
        after each completed epoch (see :meth:`EpochMonitor.prepare`); the
        epoch-reusing search uses it to score every requested ``max_iter`` in
        one run.
        """
        saved = dict(self.__dict__)
        net = saved.get("net_")
        snapshot = _snapshot_net(net) if net is not None else None
        try:
            return self._fit_body(X, y, sample_weight, incremental, epoch_callback)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            if snapshot is not None:
                _restore_net(net, snapshot)
            raise

    def _fit_body(self, X, y, sample_weight, incremental, epoch_callback):
        self._check_params()
        first_pass = not hasattr(self, "net_") or (
            not self.warm_start and not incremental
        )
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, target, n_outputs = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, X, dtype=X.dtype)
        device = resolve_device(self.device)
        dtype = self._compute_dtype(X) if first_pass else self._dtype
        _check_representable(X, dtype)
        out_act = self._output_activation()
        rng = check_random_state(self.random_state)
        if not first_pass and isinstance(self.random_state, Integral):
            # Continuing (partial_fit, warm_start): fresh batches and dropout
            # masks for each call, still reproducible for the same calls.
            # (scikit-learn's MLP reseeds identically, repeating one order.)
            rng = np.random.RandomState([self.random_state, len(self.net_.history)])
        init_seed, shuffle_seed = rng.randint(np.iinfo(np.int32).max, size=2)

        if self.early_stopping:
            X, X_val, target, t_val, sample_weight, w_val = self._split_validation(
                X, target, n_outputs, sample_weight, rng
            )
            valid = ArrayDataset(
                X_val,
                t_val,
                w_val,
                device=device,
                dtype=dtype,
                sparse_batches=self._sparse_batches,
            )
        else:
            valid = None
        n_samples = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than "
                    "sample size. It is going to be clipped"
                )
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        if self.solver == "lbfgs":
            batch_size = n_samples
        train = ArrayDataset(
            X,
            target,
            sample_weight,
            device=device,
            dtype=dtype,
            sparse_batches=self._sparse_batches,
        )

        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int(init_seed))
            if first_pass:
                net, monitor = self._new_net(
                    X.shape[1], n_outputs, device, dtype, sparse_input=sp.issparse(X)
                )
            else:
                net, monitor = self.net_, self.net_.callbacks_[0][1]
                _move_net(net, device)
                if not incremental:
                    net.initialize_optimizer()
                    monitor.learning_rate = self.learning_rate_init
            net.out_activation = out_act
            net.alpha, net.l1_ratio = self.alpha, self.l1_ratio
            self._configure_forward(net)
            net.valid_batch_size_ = self._predict_batch_rows(net.module_, X)
            net.batch_size_, net.shuffle_, net.seed_ = (
                batch_size,
                self.shuffle,
                shuffle_seed,
            )
            monitor.verbose = self.verbose
            monitor.prepare(
                valid_data=valid,
                score_fn=None
                if valid is None
                else (lambda raw: self._score_raw(raw, valid, out_act)),
                t=0 if first_pass else self.t_,
                epoch_callback=epoch_callback,
            )
            epochs = 1 if (incremental or self.solver == "lbfgs") else self.max_iter
            try:
                net.partial_fit(train, epochs=epochs)
            except torch.OutOfMemoryError as exc:
                raise torch.OutOfMemoryError(
                    f"{device} ran out of memory while training with batch_size="
                    f"{batch_size}. Use a smaller batch_size, a smaller network, "
                    f"dtype='float32', or device='cpu'. ({exc})"
                ) from exc
            finally:
                monitor.release()
            if len(net.history) and "train_loss" not in net.history[-1]:
                net.history.pop()  # an epoch cut short by an interrupt
        if monitor.stop_reason == "diverged":
            raise ValueError(
                "Training diverged: the loss became NaN or infinite. Lower "
                "learning_rate_init, scale the inputs (e.g. StandardScaler), or "
                "increase alpha. The estimator was left as it was before this call."
            )
        if monitor.stop_reason is None and monitor.epochs_run < epochs:
            warnings.warn("Training interrupted by user.")
        if self.early_stopping and monitor.best_state is not None:
            net.module_.load_state_dict(monitor.best_state)

        self.net_ = net
        self._dtype, self._device = dtype, device
        self.out_activation_ = out_act
        self.n_outputs_ = n_outputs
        self._set_fit_attributes(net, monitor, incremental, epochs)
        self._set_model_attributes()
        if not all(torch.isfinite(p).all() for p in net.module_.parameters()):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        return self

    def _configure_forward(self, net):
        """Pass ``compile`` and ``autocast`` to the net (at fit and predict time)."""
        if self.compile is False:
            net.compile_options_ = None
        else:
            net.compile_options_ = {} if self.compile is True else dict(self.compile)
        net.autocast_ = bool(self.autocast)

    def _new_net(self, n_features, n_outputs, device, dtype, sparse_input=False):
        module = self._build_module(n_features, n_outputs, sparse_input)
        module = module.to(dtype=dtype)
        monitor = EpochMonitor(
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            early_stopping=self.early_stopping,
            lr_schedule=self.learning_rate if self.solver == "sgd" else None,
            learning_rate_init=self.learning_rate_init,
            power_t=self.power_t,
            verbose=self.verbose,
            stochastic=self.solver in _STOCHASTIC_SOLVERS,
        )
        # torch's fused kernels update all parameters in one pass: 3-4x faster
        # optimizer steps on CPU than the default per-tensor loop (same math).
        fused = device.type in ("cpu", "cuda")
        if self.solver == "adam":
            optimizer, opt_kwargs = (
                torch.optim.Adam,
                {
                    "optimizer__betas": (self.beta_1, self.beta_2),
                    "optimizer__eps": self.epsilon,
                    "optimizer__fused": fused,
                },
            )
        elif self.solver == "sgd":
            optimizer, opt_kwargs = (
                torch.optim.SGD,
                {
                    "optimizer__momentum": self.momentum,
                    "optimizer__nesterov": bool(
                        self.nesterovs_momentum and self.momentum > 0
                    ),
                    "optimizer__fused": fused,
                },
            )
        else:
            optimizer, opt_kwargs = (
                torch.optim.LBFGS,
                {
                    "optimizer__max_iter": self.max_iter,
                    "optimizer__max_eval": self.max_fun,
                    "optimizer__tolerance_grad": self.tol,
                    "optimizer__tolerance_change": 1e-9,
                    "optimizer__history_size": 10,
                    "optimizer__line_search_fn": "strong_wolfe",
                },
            )
        net = SkorchNet(
            module=module,
            criterion=torch.nn.Identity,  # the loss is SkorchNet.get_loss
            optimizer=optimizer,
            lr=1.0 if self.solver == "lbfgs" else self.learning_rate_init,
            max_epochs=self.max_iter,
            train_split=None,
            callbacks=[("monitor", monitor)],
            device=device,
            verbose=0,
            **opt_kwargs,
        )
        net.initialize()
        return net, monitor

    def _split_validation(self, X, target, n_outputs, sample_weight, rng):
        # stratify binary problems only, as scikit-learn's MLP does
        stratify = target if (n_outputs == 1 and self._is_classifier()) else None
        arrays = [X, target] + ([] if sample_weight is None else [sample_weight])
        parts = train_test_split(
            *arrays,
            random_state=rng,
            test_size=self.validation_fraction,
            stratify=stratify,
        )
        if parts[1].shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' "
                "or the size of your dataset."
            )
        if sample_weight is None:
            parts += [None, None]
        return parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]

    def _is_classifier(self):
        return False

    def _set_fit_attributes(self, net, monitor, incremental, epochs):
        rows = [
            {
                k: row[k]
                for k in ("epoch_", "train_loss", "valid_loss", "valid_score", "dur")
                if k in row
            }
            for row in net.history
        ]
        self.history_ = [
            {("epoch" if k == "epoch_" else k): v for k, v in r.items()} for r in rows
        ]
        self.t_ = int(monitor.t)
        self.loss_ = float(rows[-1]["train_loss"]) if rows else np.nan
        if self.solver in _STOCHASTIC_SOLVERS:
            self.n_iter_ = monitor.epochs_run
            self.loss_curve_ = [float(r["train_loss"]) for r in rows]
            if self.early_stopping:
                self.validation_scores_ = [float(r["valid_score"]) for r in rows]
                self.best_validation_score_ = float(monitor.best_score)
                self.best_loss_ = None
                self.best_epoch_ = monitor.best_epoch
            else:
                self.validation_scores_ = None
                self.best_validation_score_ = None
                self.best_loss_ = float(monitor.best_loss)
            if (
                not incremental
                and monitor.stop_reason is None
                and self.n_iter_ == self.max_iter
            ):
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                    "reached and the optimization hasn't converged yet.",
                    ConvergenceWarning,
                )
        else:
            state = net.optimizer_.state[next(iter(net.module_.parameters()))]
            self.n_iter_ = int(state.get("n_iter", 0))
            if self.n_iter_ >= self.max_iter:
                warnings.warn(
                    f"lbfgs failed to converge after {self.n_iter_} iteration(s): "
                    "the maximum number of iterations was reached. Increase max_iter "
                    "or scale the data.",
                    ConvergenceWarning,
                )
        self.n_layers_ = len(self._hidden_sizes()) + 2

    @property
    def module_(self):
        """The trained ``torch.nn.Module`` (the skorch net's ``module_``)."""
        return self.net_.module_

    def set_params(self, **params):
        """Set parameters; on a fitted estimator a new ``device`` moves the model.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : object
            The estimator.
        """
        super().set_params(**params)
        if "device" in params and "net_" in self.__dict__:
            self._device = resolve_device(self.device)
            _move_net(self.net_, self._device)
        return self

    # ---------------------------------------------------------- persistence

    def _check_is_fitted_for_save(self):
        check_is_fitted(self)

    def _extra_state(self):
        """Private fitted state a subclass needs to rebuild itself (JSON-able)."""
        return {}

    def _load_extra_state(self, extra):
        """Inverse of :meth:`_extra_state`."""

    def _fitted_state(self):
        """Public fitted attributes plus what :meth:`_restore_fitted` needs."""
        state = {
            k: v
            for k, v in self.__dict__.items()
            if k.endswith("_") and not k.startswith("_") and k != "net_"
        }
        monitor = self.net_.callbacks_[0][1]
        state["_private"] = {
            "dtype": str(self._dtype).replace("torch.", ""),
            # the first layer's memory layout for sparse input (see SparseInputLinear)
            "sparse_input": any(
                name.endswith("weight_t") for name, _ in self.module_.named_parameters()
            ),
            "monitor": {k: getattr(monitor, k) for k in _MONITOR_STATE},
            "extra": self._extra_state(),
        }
        return state

    def _restore_fitted(self, fitted, module_state):
        """Rebuild the fitted estimator from :meth:`_fitted_state` and weights."""
        fitted = dict(fitted)
        private = fitted.pop("_private")
        for name, value in fitted.items():
            setattr(self, name, value)
        self._load_extra_state(private["extra"])
        dtype = getattr(torch, private["dtype"])
        device = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):
            net, monitor = self._new_net(
                self.n_features_in_,
                self.n_outputs_,
                device,
                dtype,
                sparse_input=private.get("sparse_input", False),
            )
        try:
            net.module_.load_state_dict(
                {k: v.to(device) for k, v in module_state.items()}
            )
        except RuntimeError as exc:
            raise ValueError(
                "The saved weights do not match the network that the saved "
                f"parameters build: {exc}"
            ) from exc
        for name, value in private["monitor"].items():
            setattr(monitor, name, value)
        for row in self.history_:
            net.history.new_epoch()
            for key, value in row.items():
                net.history.record("epoch_" if key == "epoch" else key, value)
        self.net_, self._dtype, self._device = net, dtype, device
        self._set_model_attributes()
        return self

    # ----------------------------------------------------------- inspection

    def summary(self):
        """Layer table of the fitted network.

        Returns
        -------
        table : pandas.DataFrame
            One row per layer (``layer``, ``type``, ``output_shape``,
            ``params``, ``trainable``) and a last ``Total`` row.
        """
        check_is_fitted(self)
        return layer_summary(self.module_, (1, self.n_features_in_))

    # -------------------------------------------------------------- predict

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
        if sp.issparse(X) and self._sparse_batches:
            input_width = X.nnz / max(X.shape[0], 1)
        else:
            input_width = n_features
        cached = self.__dict__.get("_widest")  # one dry run per network
        if cached is None or cached[0] is not module or cached[1] != n_features:
            cached = (module, n_features, widest_activation(module, n_features))
            self._widest = cached
        width = max(cached[2], input_width)
        return int(np.clip(2**22 // max(width, 1), 64, 8192))

    def _forward(self, X):
        """Activated outputs as a float64 array of shape (n_samples, n_outputs)."""
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        param = next(self.module_.parameters())
        _check_representable(X, param.dtype)
        data = ArrayDataset(
            X,
            device=param.device,
            dtype=param.dtype,
            lazy=True,
            sparse_batches=self._sparse_batches,
        )
        rows = self._predict_batch_rows(self.module_, X)
        self._configure_forward(self.net_)
        raw = predict_raw(self.module_, data, rows, self.net_.infer)
        out = output_activation(raw, self.out_activation_)
        return out.to(device="cpu", dtype=torch.float64).numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class _ClassifierNet(_BaseNet):
    """Classification on top of :class:`_BaseNet`, with scikit-learn's label logic."""

    def _is_classifier(self):
        return True

    def _validate_input(self, X, y, incremental, reset):
        X, y = self._validate_Xy(X, y, reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
            if len(self.classes_) < 2 and y.ndim == 1:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes "
                    f"in the data, but the data contains only one class: "
                    f"{self.classes_[0]!r}."
                )
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        if y.ndim == 1:
            # class codes directly: LabelBinarizer.transform needs ~50 bytes
            # per sample, an (n, 1) indicator or class index needs 1 or 8
            codes = np.searchsorted(self.classes_, y)
            if self._label_binarizer.y_type_ == "multiclass":
                return X, codes.astype(np.int64), len(self.classes_)
            return X, codes.astype(np.uint8).reshape(-1, 1), 1
        Y = self._label_binarizer.transform(y)
        if sp.issparse(Y):
            Y = Y.toarray()
        return X, Y.astype(np.uint8), Y.shape[1]

    def _output_activation(self):
        return (
            "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"
        )

    def _extra_state(self):
        return {"y_type": self._label_binarizer.y_type_}

    def _load_extra_state(self, extra):
        lb = LabelBinarizer()
        lb.classes_, lb.y_type_, lb.sparse_input_ = (
            self.classes_,
            extra["y_type"],
            False,
        )
        self._label_binarizer = lb

    def _score_raw(self, raw, data, out_act):
        """Accuracy (subset accuracy for multilabel) of raw outputs on ``data``."""
        if out_act == "softmax":
            correct = raw.argmax(1) == data.y
        else:
            correct = ((raw > 0) == (data.y.reshape(raw.shape) > 0)).all(1)
        correct = correct.to(raw.dtype)
        w = data.w
        return float(correct.mean() if w is None else (w * correct).sum() / w.sum())

    @available_if(_check_solver)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single epoch over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.
        classes : array of shape (n_classes,), default=None
            All classes that can appear in ``y``; required on the first call
            unless ``y`` is a label indicator matrix.

        Returns
        -------
        self : object
            The trained estimator.
        """
        self._validate_params()
        if check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def predict_proba(self, X):
        """Probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
            The probability of each class, in the order of ``classes_``.
        """
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """Logarithm of the probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        log_y_prob : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``.
        """
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    @staticmethod
    def _multilabel_tags(tags):
        # Called from the public classes' __sklearn_tags__: ClassifierMixin,
        # first in their MRO, replaces classifier_tags after this base runs.
        tags.classifier_tags.multi_label = True
        return tags

    def predict(self, X):
        """Predict class labels (or label indicators for multilabel ``y``).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The predicted classes.
        """
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)


class _RegressorNet(_BaseNet):
    """Regression on top of :class:`_BaseNet`."""

    def _validate_input(self, X, y, incremental, reset):
        X, y = self._validate_Xy(X, y, reset, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("loss='poisson' requires non-negative y.")
        Y = y.reshape(y.shape[0], -1)
        return X, Y, Y.shape[1]

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _score_raw(self, raw, data, out_act):
        """R^2 of raw outputs on ``data``."""
        pred = output_activation(raw, out_act)
        w = None if data.w is None else data.w.cpu().numpy()
        return r2_score(data.y.cpu().numpy(), pred.cpu().numpy(), sample_weight=w)

    @available_if(_check_solver)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single epoch over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            The trained estimator.
        """
        self._validate_params()
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predict using the network.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values.
        """
        y_pred = self._forward(X)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred
