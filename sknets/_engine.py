"""The training engine: skorch, configured through its public API.

skorch runs the loop (``NeuralNet.partial_fit`` -> ``fit_loop``: epochs,
train and validation steps, optimizer calls, callbacks, history). A sknets
estimator resolves its parameters into a :class:`~sknets._plan.TrainingPlan`
and :func:`build_net` turns the plan into constructor arguments of
:class:`SkorchNet`; nothing is set on the net after it is built. What sknets
contributes, each through a door skorch documents (the data in
:mod:`sknets._data`, the losses in :mod:`sknets._losses`, the epoch rules and
callbacks in :mod:`sknets._epochs`, the net and the run here):

- ``dataset=ArrayDataset``, ``iterator_train=BatchIterator`` (and
  ``iterator_valid``): whole batches sliced out of tensors placed on the device
  once, sparse rows handed over as CSR batches or densified one batch at a
  time; never one ``__getitem__`` call per sample. The same classes serve
  ``net_.predict`` / ``net_.predict_proba`` on new data.
- ``criterion=WeightedLoss`` and :meth:`SkorchNet.get_loss`: the weighted mean
  of scikit-learn's per-sample losses plus an elastic-net penalty on weights
  (not biases); ``predict_nonlinearity=Probabilities``.
- ``train_split=predefined_split(...)``: the plan's validation rows.
- named callbacks: ``'phases'`` (:class:`PhaseSwitch`: learning rate and
  frozen backbone per phase, in the manner of skorch's ``Unfreezer``) and
  ``'monitor'`` (:class:`EpochMonitor`: scikit-learn's stopping rules, SGD
  schedules, validation score, divergence guard, ``verbose`` lines), after
  skorch's default ones (``print_log`` off).
- :func:`train`: ``partial_fit`` with Ctrl-C told apart from a callback's stop:
  a SIGINT is re-raised after skorch has ended the loop cleanly.
"""

import signal
import threading
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.dataset import get_len
from skorch.helper import predefined_split
from torch import nn

from sknets._data import ArrayDataset, BatchIterator
from sknets._epochs import USER_INTERRUPT, EpochMonitor, PhaseSwitch
from sknets._losses import Probabilities, WeightedLoss, penalized_weights
from sknets.modules._products import blas_threads

# torch's global generator is one per process: threads that seed and draw from
# it (initializations, dropout masks) take turns (see :func:`seeded`)
RNG_LOCK = threading.RLock()


@contextmanager
def seeded(seed=None, devices=()):
    """torch's global RNG for this thread alone: forked, seeded, then restored.

    Holds :data:`RNG_LOCK`, so that fits running in threads (a search's
    ``threading`` backend) neither interleave their draws nor restore each
    other's generator state.
    """
    with RNG_LOCK, torch.random.fork_rng(devices=list(devices)):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield


def draws_random(module):
    """Whether training ``module`` draws from torch's global RNG (dropout)."""
    kinds = (
        nn.Dropout,
        nn.Dropout1d,
        nn.Dropout2d,
        nn.Dropout3d,
        nn.AlphaDropout,
        nn.FeatureAlphaDropout,
    )
    return any(isinstance(m, kinds) and m.p > 0 for m in module.modules())


# --------------------------------------------------------------------------- the net


class _LastStepAccumulator:
    """Keep the last closure evaluation (LBFGS calls the closure many times)."""

    def __init__(self):
        self.step = None

    def store_step(self, step):
        self.step = step

    def get_step(self):
        return self.step


class SkorchNet(NeuralNet):
    """skorch ``NeuralNet`` for one network or a stack of members, trained alike.

    The one training engine of sknets: a standalone fit's network and a
    search's stacked members (:class:`~sknets.modules.StackedMLP`, batches of
    ``(members, rows, features)`` from :class:`~sknets._data.MemberBatches`)
    go through the same epoch loop (:meth:`run_single_epoch`), the same step
    (skorch's ``train_step``, :meth:`train_step_single`), the same loss
    (:meth:`get_loss`: the criterion's weighted mean, one per member when
    stacked, plus :meth:`penalty`) and the same stopping rules
    (:func:`~sknets._epochs.end_epoch`, applied by the ``'monitor'`` callback
    of either kind). A stack's loss is the sum of its members' losses, so their
    gradients never mix.

    Parameters
    ----------
    module, criterion, ... : see ``skorch.NeuralNet``
        Everything skorch takes; :func:`build_net` (one network) and
        :class:`~sknets._members.MemberRun` (a stack) pass them from plans.
    alpha : float or sequence of float, default=0.0
        Strength of the penalty on weights, scaled as scikit-learn's MLP does
        (``alpha / 2 * ||W||^2 / n`` per batch of total weight ``n``); one per
        member for a stack.
    l1_ratio : float or sequence of float, default=0.0
        Share of L1 in the penalty (elastic net); one per member for a stack.
    forward_compile : dict or None, default=None
        Keyword arguments of ``torch.compile`` for the forward passes (the
        compiled wrapper is built on first use and never pickled), or None.
    autocast : bool, default=False
        Run forward passes under bfloat16 autocast; losses and outputs stay
        in the module's precision.
    """

    def __init__(
        self,
        module,
        *args,
        alpha=0.0,
        l1_ratio=0.0,
        forward_compile=None,
        autocast=False,
        **kwargs,
    ):
        super().__init__(module, *args, **kwargs)
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.forward_compile = forward_compile
        self.autocast = autocast

    @property
    def stacked(self):
        """Whether the module is a stack of members (one loss per member)."""
        return hasattr(self.module_, "n_members")

    def forward_module(self):
        """``module_``, or its ``torch.compile`` wrapper (built once, not pickled)."""
        if self.forward_compile is None:
            return self.module_
        options = dict(self.forward_compile)
        cached = self.__dict__.get("_compiled")
        if cached is None or cached[0] is not self.module_ or cached[1] != options:
            cached = (self.module_, options, torch.compile(self.module_, **options))
            self.__dict__["_compiled"] = cached
        return cached[2]

    def infer(self, x, **fit_params):
        """Forward pass of one batch (compiled and autocast when asked)."""
        if x.device != torch.device(self.device):
            x = x.to(self.device)
        # sparse CSR batches go through scipy: nothing to compile there
        compiled = x.layout == torch.strided
        forward = self.forward_module() if compiled else self.module_
        if not self.autocast:
            return forward(x, **fit_params)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = forward(x, **fit_params)
        # losses and probabilities in the module's own precision
        return out.to(next(self.module_.parameters()).dtype)

    def __getstate__(self):
        state = super().__getstate__()
        for cache in ("_compiled", "_penalty", "_member_losses", "_hooks"):
            state.pop(cache, None)
        return state

    def get_train_step_accumulator(self):
        if isinstance(self.optimizer_, torch.optim.LBFGS):
            return _LastStepAccumulator()
        return super().get_train_step_accumulator()

    # ------------------------------------------------------------------ epochs

    def _hooked(self, name):
        """Whether a subclass of this net or any callback acts on ``name``."""
        if getattr(type(self), name) is not getattr(NeuralNet, name):
            return True
        base = getattr(Callback, name)
        return any(
            getattr(getattr(cb, name, None), "__func__", None) is not base
            for _, cb in self.callbacks_
        )

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """skorch's epoch of ``step_fn`` over ``iterator``, batch by batch.

        As skorch's: ``on_batch_begin``/``on_batch_end`` around each step,
        the batch loss and size in the history, the batch count; but a stack
        records no batch loss or size (its summed loss is no member's: each
        member's is in ``step["member_losses"]``), and then the batch events
        are sent only when a callback acts on them (the history's batch
        entries, opened by skorch's ``on_batch_begin``, stay empty).
        """
        if iterator is None:
            return
        record = not self.stacked
        begin = record or self._hooked("on_batch_begin")
        end = self._hooked("on_batch_end")
        count = 0
        for batch in iterator:
            if begin:  # the net's own opens the history's batch entry
                self.notify("on_batch_begin", batch=batch, training=training)
            step = step_fn(batch, **fit_params)
            if record:
                self.history.record_batch(prefix + "_loss", step["loss"].item())
                self.history.record_batch(prefix + "_batch_size", get_len(batch[0]))
            if end:
                self.notify("on_batch_end", batch=batch, training=training, **step)
            count += 1
        self.history.record(prefix + "_batch_count", count)

    def train_step_single(self, batch, **fit_params):
        """skorch's step; in a stack, members without rows in it do not step."""
        if self.stacked:
            counts = batch[1][2]
            self.optimizer_.active = counts > 0
            self.module_.row_counts = counts  # dropout masks over real rows
        return self._with_members(super().train_step_single(batch, **fit_params))

    def validation_step(self, batch, **fit_params):
        """skorch's validation step (with each member's loss in a stack)."""
        return self._with_members(super().validation_step(batch, **fit_params))

    def _with_members(self, step):
        losses = self.__dict__.pop("_member_losses", None)
        if losses is not None:
            step["member_losses"] = losses
        return step

    # ------------------------------------------------------------------ loss

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion's weighted mean loss, plus the penalty when training.

        A stack's criterion gives one loss per member; each gets its own
        penalty, and the loss is their sum.
        """
        loss = self.criterion_(y_pred, y_true)
        if training:
            w = y_true[1]
            if loss.dim():  # per member: each member's total weight
                loss = loss + self.penalty(w.sum(1))
            elif any(c is not None for c in self._penalty_terms()[1:]):
                loss = loss + self.penalty(len(y_true[0]) if w is None else w.sum())
        if loss.dim():
            self.__dict__["_member_losses"] = loss.detach()
            loss = loss.sum()
        return loss

    def _penalty_terms(self):
        """``(weights, l2, l1)``, a coefficient None where nothing is penalized.

        Floats for one network, ``(members,)`` tensors for a stack; the
        module is walked once (cached, not pickled).
        """
        cached = self.__dict__.get("_penalty")
        if cached is not None and cached[0] is self.module_:
            return cached[1]
        weights = penalized_weights(self.module_)
        if np.ndim(self.alpha) == 0:
            alpha, ratio = float(self.alpha), float(self.l1_ratio)
            with_l2, with_l1 = alpha > 0 and ratio < 1, alpha > 0 and ratio > 0
        else:
            kw = {"dtype": weights[0].dtype, "device": weights[0].device}
            alpha = torch.as_tensor(self.alpha, **kw)
            ratio = torch.as_tensor(self.l1_ratio, **kw)
            with_l2 = bool(((alpha > 0) & (ratio < 1)).any())
            with_l1 = bool(((alpha > 0) & (ratio > 0)).any())
        terms = (
            weights,
            0.5 * (1.0 - ratio) * alpha if with_l2 else None,
            ratio * alpha if with_l1 else None,
        )
        self.__dict__["_penalty"] = (self.module_, terms)
        return terms

    def penalty(self, n):
        """scikit-learn's ``alpha/2 * ||W||^2 / n``, mixed with L1 by ``l1_ratio``.

        ``n`` is the batch's total weight; for a stack, each member's
        ``(members,)`` (a member without rows gets 0).
        """
        weights, l2, l1 = self._penalty_terms()
        members = isinstance(n, torch.Tensor) and n.dim() > 0
        if members:
            weights = list(weights)

            def total(t):
                return t.sum((1, 2))
        else:
            weights = [p for p in weights if p.requires_grad]  # phases freeze some

            def total(t):
                return t.sum()

        value = 0.0
        if l2 is not None:
            value = l2 * sum(total(W * W) for W in weights)
        if l1 is not None:
            value = value + l1 * sum(total(W.abs()) for W in weights)
        if not members:
            return value / n
        if l2 is None and l1 is None:
            return torch.zeros_like(n)
        return torch.where(n > 0, value / n.clamp_min(torch.finfo(n.dtype).tiny), 0.0)

    # ------------------------------------------------------------------ stacks

    def keep_members(self, index):
        """Keep the members ``index`` only: module, optimizer and penalties."""
        index = list(index)
        self.alpha = [self.alpha[i] for i in index]
        self.l1_ratio = [self.l1_ratio[i] for i in index]
        self.__dict__.pop("_penalty", None)
        self.module_.keep_members(index)
        self.optimizer_ = self.optimizer_.kept(index, self.module_.parameters())


# --------------------------------------------------------------------------- the run


def build_net(
    plan,
    module,
    *,
    state,
    valid_batch_size,
    sparse_batches=False,
    valid=None,
    epoch_callback=None,
    previous=None,
    epoch_scorer=None,
    extra_callbacks=(),
):
    """The skorch net that carries out ``plan``, from constructor arguments only.

    Parameters
    ----------
    plan : TrainingPlan
        What to do.
    module : torch.nn.Module
        A new module (first pass) or the fitted one (continuing).
    state : StoppingState
        Where the stopping rules start.
    valid_batch_size : int
        Rows per validation and prediction batch.
    sparse_batches : bool
        The module takes CSR batches (``net_.predict`` on sparse input).
    valid : ArrayDataset or None
        The validation rows (``train_split=predefined_split(valid)``).
    epoch_callback : callable or None
        See :class:`EpochMonitor`.
    previous : SkorchNet or None
        The fitted net that this call continues: its history goes on, and
        ``partial_fit`` goes on from its optimizer's state.
    epoch_scorer : callable or None
        ``epoch_scorer(net) -> float``: the validation score of each epoch
        (the estimator's ``scoring``), instead of accuracy or R^2.
    extra_callbacks : sequence of (name, skorch callback)
        Run after sknets' own (e.g. scikit-learn's epoch tasks).

    Returns
    -------
    net : SkorchNet
        Initialized, ready for :func:`train`.
    """
    monitor = EpochMonitor(
        plan.stopping,
        state,
        plan.out_activation,
        plan.verbose,
        epoch_callback,
        epoch_scorer,
    )
    optimizer_kwargs = {f"optimizer__{k}": v for k, v in plan.optimizer_kwargs.items()}
    net = SkorchNet(
        module=module,
        criterion=WeightedLoss,
        criterion__out_activation=plan.out_activation,
        criterion__label_smoothing=plan.label_smoothing,
        optimizer=plan.optimizer,
        lr=plan.lr,
        max_epochs=plan.epochs,
        batch_size=plan.batch_size,
        iterator_train=BatchIterator,
        iterator_train__shuffle=plan.shuffle,
        iterator_train__seed=plan.shuffle_seed,
        iterator_valid=BatchIterator,
        iterator_valid__batch_size=valid_batch_size,
        dataset=ArrayDataset,
        dataset__dtype=plan.dtype,
        dataset__lazy=True,
        dataset__sparse_batches=sparse_batches,
        train_split=None if valid is None else predefined_split(valid),
        callbacks=[
            (
                "phases",
                PhaseSwitch(
                    plan.phases, keep_lr=not plan.first_pass and plan.incremental
                ),
            ),
            ("monitor", monitor),
            *plan.callbacks,  # the user's, after ours
            *extra_callbacks,
        ],
        callbacks__print_log=None,  # EpochMonitor prints (verbose)
        predict_nonlinearity=Probabilities(plan.out_activation),
        device=plan.device,
        verbose=0,
        alpha=plan.alpha,
        l1_ratio=plan.l1_ratio,
        forward_compile=(
            None if plan.forward_compile is None else dict(plan.forward_compile)
        ),
        autocast=plan.autocast,
        **optimizer_kwargs,
    )
    net.initialize()
    if previous is not None:
        net.history = previous.history
        if plan.incremental:
            net.optimizer_.load_state_dict(previous.optimizer_.state_dict())
    return net


@contextmanager
def _sigint_flag():
    """Note a Ctrl-C (SIGINT) while training, then let it do what it does.

    The handler that was there before still runs (Python's raises
    ``KeyboardInterrupt``, which skorch's ``partial_fit`` catches to end the
    loop cleanly); the flag says that the interrupt came from the user, not
    from a callback, and :data:`USER_INTERRUPT` tells training threads. Outside
    the main thread signals cannot be handled, and nothing changes.
    """
    flag = {"interrupted": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    USER_INTERRUPT.clear()
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN or previous is None:
        yield flag
        return

    def handler(signum, frame):
        if not callable(previous):  # SIG_DFL: Python would end the process
            flag["interrupted"] = True
            USER_INTERRUPT.set()
            raise KeyboardInterrupt
        try:
            previous(signum, frame)
        except KeyboardInterrupt:
            flag["interrupted"] = True
            USER_INTERRUPT.set()
            raise

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def run_epochs(net, dataset, epochs=None):
    """skorch's ``partial_fit`` for ``epochs``; True when a Ctrl-C cut it short.

    The one way sknets runs epochs, for one network (:func:`train`) and for a
    stack (:meth:`~sknets._members.MemberRun.advance`): ``epochs`` None runs
    the net's ``max_epochs``. A stop requested by a callback
    (``KeyboardInterrupt`` raised by a monitor, or by skorch's own
    ``EarlyStopping``) ends training normally, as skorch intends; a user's
    Ctrl-C also ends skorch's loop cleanly, and is reported (see
    :func:`_sigint_flag`). Running out of device memory says what to change.
    A stack's products run on torch's thread count (``blas_threads``).
    """
    with _sigint_flag() as flag, blas_threads if net.stacked else nullcontext():
        try:
            net.partial_fit(dataset, None, epochs=epochs)
        except torch.OutOfMemoryError as exc:
            raise torch.OutOfMemoryError(
                f"{net.device} ran out of memory while training with batch_size="
                f"{net.batch_size}. Use a smaller batch_size, a smaller network, "
                f"dtype='float32', or device='cpu'. ({exc})"
            ) from exc
    return flag["interrupted"]


def train(net, dataset):
    """Train one network to its plan's end; True when Ctrl-C cut it short.

    :func:`run_epochs`, then the epoch that was cut short (if any) is dropped
    from the history, so that the caller can keep the completed epochs and
    re-raise the interrupt.
    """
    start = len(net.history)
    interrupted = run_epochs(net, dataset)
    monitor = dict(net.callbacks_)["monitor"]
    del net.history[start + monitor.epochs_run :]  # an epoch cut short, if any
    return interrupted


class Rollback:
    """Weights and optimizer state of a fitted net, to undo a failed continuation.

    A continuing fit trains the fitted module in place, and ``partial_fit``
    steps optimizer state that it shares with the fitted net. :meth:`save`
    copies those tensors into buffers allocated on the first call and reused
    afterwards (``copy_``: no allocation and no deep copy per ``partial_fit``);
    :meth:`restore` copies them back in place. Held by the estimator, never
    pickled.
    """

    def __init__(self):
        self._buffers = None

    @staticmethod
    def _tensors(net):
        tensors = list(net.module_.state_dict(keep_vars=True).values())
        for state in net.optimizer_.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        return [t.detach() for t in tensors]

    def save(self, net):
        """Remember ``net``'s weights and optimizer state."""
        tensors = self._tensors(net)
        buffers = self._buffers
        if (
            buffers is not None
            and len(buffers) == len(tensors)
            and all(
                b.shape == t.shape and b.dtype == t.dtype and b.device == t.device
                for b, t in zip(buffers, tensors, strict=True)
            )
        ):
            for b, t in zip(buffers, tensors, strict=True):
                b.copy_(t)
        else:
            self._buffers = [t.clone() for t in tensors]
        return self

    def restore(self, net):
        """Put the remembered weights and optimizer state back in place."""
        with torch.no_grad():
            for t, b in zip(self._tensors(net), self._buffers, strict=True):
                t.copy_(b)
