"""torch's Adam and SGD, without the first-use import of ``torch._dynamo``.

``torch.optim.Optimizer.add_param_group`` and ``zero_grad``, and the
functional ``torch.optim.adam.adam`` behind ``Adam.step``, are wrapped in a
guard that imports ``torch._dynamo`` on their first call: 1-1.5 s of one core,
once per process, paid inside the first ``fit`` (and, in a search, by every
pick-up of a trained network). These subclasses are torch's optimizers in
everything else (``isinstance`` holds, the state and its ``state_dict`` are
torch's, every setting torch's): they add plain parameter groups and clear
gradients without the guard, and :class:`Adam` calls torch's fused kernel
itself when the step is a plain fused one (the kernel ``Adam(fused=True)``
runs, so the numbers are torch's, bit for bit).

:class:`StackedAdam` and :class:`StackedSGD` are the same steps for the
stacked members of a search (``sknets._members``): every parameter's first
dimension is the member, each member with its own learning rate and step
count; where every member steps alike they run torch's own fused step.
"""

import math

import torch
from torch.optim.adam import adam as torch_adam

from sknets._compat import fused_adam, fused_sgd


def _evaluate(closure):
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class _Unguarded:
    """``add_param_group``/``zero_grad`` for groups of plain leaf tensors.

    torch's own are wrapped in a dynamo guard that imports ``torch._dynamo``
    (1-1.5 s) on first use; plain groups (what skorch passes, for a single
    network or a stack) need neither its checks for named or duplicated
    parameters nor the import.
    """

    def add_param_group(self, param_group):
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if not params or not all(isinstance(p, torch.Tensor) for p in params):
            # named or odd parameters: torch's own checks and messages
            return super().add_param_group(param_group)
        if not all(p.is_leaf for p in params):
            raise ValueError("can't optimize a non-leaf Tensor")
        group = {**self.defaults, **param_group, "params": params}
        self.param_groups.append(group)

    def _own_step(self):
        """Whether every group's step is a plain fused one (else torch's step)."""
        return not any(
            hasattr(self, name) for name in ("grad_scale", "found_inf")
        ) and all(self._plain(group) for group in self.param_groups)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()


class SGD(_Unguarded, torch.optim.SGD):
    """:class:`torch.optim.SGD`; a plain fused step calls torch's kernel."""

    @staticmethod
    def _plain(group):
        return (
            fused_sgd is not None
            and group["fused"]
            and not group["maximize"]
            and not group["differentiable"]
            and group["weight_decay"] == 0
            and isinstance(group["lr"], float)
        )

    @torch.no_grad()
    def step(self, closure=None):
        if not self._own_step():
            return super().step(closure)
        loss = _evaluate(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                return super().step(closure)  # pragma: no cover - never sparse
            momentum, buffers, first = group["momentum"], [], False
            if momentum != 0:
                buffers = [self.state[p].get("momentum_buffer") for p in params]
                first = all(b is None for b in buffers)
                if first:  # torch's: uninitialized, the kernel fills them
                    buffers = [torch.empty_like(g) for g in grads]
                    for p, b in zip(params, buffers, strict=True):
                        self.state[p]["momentum_buffer"] = b
            fused_sgd(
                params,
                grads,
                buffers,
                lr=group["lr"],
                momentum=momentum,
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                first=first,
            )
        return loss


class Adam(_Unguarded, torch.optim.Adam):
    """:class:`torch.optim.Adam`; a plain fused step calls torch's kernel."""

    @staticmethod
    def _plain(group):
        return (
            fused_adam is not None
            and group["fused"]
            and not group["amsgrad"]
            and not group["maximize"]
            and not group["capturable"]
            and not group["differentiable"]
            and not group.get("decoupled_weight_decay", False)
            and group["weight_decay"] == 0
            and isinstance(group["lr"], float)
            and all(isinstance(b, float) for b in group["betas"])
        )

    @torch.no_grad()
    def step(self, closure=None):
        if not self._own_step():
            return super().step(closure)
        loss = _evaluate(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if not state:  # torch's initial state of a fused step
                    state["step"] = torch.zeros(
                        (), dtype=torch.float32, device=p.device
                    )
                    state["exp_avg"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                    state["exp_avg_sq"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
            states = [self.state[p] for p in params]
            beta1, beta2 = group["betas"]
            fused_adam(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["step"] for s in states],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
            )
        return loss


# --------------------------------------------------------------------------- stacked


class _StackedOptimizer(_Unguarded, torch.optim.Optimizer):
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

    def __getstate__(self):
        # torch's optimizers pickle their defaults, state and groups only: the
        # members' rates, steps and masks go too (a halving search's run moves
        # between worker processes by pickle)
        state = super().__getstate__()
        for name in ("_settings", "member_lr", "live", "active", "steps"):
            state[name] = self.__dict__[name]
        return state

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
        rates = self.member_lr.tolist()
        if uniform and all(r == rates[0] for r in rates):
            self._torch_step(int(self.steps[0]), rates[0])
            return loss
        if self._grouped_step(moving, rates):
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

    def _grouped_step(self, moving, rates):
        """The moving members step, each its own next step at its own rate:
        one fused Adam call per (rate, step count), over the members' slices
        (the kernel a member's own network runs); the others do not move.
        Members stopped early, or without rows in a batch, so keep the fused
        kernel. False where there is no fused kernel for these tensors."""
        if fused_adam is None or not all(
            p.device.type in ("cpu", "cuda")
            for group in self.param_groups
            for p in group["params"]
        ):
            return False
        members = {}
        steps = self.steps.tolist()
        for m in moving.nonzero().flatten().tolist():
            members.setdefault((rates[m], steps[m]), []).append(m)
        if not members:
            return True
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # each tensor's member slices, views: the kernel updates in place
            slices = [
                (
                    p.unbind(0),
                    p.grad.unbind(0),
                    *(t.unbind(0) for t in self._moments(p)),
                )
                for p in params
            ]
            beta1, beta2 = group["betas"]
            for (rate, n), index in members.items():
                lists = [[s[i][m] for s in slices for m in index] for i in range(4)]
                step = torch.full(
                    (), float(n), dtype=torch.float32, device=params[0].device
                )
                fused_adam(
                    *lists,
                    [step] * len(lists[0]),
                    lr=rate,
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                    counted=True,
                )
            counts = {n for _, n in members}
            if len(counts) == 1 and len(moving) == sum(map(len, members.values())):
                (count,) = counts
                for p in params:  # torch's scalar count: all stepped together
                    self.state[p]["step"].fill_(count)
        return True

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
