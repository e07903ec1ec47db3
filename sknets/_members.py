"""Many networks trained as one: the members of a search, stacked.

A *member* is one training run that a search needs: one candidate's network
on one fold's training rows. Members whose networks have the same shape
(:class:`~sknets.modules.StackedMLP`) are trained together, as one stacked
network, in one skorch run: each batch is ``(members, rows, features)``, one
optimizer step moves every member, and the loss is the sum of the members'
own losses, so their gradients never mix. Each member keeps what its own
``fit`` would have had:

- its initialization (the same draw as its standalone fit, then stacked),
- its training rows and their order in every epoch (its own shuffle seed;
  members whose folds differ in size are padded with zero-weight rows, and
  a member without rows in a step does not step),
- its ``alpha``/``l1_ratio`` penalty, its learning rate and schedule
  (per-member learning rates in :class:`~sknets._optim.StackedAdam`/
  :class:`~sknets._optim.StackedSGD`),
- its stopping state (scikit-learn's rules, :func:`~sknets._epochs.epoch_rules`,
  member by member; a member that stopped or reached its last epoch count
  is frozen: its learning rate is zero from then on),
- its validation rows (``early_stopping``) and best weights.

- its dropout masks, drawn from a generator of its own in the state its own
  ``fit`` has after initialization, as its ``nn.Dropout`` layers would
  draw them (on the CPU; on a GPU seeded by its seed instead).

:func:`train_members` returns, for every member and every epoch count it was
asked for, the :class:`~sknets._plan.TrainedState` its ``fit`` adopts.
"""

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from skorch.callbacks import Callback
from skorch.helper import predefined_split

from sknets._data import MemberBatches, MemberData
from sknets._engine import USER_INTERRUPT, SkorchNet, _sigint_flag
from sknets._epochs import StoppingState, StopTraining, epoch_rules
from sknets._losses import WeightedLoss, sample_losses, validation_score
from sknets._optim import STACKED_OPTIMIZERS
from sknets._plan import TrainedState

# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class MemberSpec:
    """One member: its plan, its rows of the shared data, its epoch counts.

    Attributes
    ----------
    plan : TrainingPlan
        The plan of the member's own ``fit`` (seeds, learning rate, penalty,
        stopping rules, ...).
    rows : ndarray of int
        Its training rows in the stacked data (in its own ``fit``'s order).
    valid_rows : ndarray of int or None
        Its validation rows (``early_stopping``).
    epochs : tuple of int
        The epoch counts to hand over, increasing; the last ends its run.
    """

    plan: object
    rows: np.ndarray
    valid_rows: np.ndarray | None
    epochs: tuple


def stack_key(plan):
    """What members must share to be trained as one (besides the module shape)."""
    kwargs = {k: v for k, v in plan.optimizer_kwargs.items() if k != "fused"}
    return (
        plan.optimizer.__name__,
        tuple(sorted((k, repr(v)) for k, v in kwargs.items())),
        plan.batch_size,
        plan.shuffle,
        plan.out_activation,
        plan.stopping.score,
        plan.stopping.stochastic,
        len(plan.phases),
        str(plan.dtype),
        str(plan.device),
        plan.forward_compile is None and not plan.autocast,
    )


def can_stack(plan):
    """Whether a plan's run can be a member (stochastic, one phase, first pass)."""
    return (
        plan.stopping.stochastic
        and plan.first_pass
        and not plan.incremental
        and len(plan.phases) == 1
        and plan.forward_compile is None
        and not plan.autocast
        and plan.optimizer in STACKED_OPTIMIZERS
    )


# --------------------------------------------------------------------------- loss


class MemberLoss(torch.nn.Module):
    """Each member's weighted mean loss: a ``(members,)`` tensor.

    ``y_true`` is ``(y, w, counts)`` of a :class:`MemberBatches` batch;
    padding rows have weight 0, and a member without rows has loss 0.
    """

    def __init__(self, out_activation="identity"):
        super().__init__()
        self.out_activation = out_activation

    def forward(self, raw, y_true):
        y, w, _ = y_true
        M, B = raw.shape[:2]
        losses = sample_losses(
            raw.reshape(M * B, *raw.shape[2:]),
            y.reshape(M * B, *y.shape[2:]),
            self.out_activation,
        ).reshape(M, B)
        total = w.sum(1)
        return (w * losses).sum(1) / total.clamp_min(torch.finfo(total.dtype).tiny)


class MembersNet(SkorchNet):
    """skorch net of a :class:`~sknets.modules.StackedMLP`: members trained as one.

    Parameters
    ----------
    member_alpha, member_l1_ratio : sequence of float
        Each member's penalty (``alpha / 2 * ||W||^2 / n`` per batch, mixed
        with L1 by ``l1_ratio``, as :class:`~sknets._engine.SkorchNet`).
    **kwargs
        As :class:`~sknets._engine.SkorchNet`.
    """

    def __init__(self, module, *args, member_alpha=(), member_l1_ratio=(), **kwargs):
        super().__init__(module, *args, **kwargs)
        self.member_alpha = member_alpha
        self.member_l1_ratio = member_l1_ratio

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The sum of the members' losses (each with its penalty when training)."""
        per_member = self.criterion_(y_pred, y_true)
        if training:
            per_member = per_member + self.member_penalty(y_true[1].sum(1))
        self.__dict__["_member_losses"] = per_member.detach()
        return per_member.sum()

    def member_penalty(self, n):
        """Each member's penalty for a batch of total weight ``n`` (0 if empty)."""
        coefs = self.__dict__.get("_coefs")
        like = self.module_.weights[0]
        if coefs is None or coefs[0].device != like.device:
            kw = {"dtype": like.dtype, "device": like.device}
            alpha = torch.as_tensor(self.member_alpha, **kw)
            l1 = torch.as_tensor(self.member_l1_ratio, **kw)
            coefs = (
                0.5 * (1.0 - l1) * alpha,
                l1 * alpha,
                bool((alpha > 0).any()),
                bool(((l1 < 1) & (alpha > 0)).any()),
                bool(((l1 > 0) & (alpha > 0)).any()),
            )
            self.__dict__["_coefs"] = coefs
        l2, l1, any_penalty, any_l2, any_l1 = coefs
        if not any_penalty:
            return torch.zeros_like(n)
        weights = self.module_.penalized()
        value = 0.0
        if any_l2:
            value = l2 * sum((W * W).sum((1, 2)) for W in weights)
        if any_l1:
            value = value + l1 * sum(W.abs().sum((1, 2)) for W in weights)
        return torch.where(n > 0, value / n.clamp_min(torch.finfo(n.dtype).tiny), 0.0)

    def train_step_single(self, batch, **fit_params):
        """skorch's step; members without rows in this batch do not step."""
        self.optimizer_.active = batch[1][2] > 0
        self.module_.row_counts = batch[1][2]  # dropout masks over real rows
        step = super().train_step_single(batch, **fit_params)
        step["member_losses"] = self.__dict__.pop("_member_losses")
        return step

    def validation_step(self, batch, **fit_params):
        """skorch's validation step, with each member's loss."""
        step = super().validation_step(batch, **fit_params)
        step["member_losses"] = self.__dict__.pop("_member_losses")
        return step

    def keep_members(self, index):
        """Keep the members ``index`` only: module, optimizer and penalties."""
        index = list(index)
        self.member_alpha = [self.member_alpha[i] for i in index]
        self.member_l1_ratio = [self.member_l1_ratio[i] for i in index]
        self.__dict__.pop("_coefs", None)
        self.module_.keep_members(index)
        self.optimizer_ = self.optimizer_.kept(index, self.module_.parameters())

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_member_losses", None)
        state.pop("_coefs", None)
        return state


# --------------------------------------------------------------------------- monitor


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
        """Keep the members ``index`` only (their results stay with the run)."""
        for name in ("specs", "states", "rows", "results", "live", "n_train"):
            values = getattr(self, name)
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

    def _validate(self, net, m):
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
        optimizer = net.optimizer_
        for m, spec in enumerate(self.specs):
            if not self.live[m]:
                continue
            state, rules = self.states[m], spec.plan.stopping
            state.t += self.n_train[m]
            if not math.isfinite(losses[m]):
                self._end(net, m, "diverged", seconds)
                continue
            row = {"epoch": len(self.rows[m]) + 1, "train_loss": losses[m]}
            score = None
            if spec.valid_rows is not None:
                row["valid_loss"], score = self._validate(net, m)
                row["valid_score"] = score
            row["dur"] = time.perf_counter() - self._epoch_start
            self.rows[m].append(row)
            lr = state.learning_rate
            stop, improved, _ = epoch_rules(rules, state, losses[m], score)
            if improved:
                state.best_state = net.module_.member_state(m)
                state.best_epoch = len(self.rows[m])
            if state.learning_rate != lr:
                optimizer.member_lr[m] = state.learning_rate
            epoch = len(self.rows[m])
            if stop:
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


# --------------------------------------------------------------------------- the run


class MemberRun:
    """One skorch run of a stacked network, trained in steps, members dropped.

    :meth:`advance` trains every live member up to an epoch count and
    returns; a later call goes on from there, exactly as one uninterrupted
    run would (the optimizer's moments, the shuffling and dropout generators
    and the stopping states carry over). :meth:`keep` drops members between
    calls (successive halving eliminates candidates this way), so that the
    others train without them.

    Parameters
    ----------
    module : StackedMLP
        The members' initialized networks, stacked (member ``m`` is
        ``specs[m]``).
    specs : list of MemberSpec
        What each member is; they share :func:`stack_key`.
    X, y, sample_weight : ndarray
        The data that the members' rows index (``X`` validated, ``y``
        encoded for the loss).

    Attributes
    ----------
    members : list of int
        The members still in the run (indices into ``specs``).
    results : dict of int to dict
        For every member ever in the run, ``{epoch count: TrainedState}`` of
        the counts it reached.
    epochs : int
        Epochs run so far.
    """

    def __init__(self, module, specs, X, y, sample_weight=None):
        plan = specs[0].plan
        self.specs = list(specs)
        self.members = list(range(len(specs)))
        self.epochs = 0
        self.data = MemberData(
            X,
            y,
            sample_weight,
            rows=[s.rows for s in specs],
            device=plan.device,
            dtype=plan.dtype,
            generators=[
                torch.Generator().manual_seed(int(s.plan.shuffle_seed)) for s in specs
            ],
        )
        self.valid = None
        if any(s.valid_rows is not None for s in specs):
            self.valid = self.data.with_rows([s.valid_rows for s in specs])
        optimizer = STACKED_OPTIMIZERS[plan.optimizer]
        kwargs = {k: v for k, v in plan.optimizer_kwargs.items() if k != "fused"}
        self.monitor = MemberMonitor(specs)
        self.net = MembersNet(
            module=module.to(device=plan.device, dtype=plan.dtype),
            criterion=MemberLoss,
            criterion__out_activation=plan.out_activation,
            optimizer=optimizer,
            optimizer__member_lr=[s.plan.lr for s in specs],
            **{f"optimizer__{k}": v for k, v in kwargs.items()},
            lr=plan.lr,
            max_epochs=max(s.epochs[-1] for s in specs),
            batch_size=plan.batch_size,
            iterator_train=MemberBatches,
            iterator_train__shuffle=plan.shuffle,
            iterator_valid=MemberBatches,
            iterator_valid__batch_size=4096,
            dataset=MemberData,
            train_split=self._split(),
            callbacks=[("members", self.monitor)],
            # skorch's default callbacks time and average the summed loss:
            # the monitor keeps each member's own history instead
            callbacks__epoch_timer=None,
            callbacks__train_loss=None,
            callbacks__valid_loss=None,
            callbacks__print_log=None,
            device=plan.device,
            verbose=0,
            member_alpha=[s.plan.alpha for s in specs],
            member_l1_ratio=[s.plan.l1_ratio for s in specs],
        )
        self.net.initialize()
        self._results = {}

    def _split(self):
        return None if self.valid is None else predefined_split(self.valid)

    @property
    def results(self):
        out = dict(self._results)
        for position, m in enumerate(self.members):
            out[m] = self.monitor.results[position]
        return out

    @property
    def live(self):
        """Whether any member still trains."""
        return any(self.monitor.live) if hasattr(self.monitor, "live") else True

    def advance(self, epochs=None):
        """Train the live members up to ``epochs`` (default: their last count).

        Raises
        ------
        KeyboardInterrupt
            When the user pressed Ctrl-C (or :data:`USER_INTERRUPT` is set).
        """
        last = max(self.specs[m].epochs[-1] for m in self.members)
        epochs = last if epochs is None else min(int(epochs), last)
        if epochs > self.epochs and self.live:
            with _sigint_flag() as flag:
                self.net.partial_fit(self.data, None, epochs=epochs - self.epochs)
            if flag["interrupted"] or USER_INTERRUPT.is_set():
                raise KeyboardInterrupt("Training interrupted by the user.")
            self.epochs = epochs
        return self

    def keep(self, members):
        """Go on with the members ``members`` (indices into ``specs``) only."""
        keep = [m for m in self.members if m in set(members)]
        if keep == self.members:
            return self
        index = [self.members.index(m) for m in keep]
        for position, m in enumerate(self.members):
            if m not in keep:
                self._results[m] = self.monitor.results[position]
        self.members = keep
        if not keep:
            return self
        self.monitor.keep_members(index)
        self.net.keep_members(index)
        data = self.data
        self.data = data.with_rows(
            [data.rows[i] for i in index], [data.generators[i] for i in index]
        )
        if self.valid is not None:
            self.valid = self.valid.with_rows(
                [self.valid.rows[i] for i in index], self.data.generators
            )
            self.net.train_split = self._split()
        return self


def train_members(module, specs, X, y, sample_weight=None):
    """Train the members of ``module`` in one run, to their last epoch counts.

    The arguments are :class:`MemberRun`'s. Returns, for member ``m``,
    ``{epoch count: TrainedState}``.
    """
    run = MemberRun(module, specs, X, y, sample_weight).advance()
    results = run.results
    return [results[m] for m in range(len(specs))]
