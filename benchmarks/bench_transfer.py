"""Transfer learning on real data: frozen features, fine-tuning, from scratch.

Needs ``../shared/data`` (CIFAR-10 JPEG tarball, Fashion-MNIST, the weights
folder) and ``pillow``. SqueezeNet and ResNet-20 use the weights bundled with
sknets (float16); the ResNet-56 checkpoint is linked into a temporary
``SKNETS_HOME`` (nothing is downloaded or written to the repo).

1. ``Pipeline([PretrainedFeatureExtractor('squeezenet1_1'), StandardScaler,
   LogisticRegression])`` on 2,000 / 1,000 CIFAR-10 images, with ImageNet
   weights and with ``weights=None``.
2. ResNet-20-CIFAR features on Fashion-MNIST (a dataset it was not trained on),
   2,000 / 1,000, same pipeline; raw pixels for reference.
3. ``FineTunedClassifier`` on the same 2,000 CIFAR images: fine-tuned vs frozen
   backbone vs the same network from scratch, same epochs.

Usage::

    python benchmarks/bench_transfer.py [--size 224] [--ft-size 112] [--epochs 6]
"""

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _datasets import DATA, load_idx_images  # noqa: E402

CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def load_cifar10_jpeg(n_train=2000, n_test=1000, seed=0):
    """``n_train`` / ``n_test`` class-balanced CIFAR-10 images, uint8 (n, 32, 32, 3)."""
    from PIL import Image

    path = DATA / "cifar10" / "CIFAR-10-images_yoongikim_jpg.tar.gz"
    want = {"train": n_train // 10, "test": n_test // 10}
    rng = np.random.RandomState(seed)
    # the first files of each class, as the tarball lists them, then shuffled
    picked = {(s, c): [] for s in want for c in CLASSES}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 3 or not member.isfile():
                continue
            split, cls, _ = parts
            if split in want and len(picked[(split, cls)]) < want[split]:
                data = tar.extractfile(member).read()
                img = Image.open(io.BytesIO(data)).convert("RGB")
                picked[(split, cls)].append(np.asarray(img, dtype=np.uint8))
            if all(len(v) >= want[s] for (s, _), v in picked.items()):
                break
    out = []
    for split in ("train", "test"):
        X = np.stack([im for c in CLASSES for im in picked[(split, c)]])
        y = np.repeat(np.arange(10), want[split])
        order = rng.permutation(len(y))
        out += [X[order], y[order]]
    return out


def prepare_weights(home):
    """Link the ResNet-56 checkpoint into ``home`` (the others are bundled)."""
    f = DATA / "weights" / "resnet_cifar10" / "resnet56-4bfd9763.th"
    os.symlink(f, home / f.name)


def pipeline(**extractor):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from sknets import PretrainedFeatureExtractor

    return Pipeline(
        [
            ("features", PretrainedFeatureExtractor(**extractor)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(C=0.1, max_iter=2000)),
        ]
    )


def timed_score(model, X_train, y_train, X_test, y_test):
    """Accuracy and seconds per 1,000 images for fit + predict."""
    start = time.perf_counter()
    model.fit(X_train, y_train)
    acc = model.score(X_test, y_test)
    seconds = time.perf_counter() - start
    return acc, 1000 * seconds / (len(X_train) + len(X_test))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="SqueezeNet input size")
    parser.add_argument("--ft-size", type=int, default=112, help="fine-tuning size")
    parser.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs")
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma list of 1,2,3 to skip")
    args = parser.parse_args(argv)
    skip = set(args.skip.split(","))

    import torch

    torch.set_num_threads(args.threads)
    if not (DATA / "cifar10").exists():
        sys.exit(f"needs {DATA}; nothing to run")
    home = Path(tempfile.mkdtemp(prefix="sknets_home_"))
    os.environ["SKNETS_HOME"] = str(home)
    prepare_weights(home)

    from sknets import FineTunedClassifier

    t0 = time.perf_counter()
    Xtr, ytr, Xte, yte = load_cifar10_jpeg()
    print(
        f"CIFAR-10 JPEG: {len(Xtr)} train / {len(Xte)} test images "
        f"read in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    rows = []

    def report(name, acc, per_k):
        rows.append((name, acc, per_k))
        print(f"{name:58s} acc {acc:.3f}   {per_k:7.2f} s / 1000 images", flush=True)

    if "1" not in skip:
        for weights in ("default", None):
            model = pipeline(
                backbone="squeezenet1_1",
                weights=weights,
                resize=args.size,
                batch_size=100,
                random_state=0,
                device="cpu",
            )
            tag = "ImageNet" if weights else "random init"
            report(
                f"CIFAR-10  SqueezeNet-1.1 {tag} @{args.size}px + LogReg",
                *timed_score(model, Xtr, ytr, Xte, yte),
            )

    if "2" not in skip:
        fm = load_idx_images("fashion_mnist")
        rng = np.random.RandomState(0)
        tr = rng.choice(len(fm[0]), 2000, replace=False)
        te = rng.choice(len(fm[2]), 1000, replace=False)
        F = (fm[0][tr], fm[1][tr], fm[2][te], fm[3][te])
        for weights in ("default", None):
            model = pipeline(
                backbone="resnet20_cifar",
                weights=weights,
                batch_size=250,
                random_state=0,
                device="cpu",
            )
            tag = "CIFAR-10 weights" if weights else "random init"
            report(
                f"Fashion-MNIST  ResNet-20 {tag} @32px + LogReg",
                *timed_score(model, *F),
            )
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        raw = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        report(
            "Fashion-MNIST  raw pixels + LogReg",
            *timed_score(
                raw, F[0].reshape(2000, -1), F[1], F[2].reshape(1000, -1), F[3]
            ),
        )

    if "3" not in skip:
        common = dict(
            backbone="squeezenet1_1",
            resize=args.ft_size,
            max_iter=args.epochs,
            batch_size=64,
            learning_rate_init=1e-3,
            random_state=0,
            device="cpu",
            dtype="float32",
            alpha=0.0,
        )
        variants = [
            (
                "fine-tuned (ImageNet, head then all)",
                dict(
                    weights="default", head_epochs=args.head_epochs, fine_tune_lr=1e-4
                ),
            ),
            (
                "frozen (ImageNet, head only)",
                dict(weights="default", fine_tune_lr=None),
            ),
            (
                "from scratch (random init, all)",
                dict(weights=None, head_epochs=0, fine_tune_lr=1e-3),
            ),
        ]
        for name, params in variants:
            clf = FineTunedClassifier(**common, **params)
            report(
                f"CIFAR-10  SqueezeNet {name} @{args.ft_size}px, {args.epochs} ep",
                *timed_score(clf, Xtr, ytr, Xte, yte),
            )
    print("\nthreads:", torch.get_num_threads())


if __name__ == "__main__":
    main()
