"""Grid searches side by side: scikit-learn's MLP, sknets one run at a time, stacked.

Four searches over the same grid and folds, each in a fresh Python process
(so each pays its own imports and worker start-up), one after the other:

- ``sklearn``: scikit-learn's ``GridSearchCV`` over scikit-learn's
  ``MLPClassifier``;
- ``sklearn+sknets``: scikit-learn's ``GridSearchCV`` over
  ``sknets.MLPClassifier`` (every (candidate, fold) trained on its own);
- ``sknets-runs``: ``sknets.model_selection.GridSearchCV(vectorize=False)``
  (one run per fold for all the ``max_iter`` of a candidate);
- ``sknets``: the default, ``vectorize=True`` (those runs trained as the
  members of stacked networks).

Grids:

- ``digits``: ``load_digits`` as given (1,797 x 64, float64),
  ``{"hidden_layer_sizes": [(32,), (64,), (128,)], "alpha": [1e-4, 1e-2],
  "max_iter": [20, 50, 100]}``, 5 folds, default estimators with
  ``random_state=0``: what a new user would try.
- ``mnist``: 10,000 rows of ``../shared/data/mnist`` (float32 in [0, 1]; synthetic
  data of that shape when absent), ``{"hidden_layer_sizes": [(64,), (128,)],
  "alpha": [1e-4, 1e-2], "max_iter": [5, 10, 20]}``, 3 folds.

Printed per search: wall time, its ratio to ``sklearn``, best score and
parameters, and for the stacked search the members per stack; then the
largest difference between the ``mean_test_score`` of ``sknets`` and of
``sklearn+sknets`` (0 up to float rounding: the same fits). Run
``python benchmarks/bench_search.py --help`` for options; ``--json`` writes
everything.

``--versus-sklearn`` is the measurement a user makes: ``--runs`` times (3 by
default), a fresh Python process imports numpy, torch, scikit-learn and
sknets, scales the digits ``X / 16`` and times scikit-learn's
``GridSearchCV(MLPClassifier(random_state=0), grid, cv=StratifiedKFold(5,
shuffle=True, random_state=0), n_jobs=2)`` first, then sknets' search over
``sknets.MLPClassifier(random_state=0)`` (``--dtype float32``: with
``dtype="float32"``) in the same process, torch's threads as they come.
Printed: each run, the medians of both times and of the per-run ratios, and
the largest difference of the best scores.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEARCHES = ("sklearn", "sklearn+sknets", "sknets-runs", "sknets")


def _data(grid):
    import numpy as np

    if grid == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return (
            X,
            y,
            "load_digits",
            5,
            {
                "hidden_layer_sizes": [(32,), (64,), (128,)],
                "alpha": [1e-4, 1e-2],
                "max_iter": [20, 50, 100],
            },
        )
    sys.path.insert(0, str(HERE))
    from _datasets import mnist_float32

    X, y, _, _, source = mnist_float32(synthetic_rows=10_000)
    rows = np.random.RandomState(0).choice(len(X), size=10_000, replace=False)
    return (
        X[rows],
        y[rows],
        source,
        3,
        {
            "hidden_layer_sizes": [(64,), (128,)],
            "alpha": [1e-4, 1e-2],
            "max_iter": [5, 10, 20],
        },
    )


VERSUS_GRID = {
    "hidden_layer_sizes": [(32,), (64,), (128,)],
    "alpha": [1e-4, 1e-2],
    "max_iter": [20, 50, 100],
}


def versus_one(dtype):
    """scikit-learn's search, then sknets', in this (fresh) process: a dict."""
    warnings.simplefilter("ignore")
    import numpy as np  # noqa: F401
    import torch  # noqa: F401
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV as SkGridSearchCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    import sknets
    from sknets.model_selection import GridSearchCV

    X, y = load_digits(return_X_y=True)
    X = X / 16
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    start = time.perf_counter()
    sk = SkGridSearchCV(SkMLPClassifier(random_state=0), VERSUS_GRID, cv=cv, n_jobs=2)
    sk.fit(X, y)
    sk_seconds = time.perf_counter() - start
    kw = {} if dtype == "float64" else {"dtype": dtype}
    start = time.perf_counter()
    ours = GridSearchCV(
        sknets.MLPClassifier(random_state=0, **kw), VERSUS_GRID, cv=cv, n_jobs=2
    ).fit(X, y)
    seconds = time.perf_counter() - start
    return {
        "sklearn_seconds": sk_seconds,
        "sknets_seconds": seconds,
        "ratio": seconds / sk_seconds,
        "sklearn_best_score": float(sk.best_score_),
        "sknets_best_score": float(ours.best_score_),
        "sknets_refit_seconds": ours.refit_time_,
    }


def versus(args):
    import statistics

    runs = []
    for i in range(args.runs):
        cmd = [sys.executable, __file__, "--versus-one", "--dtype", args.dtype]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(r)
        print(
            f"run {i + 1}: sklearn {r['sklearn_seconds']:.2f} s, sknets "
            f"{r['sknets_seconds']:.2f} s (refit {r['sknets_refit_seconds']:.2f}), "
            f"ratio {r['ratio']:.3f}; best {r['sklearn_best_score']:.4f} vs "
            f"{r['sknets_best_score']:.4f}",
            flush=True,
        )
    summary = {
        "dtype": args.dtype,
        "runs": runs,
        "median_sklearn_seconds": statistics.median(r["sklearn_seconds"] for r in runs),
        "median_sknets_seconds": statistics.median(r["sknets_seconds"] for r in runs),
        "median_ratio": statistics.median(r["ratio"] for r in runs),
        "max_best_score_diff": max(
            abs(r["sklearn_best_score"] - r["sknets_best_score"]) for r in runs
        ),
    }
    print(
        f"digits X/16, {VERSUS_GRID}, StratifiedKFold(5), n_jobs=2, sknets "
        f"{args.dtype}: median sklearn {summary['median_sklearn_seconds']:.2f} s, "
        f"median sknets {summary['median_sknets_seconds']:.2f} s, median ratio "
        f"{summary['median_ratio']:.3f}, max |best score diff| "
        f"{summary['max_best_score_diff']:.4f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


def run_one(name, grid, n_jobs, threads, device):
    """One search in this process; its results as a dict."""
    import torch

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    from sklearn import model_selection as skms
    from sklearn.neural_network import MLPClassifier as SkMLP

    from sknets import MLPClassifier
    from sknets.model_selection import GridSearchCV

    X, y, source, cv, param_grid = _data(grid)
    kw = dict(cv=cv, n_jobs=n_jobs)
    if name == "sklearn":
        search = skms.GridSearchCV(SkMLP(random_state=0), param_grid, **kw)
    else:
        est = MLPClassifier(random_state=0, device=device)
        if name == "sklearn+sknets":
            search = skms.GridSearchCV(est, param_grid, **kw)
        else:
            search = GridSearchCV(est, param_grid, vectorize=name == "sknets", **kw)
    start = time.perf_counter()
    search.fit(X, y)
    seconds = time.perf_counter() - start
    stacking = getattr(search, "stacking_", None)
    return {
        "seconds": seconds,
        "refit_seconds": search.refit_time_,
        "best_score": float(search.best_score_),
        "best_params": {k: str(v) for k, v in search.best_params_.items()},
        "mean_test_score": search.cv_results_["mean_test_score"].tolist(),
        "stacks": None if stacking is None else stacking["stacks"],
        "member_bytes": None if stacking is None else stacking["member_bytes"],
        "data": source,
        "shape": list(X.shape),
        "dtype": str(X.dtype),
        "cv": cv,
        "grid": {k: [str(v) for v in vs] for k, vs in param_grid.items()},
    }


def profile_one(grid, n_jobs, threads, device):
    """Where the stacked search's seconds go, in this process (instrumented).

    Wraps the search's phases with timers (no copy of their code): whether
    the search imports ``torch._dynamo`` (torch's own optimizers do on first
    use, 1-3.5 s; sknets' do not), preparing the members, building and
    training each stack (per thread), scikit-learn's own ``fit`` (pick-up of
    the trained states and scoring of every (candidate, fold)), the refit,
    and the rest.
    """
    import _timing
    import torch
    from sklearn.model_selection._search import BaseSearchCV

    import sknets.model_selection._pretrain as pretrain
    from sknets import MLPClassifier
    from sknets.model_selection import GridSearchCV
    from sknets.model_selection._workers import ForkedRuns

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    events = []

    def timed(owner, name, label):
        def record(args, kwargs, thread, start, end):
            events.append((label, thread, start, end))

        return _timing.timed(owner, name, record)

    saved = [
        (
            pretrain.Pretraining,
            "__init__",
            timed(pretrain.Pretraining, "__init__", "prepare"),
        ),
        (pretrain, "_stack_run", timed(pretrain, "_stack_run", "build")),
        (pretrain.MemberRun, "advance", timed(pretrain.MemberRun, "advance", "train")),
        (BaseSearchCV, "fit", timed(BaseSearchCV, "fit", "sklearn_fit")),
    ]
    # stacks trained in forked workers: the timers above run there, out of
    # reach; each run's own clock comes back in its states (``seconds``),
    # and ``_train_forked``'s span is the training phase
    stack_seconds = []
    forked, finish = pretrain.Pretraining._train_forked, ForkedRuns._finish

    def timed_forked(self):
        start_ = time.perf_counter()
        results = forked(self)
        events.append(("parallel", "main", start_, time.perf_counter()))
        return results

    def timed_finish(self, started):
        finished = finish(self, started)
        for _, _, by_member, _ in finished:
            stack_seconds.append(
                max(s.seconds for states in by_member.values() for s in states.values())
            )
        return finished

    pretrain.Pretraining._train_forked = timed_forked
    ForkedRuns._finish = timed_finish
    saved += [
        (pretrain.Pretraining, "_train_forked", forked),
        (ForkedRuns, "_finish", finish),
    ]
    X, y, source, cv, param_grid = _data(grid)
    dynamo_before = "torch._dynamo" in sys.modules
    search = GridSearchCV(
        MLPClassifier(random_state=0, device=device), param_grid, cv=cv, n_jobs=n_jobs
    )
    start = time.perf_counter()
    search.fit(X, y)
    total = time.perf_counter() - start
    for owner, name, inner in saved:
        setattr(owner, name, inner)
    spans = {}
    for label, thread, a, b in events:
        spans.setdefault(label, []).append((thread, a - start, b - start))
    train = spans.get("train", [])
    end_train = max((b for _, _, b in train), default=0.0)
    busy = {}
    for label in ("build", "train"):
        for thread, a, b in spans.get(label, []):
            busy[thread] = busy.get(thread, 0.0) + b - a
    first = min((a for _, a, _ in spans.get("build", [])), default=0.0)
    idle = {t: end_train - first - s for t, s in busy.items()}

    def seconds(label):
        return sum(b - a for _, a, b in spans.get(label, []))

    processes = search.stacking_.get("workers") == "processes"
    if processes:  # measured in the workers (see timed_finish)
        training, phase = sum(stack_seconds), seconds("parallel")
        train = [("worker", 0.0, s) for s in stack_seconds]
    else:
        training, phase = seconds("train"), end_train - first

    rows = [
        (
            "torch._dynamo imported by the search (1 = yes, 0 = no)"
            + (" [already imported before]" if dynamo_before else ""),
            float("torch._dynamo" in sys.modules and not dynamo_before),
        ),
        ("preparing members (fit up to the network, plans)", seconds("prepare")),
        ("building stacks (modules, optimizers), thread-seconds", seconds("build")),
        (
            "training stacks, "
            + ("seconds in worker processes" if processes else "thread-seconds"),
            training,
        ),
        (
            "training phase, wall ("
            + ("fork to last state back" if processes else "first build to last done")
            + ")",
            phase,
        ),
        (
            "picking up and scoring (scikit-learn's fit, minus refit)",
            seconds("sklearn_fit") - search.refit_time_,
        ),
        ("refit", search.refit_time_),
        ("search total", total),
    ]
    # in the order the stacks finished (members per stack: "stacks")
    stacks = [(t, round(a, 3), round(b, 3), round(b - a, 3)) for t, a, b in train]
    return {
        "rows": rows,
        "idle": idle,
        "train_spans": stacks,
        "data": source,
        "stacks": search.stacking_["stacks"],
        "workers": search.stacking_.get("workers"),
        "best_score": float(search.best_score_),
    }


def _print_profile(result, floor_output):
    print(f"\nbreakdown of the stacked search ({result['data']}), seconds:")
    for name, seconds in result["rows"]:
        print(f"  {name:62s} {seconds:7.2f}")
    for thread, seconds in result["idle"].items():
        print(f"  idle in the training phase, {thread:33s} {seconds:7.2f}")
    for thread, a, b, d in result["train_spans"]:
        print(f"  stack trained in {thread}: {a:.2f} -> {b:.2f} s ({d:.2f} s)")
    print(
        f"  members per stack: {result['stacks']};"
        f" best score {result['best_score']:.4f}"
    )
    print("bare-torch floor of the same steps (bench_stack_floor.py, same run):")
    print(floor_output.rstrip())


def _child(args, name, grid, *extra):
    """Run search ``name`` over ``grid`` in a fresh process; its JSON result."""
    cmd = [sys.executable, __file__, *extra, "--one", name, "--grid", grid]
    cmd += ["--n-jobs", str(args.n_jobs), "--threads", str(args.threads)]
    cmd += ["--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=["digits", "mnist", "both"], default="both")
    parser.add_argument("--searches", default=",".join(SEARCHES))
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="break one stacked digits search down by phase (fresh process), "
        "with bench_stack_floor.py's bare-torch floor in the same run",
    )
    parser.add_argument(
        "--versus-sklearn",
        action="store_true",
        help="scikit-learn's search first, then sknets', in fresh processes "
        "(--runs, --dtype): the medians",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--versus-one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.versus_one:
        result = versus_one(args.dtype)
        print(json.dumps(result))
        return result
    if args.versus_sklearn:
        return versus(args)
    if args.profile and args.one:
        result = profile_one(args.grid, args.n_jobs, args.threads, args.device)
        print(json.dumps(result))
        return result
    if args.profile:
        grid = "digits" if args.grid == "both" else args.grid
        result = _child(args, "sknets", grid, "--profile")
        floor = subprocess.run(
            [sys.executable, str(HERE / "bench_stack_floor.py")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        _print_profile(result, floor)
        if args.json:
            Path(args.json).write_text(
                json.dumps({"profile": result, "floor": floor}, indent=2)
            )
        return result
    if args.one:  # a child process: one search, JSON on stdout
        result = run_one(args.one, args.grid, args.n_jobs, args.threads, args.device)
        print(json.dumps(result))
        return result

    grids = ["digits", "mnist"] if args.grid == "both" else [args.grid]
    names = args.searches.split(",")
    report = {
        "args": vars(args),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "grids": {},
    }
    for grid in grids:
        results = {}
        for name in names:
            results[name] = _child(args, name, grid)
        first = next(iter(results.values()))
        print(
            f"\n{grid}: {first['data']} {first['shape']} {first['dtype']}, "
            f"cv={first['cv']}, n_jobs={args.n_jobs}, torch threads={args.threads}, "
            f"device={args.device}\ngrid: {first['grid']}"
        )
        base = results.get("sklearn", first)["seconds"]
        print(f"{'search':16s} {'seconds':>8s} {'ratio':>6s} {'best':>7s}  best params")
        for name, r in results.items():
            print(
                f"{name:16s} {r['seconds']:8.1f} {r['seconds'] / base:6.2f} "
                f"{r['best_score']:7.4f}  {r['best_params']}"
                + (f"  members per stack: {r['stacks']}" if r["stacks"] else "")
            )
        if "sknets" in results and "sklearn+sknets" in results:
            diff = max(
                abs(a - b)
                for a, b in zip(
                    results["sknets"]["mean_test_score"],
                    results["sklearn+sknets"]["mean_test_score"],
                    strict=True,
                )
            )
            print(f"max |mean_test_score(sknets) - (sklearn+sknets)|: {diff:.3g}")
            results["max_score_diff"] = diff
        report["grids"][grid] = results
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
