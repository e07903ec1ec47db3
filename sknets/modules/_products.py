"""The stacked affine product ``b + x @ W``, member by member.

On the CPU in float64, torch's batched products (MKL's ``dgemm`` per member)
run 1.3-4x slower than numpy's BLAS on the small blocks of a stacked search
(``(200, 64) @ (64, 32)``: 36 us against 16 us on the reference machine, see
``benchmarks/README.md``). :func:`stacked_affine` computes those products with
numpy's ``matmul`` over zero-copy views of the tensors, in a
``torch.autograd.Function`` whose backward is the same three products torch's
own would be; everything else (devices, other dtypes, autocast,
``torch.compile``) takes ``torch.baddbmm``.
"""

import threading

import numpy as np
import torch


def _product(a, b):
    """``a @ b`` of CPU tensors through numpy's BLAS, as a tensor (no copies)."""
    return torch.from_numpy(np.matmul(a.detach().numpy(), b.detach().numpy()))


class _BlasAffine(torch.autograd.Function):
    """``b + x @ W`` for ``(M, n, k) @ (M, k, m)``, its products in numpy's BLAS."""

    @staticmethod
    def forward(ctx, b, x, W):
        ctx.save_for_backward(x, W)
        ctx.bias_shape = b.shape
        out = _product(x, W)
        out += b
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, W = ctx.saved_tensors
        need_b, need_x, need_W = ctx.needs_input_grad
        grad_b = grad.sum_to_size(ctx.bias_shape) if need_b else None
        grad_x = _product(grad, W.transpose(1, 2)) if need_x else None
        grad_W = _product(x.transpose(1, 2), grad) if need_W else None
        return grad_b, grad_x, grad_W


def _through_blas(x, W):
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float64
        and W.dtype == torch.float64
        and x.layout == torch.strided
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def stacked_affine(b, x, W):
    """``b + x @ W`` per member: ``torch.baddbmm(b, x, W)``'s value.

    Parameters
    ----------
    b : torch.Tensor of shape (M, 1, out)
        Each member's bias.
    x : torch.Tensor of shape (M, rows, in)
        Each member's batch.
    W : torch.Tensor of shape (M, in, out)
        Each member's weights.

    Returns
    -------
    torch.Tensor of shape (M, rows, out)
        Equal to ``torch.baddbmm(b, x, W)`` up to float rounding; on the CPU
        in float64 the products go through numpy's BLAS (see the module's
        docstring), elsewhere through ``torch.baddbmm``.

    Examples
    --------
    >>> import torch
    >>> from sknets.modules._products import stacked_affine
    >>> b = torch.zeros(2, 1, 3, dtype=torch.float64)
    >>> x = torch.ones(2, 4, 5, dtype=torch.float64)
    >>> W = torch.ones(2, 5, 3, dtype=torch.float64)
    >>> stacked_affine(b, x, W).shape
    torch.Size([2, 4, 3])
    """
    if _through_blas(x, W):
        return _BlasAffine.apply(b, x, W)
    return torch.baddbmm(b, x, W)


class _BlasThreads:
    """numpy's BLAS on torch's intra-op thread count while stacks train.

    Re-entrant and shared by the threads of a process (one count of users
    under a lock): the first to enter sets the limit (``threadpoolctl``,
    scikit-learn's own dependency), the last to leave restores it. Without
    it, numpy's BLAS would start its own threads beside torch's, and beside
    other worker processes.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._limiter = None

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                from threadpoolctl import threadpool_limits

                self._limiter = threadpool_limits(
                    limits=torch.get_num_threads(), user_api="blas"
                )
            self._users += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._users -= 1
            if self._users == 0:
                limiter, self._limiter = self._limiter, None
                limiter.restore_original_limits()


blas_threads = _BlasThreads()
