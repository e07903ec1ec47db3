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

import copy
from dataclasses import dataclass

import numpy as np
import torch
from skorch.helper import predefined_split

from sknets._data import MemberBatches, MemberData
from sknets._engine import SkorchNet, run_epochs
from sknets._epochs import USER_INTERRUPT, MemberMonitor
from sknets._losses import WeightedLoss
from sknets._optim import STACKED_OPTIMIZERS

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
        self.net = SkorchNet(
            module=module.to(device=plan.device, dtype=plan.dtype),
            criterion=WeightedLoss,
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
            alpha=[s.plan.alpha for s in specs],
            l1_ratio=[s.plan.l1_ratio for s in specs],
        )
        self.net.initialize()
        self._results = {}

    def _split(self):
        return None if self.valid is None else predefined_split(self.valid)

    @property
    def results(self):
        out = dict(self._results)
        trained = self.monitor.__dict__.get("results")  # None: not trained yet
        for position, m in enumerate(self.members):
            out[m] = {} if trained is None else trained[position]
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
            interrupted = run_epochs(self.net, self.data, epochs - self.epochs)
            if interrupted or USER_INTERRUPT.is_set():
                raise KeyboardInterrupt("Training interrupted by the user.")
            self.epochs = epochs
        return self

    def keep(self, members):
        """Go on with the members ``members`` (indices into ``specs``) only."""
        wanted = set(members)
        keep = [m for m in self.members if m in wanted]
        if keep == self.members:
            return self
        index = [self.members.index(m) for m in keep]
        results = self.results
        for m in self.members:
            if m not in keep:
                self._results[m] = results[m]
        self.members = keep
        if not keep:
            return self
        self.monitor.keep_members(index)
        self.net.keep_members(index)
        self._keep_rows(self, index)
        return self

    def _keep_rows(self, run, index):
        """Give ``run`` the rows (and generators) of this run's members at ``index``."""
        data, valid = self.data, self.valid
        run.data = data.with_rows(
            [data.member_rows[i] for i in index],
            [data.generators[i] for i in index],
        )
        if valid is not None:
            run.valid = valid.with_rows(
                [valid.member_rows[i] for i in index], run.data.generators
            )
            run.net.train_split = run._split()

    def split(self, members):
        """Move the live members ``members`` to a run of their own, returned.

        The new run goes on for them exactly as this one would have (their
        weights, optimizer moments, shuffling and dropout generators and
        stopping states move with them) and shares this run's data; this run
        keeps the others. Two halves trained side by side (two threads)
        equal the whole trained alone. ``members`` index ``specs``, as
        :attr:`members` does, in both runs.
        """
        wanted = set(members)
        moved = [m for m in self.members if m in wanted]
        index = [self.members.index(m) for m in moved]
        other = copy.copy(self)
        other._results = {}
        other.members = moved
        other.monitor = copy.copy(self.monitor)
        other.monitor.keep_members(index)
        # a shallow copy of the net's attributes (skorch's own copy would
        # pickle the module and optimizer); what a member owns is replaced
        net = object.__new__(type(self.net))
        net.__dict__.update(self.net.__dict__)
        for cache in ("_compiled", "_penalty", "_member_losses"):
            net.__dict__.pop(cache, None)
        generators = self.net.module_.generators or []
        net.module_ = copy.deepcopy(self.net.module_, {id(g): g for g in generators})
        net.module = net.module_
        net.history = copy.deepcopy(self.net.history)
        net.callbacks_ = [
            (name, other.monitor if cb is self.monitor else cb)
            for name, cb in self.net.callbacks_
        ]
        net.callbacks = [("members", other.monitor)]
        net.keep_members(index)
        other.net = net
        self._keep_rows(other, index)
        self.keep([m for m in self.members if m not in wanted])
        for m in moved:  # they go on in ``other``, not dropped here
            self._results.pop(m, None)
        return other


def train_members(module, specs, X, y, sample_weight=None):
    """Train the members of ``module`` in one run, to their last epoch counts.

    The arguments are :class:`MemberRun`'s. Returns, for member ``m``,
    ``{epoch count: TrainedState}``.
    """
    run = MemberRun(module, specs, X, y, sample_weight).advance()
    results = run.results
    return [results[m] for m in range(len(specs))]
