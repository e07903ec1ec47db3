"""Loaders for the real data in ``../shared/data`` (relative to the repo root).

Every loader returns ``None`` when the data is absent, so benchmarks can fall
back to synthetic data of the same shape.
"""

import gzip
import os
import tarfile
from pathlib import Path

import numpy as np

DATA = Path(
    os.environ.get(
        "SKNETS_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)
CACHE = Path(__file__).resolve().parent / "results" / "cache"


def _idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_idx_images(name="mnist"):
    """MNIST-like idx data: ``(X_train, y_train, X_test, y_test)``, X uint8."""
    folder = DATA / name
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        return None
    return (
        _idx(folder / "train-images-idx3-ubyte.gz"),
        _idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64),
        _idx(folder / "t10k-images-idx3-ubyte.gz"),
        _idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )


def mnist_float32(synthetic_rows=60_000, seed=0):
    """Flat float32 MNIST in [0, 1] (or synthetic data of that shape), and labels."""
    data = load_idx_images("mnist")
    if data is None:
        rng = np.random.RandomState(seed)
        X = rng.uniform(size=(synthetic_rows, 784)).astype(np.float32)
        y = (X[:, :10].argmax(1)).astype(np.int64)
        return X, y, X[:10_000], y[:10_000], "synthetic"
    Xtr, ytr, Xte, yte = data
    f = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0  # noqa: E731
    return f(Xtr), ytr, f(Xte), yte, "mnist"


def imdb_bag_of_words(max_features=10_000):
    """IMDb reviews as a binary CSR bag of words (train/test), cached as .npz."""
    import scipy.sparse as sp

    cache = CACHE / f"imdb_bow_{max_features}.npz"
    if cache.exists():
        d = np.load(cache, allow_pickle=False)
        parts = [
            sp.csr_matrix(
                (d[f"{p}_data"], d[f"{p}_indices"], d[f"{p}_indptr"]),
                shape=tuple(d[f"{p}_shape"]),
            )
            for p in ("train", "test")
        ]
        return parts[0], d["y_train"], parts[1], d["y_test"]
    tar = DATA / "imdb" / "aclImdb_labeled_50k.tar.gz"
    if not tar.exists():
        return None
    texts = {"train": [], "test": []}
    labels = {"train": [], "test": []}
    with tarfile.open(tar, "r:gz") as t:
        for m in t:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) < 4 or parts[-2] not in ("pos", "neg"):
                continue
            split = parts[-3]
            if split not in texts:
                continue
            texts[split].append(t.extractfile(m).read().decode("utf-8", "ignore"))
            labels[split].append(int(parts[-2] == "pos"))
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(max_features=max_features, binary=True, dtype=np.float32)
    Xtr = vec.fit_transform(texts["train"]).tocsr()
    Xte = vec.transform(texts["test"]).tocsr()
    ytr, yte = np.array(labels["train"]), np.array(labels["test"])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        **{f"train_{k}": getattr(Xtr, k) for k in ("data", "indices", "indptr")},
        **{f"test_{k}": getattr(Xte, k) for k in ("data", "indices", "indptr")},
        train_shape=np.array(Xtr.shape),
        test_shape=np.array(Xte.shape),
        y_train=ytr,
        y_test=yte,
    )
    return Xtr, ytr, Xte, yte
