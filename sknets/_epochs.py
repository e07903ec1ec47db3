"""The end of every epoch: scikit-learn's stopping rules as skorch callbacks.

:func:`epoch_rules` (tolerance, ``n_iter_no_change``, early stopping,
divergence) on a :class:`StoppingState`; :class:`EpochMonitor` applies them
and the SGD schedules, :class:`PhaseSwitch` the learning-rate phases;
:class:`StopTraining` ends skorch's ``fit_loop``.
"""

import math
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from skorch.callbacks import Callback

from sknets._losses import validation_score


class StopTraining(KeyboardInterrupt):
    """Raised by :class:`EpochMonitor` to end skorch's ``fit_loop``.

    A callback ends skorch's training by raising ``KeyboardInterrupt``
    (skorch's own ``EarlyStopping`` does); a user's Ctrl-C is recognised by
    its signal instead (see :func:`train`).
    """


@dataclass
class StoppingState:
    """What scikit-learn's MLP carries from epoch to epoch (and across warm fits)."""

    no_improvement_count: int = 0
    best_loss: float = np.inf
    best_score: float = -np.inf
    best_state: dict | None = None
    best_epoch: int | None = None
    t: int = 0
    learning_rate: float | None = None
    base_learning_rate: float | None = None


def epoch_rules(rules, state, loss, score=None):
    """scikit-learn's MLP end-of-epoch rules, applied to ``state`` in place.

    One function for a single network (:class:`EpochMonitor`) and for every
    member of a stacked one (:mod:`sknets._members`).

    Parameters
    ----------
    rules : StoppingRules
        ``tol``, ``n_iter_no_change``, ``early_stopping``, the SGD schedule.
    state : StoppingState
        Changed in place: the no-improvement count, the best loss or score,
        the learning rate (``invscaling``: every epoch; ``adaptive``: divided
        by 5 instead of stopping).
    loss : float
        The epoch's training loss.
    score : float or None
        The epoch's validation score (``early_stopping``).

    Returns
    -------
    stop : bool
        Training should end now.
    improved : bool
        The validation score is the best so far (keep these weights).
    message : str or None
        What happened, for ``verbose`` output.
    """
    improved = False
    if rules.early_stopping:
        if score < state.best_score + rules.tol:
            state.no_improvement_count += 1
        else:
            state.no_improvement_count = 0
        if score > state.best_score:
            state.best_score = score
            improved = True
    else:
        if loss > state.best_loss - rules.tol:
            state.no_improvement_count += 1
        else:
            state.no_improvement_count = 0
        state.best_loss = min(state.best_loss, loss)
    if rules.lr_schedule == "invscaling":
        decay = (state.t + 1) ** rules.power_t
        state.learning_rate = state.base_learning_rate / decay
    if state.no_improvement_count <= rules.n_iter_no_change:
        return False, improved, None
    what = "Validation score" if rules.early_stopping else "Training loss"
    msg = (
        f"{what} did not improve more than tol={rules.tol:f} for "
        f"{rules.n_iter_no_change} consecutive epochs."
    )
    if rules.lr_schedule == "adaptive" and state.learning_rate > 1e-6:
        state.learning_rate = state.learning_rate / 5.0
        state.no_improvement_count = 0
        lr = state.learning_rate
        return False, improved, f"{msg} Setting learning rate to {lr:f}"
    return True, improved, f"{msg} Stopping."


class PhaseSwitch(Callback):
    """Walk through the plan's phases: learning rate and frozen part per phase.

    In the manner of skorch's ``Freezer``/``Unfreezer``: at the start of a
    phase the module's pretrained part is frozen or unfrozen
    (``module_.set_frozen``) and every parameter group takes the phase's
    learning rate. A phase ends after its ``epochs``, or earlier when the
    monitor finds it converged (:meth:`end_phase`); the last phase runs until
    training ends.

    Parameters
    ----------
    phases : tuple of Phase
        The plan's phases.
    keep_lr : bool
        Leave the optimizer's learning rate as it is in the first phase
        (``partial_fit`` continues with the optimizer's own state).
    """

    def __init__(self, phases, keep_lr=False):
        self.phases = tuple(phases)
        self.keep_lr = keep_lr

    def on_train_begin(self, net, **kwargs):
        self.index, self.epochs_in_phase, self._end = 0, 0, False
        self._apply(net, self.phases[0], set_lr=not self.keep_lr)

    def has_next(self):
        """Whether a later phase exists."""
        return self.index + 1 < len(self.phases)

    def end_phase(self):
        """End the current phase after this epoch (it converged)."""
        self._end = True

    def on_epoch_begin(self, net, **kwargs):
        limit = self.phases[self.index].epochs
        done = self._end or (limit is not None and self.epochs_in_phase >= limit)
        if done and self.has_next():
            self.index, self.epochs_in_phase, self._end = self.index + 1, 0, False
            self._apply(net, self.phases[self.index], set_lr=True)
            monitor = dict(net.callbacks_).get("monitor")
            if monitor is not None:
                monitor.start_phase(self.phases[self.index].lr)
        self.epochs_in_phase += 1

    @staticmethod
    def _apply(net, phase, set_lr):
        if phase.frozen is not None:
            net.module_.set_frozen(phase.frozen)
        if set_lr:
            for group in net.optimizer_.param_groups:
                group["lr"] = phase.lr


class EpochMonitor(Callback):
    """scikit-learn's end-of-epoch logic as a skorch callback.

    Parameters
    ----------
    rules : StoppingRules
        ``tol``, ``n_iter_no_change``, ``early_stopping`` (track the
        validation score and restore the best weights at the end; else track
        the training loss), the SGD learning-rate schedule, the score name.
    state : StoppingState
        Where the rules start (a copy is kept; the caller's is never changed).
    out_activation : str
        For the validation score.
    verbose : int
        Print one line per epoch to stderr when positive; with 2 or more, also
        a progress bar over the batches of each epoch (tqdm).
    epoch_callback : callable or None
        ``epoch_callback(epoch, net, monitor, stopping)`` after every
        completed epoch, once the rules decided (``stopping``); the
        epoch-sharing search scores its epoch counts with it, and
        scikit-learn's callbacks end their epoch task there. A true return
        value ends training (``stop_reason="callback"``).
    """

    def __init__(
        self,
        rules,
        state,
        out_activation,
        verbose=0,
        epoch_callback=None,
        epoch_scorer=None,
    ):
        self.epoch_scorer = epoch_scorer
        self.rules = rules
        self.state = replace(state)
        self.out_activation = out_activation
        self.verbose = verbose
        self.epoch_callback = epoch_callback
        self.stop_reason = None
        self.epochs_run = 0

    def start_phase(self, lr):
        """A new phase of the plan begins at learning rate ``lr``."""
        self.state.learning_rate = self.state.base_learning_rate = lr
        self.state.no_improvement_count = 0

    def on_train_begin(self, net, **kwargs):
        self.stop_reason, self.epochs_run, self._outputs = None, 0, None

    def on_train_end(self, net, **kwargs):
        self._close_bar()
        self._outputs = None
        self.epoch_callback = None  # no closure (or its data) in the fitted net
        self.epoch_scorer = None
        if self.state.best_state is not None:  # loadable on a machine without GPU
            self.state.best_state = {
                k: v.cpu() for k, v in self.state.best_state.items()
            }

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self._start = time.perf_counter()
        self._outputs = [] if dataset_valid is not None else None
        self._bar = None
        if self.verbose >= 2 and dataset_train is not None:
            from tqdm.auto import tqdm  # comes with skorch

            self._bar = tqdm(
                total=math.ceil(len(dataset_train) / net.batch_size),
                desc=f"epoch {len(net.history)}",
                unit="batch",
                leave=False,
                file=sys.stderr,
                disable=None,  # silent when stderr is not a terminal (n_jobs workers)
            )

    def on_batch_end(self, net, training=False, y_pred=None, **kwargs):
        if training:
            if getattr(self, "_bar", None) is not None:
                self._bar.update()
        elif self._outputs is not None:
            self._outputs.append(y_pred.detach())

    def _close_bar(self):
        if getattr(self, "_bar", None) is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self._close_bar()
        h = net.history
        loss = h[-1, "train_loss"]
        self.state.t += len(dataset_train)
        if not math.isfinite(loss):
            self.stop_reason = "diverged"
            raise StopTraining
        self.epochs_run += 1
        if dataset_valid is not None:
            valid_loss, score = self._validate(net, dataset_valid)
            h.record("valid_loss", valid_loss)  # exact weighted mean, not per batch
            h.record("valid_score", score)
        if self.verbose:
            self._print(h[-1], time.perf_counter() - self._start)
        stop = self._end_of_epoch_rules(net, loss) if self.rules.stochastic else False
        if stop:
            phases = dict(net.callbacks_).get("phases")
            if phases is not None and phases.has_next():
                phases.end_phase()
                stop = False
        if self.epoch_callback is not None:
            if self.epoch_callback(self.epochs_run, net, self, stop) and not stop:
                self.stop_reason = "callback"  # a callback asked to stop
                raise StopTraining
        if stop:
            self.stop_reason = "converged"
            raise StopTraining

    def _validate(self, net, dataset):
        raw = torch.cat(self._outputs) if len(self._outputs) > 1 else self._outputs[0]
        self._outputs = None
        y, w = dataset.targets()
        y = y.to(raw.device)
        w = None if w is None else w.to(raw.device)
        valid_loss = float(net.criterion_(raw, (y, w)))
        if self.epoch_scorer is not None:  # the estimator's ``scoring``
            return valid_loss, float(self.epoch_scorer(net))
        score = validation_score(self.rules.score, raw, y, w, self.out_activation)
        return valid_loss, float(score)

    def _end_of_epoch_rules(self, net, loss):
        """scikit-learn's stopping and schedule rules; True means stop now."""
        score = net.history[-1, "valid_score"] if self.rules.early_stopping else None
        lr = self.state.learning_rate
        stop, improved, message = epoch_rules(self.rules, self.state, loss, score)
        if improved:
            self.state.best_state = clone_state(net.module_)
            self.state.best_epoch = len(net.history)
        if self.state.learning_rate != lr:
            self._set_lr(net, self.state.learning_rate)
        if message and self.verbose:
            print(message, flush=True)
        return stop

    def _set_lr(self, net, lr):
        self.state.learning_rate = lr
        for group in net.optimizer_.param_groups:
            group["lr"] = lr

    def _print(self, row, seconds):
        """scikit-learn's MLP lines, on stdout: the loss, the validation score."""
        print(f"Iteration {row['epoch']}, loss = {row['train_loss']:.8f}", flush=True)
        if "valid_score" in row:
            print(f"Validation score: {row['valid_score']:f}", flush=True)


def clone_state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
