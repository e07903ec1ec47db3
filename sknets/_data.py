"""Data for skorch: tensors placed once, whole batches sliced out of them.

``dataset=ArrayDataset`` and ``iterator_train=BatchIterator`` (and
``iterator_valid``) of :func:`sknets._engine.build_net`: batches are slices of
tensors placed on the device once; sparse rows go as CSR batches or are
densified one batch at a time; never one ``__getitem__`` call per sample.
"""

import copy
import math
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from sknets._sparse import take_rows


class ArrayDataset(torch.utils.data.Dataset):
    """Features, targets and sample weights held as whole arrays.

    Dense ``X`` becomes one tensor without a copy when its dtype already
    matches (``torch.from_numpy`` shares memory, read-only arrays and
    ``numpy.memmap`` included) and is moved to ``device`` once; with
    ``lazy=True`` it is never converted whole, only batch by batch. On a GPU,
    data larger than half the free device memory stays on the host and is
    streamed in pinned batches. Sparse ``X`` stays a CSR matrix on the host.
    :meth:`subset` gives a view of some rows (the training and validation
    rows of one placed copy) without copying anything.

    skorch builds one for ``net_.predict(X)`` (``dataset=ArrayDataset`` with
    ``dataset__lazy=True``); the estimators build theirs themselves.
    """

    def __init__(
        self,
        X,
        y=None,
        sample_weight=None,
        *,
        device="cpu",
        dtype=torch.float32,
        lazy=False,
        sparse_batches=False,
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.sparse = sp.issparse(X)
        # sparse_batches: hand the module torch CSR batches (its first layer
        # is a Linear, which multiplies them without densifying)
        self.sparse_batches = self.sparse and sparse_batches
        if not self.sparse and not isinstance(X, torch.Tensor):
            X = np.asarray(X)
        # lazy: leave X where and as it is, cast batch by batch (bounded memory,
        # used for prediction); else convert once, up front (training).
        self.host = self.sparse or lazy or not fits_on_device(X, dtype, self.device)
        store = torch.device("cpu") if self.host else self.device
        if self.sparse:
            self.X = X.tocsr()
        else:
            self.X = as_tensor(X, None if lazy else dtype, store)
        self.y = None if y is None else as_tensor(y, None, store)
        self.w = (
            None if sample_weight is None else as_tensor(sample_weight, dtype, store)
        )
        self.rows = None

    def subset(self, rows):
        """The same data restricted to ``rows`` (row numbers; nothing copied)."""
        view = copy.copy(self)
        store = torch.device("cpu") if self.host else self.device
        view.rows = torch.as_tensor(np.array(rows, dtype=np.int64), device=store)
        return view

    def __len__(self):
        return self.X.shape[0] if self.rows is None else len(self.rows)

    def __getitem__(self, i):  # pragma: no cover - never on our hot path
        return self.take(slice(i, i + 1))

    def targets(self):
        """``(y, w)`` of the dataset's rows, on its storage device."""
        if self.rows is None:
            return self.y, self.w
        return (
            None if self.y is None else self.y[self.rows],
            None if self.w is None else self.w[self.rows],
        )

    def take(self, index):
        """Return ``(X_batch, (y_batch, w_batch))`` for a slice or index tensor."""
        if self.rows is not None:
            index = self.rows[index]
        if self.sparse:
            rows = index if isinstance(index, slice) else index.cpu().numpy()
            if self.sparse_batches:
                Xb = csr_tensor(take_rows(self.X, rows), self.X.shape[1], self.dtype)
            else:
                Xb = torch.from_numpy(np.asarray(self.X[rows].toarray(), order="C"))
        elif isinstance(index, slice):
            Xb = self.X[index]
        else:  # index_select: about twice as fast as X[index] on small rows
            Xb = self.X.index_select(0, index)
        yb = None if self.y is None else _rows(self.y, index)
        wb = None if self.w is None else _rows(self.w, index)
        if self.host:
            Xb, yb, wb = (to_device(t, self.device, self.dtype) for t in (Xb, yb, wb))
        return Xb, (yb, wb)


def _rows(t, index):
    return t[index] if isinstance(index, slice) else t.index_select(0, index)


def csr_tensor(arrays, n_cols, dtype):
    """A torch CSR tensor sharing the ``(indptr, indices, data)`` arrays."""
    indptr, indices, data = arrays
    index = np.int64 if indices.dtype != indptr.dtype else indices.dtype
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
        return torch.sparse_csr_tensor(
            torch.from_numpy(indptr.astype(index, copy=False)),
            torch.from_numpy(indices.astype(index, copy=False)),
            torch.from_numpy(data).to(dtype),
            size=(len(indptr) - 1, n_cols),
            check_invariants=False,
        )


def fits_on_device(X, dtype, device):
    """Whether ``X`` in ``dtype`` takes at most half the free memory of a GPU."""
    if device.type != "cuda":
        return True
    nbytes = X.shape[0] * int(np.prod(X.shape[1:])) * torch.finfo(dtype).bits // 8
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 2


def to_device(t, device, dtype=None):
    """Move a host batch to ``device`` (pinned, asynchronous on CUDA)."""
    if t is None:
        return None
    if t.is_floating_point() and dtype is not None:
        t = t.to(dtype)
    if device.type == "cuda" and t.layout == torch.strided:
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def as_tensor(a, dtype, device):
    """Tensor view of ``a`` (no copy when dtype and device already match)."""
    if isinstance(a, torch.Tensor):
        t = a
    else:
        a = np.asarray(a)
        if a.dtype == bool:
            a = a.astype(np.uint8)
        t = from_numpy(a)
    return t.to(device=device, dtype=dtype if dtype is not None else t.dtype)


def from_numpy(a):
    """``torch.from_numpy``, read-only arrays (memmaps) included: only read."""
    if a.flags.writeable:
        return torch.from_numpy(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array")
        return torch.from_numpy(a)


class BatchIterator:
    """Iterate over an :class:`ArrayDataset` in batches of whole-tensor slices.

    A new permutation is drawn for each pass when ``shuffle`` is true, from a
    generator seeded once, so runs with the same seed see the same batches.
    skorch builds one per ``fit_loop`` from ``iterator_train__shuffle``,
    ``iterator_train__seed`` and ``batch_size`` (``iterator_valid__batch_size``
    for validation and prediction).
    """

    def __init__(self, dataset, batch_size, shuffle=False, seed=0):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self):
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle and n > 1:
            order = torch.randperm(n, generator=self.generator)
            if not self.dataset.host:
                order = order.to(self.dataset.X.device)
            for start in range(0, n, self.batch_size):
                yield self.dataset.take(order[start : start + self.batch_size])
        else:
            for start in range(0, n, self.batch_size):
                yield self.dataset.take(slice(start, start + self.batch_size))


# --------------------------------------------------------------------------- members


class MemberData(ArrayDataset):
    """Every member's rows of one placed copy of the data.

    An :class:`ArrayDataset` of dense ``X``, ``y`` and sample weights (placed
    on the device once, as a single network's); each member sees the rows
    ``member_rows[m]`` of it, shuffled by ``generators[m]`` (its own, kept
    across epochs and ``fit_loop`` calls; None: seeded 0).
    :class:`MemberBatches` takes ``(members, batch)`` index matrices out of
    it, through :meth:`ArrayDataset.take`: one gather for one network or many.
    """

    def __init__(
        self, X, y, sample_weight=None, *, rows, device, dtype, generators=None
    ):
        super().__init__(X, y, sample_weight, device=device, dtype=dtype)
        store = torch.device("cpu") if self.host else self.device
        self.member_rows = [
            torch.as_tensor(np.asarray(r, dtype=np.int64), device=store) for r in rows
        ]
        if generators is None:
            generators = [torch.Generator().manual_seed(0) for _ in rows]
        self.generators = list(generators)

    def with_rows(self, rows, generators=None):
        """The same tensors, other rows per member (e.g. validation rows)."""
        view = copy.copy(self)
        if generators is not None:
            view.generators = list(generators)
        store = self.member_rows[0].device if self.member_rows else self.device
        view.member_rows = [
            r.to(store)
            if isinstance(r, torch.Tensor)
            else torch.as_tensor(
                np.asarray([] if r is None else r, dtype=np.int64), device=store
            )
            for r in rows
        ]
        return view

    def __len__(self):
        return max(len(r) for r in self.member_rows)

    def __getitem__(self, i):  # pragma: no cover - batches only
        raise NotImplementedError("MemberData is read in (members, rows) batches")

    def take(self, index, mask):
        """``(X, (y, w, counts))`` for an index matrix and its 0/1 row mask."""
        Xb, (yb, wb) = super().take(index.reshape(-1))
        Xb = Xb.view(*index.shape, *Xb.shape[1:])
        yb = yb.view(*index.shape, *yb.shape[1:])
        wb = mask if wb is None else mask * wb.view(index.shape)
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
        for rows, gen in zip(ds.member_rows, self.generators, strict=True):
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
        store = orders[0].device  # the rows' (the host's, when X streams in)
        index = torch.zeros((len(orders), longest), dtype=torch.int64, device=store)
        mask = torch.zeros((len(orders), longest), dtype=ds.dtype, device=ds.device)
        for m, order in enumerate(orders):
            index[m, : len(order)] = order
            mask[m, : len(order)] = 1
        for start in range(0, longest, size):
            yield ds.take(index[:, start : start + size], mask[:, start : start + size])
