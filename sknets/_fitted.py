"""Fitted attributes: set from the trained net, stored, and restored.

:class:`_FittedMixin` turns a trained skorch net and its history into
scikit-learn's fitted attributes (``loss_curve_``, ``n_iter_``, ``coefs_``,
...), and gives :mod:`sknets._persistence` and pickle the fitted state to
store and the way back from it.
"""

import warnings
from dataclasses import asdict

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from sknets._engine import build_net
from sknets._epochs import StoppingState
from sknets._predicting import prediction_rows
from sknets._restore import restore_module

_HISTORY_KEYS = ("epoch", "train_loss", "valid_loss", "valid_score", "dur")


class _FittedMixin:
    """Fitted attributes and their stored form (a mixin of ``_BaseNet``)."""

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

    def _pickle_state(self):
        state = dict(super()._pickle_state())
        for name in ("_rollback", "_widest"):  # caches, rebuilt when needed
            state.pop(name, None)
        return state

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
            valid_batch_size=prediction_rows(self.n_features_in_),
            sparse_batches=self._sparse_batches,
        )
        for row in self.history_:
            net.history.new_epoch()
            for key, value in row.items():
                net.history.record(key, value)
        self.net_, self._device = net, plan.device
        self._set_model_attributes()
        return self
