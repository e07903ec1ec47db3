"""The scipy kernel self-check in sknets._compat.

That sknets._sparse gives the same results without the kernels
(``_compat.sparsetools = None``) is tested in test_sparse.py, whose
``kernels`` fixture runs each test both ways.
"""

import types

import numpy as np
import pytest

from sknets import _compat

real = pytest.importorskip("scipy.sparse._sparsetools")


def kernels(**overrides):
    """A stand-in for scipy's kernel module: the real kernels, some replaced."""
    names = {name: getattr(real, name) for name in _compat._KERNELS}
    names.update(overrides)
    return types.SimpleNamespace(**{k: v for k, v in names.items() if v is not None})


def test_accepts_scipys_kernels():
    assert _compat._self_check(real)
    assert _compat._checked(real) is real
    # the installed scipy (at or above the declared floor) passes, so the fast
    # path is the one in use
    assert _compat.sparsetools is real


def test_accepts_a_faithful_stand_in():
    fake = kernels()
    assert _compat._checked(fake) is fake


def extra_argument(n_row_idx, rows, Ap, Aj, Ax, Bj, Bx, n_col):
    real.csr_row_index(n_row_idx, rows, Ap, Aj, Ax, Bj, Bx)


def without_output_arguments(n_row_idx, rows, Ap, Aj, Ax):
    return np.empty(0), np.empty(0)


def leaves_output_empty(n_row_idx, rows, Ap, Aj, Ax, Bj, Bx):
    Bj[:] = 0
    Bx[:] = 0


def reversed_rows(n_row_idx, rows, Ap, Aj, Ax, Bj, Bx):
    real.csr_row_index(n_row_idx, rows[::-1].copy(), Ap, Aj, Ax, Bj, Bx)


def matvecs_swapped_shape(n_row, n_col, n_vecs, Ap, Aj, Ax, Xx, Yx):
    real.csc_matvecs(n_col, n_row, n_vecs, Ap, Aj, Ax, Xx, Yx)


def matvecs_does_nothing(n_row, n_col, n_vecs, Ap, Aj, Ax, Xx, Yx):
    pass


def raises(*args):
    raise ValueError("Output dtype not compatible with inputs.")


@pytest.mark.parametrize(
    "overrides",
    [
        # changed signatures
        {"csr_row_index": extra_argument},
        {"csr_row_index": without_output_arguments},
        # wrong results
        {"csr_row_index": leaves_output_empty},
        {"csr_row_index": reversed_rows},
        {"csc_matvecs": matvecs_swapped_shape},
        {"csc_matvecs": matvecs_does_nothing},
        # refuses the arguments
        {"csr_row_index": raises},
        {"csc_matvecs": raises},
        # a kernel removed
        {"csr_row_index": None},
        {"csc_matvecs": None},
    ],
    ids=lambda o: ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in o.items()),
)
def test_rejects_changed_kernels(overrides):
    fake = kernels(**overrides)
    assert not _compat._self_check(fake)
    assert _compat._checked(fake) is None


def test_rejects_no_module():
    assert _compat._checked(None) is None


def test_a_kernel_that_raises_type_error_at_run_time_falls_back(monkeypatch):
    """A kernel that passed the self-check but raises TypeError on other input."""
    import scipy.sparse as sp

    from sknets._sparse import csr_t_matmul, take_rows

    def refuses(*args):
        raise TypeError("unsupported argument types")

    monkeypatch.setattr(
        _compat, "sparsetools", kernels(csr_row_index=refuses, csc_matvecs=refuses)
    )
    X = sp.random(20, 7, density=0.4, format="csr", random_state=1)
    rows = np.array([3, 0, 19, 3])
    indptr, indices, data = take_rows(X, rows)
    got = sp.csr_matrix((data, indices, indptr), shape=(4, 7)).toarray()
    np.testing.assert_array_equal(got, X[rows].toarray())
    dense = np.arange(40.0).reshape(20, 2)
    product = csr_t_matmul(X.indptr, X.indices, X.data, 7, dense)
    np.testing.assert_allclose(product, X.T @ dense)


def test_parameter_names_are_each_class_own():
    # asked once per class and kept: a subclass with parameters of its own
    # gets its own names, and clone/set_params see them
    from sklearn.base import clone

    from sknets import MLPClassifier

    class Wider(MLPClassifier):
        def __init__(self, extra=1, alpha=1e-4):
            super().__init__(alpha=alpha)
            self.extra = extra

    base = set(MLPClassifier().get_params())
    assert set(Wider().get_params()) == {"extra", "alpha"}
    assert set(MLPClassifier().get_params()) == base and len(base) > 20
    est = clone(Wider(extra=5).set_params(alpha=0.5))
    assert (est.extra, est.alpha) == (5, 0.5)
    names = MLPClassifier._get_param_names()
    names.append("changed by a caller")
    assert "changed by a caller" not in MLPClassifier().get_params()
