"""The stacked product: numpy's BLAS on the CPU in float64, torch elsewhere."""

import pytest
import torch
from threadpoolctl import threadpool_info

from sknets.modules._products import blas_threads, stacked_affine


def _operands(dtype=torch.float64, members=3, rows=7, n_in=5, n_out=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b = torch.randn(members, 1, n_out, dtype=dtype, generator=gen)
    x = torch.randn(members, rows, n_in, dtype=dtype, generator=gen)
    W = torch.randn(members, n_in, n_out, dtype=dtype, generator=gen)
    return b, x, W


def _value_and_grads(op, b, x, W, need_x=True):
    b, W = b.clone().requires_grad_(), W.clone().requires_grad_()
    x = x.clone().requires_grad_(need_x)
    out = torch.tanh(op(b, x, W))  # a gradient that is not all ones
    (out * torch.arange(out.numel(), dtype=out.dtype).view(out.shape)).sum().backward()
    return out.detach(), b.grad, x.grad, W.grad


@pytest.mark.parametrize("need_x", [True, False])
def test_float64_products_equal_torchs(need_x):
    b, x, W = _operands()
    ours = _value_and_grads(stacked_affine, b, x, W, need_x)
    torchs = _value_and_grads(torch.baddbmm, b, x, W, need_x)
    for a, t in zip(ours, torchs, strict=True):
        if t is None:
            assert a is None
        else:
            torch.testing.assert_close(a, t, rtol=0, atol=1e-12)


def test_gradients_pass_gradcheck_on_transposed_operands():
    b, x, W = _operands(rows=3)
    x = x.transpose(1, 2).contiguous().transpose(1, 2)  # not C-contiguous
    assert not x.is_contiguous()
    assert torch.autograd.gradcheck(
        stacked_affine,
        (b.requires_grad_(), x.requires_grad_(), W.requires_grad_()),
    )


def test_other_dtypes_and_autocast_take_torchs_product():
    b, x, W = _operands(torch.float32)
    assert torch.equal(stacked_affine(b, x, W), torch.baddbmm(b, x, W))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stacked_affine(b, x, W)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, torch.baddbmm(b, x, W))


def _blas_threads():
    counts = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    if not counts:
        pytest.skip("numpy links no BLAS that threadpoolctl can see")
    return counts


def test_blas_follows_torchs_threads_while_used_and_is_restored():
    before = _blas_threads()
    with blas_threads:
        assert _blas_threads() == {torch.get_num_threads()}
        with blas_threads:  # re-entrant
            assert _blas_threads() == {torch.get_num_threads()}
        assert _blas_threads() == {torch.get_num_threads()}
    assert _blas_threads() == before
