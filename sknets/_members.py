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
  (per-member learning rates in :class:`StackedAdam`/:class:`StackedSGD`),
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
from torch.optim.adam import adam as torch_adam

from sknets._compat import fused_adam
from sknets._data import as_tensor
from sknets._engine import USER_INTERRUPT, SkorchNet, _sigint_flag
from sknets._epochs import StoppingState, StopTraining, epoch_rules
from sknets._losses import WeightedLoss, sample_losses, validation_score
from sknets._optim import SGD, Adam, _evaluate
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


# --------------------------------------------------------------------------- data


class MemberData(torch.utils.data.Dataset):
    """Every member's rows of one placed copy of the data.

    ``X``, ``y`` and the sample weights are whole tensors on the device; each
    member sees the rows ``rows[m]`` of them, shuffled by ``generators[m]``
    (its own, kept across epochs and ``fit_loop`` calls; None: seeded 0).
    :class:`MemberBatches` takes ``(members, batch)`` index matrices out of it.
    """

    def __init__(
        self, X, y, sample_weight=None, *, rows, device, dtype, generators=None
    ):
        self.device, self.dtype = torch.device(device), dtype
        self.X = as_tensor(X, dtype, self.device)
        self.y = as_tensor(y, None, self.device)
        self.w = (
            None
            if sample_weight is None
            else as_tensor(sample_weight, dtype, self.device)
        )
        self.rows = [
            torch.as_tensor(np.asarray(r, dtype=np.int64), device=self.device)
            for r in rows
        ]
        if generators is None:
            generators = [torch.Generator().manual_seed(0) for _ in rows]
        self.generators = list(generators)

    def with_rows(self, rows, generators=None):
        """The same tensors, other rows per member (e.g. validation rows)."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        if generators is not None:
            view.generators = list(generators)
        view.rows = [
            r.to(self.device)
            if isinstance(r, torch.Tensor)
            else torch.as_tensor(
                np.asarray([] if r is None else r, dtype=np.int64), device=self.device
            )
            for r in rows
        ]
        return view

    def __len__(self):
        return max(len(r) for r in self.rows)

    def __getitem__(self, i):  # pragma: no cover - batches only
        raise NotImplementedError("MemberData is read in (members, rows) batches")

    def take(self, index, mask):
        """``(X, (y, w, counts))`` for an index matrix and its 0/1 row mask."""
        flat = index.reshape(-1)  # index_select: twice as fast as X[index]
        Xb = self.X.index_select(0, flat).view(*index.shape, *self.X.shape[1:])
        yb = self.y.index_select(0, flat).view(*index.shape, *self.y.shape[1:])
        wb = mask
        if self.w is not None:
            wb = mask * self.w.index_select(0, flat).view(index.shape)
        return Xb, (yb, wb, mask.sum(1))


class MemberBatches:
    """Batches of every member at once: its rows in its own order.

    Each member's rows are permuted in every pass (``shuffle``) by its own
    generator, seeded as its standalone fit's, so member ``m`` sees exactly
    the batches of its own ``fit``. skorch builds one iterator per
    ``fit_loop``; the generators are the dataset's (``dataset.generators``),
    so that a run resumed in several ``fit_loop`` calls goes on drawing where
    it stopped. Step ``k`` holds rows ``k * batch_size`` to ``(k + 1) *
    batch_size`` of every member's order; members with fewer rows are padded
    with zero-weight rows.
    """

    def __init__(self, dataset, batch_size, shuffle=False):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generators = dataset.generators

    def __len__(self):
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        ds, size = self.dataset, self.batch_size
        orders = []
        for rows, gen in zip(ds.rows, self.generators, strict=True):
            if self.shuffle and len(rows) > 1:
                rows = rows[torch.randperm(len(rows), generator=gen).to(rows.device)]
            orders.append(rows)
        counts = [len(o) for o in orders]
        longest = max(counts)
        if min(counts) == longest:  # one matrix, no padding
            index = torch.stack(orders)
            full = torch.ones(index.shape, dtype=ds.dtype, device=ds.device)
            for start in range(0, longest, size):
                yield ds.take(
                    index[:, start : start + size],
                    full[:, : min(size, longest - start)],
                )
            return
        index = torch.zeros((len(orders), longest), dtype=torch.int64, device=ds.device)
        mask = torch.zeros((len(orders), longest), dtype=ds.dtype, device=ds.device)
        for m, order in enumerate(orders):
            index[m, : len(order)] = order
            mask[m, : len(order)] = 1
        for start in range(0, longest, size):
            yield ds.take(index[:, start : start + size], mask[:, start : start + size])


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


# --------------------------------------------------------------------------- optimizers


class _StackedOptimizer(torch.optim.Optimizer):
    """Per-member learning rates (``member_lr``) and steps for stacked weights.

    Every parameter's first dimension is the member. ``active`` (set by the
    net before each step) says which members had rows in the batch; ``live``
    which members still train. The others neither move nor advance their
    state.
    """

    def __init__(self, params, lr, member_lr, defaults):
        super().__init__(params, dict(lr=lr, **defaults))
        self._settings = dict(lr=lr, **defaults)
        first = self.param_groups[0]["params"][0]
        kw = {"dtype": first.dtype, "device": first.device}
        self.member_lr = torch.as_tensor(member_lr, **kw).clone()
        self.live = torch.ones(len(member_lr), dtype=torch.bool, device=first.device)
        self.active = self.live.clone()
        self.steps = torch.zeros(len(member_lr), dtype=torch.int64, device=first.device)

    def add_param_group(self, param_group):
        """Add a group of plain tensors (what skorch passes), torch's defaults.

        torch's own ``add_param_group`` and ``zero_grad`` are wrapped in a
        dynamo guard that imports ``torch._dynamo`` (1-1.5 s) on first use; a
        stacked run needs neither its checks for named or duplicated
        parameters nor the import.
        """
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if not all(isinstance(p, torch.Tensor) and p.is_leaf for p in params):
            raise TypeError("a stacked optimizer takes leaf tensors only")
        group = {**self.defaults, **param_group, "params": params}
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Drop (or zero) every parameter's gradient, as torch's."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def _moving(self):
        moving = self.active & self.live
        self.steps += moving
        return moving, bool(moving.all())

    @staticmethod
    def _per_member(values, p):
        return values.view((-1,) + (1,) * (p.dim() - 1))

    def kept(self, index, params):
        """This optimizer for members ``index`` only, over their ``params``.

        ``params`` are the kept members' parameters in this optimizer's
        order; every per-member state (moments, steps, learning rates,
        momentum buffers) is carried over for them.
        """
        old = self.param_groups[0]["params"]
        params = list(params)
        at = torch.as_tensor(list(index), device=self.member_lr.device)
        new = type(self)(
            params, member_lr=self.member_lr[at].tolist(), **self._settings
        )
        new.member_lr = self.member_lr[at].clone()
        new.live, new.steps = self.live[at].clone(), self.steps[at].clone()
        new.active = new.live.clone()
        for p_old, p_new in zip(old, params, strict=True):
            new.state[p_new] = {
                k: v[at].clone() if v.dim() else v.clone()
                for k, v in self.state.get(p_old, {}).items()
            }
        return new


class StackedAdam(_StackedOptimizer):
    """``torch.optim.Adam`` (no weight decay, no amsgrad), member by member."""

    def __init__(
        self, params, lr=1e-3, member_lr=(1e-3,), betas=(0.9, 0.999), eps=1e-8
    ):
        super().__init__(params, lr, member_lr, {"betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = _evaluate(closure)
        moving, everyone = self._moving()
        uniform = everyone and bool((self.steps == self.steps[0]).all())
        if uniform and bool((self.member_lr == self.member_lr[0]).all()):
            self._torch_step(int(self.steps[0]), float(self.member_lr[0]))
            return loss
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps = group["eps"]
            steps = self.steps
            if uniform:
                n = int(steps[0])
                bc1, bc2_sqrt = 1 - beta1**n, math.sqrt(1 - beta2**n)
            else:
                n = steps.clamp_min(1).to(self.member_lr.dtype)
                bc1, bc2_sqrt = 1 - beta1**n, torch.sqrt(1 - beta2**n)
            step_size = torch.where(moving, self.member_lr / bc1, 0.0)
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                m, v = self._moments(p)
                if everyone:
                    m.lerp_(g, 1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                else:
                    a = self._per_member(moving, p)
                    m.copy_(torch.where(a, m.lerp(g, 1 - beta1), m))
                    v.copy_(torch.where(a, v * beta2 + (1 - beta2) * g * g, v))
                b2 = (
                    bc2_sqrt
                    if isinstance(bc2_sqrt, float)
                    else self._per_member(bc2_sqrt, p)
                )
                denom = (v.sqrt() / b2).add_(eps)
                p.addcdiv_(m * self._per_member(-step_size, p), denom)
        return loss

    def _moments(self, p):
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            # torch's scalar step count, for the steps all members take together
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        return state["exp_avg"], state["exp_avg_sq"]

    def _torch_step(self, n, lr):
        """Every member steps at one learning rate: torch's own (fused) Adam."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            moments = [self._moments(p) for p in params]
            steps = [self.state[p]["step"] for p in params]
            beta1, beta2 = group["betas"]
            kwargs = dict(lr=lr, beta1=beta1, beta2=beta2, eps=group["eps"])
            grads = [p.grad for p in params]
            exp_avgs, exp_avg_sqs = [m for m, _ in moments], [v for _, v in moments]
            for t in steps:
                t.fill_(n - 1)  # the step counts itself, as torch's
            if fused_adam is not None and all(
                p.device.type in ("cpu", "cuda") for p in params
            ):
                fused_adam(params, grads, exp_avgs, exp_avg_sqs, steps, **kwargs)
                continue
            torch_adam(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                foreach=False,
                amsgrad=False,
                weight_decay=0.0,
                maximize=False,
                **kwargs,
            )


class StackedSGD(_StackedOptimizer):
    """``torch.optim.SGD`` (momentum, Nesterov; no damping), member by member."""

    def __init__(
        self, params, lr=1e-3, member_lr=(1e-3,), momentum=0.0, nesterov=False
    ):
        super().__init__(
            params, lr, member_lr, {"momentum": momentum, "nesterov": nesterov}
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = _evaluate(closure)
        moving, _ = self._moving()
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                a = self._per_member(moving, p)
                if mu != 0:
                    state = self.state[p]
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                        state["started"] = torch.zeros_like(moving)
                    buf = state["momentum_buffer"]
                    first = self._per_member(~state["started"], p)
                    buf.copy_(torch.where(a, torch.where(first, g, buf * mu + g), buf))
                    state["started"] |= moving
                    g = g + mu * buf if group["nesterov"] else buf
                lr = self._per_member(torch.where(moving, self.member_lr, 0.0), p)
                p.add_(g * -lr)
        return loss


STACKED_OPTIMIZERS = {Adam: StackedAdam, SGD: StackedSGD}


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
