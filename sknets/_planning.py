"""The plan of a fit: parameters read once into a :class:`~sknets._plan.TrainingPlan`.

:class:`_PlanMixin` holds what :class:`~sknets._base._BaseNet` resolves its
parameters with: the checks, the compute precision, the optimizer, the
learning-rate phases, the stopping rules, the epoch scorer, the user's
callbacks. Nothing below the plan reads ``self.<param>``.
"""

import copy
import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.metrics import check_scoring
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from skorch.callbacks import Callback

from sknets._device import resolve_device
from sknets._optim import SGD, Adam
from sknets._plan import Phase, StoppingRules, TrainingPlan

_STOCHASTIC_SOLVERS = ("sgd", "adam")


class _PlanMixin:
    """Parameters into a plan (a mixin of :class:`~sknets._base._BaseNet`)."""

    _auto_batch_size = 200  # batch_size='auto': min(this, n_samples), as scikit-learn

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
            batch_size = min(self._auto_batch_size, n_train)
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
