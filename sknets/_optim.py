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
"""

import torch

from sknets._compat import fused_adam, fused_sgd


def _evaluate(closure):
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class _Unguarded:
    """``add_param_group``/``zero_grad`` for groups of plain leaf tensors."""

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
