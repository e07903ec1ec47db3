"""Large data in bounded memory (slow: run with ``python -m pytest -m slow``).

Memory is measured as the peak growth of the process's anonymous resident
memory (``RssAnon`` in ``/proc/self/status``), sampled every few milliseconds
while the call runs. File-backed pages of a ``numpy.memmap`` are page cache the
kernel can drop, so they do not count; copies of the data would.
"""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sknets import MLPClassifier

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/proc/self/status").exists(), reason="needs Linux /proc"
    ),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]
MB = 2**20


def _anon():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon")


def peak_growth(fn):
    """Run ``fn()``; return (result, peak RssAnon growth in bytes)."""
    base, peak, done = _anon(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _anon() - base)
            time.sleep(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        done.set()
        t.join()
    return out, max(peak[0], _anon() - base)


def test_ten_million_row_sparse_matrix_fits_without_densifying():
    n, d, per_row = 10_000_000, 1_000, 5
    rng = np.random.default_rng(0)
    cols = rng.integers(0, d, size=n * per_row, dtype=np.int32)
    X = sp.csr_matrix(
        (
            np.ones(n * per_row, dtype=np.float32),
            cols,
            np.arange(0, n * per_row + 1, per_row, dtype=np.int64),
        ),
        shape=(n, d),
    )
    y = (cols.reshape(n, per_row) < 500).sum(1) >= 3
    x_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    clf = MLPClassifier(
        (16,), batch_size=8192, max_iter=1, random_state=0, device="cpu"
    )
    _, growth = peak_growth(lambda: clf.fit(X, y))
    dense_bytes = n * d * 4
    print(
        f"sparse X {x_bytes / MB:.0f} MB (dense would be {dense_bytes / MB:.0f} MB);"
        f" fit peak growth {growth / MB:.0f} MB"
    )
    assert growth < 0.5 * x_bytes  # the bound: under half of X itself
    assert clf.score(X[:100_000], y[:100_000]) > 0.8


def test_memmap_fit_and_million_row_predict_in_bounded_memory(tmp_path):
    n, d = 1_000_000, 64
    path = tmp_path / "X.f32"
    X = np.memmap(path, dtype=np.float32, mode="w+", shape=(n, d))
    rng = np.random.default_rng(0)
    for start in range(0, n, 100_000):
        X[start : start + 100_000] = rng.standard_normal((100_000, d), dtype=np.float32)
    X.flush()
    X = np.memmap(path, dtype=np.float32, mode="r", shape=(n, d))
    y = np.asarray(X[:, 0] > 0)
    clf = MLPClassifier(
        (16,), batch_size=4096, max_iter=1, random_state=0, device="cpu"
    )
    _, fit_growth = peak_growth(lambda: clf.fit(X, y))
    proba, predict_growth = peak_growth(lambda: clf.predict_proba(X))
    x_bytes = n * d * 4
    print(
        f"memmap X {x_bytes / MB:.0f} MB; fit peak growth {fit_growth / MB:.0f} MB;"
        f" predict_proba peak growth {predict_growth / MB:.0f} MB"
    )
    assert proba.shape == (n, 2)
    assert fit_growth < 0.5 * x_bytes
    # the output (n x 2 float64 = 16 MB) and its float32 raw scores, not a copy of X
    assert predict_growth < 0.25 * x_bytes
