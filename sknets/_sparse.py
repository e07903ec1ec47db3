"""CSR batches without per-batch overhead: row gathers and thin products.

A sparse first layer spends most of a small batch in bookkeeping around
scipy's compiled kernels (building ``csr_matrix`` objects, checking their
format, transposing), not in the arithmetic. These helpers call the same
compiled kernels that scipy's own ``X[rows]`` and ``X.T @ dense`` use, on
plain arrays (found and self-checked in :mod:`sknets._compat`). Where they
are missing or changed, or the index arrays do not share one dtype, they
fall back to scipy's public operations, with the same results.
"""

import numpy as np
import scipy.sparse as sp

from sknets import _compat


def _fast(indptr, indices):
    return (
        _compat.sparsetools is not None
        and indptr.dtype == indices.dtype
        and indptr.dtype in (np.int32, np.int64)
    )


def take_rows(X, rows):
    """``(indptr, indices, data)`` of the rows ``rows`` of a CSR matrix ``X``.

    ``rows`` is a slice with step 1 (the result shares ``indices`` and
    ``data`` with ``X``) or an array of row numbers (the result is a copy
    of those rows only).
    """
    if isinstance(rows, slice):
        start, stop, _ = rows.indices(X.shape[0])
        stop = max(stop, start)
        indptr = X.indptr[start : stop + 1]
        lo, hi = indptr[0], indptr[-1]
        return indptr - lo, X.indices[lo:hi], X.data[lo:hi]
    if not _fast(X.indptr, X.indices):
        Xb = X[rows]
        return Xb.indptr, Xb.indices, Xb.data
    index = X.indptr.dtype
    rows = np.asarray(rows, dtype=index)
    indptr = np.zeros(len(rows) + 1, dtype=index)
    np.cumsum(X.indptr[rows + 1] - X.indptr[rows], out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=index)
    data = np.empty(indptr[-1], dtype=X.data.dtype)
    try:
        _compat.sparsetools.csr_row_index(
            len(rows), rows, X.indptr, X.indices, X.data, indices, data
        )
    except TypeError:  # a kernel whose signature changed: public scipy
        Xb = X[rows]
        return Xb.indptr, Xb.indices, Xb.data
    return indptr, indices, data


def csr_t_matmul(indptr, indices, data, n_cols, dense):
    """``A.T @ dense`` for the CSR matrix ``A`` given by its arrays.

    ``A`` has ``len(indptr) - 1`` rows and ``n_cols`` columns; ``dense`` is a
    2-D array with one row per row of ``A``. Returns a new C-ordered
    ``(n_cols, dense.shape[1])`` array of ``data``'s dtype. ``A``'s arrays
    read as CSC are ``A.T``: nothing is transposed.
    """
    n_rows = len(indptr) - 1
    dense = np.ascontiguousarray(dense, dtype=data.dtype)
    if not _fast(indptr, indices):
        A = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
        return np.ascontiguousarray(A.T @ dense)
    out = np.zeros((n_cols, dense.shape[1]), data.dtype)
    try:
        _compat.sparsetools.csc_matvecs(
            n_cols, n_rows, dense.shape[1], indptr, indices, data, dense.ravel(),
            out.ravel(),
        )  # fmt: skip
    except TypeError:  # a kernel whose signature changed: public scipy
        A = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
        return np.ascontiguousarray(A.T @ dense)
    return out
