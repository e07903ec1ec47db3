"""Shared estimator logic: validation, device, seeding, the skorch net, fitted state."""

import copy
import warnings
from contextlib import ExitStack
from dataclasses import asdict, replace
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import check_scoring
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
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
from skorch.callbacks import Callback

from sknets import _registry as registry
from sknets._compat import (
    CALLBACK_BASES,
    Interval,
    Options,
    StrOptions,
    callback_fit_state,
    check_partial_fit_first_call,
    check_sample_weight,
    fit_context,
    with_callbacks,
)
from sknets._device import move_net, resolve_device
from sknets._engine import (
    ArrayDataset,
    Rollback,
    StoppingState,
    as_tensor,
    build_net,
    draws_random,
    output_activation,
    predict_raw,
    seeded,
    train,
    widest_activation,
)
from sknets._optim import SGD, Adam
from sknets._pickling import _PortableStateMixin
from sknets._plan import Phase, PreparedFit, StoppingRules, TrainingPlan
from sknets._restore import restore_module
from sknets._summary import layer_summary
from sknets._validation import assert_finite, check_representable

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_HISTORY_KEYS = ("epoch", "train_loss", "valid_loss", "valid_score", "dur")


def _rows_for(width):
    """Rows per prediction batch for activations ``width`` values wide."""
    return int(np.clip(2**22 // max(width, 1), 64, 8192))


def _check_solver(est):
    if est.solver not in _STOCHASTIC_SOLVERS:
        raise AttributeError(
            f"partial_fit is only available for stochastic optimizers. "
            f"{est.solver} is not stochastic."
        )
    return True


class EpochTasks(Callback):
    """scikit-learn's callback API inside the training loop: one task per epoch.

    The fit is the root task of the estimator's callback context (see
    ``sklearn.callback``); every epoch is a sub-task named ``"epoch"``, begun
    when the epoch begins and ended when it is complete, with the fit's
    ``X``, ``y`` and ``sample_weight`` metadata. Its ``fitted_estimator`` is
    the estimator as if ``fit`` had stopped after that epoch (the network's
    current weights, valid while the hook runs). A hook that returns True ends
    training after that epoch. :meth:`finish` ends the fit's task and drops
    the references to the data and the context.
    """

    def __init__(self, context, estimator, X, y, metadata, attributes):
        self.context, self.estimator = context, estimator
        self.X, self.y, self.metadata = X, y, metadata
        self.attributes = attributes
        self.task = None

    def _data(self):
        return {"X": self.X, "y": self.y, "metadata": self.metadata}

    def on_epoch_begin(self, net, **kwargs):
        task = self.context.subcontext(task_name="epoch")
        self.task = task.call_on_fit_task_begin(
            estimator=self.estimator, **self._data()
        )

    def end_epoch(self, net):
        """End this epoch's task; True when a callback asks to stop."""
        task, self.task = self.task, None
        if task is None:
            return False
        attributes = self.attributes
        return task.call_on_fit_task_end(
            estimator=self.estimator,
            reconstruction_attributes=lambda: {**attributes, "net_": net},
            **self._data(),
        )

    def on_train_end(self, net, **kwargs):
        if self.task is not None:  # an epoch that did not complete
            self.task.call_on_fit_task_end(estimator=self.estimator)
            self.task = None

    def finish(self):
        """End the fit's task; drop every reference to the data."""
        self.context.call_on_fit_task_end(estimator=self.estimator, **self._data())
        self.task = self.context = self.estimator = self.attributes = None
        self.X = self.y = self.metadata = None


def _with_epoch_tasks(epoch_callback, tasks):
    """``epoch_callback`` that also ends the epoch's task (True: stop)."""

    def on_epoch(epoch, net, monitor, stopping):
        if epoch_callback is not None:
            epoch_callback(epoch, net, monitor, stopping)
        return tasks.end_epoch(net)

    return on_epoch


class _BaseNet(*CALLBACK_BASES, _PortableStateMixin, BaseEstimator):
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
        "scoring": [None, str, callable],
        "callbacks": [None, list, tuple],
    }

    # ------------------------------------------------------------------ hooks

    # Whether the module takes torch sparse CSR batches (a first Linear layer
    # does); otherwise sparse rows are densified one batch at a time.
    _sparse_batches = False

    def _build_module(self, n_features, n_outputs, sparse_input):  # pragma: no cover
        """The untrained ``torch.nn.Module``; ``sparse_input``: X is sparse."""
        raise NotImplementedError

    def _stack_signature(self, prepared):
        """What members must share to be trained as one with this fit.

        None (the default): this network is never stacked; a search trains
        it on its own. Networks that can be stacked also implement
        ``_stack(prepared_members)``.
        """
        return None

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
        assert_finite(X, self)
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
        assert_finite(X, self)
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
    @with_callbacks
    def fit(
        self,
        X,
        y,
        sample_weight=None,
        *,
        X_val=None,
        y_val=None,
        sample_weight_val=None,
    ):
        """Fit the network to data ``X`` and targets ``y``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data. Sparse rows are densified one batch at a time.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values (class labels, label indicator matrix, or numbers).
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights; the loss is ``sum(w * l) / sum(w)``.
        X_val : {array-like, sparse matrix} of shape (n_val, n_features), \
                default=None
            A validation set, as in scikit-learn's ``HistGradientBoosting*``:
            scored after every epoch (``history_``, ``validation_scores_``,
            ``validation_loss_curve_``) instead of a ``validation_fraction``
            split of ``X``; with ``early_stopping=True`` it decides when to
            stop and which weights to keep. In a ``Pipeline``, pass it with
            ``transform_input=["X_val"]`` (metadata routing).
        y_val : array-like of shape (n_val,) or (n_val, n_outputs), default=None
            Targets of ``X_val`` (required with it).
        sample_weight_val : array-like of shape (n_val,), default=None
            Weights of the validation samples.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        trained = None
        validation = None
        if X_val is not None or y_val is not None or sample_weight_val is not None:
            if X_val is None or y_val is None:
                raise ValueError(
                    "X_val and y_val go together: pass both (and optionally "
                    "sample_weight_val), or none."
                )
            validation = (X_val, y_val, sample_weight_val)
        elif not (self.warm_start and "net_" in self.__dict__):
            # trained by a search (the same parameters and data), or None
            trained = registry.take(self, X, y, sample_weight)
        return self._fit(
            X,
            y,
            sample_weight,
            incremental=False,
            trained=trained,
            validation=validation,
        )

    def _fit(
        self,
        X,
        y,
        sample_weight,
        incremental,
        epoch_callback=None,
        trained=None,
        validation=None,
    ):
        """Shared body of ``fit`` and ``partial_fit``, all or nothing.

        A call that raises leaves the estimator exactly as it was before the
        call: unfitted if it was, else with its previous fitted state and
        weights. The exception is Ctrl-C after at least one completed epoch:
        the estimator keeps those epochs, then ``KeyboardInterrupt`` is
        re-raised. ``epoch_callback(epoch, net, monitor, stopping)`` is called
        after each completed epoch (see :class:`~sknets._engine.EpochMonitor`);
        the epoch-sharing search scores every requested ``max_iter`` in one
        run with it. ``trained`` (a :class:`~sknets._plan.TrainedState` that
        a search trained for exactly this fit) is adopted instead of training.
        """
        saved = dict(self.__dict__)
        try:
            prepared = self._prepare(X, y, sample_weight, incremental, validation)
            if trained is not None:
                self._adopt(prepared, trained)
                return self
            tasks = self._epoch_tasks(X, y, sample_weight, prepared)
            interrupted = self._fit_body(prepared, epoch_callback, tasks)
            if tasks is not None:
                tasks.finish()
        except BaseException:
            callback_state = callback_fit_state(self)
            self.__dict__.clear()
            self.__dict__.update(saved)
            self.__dict__.update(callback_state)  # torn down by with_callbacks
            raise
        if interrupted:  # Ctrl-C: the completed epochs are kept, then it goes on
            raise KeyboardInterrupt(
                f"Training interrupted by the user after {self.n_iter_} completed "
                "epoch(s); the estimator keeps them."
            )
        return self

    def _prepare(self, X, y, sample_weight, incremental, validation=None):
        """Validate the input and resolve the plan: everything before training.

        Sets the fitted attributes that come from the data (``n_features_in_``,
        ``classes_``, ...). ``validation`` is a given ``(X_val, y_val,
        sample_weight_val)``, validated like ``X`` against the fitted input.
        Returns a :class:`~sknets._plan.PreparedFit`.
        """
        self._check_params()
        previous = self.__dict__.get("net_")
        first_pass = previous is None or (not self.warm_start and not incremental)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, target, n_outputs = self._validate_input(X, y, incremental, reset=first_pass)
        sample_weight = self._sample_weight(X, y, sample_weight, incremental)
        valid = None
        if validation is not None:
            X_val, y_val, sw_val = validation
            X_val, target_val, _ = self._validate_input(
                X_val, y_val, incremental, reset=False, validation=True
            )
            sw_val = self._sample_weight(X_val, y_val, sw_val, incremental)
            valid = (X_val, target_val, sw_val)
        plan = self._make_plan(
            X.shape[0],
            incremental=incremental,
            first_pass=first_pass,
            x_dtype=X.dtype,
            stratify=self._stratify(target, n_outputs),
            n_epochs_before=0 if first_pass else len(previous.history),
            split=valid is None,
        )
        check_representable(X, plan.dtype)
        if valid is not None:
            check_representable(valid[0], plan.dtype)
        return PreparedFit(X, target, sample_weight, n_outputs, plan, valid)

    def _stratify(self, target, n_outputs):
        """Labels to stratify the validation split by (None: not stratified)."""
        return None

    @staticmethod
    def _rows_of(a, rows):
        return None if a is None else a[rows]

    def _labels(self, target):
        """The targets a scorer compares predictions with (``target`` decoded)."""
        return target.ravel() if target.ndim == 2 and target.shape[1] == 1 else target

    def _epoch_scorer(self, valid, plan, n_outputs):
        """``scoring`` on the validation set, for the network being trained.

        Each epoch the scorer sees a shallow copy of this estimator holding
        the net as it is (predictions in eval mode; training resumes after).
        """
        scorer = check_scoring(self, scoring=self.scoring)
        X_val, target_val, sw_val = valid
        labels = self._labels(target_val)
        kwargs = {} if sw_val is None else {"sample_weight": sw_val}

        def score(net):
            view = copy.copy(self)
            view.__dict__.update(
                net_=net,
                _dtype=plan.dtype,
                _device=plan.device,
                out_activation_=plan.out_activation,
                n_outputs_=n_outputs,
            )
            view.__dict__.pop("_widest", None)
            return scorer(view, X_val, labels, **kwargs)

        return score

    def _sample_weight(self, X, y, sample_weight, incremental):
        """The checked ``sample_weight`` (None: all ones) of a fit's rows."""
        if sample_weight is None:
            return None
        return check_sample_weight(sample_weight, X, dtype=X.dtype)

    def _new_module(self, prepared):
        """The untrained module of a first pass, drawn from torch's global RNG.

        Callers seed it (``torch.manual_seed(plan.torch_seed)`` inside
        ``torch.random.fork_rng``), so that a search's stacked members start
        from the same draw as their standalone fits.
        """
        X = prepared.X
        module = self._build_module(X.shape[1], prepared.n_outputs, sp.issparse(X))
        return module.to(dtype=prepared.plan.dtype)

    def _epoch_tasks(self, X, y, sample_weight, prepared):
        """The fit's task in scikit-learn's callback API, epochs as sub-tasks.

        None without the API (scikit-learn < 1.9) or for L-BFGS (whose
        iterations are not epochs). The root task begins here.
        """
        plan = prepared.plan
        if not hasattr(self, "_init_callback_context") or not plan.stopping.stochastic:
            return None
        context = self._init_callback_context(max_subtasks=plan.epochs)
        metadata = None if sample_weight is None else {"sample_weight": sample_weight}
        context.call_on_fit_task_begin(estimator=self, X=X, y=y, metadata=metadata)
        attributes = {
            **{k: v for k, v in self.__dict__.items() if k.endswith("_")},
            "_dtype": plan.dtype,
            "_device": plan.device,
            "out_activation_": plan.out_activation,
            "n_outputs_": prepared.n_outputs,
        }
        return EpochTasks(context, self, X, y, metadata, attributes)

    def _adopt(self, prepared, trained):
        """Become the fit that ``trained`` holds (see ``TrainedState``).

        The skorch net is built from the plan, exactly as :meth:`_fit_body`
        builds it, with the trained weights, history and stopping state; the
        fitted attributes (and a ``ConvergenceWarning``) follow as after
        training.
        """
        plan = prepared.plan
        with seeded():  # the drawn weights are replaced: no seed needed
            module = self._build_module(
                prepared.X.shape[1], prepared.n_outputs, sp.issparse(prepared.X)
            ).to(dtype=plan.dtype)
        module.load_state_dict(trained.module_state)
        module = module.to(plan.device)
        net = build_net(
            plan,
            module,
            state=trained.state,
            valid_batch_size=self._predict_batch_rows(module, prepared.X),
            sparse_batches=self._sparse_batches,
        )
        for row in trained.history:
            net.history.new_epoch()
            for key, value in row.items():
                net.history.record(key, value)
        monitor = dict(net.callbacks_)["monitor"]
        monitor.state = replace(trained.state)  # best_state: the best weights
        monitor.epochs_run = trained.epochs_run
        monitor.stop_reason = trained.stop_reason
        self._finish(net, plan, prepared.n_outputs, interrupted=False)

    def _fit_body(self, prepared, epoch_callback, tasks=None):
        X, target, sample_weight = prepared.X, prepared.target, prepared.sample_weight
        n_outputs, plan = prepared.n_outputs, prepared.plan
        previous = self.__dict__.get("net_")
        first_pass = plan.first_pass
        incremental = plan.incremental
        data = ArrayDataset(
            X,
            target,
            sample_weight,
            device=plan.device,
            dtype=plan.dtype,
            sparse_batches=self._sparse_batches,
        )
        train_data, valid_data = data, None
        if plan.valid_rows is not None:
            train_data = data.subset(plan.train_rows)
            valid_data = data.subset(plan.valid_rows)
        elif prepared.valid is not None:  # a validation set of its own
            valid_data = ArrayDataset(
                *prepared.valid,
                device=plan.device,
                dtype=plan.dtype,
                sparse_batches=self._sparse_batches,
            )

        epoch_scorer = None
        if getattr(self, "scoring", None) is not None and valid_data is not None:
            if plan.valid_rows is not None:
                rows = plan.valid_rows
                valid = (X[rows], target[rows], self._rows_of(sample_weight, rows))
            else:
                valid = prepared.valid
            epoch_scorer = self._epoch_scorer(valid, plan, n_outputs)
        cuda = [plan.device.index or 0] if plan.device.type == "cuda" else []
        with ExitStack() as rng:
            rng.enter_context(seeded(plan.torch_seed, cuda))
            if first_pass:
                module = self._new_module(prepared)
                state = StoppingState(learning_rate=plan.lr, base_learning_rate=plan.lr)
                previous = rollback = None
            else:
                module = previous.module_
                state = dict(previous.callbacks_)["monitor"].state
                if not incremental:  # a new optimizer, as scikit-learn's fit
                    state = replace(
                        state, learning_rate=plan.lr, base_learning_rate=plan.lr
                    )
                rollback = self.__dict__.get("_rollback") or Rollback()
                self._rollback = rollback.save(previous)
                n_epochs_before = len(previous.history)
            if not draws_random(module):
                rng.close()  # drawn once: training needs no generator (nor the lock)
            extra = ()
            if tasks is not None:
                extra = (("sklearn_tasks", tasks),)
                epoch_callback = _with_epoch_tasks(epoch_callback, tasks)
            net = build_net(
                plan,
                module,
                state=state,
                valid_batch_size=self._predict_batch_rows(module, X),
                sparse_batches=self._sparse_batches,
                valid=valid_data,
                epoch_callback=epoch_callback,
                previous=previous,
                epoch_scorer=epoch_scorer,
                extra_callbacks=extra,
            )
            try:
                interrupted = train(net, train_data, plan)
                if tasks is not None:  # the fitted net keeps sknets' callbacks only
                    net.callbacks = [c for c in net.callbacks if c is not extra[0]]
                    net.callbacks_ = [c for c in net.callbacks_ if c[1] is not tasks]
                self._finish(net, plan, n_outputs, interrupted)
            except BaseException:
                if rollback is not None:
                    rollback.restore(previous)
                    del previous.history[n_epochs_before:]
                raise
        return interrupted

    def _finish(self, net, plan, n_outputs, interrupted):
        """Fitted attributes from the trained net; raise if training failed."""
        monitor = dict(net.callbacks_)["monitor"]
        net.set_params(train_split=None)  # the validation rows are not kept
        if monitor.stop_reason == "diverged":
            raise ValueError(
                "Training diverged: the loss became NaN or infinite. Lower "
                "learning_rate_init, scale the inputs (e.g. StandardScaler), or "
                "increase alpha. The estimator was left as it was before this call."
            )
        if interrupted and monitor.epochs_run == 0:
            raise KeyboardInterrupt  # nothing completed: the estimator as it was
        if plan.stopping.early_stopping and monitor.state.best_state is not None:
            net.module_.load_state_dict(monitor.state.best_state)
        if not all(torch.isfinite(p).all() for p in net.module_.parameters()):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        net.module_.eval()  # predictions toggle nothing; training sets train mode
        self.net_ = net
        self._dtype, self._device = plan.dtype, plan.device
        self.out_activation_ = plan.out_activation
        self.n_outputs_ = n_outputs
        self._set_fit_attributes(net, monitor, plan, interrupted)
        self._set_model_attributes()

    # ----------------------------------------------------------------- plan

    def _phases(self, first_pass, incremental):
        """Learning rate (and frozen part) epoch by epoch: one phase here."""
        lr = 1.0 if self.solver == "lbfgs" else self.learning_rate_init
        return (Phase(epochs=None, lr=lr),)

    def _optimizer(self, device):
        """The optimizer class and its keyword arguments (the lr excepted)."""
        # torch's fused kernels update all parameters in one pass: 3-4x faster
        # optimizer steps on CPU than the default per-tensor loop (same math).
        fused = device.type in ("cpu", "cuda")
        if self.solver == "adam":
            return Adam, {
                "betas": (self.beta_1, self.beta_2),
                "eps": self.epsilon,
                "fused": fused,
            }
        if self.solver == "sgd":
            return SGD, {
                "momentum": self.momentum,
                "nesterov": bool(self.nesterovs_momentum and self.momentum > 0),
                "fused": fused,
            }
        return torch.optim.LBFGS, {
            "max_iter": self.max_iter,
            "max_eval": self.max_fun,
            "tolerance_grad": self.tol,
            "tolerance_change": 1e-9,
            "history_size": 10,
            "line_search_fn": "strong_wolfe",
        }

    def _make_plan(
        self,
        n_samples,
        *,
        incremental,
        first_pass,
        x_dtype,
        stratify=None,
        n_epochs_before=0,
        split=True,
    ):
        """Resolve the parameters, once, into the plan of this call.

        The seeds: an integer ``random_state`` gives the same initialization,
        row orders and dropout masks on every run; a continuing call
        (``partial_fit``, ``warm_start``) draws new row orders and masks per
        call (still reproducible), and keeps the first call's validation
        split, as scikit-learn's MLP does.
        """
        device = resolve_device(self.device)
        if first_pass:
            dtype = (
                getattr(torch, self.dtype)
                if self.dtype is not None
                else (torch.float32 if x_dtype == np.float32 else torch.float64)
            )
        else:
            dtype = self._dtype
        rng = check_random_state(self.random_state)
        split_rng = rng
        if not first_pass and isinstance(self.random_state, Integral):
            # continuing: fresh batches and dropout masks for each call, still
            # reproducible for the same calls (scikit-learn's MLP reseeds
            # identically, repeating one order); the same validation split
            split_rng = check_random_state(self.random_state)
            split_rng.randint(np.iinfo(np.int32).max, size=2)
            rng = np.random.RandomState([self.random_state, n_epochs_before])
        torch_seed, shuffle_seed = (
            int(s) for s in rng.randint(np.iinfo(np.int32).max, size=2)
        )
        train_rows = valid_rows = None
        if self.early_stopping and split:
            train_rows, valid_rows = train_test_split(
                np.arange(n_samples),
                random_state=split_rng,
                test_size=self.validation_fraction,
                stratify=stratify,
            )
            if len(valid_rows) < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
        n_train = n_samples if train_rows is None else len(train_rows)
        if self.solver == "lbfgs":
            batch_size = n_train
        elif self.batch_size == "auto":
            batch_size = min(200, n_train)
        else:
            if self.batch_size > n_train:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than "
                    "sample size. It is going to be clipped"
                )
            batch_size = int(np.clip(self.batch_size, 1, n_train))
        optimizer, optimizer_kwargs = self._optimizer(device)
        stochastic = self.solver in _STOCHASTIC_SOLVERS
        return TrainingPlan(
            first_pass=first_pass,
            incremental=incremental,
            epochs=1 if (incremental or not stochastic) else self.max_iter,
            max_iter=self.max_iter,
            batch_size=batch_size,
            shuffle=bool(self.shuffle),
            optimizer=optimizer,
            optimizer_kwargs=optimizer_kwargs,
            phases=self._phases(first_pass, incremental),
            stopping=StoppingRules(
                tol=self.tol,
                n_iter_no_change=self.n_iter_no_change,
                early_stopping=bool(self.early_stopping),
                score="accuracy" if self._is_classifier() else "r2",
                lr_schedule=self.learning_rate if self.solver == "sgd" else None,
                power_t=self.power_t,
                stochastic=stochastic,
            ),
            alpha=float(self.alpha),
            l1_ratio=float(self.l1_ratio),
            out_activation=self._output_activation(),
            torch_seed=torch_seed,
            shuffle_seed=shuffle_seed,
            dtype=dtype,
            device=device,
            train_rows=train_rows,
            valid_rows=valid_rows,
            forward_compile=self._forward_compile(),
            autocast=bool(self.autocast),
            verbose=int(self.verbose),
            callbacks=self._user_callbacks(),
        )

    def _user_callbacks(self):
        """Copies of ``callbacks`` for this fit (the parameter is never changed)."""
        callbacks = getattr(self, "callbacks", None) or ()
        for cb in callbacks:
            item = cb[1] if isinstance(cb, tuple) and len(cb) == 2 else cb
            if not isinstance(item, Callback):
                raise TypeError(
                    "callbacks takes skorch callbacks (instances of "
                    f"skorch.callbacks.Callback, or (name, callback) pairs); got "
                    f"{cb!r}."
                )
            if isinstance(cb, tuple) and cb[0] in ("phases", "monitor"):
                raise ValueError(f"the callback name {cb[0]!r} is sknets' own.")
        return tuple(copy.deepcopy(list(callbacks)))

    def _forward_compile(self):
        if self.compile is False:
            return None
        return {} if self.compile is True else dict(self.compile)

    def _is_classifier(self):
        return False

    def _set_fit_attributes(self, net, monitor, plan, interrupted):
        rows = [{k: row[k] for k in _HISTORY_KEYS if k in row} for row in net.history]
        self.history_ = rows
        state = monitor.state
        self.t_ = int(state.t)
        self.loss_ = float(rows[-1]["train_loss"]) if rows else np.nan
        if plan.stopping.stochastic:
            self.n_iter_ = monitor.epochs_run
            self.loss_curve_ = [float(r["train_loss"]) for r in rows]
            if plan.stopping.early_stopping:
                self.validation_scores_ = [float(r["valid_score"]) for r in rows]
                self.validation_loss_curve_ = [float(r["valid_loss"]) for r in rows]
                self.best_validation_score_ = float(state.best_score)
                self.best_loss_ = None
                self.best_epoch_ = state.best_epoch
            else:  # a given validation set is scored without early stopping
                scored = bool(rows) and "valid_score" in rows[0]
                self.validation_scores_ = (
                    [float(r["valid_score"]) for r in rows] if scored else None
                )
                self.validation_loss_curve_ = (
                    [float(r["valid_loss"]) for r in rows] if scored else None
                )
                self.best_validation_score_ = None
                self.best_loss_ = float(state.best_loss)
            if (
                not plan.incremental
                and not interrupted
                and monitor.stop_reason is None
                and self.n_iter_ == plan.max_iter
            ):
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({plan.max_iter}) "
                    "reached and the optimization hasn't converged yet.",
                    ConvergenceWarning,
                )
        else:
            opt_state = net.optimizer_.state[next(iter(net.module_.parameters()))]
            self.n_iter_ = int(opt_state.get("n_iter", 0))
            if self.n_iter_ >= plan.max_iter:
                warnings.warn(
                    f"lbfgs failed to converge after {self.n_iter_} iteration(s): "
                    "the maximum number of iterations was reached. Increase max_iter "
                    "or scale the data.",
                    ConvergenceWarning,
                )
            elif int(opt_state.get("func_evals", 0)) >= plan.optimizer_kwargs.get(
                "max_eval", np.inf
            ):
                warnings.warn(
                    f"lbfgs failed to converge after {self.n_iter_} iteration(s): "
                    "the maximum number of loss evaluations (max_fun="
                    f"{plan.optimizer_kwargs['max_eval']}) was reached. Increase "
                    "max_fun or scale the data.",
                    ConvergenceWarning,
                )

    @property
    def module_(self):
        """The trained ``torch.nn.Module`` (the skorch net's ``module_``)."""
        return self.net_.module_

    def set_params(self, **params):
        """Set parameters; a fitted network follows its new device and options.

        On a fitted estimator a new ``device`` moves the model (weights and
        optimizer state), and ``compile``/``autocast`` apply to the next
        predictions.

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
        net = self.__dict__.get("net_")
        if net is not None:
            if "device" in params:
                self._device = resolve_device(self.device)
                move_net(net, self._device)
            if "compile" in params or "autocast" in params:
                net.set_params(
                    forward_compile=self._forward_compile(),
                    autocast=bool(self.autocast),
                )
        return self

    def _pickle_state(self):
        state = dict(super()._pickle_state())
        for name in ("_rollback", "_widest"):  # caches, rebuilt when needed
            state.pop(name, None)
        return state

    # ---------------------------------------------------------- persistence

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
        stopping = asdict(dict(self.net_.callbacks_)["monitor"].state)
        stopping.pop("best_state")  # the best weights are the module's
        state["_private"] = {
            "dtype": str(self._dtype).replace("torch.", ""),
            # the first layer's memory layout for sparse input (see SparseInputLinear)
            "sparse_input": any(
                name.endswith("weight_t") for name, _ in self.module_.named_parameters()
            ),
            "batch_size": int(self.net_.batch_size),
            "monitor": stopping,
            "extra": self._extra_state(),
        }
        return state

    def _skeleton(self, n_features, n_outputs, sparse_input):
        """The module that saved weights are loaded into (see ``sknets.load``).

        Only its architecture matters: it is built on the ``meta`` device
        first. Estimators with pretrained parts build them without their
        pretrained weights here.
        """
        return self._build_module(n_features, n_outputs, sparse_input)

    def _restore_fitted(self, fitted, module_state):
        """Rebuild the fitted estimator from :meth:`_fitted_state` and weights.

        ``fitted`` and ``module_state`` have passed ``sknets.load``'s checks;
        the module is built on the ``meta`` device and compared with
        ``module_state`` before it takes any memory.
        """
        fitted = dict(fitted)
        private = fitted.pop("_private")
        for name, value in fitted.items():
            setattr(self, name, value)
        self._load_extra_state(private["extra"])
        self._dtype = getattr(torch, private["dtype"])
        batch_size = private.get("batch_size", 200)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # batch_size clipping, said at fit
            plan = self._make_plan(
                batch_size,
                incremental=False,
                first_pass=False,
                x_dtype=None,
                split=False,
            )
        sparse_input = private.get("sparse_input", False)
        module = restore_module(
            lambda: self._skeleton(
                self.n_features_in_, self.n_outputs_, sparse_input
            ).to(dtype=plan.dtype),
            module_state,
        ).to(plan.device)
        known = set(StoppingState.__dataclass_fields__)
        saved = {k: v for k, v in private.get("monitor", {}).items() if k in known}
        saved.setdefault("base_learning_rate", saved.get("learning_rate"))
        net = build_net(
            plan,
            module.eval(),
            state=StoppingState(**saved),
            # no dry run here: predictions size their own batches
            valid_batch_size=_rows_for(self.n_features_in_),
            sparse_batches=self._sparse_batches,
        )
        for row in self.history_:
            net.history.new_epoch()
            for key, value in row.items():
                net.history.record(key, value)
        self.net_, self._device = net, plan.device
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
        cached = self.__dict__.get("_widest")  # one dry run per network
        if cached is None or cached[0] is not module or cached[1] != n_features:
            layers = widest_activation(module, n_features)
            cached = (module, n_features, layers, _rows_for(max(layers, n_features)))
            self._widest = cached
        if sp.issparse(X) and self._sparse_batches:
            return _rows_for(max(cached[2], X.nnz / max(X.shape[0], 1)))
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


CLASS_WEIGHT_CONSTRAINT = {"class_weight": [dict, list, StrOptions({"balanced"}), None]}


class _ClassifierNet(_BaseNet):
    """Classification on top of :class:`_BaseNet`, with scikit-learn's label logic."""

    _parameter_constraints: dict = {
        **_BaseNet._parameter_constraints,
        **CLASS_WEIGHT_CONSTRAINT,
    }

    def _labels(self, target):
        if target.ndim == 1:  # class codes
            return self.classes_[target]
        if self._label_binarizer.y_type_ != "multilabel-indicator":
            return self.classes_[target.ravel()]  # binary: (n, 1) codes
        return target

    def _stratify(self, target, n_outputs):
        # the user's labels (not their codes), so that errors name them
        if n_outputs != 1:
            return None
        return self.classes_[np.asarray(target).ravel()]

    def _sample_weight(self, X, y, sample_weight, incremental):
        """``sample_weight`` times the weights of the classes (``class_weight``).

        As scikit-learn's linear models: ``'balanced'`` weighs class ``c`` by
        ``n_samples / (n_classes * count(c))``, a dict by its values (1 for
        the classes it leaves out); for multilabel ``y`` a list of dicts, one
        per output, multiplied together (``compute_sample_weight``).
        """
        sample_weight = super()._sample_weight(X, y, sample_weight, incremental)
        class_weight = getattr(self, "class_weight", None)
        if class_weight is None:
            return sample_weight
        if incremental and class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported for partial_fit: the "
                "class frequencies of one batch are not those of the data. Pass "
                "a dict, e.g. from sklearn.utils.class_weight.compute_class_weight "
                "on all the labels."
            )
        labels = np.asarray(y)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels.ravel()
        weights = compute_sample_weight(class_weight, labels).astype(X.dtype)
        return weights if sample_weight is None else sample_weight * weights

    def _is_classifier(self):
        return True

    def _validate_input(self, X, y, incremental, reset, validation=False):
        X, y = self._validate_Xy(X, y, reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if validation:  # a validation set: only classes seen in training
            classes = unique_labels(y)
            if len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"y_val has classes not in the training data: {classes} vs "
                    f"classes_ {self.classes_}."
                )
        elif (not hasattr(self, "classes_")) or (
            not self.warm_start and not incremental
        ):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
            # one class: one logistic output that learns "not the other
            # class", predicting that class always, as scikit-learn's MLP does
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

    @available_if(_check_solver)
    @with_callbacks
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

    def _validate_input(self, X, y, incremental, reset, validation=False):
        X, y = self._validate_Xy(X, y, reset, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("loss='poisson' requires non-negative y.")
        Y = y.reshape(y.shape[0], -1)
        return X, Y, Y.shape[1]

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    @available_if(_check_solver)
    @with_callbacks
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
