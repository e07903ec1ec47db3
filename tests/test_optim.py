"""sknets' Adam and SGD: torch's optimizers, without the torch._dynamo import."""

import subprocess
import sys
import textwrap

import pytest
import torch

from sknets._optim import SGD, Adam


def _params(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 5), (5,), (5, 3), (3,)]
    return [
        torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes
    ]


def _run(optimizer_class, steps=7, zero_to_none=True, dtype=torch.float64, **kwargs):
    params = _params(dtype=dtype)
    opt = optimizer_class(params, **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad(set_to_none=zero_to_none)
        loss = sum(
            (p * torch.randn(p.shape, generator=g, dtype=p.dtype)).sum() ** 2
            for p in params
        )
        loss.backward()
        opt.step()
    return params, opt


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 1e-2, "fused": True},
        {"lr": 1e-2, "fused": True, "betas": (0.8, 0.99), "eps": 1e-6},
        {"lr": 1e-2},  # not fused: torch's own step
        {"lr": 1e-2, "fused": True, "amsgrad": True},  # torch's own step
        {"lr": 1e-2, "fused": True, "weight_decay": 0.1},
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_is_torch_adam_bit_for_bit(kwargs, dtype):
    ours, opt = _run(Adam, dtype=dtype, **kwargs)
    theirs, ref = _run(torch.optim.Adam, dtype=dtype, **kwargs)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    assert isinstance(opt, torch.optim.Adam)
    state, expected = opt.state_dict(), ref.state_dict()
    assert state["param_groups"] == expected["param_groups"]
    for k, v in expected["state"].items():
        for name, t in v.items():
            assert torch.equal(state["state"][k][name], t), name


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.1, "fused": True},
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "fused": True},
        {"lr": 0.1, "momentum": 0.5},
        {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "fused": True},
    ],
)
@pytest.mark.parametrize("zero_to_none", [True, False])
def test_sgd_is_torch_sgd_bit_for_bit(kwargs, zero_to_none):
    ours, opt = _run(SGD, zero_to_none=zero_to_none, **kwargs)
    theirs, _ = _run(torch.optim.SGD, zero_to_none=zero_to_none, **kwargs)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    assert isinstance(opt, torch.optim.SGD)


def test_parameter_groups_and_errors_are_torch_s():
    a, b = _params()[:2]
    opt = Adam([{"params": [a]}, {"params": b, "lr": 0.5}], lr=0.1, fused=True)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[1]["params"] == [b]
    with pytest.raises(ValueError, match="non-leaf"):
        Adam([a * 2], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    named = Adam([("w", a)], lr=0.1)  # named parameters: torch's own handling
    assert named.param_groups[0]["param_names"] == ["w"]


def test_fits_and_searches_do_not_import_torch_dynamo():
    # torch's own optimizers import torch._dynamo (1-1.5 s) on first use
    code = textwrap.dedent(
        """
        import sys, warnings
        warnings.simplefilter("ignore")
        import torch
        torch.set_num_threads(1)
        from sklearn.datasets import load_digits
        import sknets
        from sknets.model_selection import GridSearchCV
        X, y = load_digits(return_X_y=True)
        X, y = X[:300] / 16, y[:300]
        for solver in ("adam", "sgd"):
            sknets.MLPClassifier(solver=solver, max_iter=3, random_state=0).fit(X, y)
        GridSearchCV(
            sknets.MLPClassifier(max_iter=2, random_state=0),
            {"alpha": [1e-4, 1e-2]}, cv=2, n_jobs=2,
        ).fit(X, y)
        print("torch._dynamo" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_stacked_adam_members_that_do_not_move_keep_still_and_the_others_fused():
    """Members without rows in a batch (``active``) or stopped (``live``) do
    not move nor count the step; the others step as their own fused Adam,
    each at its own count and rate."""
    from sknets._optim import StackedAdam

    rates = [1e-2, 3e-3, 1e-2, 1e-3, 3e-3]
    g = torch.Generator().manual_seed(1)
    shapes = [(6, 4), (4,), (4, 2), (2,)]
    stacked = [
        torch.nn.Parameter(
            torch.randn((len(rates),) + s, generator=g, dtype=torch.float64)
        )
        for s in shapes
    ]
    alone = [
        [torch.nn.Parameter(p[m].detach().clone()) for p in stacked]
        for m in range(len(rates))
    ]
    opt = StackedAdam(stacked, lr=rates[0], member_lr=rates)
    opts = [Adam(ps, lr=r, fused=True) for ps, r in zip(alone, rates, strict=True)]
    for step in range(8):
        active = torch.tensor([step % 2 == 0, True, step % 3 != 1, True, True])
        if step == 4:
            opt.live[3] = False  # member 3 stops for good
        opt.active = active
        grads = [
            torch.randn(p.shape, generator=g, dtype=torch.float64) for p in stacked
        ]
        for p, grad in zip(stacked, grads, strict=True):
            p.grad = grad.clone()
        opt.step()
        for m, ps in enumerate(alone):
            if not (active[m] and opt.live[m]):
                continue
            for p, grad in zip(ps, grads, strict=True):
                p.grad = grad[m].clone()
            opts[m].step()
    for m, ps in enumerate(alone):
        for p, q in zip(ps, stacked, strict=True):
            torch.testing.assert_close(p, q[m].detach(), rtol=0, atol=0)
    assert opt.steps.tolist() == [4, 8, 5, 4, 8]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stacked_adam_steps_each_member_as_its_own_adam(dtype):
    from sknets._optim import StackedAdam

    rates = [1e-2, 3e-3, 1e-2, 1e-3]  # members of one stack, rates mixed
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 5), (5,), (5, 3), (3,)]
    stacked = [
        torch.nn.Parameter(torch.randn((len(rates),) + s, generator=g, dtype=dtype))
        for s in shapes
    ]
    alone = [
        [torch.nn.Parameter(p[m].detach().clone()) for p in stacked]
        for m in range(len(rates))
    ]
    opt = StackedAdam(stacked, lr=rates[0], member_lr=rates, betas=(0.8, 0.99))
    opts = [
        Adam(ps, lr=r, fused=True, betas=(0.8, 0.99))
        for ps, r in zip(alone, rates, strict=True)
    ]
    for _ in range(6):
        grads = [torch.randn(p.shape, generator=g, dtype=dtype) for p in stacked]
        for p, grad in zip(stacked, grads, strict=True):
            p.grad = grad.clone()
        opt.step()
        for m, ps in enumerate(alone):
            for p, grad in zip(ps, grads, strict=True):
                p.grad = grad[m].clone()
            opts[m].step()
    # the same kernel; the vectorized and scalar parts of a slice may differ
    # from those of a tensor of its own in the last bit (float32: 1e-7)
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {}
    for m, ps in enumerate(alone):
        for p, q in zip(ps, stacked, strict=True):
            torch.testing.assert_close(p, q[m].detach(), **tol)
    for p, q in zip(opts[1].param_groups[0]["params"], stacked, strict=True):
        assert torch.equal(
            opts[1].state[p]["exp_avg_sq"], opt.state[q]["exp_avg_sq"][1]
        )
        assert float(opt.state[q]["step"]) == float(opts[1].state[p]["step"]) == 6
