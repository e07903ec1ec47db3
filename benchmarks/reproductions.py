"""Reproductions of the classic neural-network results with sknets.

Four experiments, all with ``random_state=0``, ``device="cpu"`` and float32
data from ``../shared/data`` (see ``_datasets.py``):

``mlp``
    MNIST, 784-512-10 ReLU MLP, Adam (lr 1e-3), batch 128, 10 epochs: test
    accuracy and seconds per epoch.
``cnn``
    MNIST, the classic CNN (conv 32 3x3 -> max-pool -> conv 64 3x3 ->
    max-pool -> dense 64), Adam, batch 64, 5 epochs (the settings of
    ``mnist_cnn.py``): test accuracy and seconds per epoch.
``imdb``
    IMDb, 10,000-word binary bag of words (sparse CSR straight into
    ``MLPClassifier``), 16-16-1, Adam lr 1e-3, batch 512, 20 epochs, with no
    regularization, L2, dropout 0.5, and both; 10,000 of the 25,000 training
    reviews held out for validation. Reports the epoch where the validation
    loss is lowest (it rises after it), and validation/test accuracy.
``grid``
    MNIST (10,000-row subsample), ``sknets.model_selection.GridSearchCV`` over
    ``max_iter`` [5, 10, 20] x ``hidden_layer_sizes`` [(32,), (128,), (512,)],
    cv=3, next to scikit-learn's search (``bench_search.py`` does the work).

Each experiment saves its tables as JSON under
``benchmarks/results/reproductions/`` (git-ignored) and then re-renders
``docs/reproductions_results.inc`` from every saved result; the docs page
``docs/reproductions.rst`` includes that file. Run from the repository root::

    python benchmarks/reproductions.py all --threads 1   # everything (a few minutes)
    python benchmarks/reproductions.py imdb --threads 1  # one experiment
    python benchmarks/reproductions.py render            # docs file only

Nothing in the tables is typed in by hand: they come from the runs.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _datasets import imdb_bag_of_words, load_idx_images, mnist_float32  # noqa: E402

import sknets  # noqa: E402
from sknets import ConvNetClassifier, MLPClassifier  # noqa: E402

RESULTS = HERE / "results" / "reproductions"
DOCS_FILE = HERE.parent / "docs" / "reproductions_results.inc"
EXPERIMENTS = ("mlp", "cnn", "imdb", "grid")
TITLES = {
    "mlp": "MNIST MLP 784-512-10",
    "cnn": "MNIST classic CNN",
    "imdb": "IMDb 16-16-1 on a 10,000-word bag of words",
    "grid": "Epochs x hidden size grid on MNIST",
}


# ----------------------------------------------------------------------- helpers


def _machine():
    load = os.getloadavg() if hasattr(os, "getloadavg") else (np.nan,) * 3
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "load_average_at_start": [round(v, 2) for v in load],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "sknets": sknets.__version__,
    }


def _record(name, tables, notes, wall_s, machine, command):
    """Save one experiment's result as JSON, then re-render the docs file."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": name,
        "title": TITLES[name],
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "machine": machine,
        "wall_s": wall_s,
        "tables": tables,
        "notes": notes,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    for table in tables:
        print()
        print(_text_table(table))
    print(f"\n{name}: wall time {wall_s:.1f} s")
    render()


def _table(caption, header, rows):
    return {"caption": caption, "header": header, "rows": [list(r) for r in rows]}


def _text_table(table):
    cells = [table["header"]] + table["rows"]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(cells[0]))]
    lines = [table["caption"]]
    for k, row in enumerate(cells):
        lines.append(
            "  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True))
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _rst_table(table):
    out = [f".. list-table:: {table['caption']}", "   :header-rows: 1", ""]
    for row in [table["header"]] + table["rows"]:
        out.append(f"   * - {row[0]}")
        out.extend(f"     - {c}" for c in row[1:])
    return "\n".join(out) + "\n"


def _seconds(s):
    return f"{s:.0f} s ({s / 60:.1f} min)" if s >= 60 else f"{s:.1f} s"


def render():
    """Write every saved result into ``docs/reproductions_results.inc``."""
    parts = [
        ".. This file is written by benchmarks/reproductions.py; do not edit.",
        "",
    ]
    for name in EXPERIMENTS:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        m = r["machine"]
        title = r["title"]
        parts += [title, "-" * len(title), ""]
        invoked, _, alone = r["command"].partition("  # alone: ")
        parts += ["Command:", "", ".. code-block:: bash", "", f"    {invoked}"]
        if alone:
            parts += [f"    # this experiment alone: {alone}"]
        parts += [""]
        load = ", ".join(str(v) for v in m["load_average_at_start"])
        parts += [
            f"Run on {r['date']}: {m['processor']}, {m['cpu_count']} CPU cores, "
            f"{'a GPU present but unused' if m['cuda_available'] else 'no GPU'}, "
            f"torch {m['torch']} with {m['torch_threads']} thread(s), "
            f"scikit-learn {m['sklearn']}, sknets {m['sknets']} "
            f"(load average at start: {load}). "
            f"Wall time: {_seconds(r['wall_s'])}.",
            "",
        ]
        for table in r["tables"]:
            parts += [_rst_table(table)]
        for note in r["notes"]:
            parts += [note, ""]
    DOCS_FILE.write_text("\n".join(parts).rstrip() + "\n")
    print(f"wrote {DOCS_FILE.relative_to(HERE.parent)}")


def _no_data(what):
    print(f"{what} not found under ../shared/data; skipping.")


def _fit_quietly(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        start = time.perf_counter()
        est.fit(X, y)
        return time.perf_counter() - start


# ------------------------------------------------------------------- experiments


def run_mlp(args):
    X, y, X_test, y_test, source = mnist_float32()
    if source != "mnist":
        return _no_data("MNIST")
    clf = MLPClassifier(
        hidden_layer_sizes=(512,),
        solver="adam",
        learning_rate_init=1e-3,
        alpha=0.0,
        batch_size=128,
        max_iter=args.epochs or 10,
        n_iter_no_change=10_000,  # every epoch runs
        random_state=0,
        device="cpu",
        verbose=args.verbose,
    )
    fit_s = _fit_quietly(clf, X, y)
    acc = clf.score(X_test, y_test)
    durs = [row["dur"] for row in clf.history_]
    table = _table(
        "MNIST MLP: test accuracy and time",
        ["network", "epochs", "batch", "train rows", "test accuracy", "s/epoch", "fit"],
        [
            [
                "784-512-10 ReLU, Adam lr 1e-3",
                clf.n_iter_,
                128,
                f"{len(X):,}",
                f"{acc:.4f}",
                f"{np.mean(durs):.2f}",
                f"{fit_s:.1f} s",
            ]
        ],
    )
    curve = _table(
        "MNIST MLP: training loss per epoch",
        ["epoch", "train loss", "seconds"],
        [
            [row["epoch"], f"{row['train_loss']:.4f}", f"{row['dur']:.2f}"]
            for row in clf.history_
        ],
    )
    notes = [
        "``MLPClassifier(hidden_layer_sizes=(512,), alpha=0.0, batch_size=128, "
        "max_iter=10, n_iter_no_change=10_000, random_state=0, device='cpu')`` "
        "on the 60,000 training images as float32 in [0, 1], scored on the "
        "10,000 test images. ``alpha=0.0``: the classic network has no weight "
        "penalty. Seconds per epoch are the mean of ``history_[i]['dur']``."
    ]
    return [table, curve], notes


def run_cnn(args):
    data = load_idx_images("mnist")
    if data is None:
        return _no_data("MNIST")
    X, y, X_test, y_test = data
    X = X.reshape(len(X), -1).astype(np.float32) / 255.0
    X_test = X_test.reshape(len(X_test), -1).astype(np.float32) / 255.0
    epochs = args.epochs or 5
    clf = ConvNetClassifier(
        filters=(32, 64),
        kernel_size=3,
        pooling="max",
        hidden_layer_sizes=(64,),
        input_shape=(28, 28),
        alpha=0.0,
        batch_size=64,
        max_iter=epochs,
        n_iter_no_change=10_000,
        random_state=0,
        device="cpu",
        verbose=args.verbose,
    )
    fit_s = _fit_quietly(clf, X, y)
    acc = clf.score(X_test, y_test)
    durs = [row["dur"] for row in clf.history_]
    table = _table(
        "MNIST CNN: test accuracy and time",
        ["network", "epochs", "batch", "train rows", "test accuracy", "s/epoch", "fit"],
        [
            [
                "conv32-pool-conv64-pool-64-10, Adam lr 1e-3",
                clf.n_iter_,
                64,
                f"{len(X):,}",
                f"{acc:.4f}",
                f"{np.mean(durs):.1f}",
                _seconds(fit_s),
            ]
        ],
    )
    curve = _table(
        "MNIST CNN: training loss per epoch",
        ["epoch", "train loss", "seconds"],
        [
            [row["epoch"], f"{row['train_loss']:.4f}", f"{row['dur']:.1f}"]
            for row in clf.history_
        ],
    )
    notes = [
        "``ConvNetClassifier(filters=(32, 64), kernel_size=3, pooling='max', "
        "hidden_layer_sizes=(64,), input_shape=(28, 28), alpha=0.0, "
        f"batch_size=64, max_iter={epochs}, random_state=0, device='cpu')`` on "
        "the 60,000 flat float32 training images (``input_shape`` reshapes "
        "them), scored on the 10,000 test images. Same network and batch size "
        "as ``benchmarks/mnist_cnn.py``."
    ]
    return [table, curve], notes


IMDB_VARIANTS = [
    ("none", 0.0, 0.0),
    ("L2", 1.0, 0.0),
    ("dropout 0.5", 0.0, 0.5),
    ("L2 + dropout 0.5", 1.0, 0.5),
]


def run_imdb(args):
    data = imdb_bag_of_words()
    if data is None:
        return _no_data("IMDb")
    X, y, X_test, y_test = data
    epochs = args.epochs or 20
    n_valid = 10_000
    rows, curves = [], {}
    for name, alpha, dropout in IMDB_VARIANTS:
        clf = MLPClassifier(
            hidden_layer_sizes=(16, 16),
            learning_rate_init=1e-3,
            alpha=alpha,
            dropout=dropout,
            batch_size=512,
            max_iter=epochs,
            early_stopping=True,  # only for the held-out set and its curve
            validation_fraction=n_valid / X.shape[0],
            n_iter_no_change=epochs + 1,  # never stops: every epoch runs
            random_state=0,
            device="cpu",
            verbose=args.verbose,
        )
        fit_s = _fit_quietly(clf, X, y)
        hist = clf.history_
        vloss = np.array([h["valid_loss"] for h in hist])
        vacc = np.array([h["valid_score"] for h in hist])
        best = int(np.argmin(vloss)) + 1  # 1-based epoch of the lowest loss
        rises = str(best + 1) if best < len(hist) else f"not by {len(hist)}"
        curves[name] = vloss
        rows.append(
            [
                name,
                alpha,
                dropout,
                best,
                rises,
                f"{vloss.min():.4f}",
                f"{vloss[-1]:.4f}",
                f"{vacc[-1]:.4f}",
                f"{vacc.max():.4f} (ep. {int(np.argmax(vacc)) + 1})",
                f"{clf.score(X_test, y_test):.4f}",
                f"{np.mean([h['dur'] for h in hist]):.2f}",
                f"{fit_s:.1f}",
            ]
        )
        print(f"{name}: lowest validation loss at epoch {best}, fit {fit_s:.1f} s")
    summary = _table(
        "IMDb 16-16-1: where validation loss turns, and accuracy",
        [
            "variant",
            "alpha",
            "dropout",
            "lowest valid loss at epoch",
            "valid loss rises from epoch",
            "lowest valid loss",
            f"valid loss at epoch {epochs}",
            f"valid acc at epoch {epochs}",
            "best valid acc (epoch)",
            "test acc (best-epoch weights)",
            "s/epoch",
            "fit s",
        ],
        rows,
    )
    names = [v[0] for v in IMDB_VARIANTS]
    curve = _table(
        "IMDb 16-16-1: validation loss (log loss, no penalty) per epoch",
        ["epoch"] + names,
        [
            [e + 1] + [f"{curves[n][e]:.4f}" for n in names]
            for e in range(len(curves[names[0]]))
        ],
    )
    n_train = X.shape[0] - n_valid
    notes = [
        f"``MLPClassifier(hidden_layer_sizes=(16, 16), learning_rate_init=1e-3, "
        f"batch_size=512, max_iter={epochs}, early_stopping=True, "
        f"validation_fraction=0.4, n_iter_no_change={epochs + 1}, "
        "random_state=0, device='cpu')`` with the ``alpha`` and ``dropout`` of "
        f"each row, on the sparse float32 CSR matrix of the 25,000 training "
        f"reviews: ``early_stopping`` holds out {n_valid:,} of them (stratified, "
        f"seeded by ``random_state``) and trains on the other {n_train:,}; "
        "``n_iter_no_change`` larger than ``max_iter`` means training never "
        "stops early, so ``history_`` has the validation loss and accuracy of "
        "every epoch. Test accuracy is on the 25,000 test reviews, with the "
        "weights of the epoch of best validation accuracy (``early_stopping`` "
        "restores them); the validation accuracy at the last epoch is what the "
        "fully trained network gets on held-out reviews.",
        "Why ``alpha=1.0``: sknets scales the penalty like scikit-learn, "
        "``alpha / 2 * ||W||^2 / n`` added to the mean loss of a batch of *n* "
        "rows. With batch 512 that is ``1.0 / 1024 * ||W||^2`` per batch, about "
        "Keras's ``l2(0.001)`` (``0.001 * ||W||^2`` per batch) in the classic "
        "example; ``1e-4``, scikit-learn's default, would be 10,000 times "
        "weaker and change nothing visible. sknets penalizes every weight "
        "matrix (the output layer too, not the biases). The validation loss in "
        "the tables is the log loss alone, without the penalty.",
    ]
    return [summary, curve], notes


def _two_searches(X_all, rows, max_iter, hidden):
    """scikit-learn's GridSearchCV and sknets' over one MNIST grid, timed."""
    from sklearn.model_selection import GridSearchCV as SkGridSearchCV

    from sknets.model_selection import GridSearchCV

    _, y_all, _, _, _ = mnist_float32()
    pick = np.random.RandomState(0).choice(len(X_all), size=rows, replace=False)
    X, y = X_all[pick], y_all[pick]
    grid = {"max_iter": max_iter, "hidden_layer_sizes": [(h,) for h in hidden]}
    est = MLPClassifier(
        batch_size=200, tol=0.0, n_iter_no_change=10_000, random_state=0, device="cpu"
    )
    out = {}
    for name, cls, epochs in [
        ("sklearn", SkGridSearchCV, 3 * len(hidden) * sum(max_iter)),
        ("sknets", GridSearchCV, 3 * len(hidden) * max(max_iter)),
    ]:
        start = time.perf_counter()
        search = cls(est, grid, cv=3, refit=False).fit(X, y)
        out[name] = {
            "seconds": time.perf_counter() - start,
            "epochs": epochs,  # tol=0: every run trains all its epochs
            "mean_test_score": search.cv_results_["mean_test_score"].tolist(),
            "best_params": {k: str(v) for k, v in search.best_params_.items()},
        }
    return out


def run_grid(args):
    X, _, _, _, source = mnist_float32()
    if source != "mnist":
        return _no_data("MNIST")
    max_iter, hidden = [5, 10, 20], [32, 128, 512]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = _two_searches(X, args.rows, max_iter, hidden)
    warnings.resetwarnings()
    grid = {"max_iter": max_iter, "hidden_layer_sizes": [(h,) for h in hidden]}
    params = list(sklearn.model_selection.ParameterGrid(grid))
    score = {
        (p["max_iter"], p["hidden_layer_sizes"][0]): s
        for p, s in zip(params, results["sknets"]["mean_test_score"], strict=True)
    }
    table = _table(
        f"MNIST ({args.rows:,} rows), 3-fold CV: mean test accuracy",
        ["max_iter (epochs)"] + [f"hidden ({h},)" for h in hidden],
        [[m] + [f"{score[(m, h)]:.4f}" for h in hidden] for m in max_iter],
    )
    sk, sn = results["sklearn"], results["sknets"]
    diff = np.max(np.abs(np.subtract(sk["mean_test_score"], sn["mean_test_score"])))
    timing = _table(
        "Search wall time: scikit-learn's GridSearchCV vs sknets'",
        ["search", "networks trained", "epochs run", "wall time", "best params"],
        [
            [
                "sklearn.model_selection.GridSearchCV",
                3 * len(params),
                sk["epochs"],
                f"{sk['seconds']:.1f} s",
                ", ".join(f"{k}={v}" for k, v in sk["best_params"].items()),
            ],
            [
                "sknets.model_selection.GridSearchCV",
                3 * len(hidden),
                sn["epochs"],
                f"{sn['seconds']:.1f} s",
                ", ".join(f"{k}={v}" for k, v in sn["best_params"].items()),
            ],
        ],
    )
    notes = [
        f"``MLPClassifier(batch_size=200, tol=0.0, n_iter_no_change=10_000, "
        f"random_state=0, device='cpu')`` (every fit runs all its epochs) on "
        f"{args.rows:,} MNIST training images drawn at random (seed 0); the "
        "searches are those of ``benchmarks/bench_search.py`` (``refit=False``). "
        "sknets' search trains one network per fold and hidden size to 20 "
        "epochs and scores it after 5, 10 and 20; scikit-learn's trains every "
        "cell separately. Largest difference between the two searches' "
        f"``mean_test_score``: {diff:.2g}. Speed-up: "
        f"{sk['seconds'] / sn['seconds']:.2f}x."
    ]
    return [table, timing], notes


RUNNERS = {"mlp": run_mlp, "cnn": run_cnn, "imdb": run_imdb, "grid": run_grid}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", choices=EXPERIMENTS + ("all", "render"))
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: torch's)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="override the epochs (mlp, cnn, imdb)"
    )
    parser.add_argument("--rows", type=int, default=10_000, help="grid: MNIST rows")
    parser.add_argument("--verbose", type=int, default=0)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.experiment == "render":
        render()
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    names = EXPERIMENTS if args.experiment == "all" else (args.experiment,)
    options = [f"--threads {args.threads}"] if args.threads else []
    if args.epochs:
        options.append(f"--epochs {args.epochs}")
    if args.rows != 10_000:
        options.append(f"--rows {args.rows}")
    for name in names:
        print(f"=== {name}: {TITLES[name]}", flush=True)
        machine = _machine()
        alone = " ".join(["python benchmarks/reproductions.py", name] + options)
        invoked = shlex.join(["python", "benchmarks/reproductions.py", *argv])
        command = alone if invoked == alone else f"{invoked}  # alone: {alone}"
        start = time.perf_counter()
        out = RUNNERS[name](args)
        wall_s = time.perf_counter() - start
        if out is not None:
            _record(name, *out, wall_s, machine, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
