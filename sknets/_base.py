"""The base of every network estimator: validation, ``fit`` and prediction.

How parameters become a plan is in :mod:`sknets._planning`, the fitted
attributes and their stored form in :mod:`sknets._fitted`, classification
and regression in :mod:`sknets._heads`.
"""

from contextlib import ExitStack
from dataclasses import replace
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import (
    validate_data,
)

from sknets import _registry as registry
from sknets._compat import (
    CALLBACK_BASES,
    Interval,
    Options,
    ParamNamesCache,
    StrOptions,
    callback_fit_state,
    check_sample_weight,
    fit_context,
    with_callbacks,
)
from sknets._data import ArrayDataset
from sknets._device import move_net, resolve_device
from sknets._engine import Rollback, build_net, draws_random, seeded, train
from sknets._epoch_tasks import EpochTasks, _with_epoch_tasks
from sknets._epochs import StoppingState
from sknets._fitted import _FittedMixin
from sknets._pickling import _PortableStateMixin
from sknets._plan import PreparedFit
from sknets._planning import _STOCHASTIC_SOLVERS, _PlanMixin
from sknets._predicting import _PredictMixin
from sknets._validation import assert_finite, check_representable


def _check_solver(est):
    if est.solver not in _STOCHASTIC_SOLVERS:
        raise AttributeError(
            f"partial_fit is only available for stochastic optimizers. "
            f"{est.solver} is not stochastic."
        )
    return True


class _BaseNet(
    *CALLBACK_BASES,
    _PlanMixin,
    _FittedMixin,
    _PredictMixin,
    _PortableStateMixin,
    ParamNamesCache,
    BaseEstimator,
):
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

    def _fit_input(self, X, y, sample_weight):
        """Learn what reading the input needs, before it is validated.

        Called on a first pass only (not by ``partial_fit`` after the first
        call, nor by ``warm_start``); nothing by default. The tabular
        networks fit their encoder of the table here.
        """

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
        after each completed epoch (see :class:`~sknets._epochs.EpochMonitor`);
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
        if first_pass:
            self._fit_input(X, y, sample_weight)
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
                interrupted = train(net, train_data)
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

    def _is_classifier(self):
        return False

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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
