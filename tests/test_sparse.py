"""CSR batches: row gathers, thin products and the sparse first layer."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sknets import MLPClassifier, _compat
from sknets._data import csr_tensor
from sknets._sparse import csr_t_matmul, take_rows
from sknets.modules import MLPModule
from sknets.modules._mlp import SparseInputLinear


@pytest.fixture(params=["kernels", "public scipy"])
def kernels(request, monkeypatch):
    """Run each test with scipy's compiled kernels and with the fallback."""
    if request.param == "public scipy":
        monkeypatch.setattr(_compat, "sparsetools", None)
    return request.param


def random_csr(n_rows=40, n_cols=30, density=0.2, dtype=np.float32, seed=0):
    X = sp.random(n_rows, n_cols, density=density, format="csr", random_state=seed)
    X = X.astype(dtype)
    X[3] = 0  # an empty row
    X.eliminate_zeros()
    return X


@pytest.mark.parametrize(
    "rows",
    [slice(0, 40), slice(5, 17), slice(39, 80), slice(7, 7), [3, 0, 39, 3, 12], []],
)
def test_take_rows_matches_scipy_indexing(rows, kernels):
    X = random_csr()
    index = rows if isinstance(rows, slice) else np.array(rows, int)
    indptr, indices, data = take_rows(X, index)
    got = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, X.shape[1]))
    expected = X[rows]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got.toarray(), expected.toarray())


def test_take_rows_handles_mixed_index_dtypes():
    X = random_csr()
    X.indptr = X.indptr.astype(np.int64)  # indices stay int32
    indptr, indices, data = take_rows(X, np.array([5, 1, 2]))
    got = sp.csr_matrix((data, indices, indptr), shape=(3, X.shape[1]))
    np.testing.assert_array_equal(got.toarray(), X[[5, 1, 2]].toarray())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_csr_t_matmul_matches_scipy(dtype, kernels):
    X = random_csr(dtype=dtype)
    rng = np.random.RandomState(0)
    dense = rng.randn(X.shape[0], 5).astype(dtype)
    got = csr_t_matmul(X.indptr, X.indices, X.data, X.shape[1], dense)
    expected = X.T @ dense
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # a column-major operand gives the same numbers
    got_f = csr_t_matmul(
        X.indptr, X.indices, X.data, X.shape[1], np.asfortranarray(dense)
    )
    np.testing.assert_allclose(got_f, expected, rtol=1e-5)


@pytest.mark.parametrize("input_major", [False, True])
def test_sparse_first_layer_matches_dense_linear(input_major, kernels):
    """Outputs and gradients of a CSR batch equal those of nn.Linear on dense rows."""
    X = random_csr()
    torch.manual_seed(0)
    layer = SparseInputLinear(30, 4, input_major=input_major)
    reference = torch.nn.Linear(30, 4)
    reference.load_state_dict(layer.state_dict())

    grad_out = torch.randn(40, 4)
    out = layer(csr_tensor((X.indptr, X.indices, X.data), 30, torch.float32))
    (out * grad_out).sum().backward()
    expected = reference(torch.from_numpy(X.toarray()))
    (expected * grad_out).sum().backward()

    torch.testing.assert_close(out, expected)
    weight_grad = layer.weight_t.grad.t() if input_major else layer.weight.grad
    torch.testing.assert_close(weight_grad, reference.weight.grad)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)
    # dense input works with either layout
    dense = torch.randn(6, 30)
    torch.testing.assert_close(layer(dense), reference(dense))


def test_input_major_layer_trains_a_contiguous_parameter():
    layer = SparseInputLinear(30, 4, input_major=True)
    params = dict(layer.named_parameters())
    assert set(params) == {"weight_t", "bias"}
    assert params["weight_t"].shape == (30, 4) and params["weight_t"].is_contiguous()
    assert layer.weight.shape == (4, 30)
    assert layer.weight.data_ptr() == params["weight_t"].data_ptr()


def test_state_dicts_load_across_layouts():
    torch.manual_seed(0)
    default = MLPModule(30, (8,), 3)
    input_major = MLPModule(30, (8,), 3, sparse_input=True)
    assert list(default.state_dict()) == list(input_major.state_dict())
    input_major.load_state_dict(default.state_dict())
    X = torch.randn(5, 30)
    torch.testing.assert_close(input_major(X), default(X))
    for p in input_major.parameters():
        torch.nn.init.normal_(p)
    default.load_state_dict(input_major.state_dict())
    torch.testing.assert_close(input_major(X), default(X))


def test_same_seed_same_network_whatever_the_layout():
    torch.manual_seed(0)
    a = MLPModule(30, (8,), 3)
    torch.manual_seed(0)
    b = MLPModule(30, (8,), 3, sparse_input=True)
    for (name, x), y in zip(
        a.state_dict().items(), b.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(x, y, msg=name)


def test_sparse_fit_exposes_sklearn_coefs_layout():
    X = random_csr(n_rows=60)
    y = np.arange(60) % 3
    clf = MLPClassifier((7,), max_iter=3, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(30, 7), (7, 3)]
    np.testing.assert_array_equal(
        clf.coefs_[0], clf.module_.layers[0].weight_t.detach().numpy()
    )
    dense = MLPClassifier((7,), max_iter=3, random_state=0).fit(X.toarray(), y)
    np.testing.assert_allclose(clf.coefs_[0], dense.coefs_[0], rtol=1e-5, atol=1e-6)
