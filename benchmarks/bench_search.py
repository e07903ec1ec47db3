"""Wall time of scikit-learn's GridSearchCV against sknets' on MNIST-sized data.

Both searches tune the same :class:`sknets.MLPClassifier` over
``{max_iter: [5, 10, 20], hidden_layer_sizes: [(32,), (128,)]}`` with 3-fold
cross-validation. scikit-learn's search trains 18 networks (3 x (5 + 10 + 20)
x 2 = 210 epochs); sknets' trains 6 (6 x 20 = 120 epochs) and scores each fold
at every epoch count on the way. The script prints both wall times, their
ratio, the epochs each search ran and the largest difference between the two
``cv_results_`` scores (0 up to float rounding: the searches are equivalent).

Data: ``../shared/data/mnist`` when present (a subsample of ``--rows`` rows),
else synthetic 784-feature data of the same shape. Run
``python benchmarks/bench_search.py --help`` for options.
"""

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn import model_selection as skms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _datasets import mnist_float32  # noqa: E402

from sknets import MLPClassifier  # noqa: E402
from sknets._base import _BaseNet  # noqa: E402
from sknets.model_selection import GridSearchCV  # noqa: E402


def _count_epochs():
    """Patch ``_BaseNet._fit`` to count epochs run; returns the counter."""
    counter = {"epochs": 0}
    original = _BaseNet._fit

    def counting(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        counter["epochs"] += len(self.history_)
        return result

    _BaseNet._fit = counting
    return counter


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="training rows")
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--max-iter", default="5,10,20", help="epoch counts")
    parser.add_argument("--hidden", default="32,128", help="hidden layer sizes")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (parent)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    X, y, _, _, source = mnist_float32(synthetic_rows=args.rows)
    rng = np.random.RandomState(0)
    rows = rng.choice(len(X), size=min(args.rows, len(X)), replace=False)
    X, y = X[rows], y[rows]
    grid = {
        "max_iter": [int(v) for v in args.max_iter.split(",")],
        "hidden_layer_sizes": [(int(v),) for v in args.hidden.split(",")],
    }
    est = MLPClassifier(
        batch_size=args.batch_size,
        tol=0.0,
        n_iter_no_change=10_000,  # every run reaches its max_iter
        random_state=0,
        device=args.device,
    )
    # warm-up (torch kernels, lazy imports) so that neither search pays it
    from sklearn.base import clone

    clone(est).set_params(max_iter=1).fit(X[:500], y[:500])
    counter = _count_epochs()
    kw = dict(cv=args.cv, refit=False, n_jobs=args.n_jobs)
    print(
        f"data: {source} {X.shape}, grid: {grid}, cv={args.cv}, "
        f"batch_size={args.batch_size}, torch threads={args.threads}, "
        f"n_jobs={args.n_jobs}, device={args.device}"
    )
    results = {}
    for name, search_cls in [
        ("sklearn", skms.GridSearchCV),
        ("sknets", GridSearchCV),
    ]:
        counter["epochs"] = 0
        start = time.perf_counter()
        search = search_cls(est, grid, **kw).fit(X, y)
        seconds = time.perf_counter() - start
        results[name] = {
            "seconds": seconds,
            "epochs": counter["epochs"],  # in this process (n_jobs=None/1)
            "mean_test_score": search.cv_results_["mean_test_score"].tolist(),
            "mean_fit_time": search.cv_results_["mean_fit_time"].tolist(),
            "best_params": {k: str(v) for k, v in search.best_params_.items()},
        }
        print(
            f"{name:8s} {seconds:8.1f} s  epochs run: {counter['epochs']:4d}  "
            f"best: {search.best_params_}"
        )
    diff = np.max(
        np.abs(
            np.subtract(
                results["sklearn"]["mean_test_score"],
                results["sknets"]["mean_test_score"],
            )
        )
    )
    ratio = results["sklearn"]["seconds"] / results["sknets"]["seconds"]
    print(f"speed-up (sklearn / sknets): {ratio:.2f}x")
    print(f"max |mean_test_score difference|: {diff:.3g}")
    if args.json:
        payload = {
            "args": vars(args),
            "data": source,
            "shape": list(X.shape),
            "platform": platform.platform(),
            "versions": {"torch": torch.__version__, "sklearn": sklearn.__version__},
            "results": results,
            "ratio": ratio,
            "max_score_diff": float(diff),
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return results


if __name__ == "__main__":
    main()
