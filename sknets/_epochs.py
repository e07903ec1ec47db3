"""The end of every epoch: scikit-learn's stopping rules as skorch callbacks.

One stopping state (:class:`StoppingState`) and one end of epoch
(:func:`end_epoch`: sample count, divergence, validation, then
:func:`epoch_rules`: tolerance, ``n_iter_no_change``, early stopping, the SGD
schedules) for every network that trains, alone or as a member of a stack.
Two monitors apply it: :class:`EpochMonitor` to one network (skorch's history,
``verbose``, phases, scikit-learn's epoch callbacks) and
:class:`MemberMonitor` to each member of a stack (its own history, its hand-over
at the epoch counts a search asked for). :class:`PhaseSwitch` walks the
learning-rate phases; :class:`StopTraining` ends skorch's ``fit_loop``.
"""

import math
import sys
import threading
import time
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
from skorch.callbacks import Callback

from sknets._losses import WeightedLoss, validation_score
from sknets._plan import TrainedState

# Set by a Ctrl-C caught while training (``sknets._engine._sigint_flag``):
# training in other threads (a search's stacks) sees it at its next batch and
# stops too.
USER_INTERRUPT = threading.Event()


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


@dataclass(frozen=True)
class EpochEnd:
    """What the end of one epoch decided for one network (:func:`end_epoch`)."""

    diverged: bool = False
    valid: tuple | None = None  # (validation loss, validation score)
    stop: bool = False
    improved: bool = False
    message: str | None = None
    lr_changed: bool = False


def end_epoch(rules, state, n_rows, loss, validate=None):
    """One network's end of epoch, scikit-learn's way, on ``state`` in place.

    Parameters
    ----------
    rules : StoppingRules
        The plan's rules.
    state : StoppingState
        Changed in place: ``t`` (samples seen) and what :func:`epoch_rules`
        changes.
    n_rows : int
        Training rows of the epoch.
    loss : float
        The epoch's training loss.
    validate : callable or None
        ``validate() -> (loss, score)`` on the validation rows; called only
        when the loss is finite.

    Returns
    -------
    EpochEnd
        Diverged (nothing else was done), the validation loss and score,
        whether to stop, whether the score improved (keep these weights), the
        rules' message, whether the learning rate changed.
    """
    state.t += n_rows
    if not math.isfinite(loss):
        return EpochEnd(diverged=True)
    valid = None if validate is None else validate()
    if not rules.stochastic:
        return EpochEnd(valid=valid)
    lr = state.learning_rate
    score = None if valid is None else valid[1]
    stop, improved, message = epoch_rules(rules, state, loss, score)
    return EpochEnd(
        valid=valid,
        stop=stop,
        improved=improved,
        message=message,
        lr_changed=state.learning_rate != lr,
    )


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
        validate = None
        if dataset_valid is not None:
            validate = partial(self._validate, net, dataset_valid)
        end = end_epoch(
            self.rules, self.state, len(dataset_train), h[-1, "train_loss"], validate
        )
        if end.diverged:
            self.stop_reason = "diverged"
            raise StopTraining
        self.epochs_run += 1
        if end.valid is not None:
            h.record("valid_loss", end.valid[0])  # exact weighted mean, not per batch
            h.record("valid_score", end.valid[1])
        if self.verbose:
            self._print(h[-1], time.perf_counter() - self._start)
        if end.improved:
            self.state.best_state = clone_state(net.module_)
            self.state.best_epoch = len(h)
        if end.lr_changed:
            self._set_lr(net, self.state.learning_rate)
        if end.message and self.verbose:
            print(end.message, flush=True)
        stop = end.stop
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
        if self.rules.score == "loss":  # the criterion's, label smoothing and all
            return valid_loss, -valid_loss
        score = validation_score(self.rules.score, raw, y, w, self.out_activation)
        return valid_loss, float(score)

    def _set_lr(self, net, lr):
        self.state.learning_rate = lr
        for group in net.optimizer_.param_groups:
            group["lr"] = lr

    def _print(self, row, seconds):
        """scikit-learn's MLP lines, on stdout: the loss, the validation score."""
        print(f"Iteration {row['epoch']}, loss = {row['train_loss']:.8f}", flush=True)
        if "valid_score" in row:
            print(f"Validation score: {row['valid_score']:f}", flush=True)


# --------------------------------------------------------------------------- members


class MemberMonitor(Callback):
    """scikit-learn's end-of-epoch logic for every member, and their hand-over.

    After each epoch: each live member's training loss (the mean of its batch
    losses weighted by their rows, as skorch's ``train_loss``), its
    validation loss and score (``early_stopping``), its stopping rules and
    learning-rate schedule (:func:`~sknets._epochs.epoch_rules`). At each of
    its epoch counts a member's :class:`~sknets._plan.TrainedState` is kept;
    at its last, or when its rules stop it, it is frozen. The run ends when
    every member is.
    """

    def __init__(self, specs):
        self.specs = list(specs)
        self.out_activation = self.specs[0].plan.out_activation

    def on_train_begin(self, net, **kwargs):
        if hasattr(self, "states"):  # a resumed run (MemberRun.advance) goes on
            return
        M = len(self.specs)
        self.states = [
            StoppingState(learning_rate=s.plan.lr, base_learning_rate=s.plan.lr)
            for s in self.specs
        ]
        self.rows = [[] for _ in range(M)]
        self.results = [{} for _ in range(M)]
        self.live = [True] * M
        self.n_train = [len(s.rows) for s in self.specs]
        self.start = time.perf_counter()

    def keep_members(self, index):
        """Keep the members ``index`` only (their results stay with the run).

        Before the run has trained (a rung's runs are split to balance the
        workers before the first trains) only the specs are there to keep.
        """
        for name in ("specs", "states", "rows", "results", "live", "n_train"):
            if name in self.__dict__:
                values = self.__dict__[name]
                setattr(self, name, [values[i] for i in index])

    def on_epoch_begin(self, net, **kwargs):
        self._epoch_start = time.perf_counter()
        like = net.module_.weights[0]
        self._loss = torch.zeros(len(self.specs), dtype=like.dtype, device=like.device)
        self._rows = torch.zeros_like(self._loss)
        self._valid = []

    def on_batch_end(
        self, net, batch=None, training=False, member_losses=None, y_pred=None, **kwargs
    ):
        if USER_INTERRUPT.is_set():  # Ctrl-C in the main thread: stop here
            raise StopTraining
        counts = batch[1][2]
        if training:
            self._loss += member_losses * counts
            self._rows += counts
        else:
            self._valid.append((y_pred.detach(), batch[1]))

    def _validate(self, m):
        count = int(len(self.specs[m].valid_rows))
        raw = torch.cat([out[m] for out, _ in self._valid])[:count]
        y = torch.cat([t[0][m] for _, t in self._valid])[:count]
        w = None
        if self._weighted:
            w = torch.cat([t[1][m] for _, t in self._valid])[:count]
        loss = float(WeightedLoss(self.out_activation)(raw, (y, w)))
        score = validation_score(
            self.specs[m].plan.stopping.score, raw, y, w, self.out_activation
        )
        return loss, float(score)

    def on_epoch_end(self, net, dataset_train=None, **kwargs):
        self._weighted = dataset_train.w is not None
        losses = (self._loss / self._rows.clamp_min(1)).tolist()
        seconds = time.perf_counter() - self.start
        for m, spec in enumerate(self.specs):
            if not self.live[m]:
                continue
            validate = None if spec.valid_rows is None else partial(self._validate, m)
            state = self.states[m]
            end = end_epoch(
                spec.plan.stopping, state, self.n_train[m], losses[m], validate
            )
            if end.diverged:
                self._end(net, m, "diverged", seconds)
                continue
            row = {"epoch": len(self.rows[m]) + 1, "train_loss": losses[m]}
            if end.valid is not None:
                row["valid_loss"], row["valid_score"] = end.valid
            row["dur"] = time.perf_counter() - self._epoch_start
            self.rows[m].append(row)
            if end.improved:
                state.best_state = net.module_.member_state(m)
                state.best_epoch = len(self.rows[m])
            if end.lr_changed:
                net.optimizer_.member_lr[m] = state.learning_rate
            epoch = len(self.rows[m])
            if end.stop:
                self._end(net, m, "converged", seconds)
            elif epoch == spec.epochs[-1]:
                self._end(net, m, None, seconds)
            elif epoch in spec.epochs:
                self.results[m][epoch] = self._state(net, m, None, seconds)
        if not any(self.live):
            raise StopTraining

    def _state(self, net, m, reason, seconds):
        return TrainedState(
            module_state=net.module_.member_state(m),
            history=tuple(dict(r) for r in self.rows[m]),
            state=replace(self.states[m]),
            stop_reason=reason,
            seconds=seconds,
        )

    def _end(self, net, m, reason, seconds):
        """Member ``m``'s run is over: every epoch count left gets this state."""
        final = self._state(net, m, reason, seconds)
        for epoch in self.specs[m].epochs:
            self.results[m].setdefault(epoch, final)
        self.live[m] = False
        net.optimizer_.live[m] = False


def clone_state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
