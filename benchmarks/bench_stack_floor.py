"""The float64 floor of a stacked step: a bare torch loop, no skorch, no sknets.

The digits grid of ``bench_search.py`` trains 30 networks per step once
stacked: 3 widths (32, 64, 128) x 2 ``alpha`` x 5 folds, 64 inputs, 10
outputs, batches of 200, Adam. This script times one training step of all of
them in plain torch (fused Adam, one intra-op thread), two ways:

- ``apart``: one stacked product per width, ``(10, 200, 64) @ (10, 64, w)``
  (what sknets does);
- ``concatenated``: one product per fold for all widths, ``(5, 200, 64) @
  (5, 64, 448)``, split afterwards;
- ``apart-blas``: ``apart`` with each product through numpy's BLAS
  (``sknets.modules._products.stacked_affine``, what sknets does on the CPU
  in float64) instead of ``torch.baddbmm`` (MKL).

Printed: milliseconds per step of all 30 networks, the median of
``--rounds`` interleaved rounds of ``--steps`` steps. Multiplied by the 800
steps of the grid (100 epochs x 8 batches) it is the training time that no
implementation of that grid in torch float64 on this CPU goes under.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

S, B, D, C = 5, 200, 64, 10
WIDTHS, ALPHAS = (32, 64, 128), 2


def _param(*shape, dtype):
    return torch.randn(*shape, dtype=dtype).mul_(0.1).requires_grad_()


def stack(X, y, members, width, dtype, batch=B, product=torch.baddbmm):
    """One training step of ``members`` stacked 64-``width``-10 networks.

    Each member's own batch of ``batch`` rows, ``product`` per layer,
    cross-entropy summed over the members' mean losses, fused Adam: a
    stacked step with nothing around it.
    """
    ps = [
        _param(members, D, width, dtype=dtype),
        _param(members, 1, width, dtype=dtype),
        _param(members, width, C, dtype=dtype),
        _param(members, 1, C, dtype=dtype),
    ]
    opt = torch.optim.Adam(ps, fused=True)
    index = torch.randint(0, len(X), (members, batch))
    W1, b1, W2, b2 = ps

    def step():
        h = torch.relu(product(b1, X[index], W1))
        out = product(b2, h, W2)
        loss = F.cross_entropy(
            out.reshape(-1, C), y[index].reshape(-1), reduction="sum"
        )
        opt.zero_grad()
        (loss / batch).backward()
        opt.step()

    return step


def apart(X, y, dtype, product=torch.baddbmm):
    steps = [stack(X, y, S * ALPHAS, w, dtype, product=product) for w in WIDTHS]

    def step():
        for one in steps:
            one()

    return step


def concatenated(X, y, dtype):
    total = ALPHAS * sum(WIDTHS)
    W1, b1 = _param(S, D, total, dtype=dtype), _param(S, 1, total, dtype=dtype)
    W2 = [_param(S * ALPHAS, w, C, dtype=dtype) for w in WIDTHS]
    b2 = [_param(S * ALPHAS, 1, C, dtype=dtype) for w in WIDTHS]
    opt = torch.optim.Adam([W1, b1, *W2, *b2], fused=True)
    index = torch.randint(0, len(X), (S, B))

    def step():
        h = torch.relu(torch.baddbmm(b1, X[index], W1))
        yb = y[index].repeat_interleave(ALPHAS, 0).reshape(-1)
        loss, start = 0.0, 0
        for w, W, b in zip(WIDTHS, W2, b2, strict=True):
            part = h[:, :, start : start + ALPHAS * w]
            start += ALPHAS * w
            part = part.reshape(S, B, ALPHAS, w).transpose(1, 2).reshape(-1, B, w)
            out = torch.baddbmm(b, part, W)
            loss = loss + F.cross_entropy(out.reshape(-1, C), yb, reduction="sum")
        opt.zero_grad()
        (loss / B).backward()
        opt.step()

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    X = torch.randn(7_000, D, dtype=dtype)
    y = torch.randint(0, C, (7_000,))
    from threadpoolctl import threadpool_limits

    from sknets.modules._products import stacked_affine

    threadpool_limits(args.threads, user_api="blas")
    steps = {
        "apart": apart(X, y, dtype),
        "concatenated": concatenated(X, y, dtype),
        "apart-blas": apart(X, y, dtype, product=stacked_affine),
    }
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            for _ in range(5):
                step()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    for name, ts in times.items():
        ms = statistics.median(ts) * 1e3
        print(
            f"{name:13s} {ms:6.1f} ms per step of 30 networks ({args.dtype}, "
            f"{args.threads} thread); x 800 steps = {ms * 0.8:.1f} s"
        )


if __name__ == "__main__":
    main()
