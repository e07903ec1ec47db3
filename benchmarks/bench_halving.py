"""Successive halving over epochs: scikit-learn's halving against sknets'.

The same 27-candidate grid, folds and rungs, each search in a fresh Python
process, one after the other:

- ``sklearn``: scikit-learn's ``HalvingGridSearchCV(resource="max_iter")``
  over ``sknets.MLPClassifier`` (every survivor retrained from scratch at
  every rung: 5 + 15 + 45 + 135 epochs for the winner);
- ``sknets``: ``sknets.model_selection.HalvingGridSearchCV`` with the same
  arguments (each fold's candidates trained as stacked members that go on
  from rung to rung: 135 epochs for the winner);
- ``sklearn-mlp`` (with ``--searches``): scikit-learn's halving over
  scikit-learn's own ``MLPClassifier``, for reference.

Data: ``load_digits`` as given (1,797 x 64, float64). Grid:
``hidden_layer_sizes`` (32,), (64,), (128,) x ``alpha`` 1e-4, 1e-3, 1e-2 x
``learning_rate_init`` 1e-3, 3e-3, 1e-2; ``min_resources=5``,
``max_resources=135``, ``factor=3``, ``cv=3``, ``random_state=0``, refit.

Each process imports everything and builds one torch optimizer (torch's
one-time lazy import of ``torch._dynamo``) before its search is timed.
Printed per search: wall time, its ratio to ``sklearn``, the refit's time,
best score and parameters, the rungs; then the largest difference between
the two searches' ``mean_test_score`` (0 up to float rounding: the same
fits). ``--json`` writes everything.

``floor`` (in ``--searches``) is the bare-torch floor of the training the
epoch-sharing halving does: its rungs' members (candidates x folds, by width)
for the epochs each rung adds, and the refit, timed as stacked steps with
nothing around them (``bench_stack_floor.stack``, one thread, early stopping
left out) one after the other; half of that is what two cores could not go
under. Its ratio is to ``sklearn`` as well.

``--timeline`` runs sknets' search alone, instrumented: when each rung, each
stack's training in it and the refit beside the last rung start and end, in
which thread, with how many members to how many epochs; the gaps between
rungs are scikit-learn picking up and scoring the trained states.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

SEARCHES = ("sklearn", "sknets")
BATCH = 200  # the networks' batch_size="auto" on these folds
GRID = {
    "hidden_layer_sizes": [(32,), (64,), (128,)],
    "alpha": [1e-4, 1e-3, 1e-2],
    "learning_rate_init": [1e-3, 3e-3, 1e-2],
}
HALVING = dict(resource="max_iter", min_resources=5, max_resources=135, factor=3, cv=3)


def run_one(name, n_jobs, threads, device):
    """One search in this process; its results as a dict."""
    import torch

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    from sklearn.datasets import load_digits
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV as SkHalving
    from sklearn.neural_network import MLPClassifier as SkMLP

    from sknets import MLPClassifier
    from sknets.model_selection import HalvingGridSearchCV

    X, y = load_digits(return_X_y=True)
    # torch imports torch._dynamo (about 3.5 s here) when the process builds
    # its first optimizer: a one-time import, paid here by every search alike
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    kw = dict(HALVING, n_jobs=n_jobs)
    if name == "sklearn-mlp":
        search = SkHalving(SkMLP(random_state=0), GRID, **kw)
    else:
        est = MLPClassifier(random_state=0, device=device)
        cls = SkHalving if name == "sklearn" else HalvingGridSearchCV
        search = cls(est, GRID, **kw)
    start = time.perf_counter()
    search.fit(X, y)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "refit_seconds": search.refit_time_,
        **_found(search, X),
    }


def _found(search, X):
    """What a fitted halving search found, for the report."""
    stacking = getattr(search, "stacking_", None)
    return {
        "best_score": float(search.best_score_),
        "best_params": {k: str(v) for k, v in search.best_params_.items()},
        "mean_test_score": search.cv_results_["mean_test_score"].tolist(),
        "n_resources": list(search.n_resources_),
        "n_candidates": list(search.n_candidates_),
        "stacks": None if stacking is None else stacking["stacks"],
        "shape": list(X.shape),
    }


def floor_one(threads, steps=30, rounds=3):
    """The bare-torch floor of sknets' halving, on two cores (see the module doc)."""
    import math
    import statistics

    import torch

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    from bench_stack_floor import stack
    from sklearn.datasets import load_digits
    from sklearn.model_selection import check_cv

    import sknets.model_selection._pretrain as pretrain
    from sknets import MLPClassifier
    from sknets.model_selection import HalvingGridSearchCV

    # every rung's trained states: how many epochs each member ran
    rungs, advance = [], pretrain.Pretraining.advance

    def recording(self, epochs, runs, extra=(), score=False):
        out = advance(self, epochs, runs, extra, score=score)
        rungs.append(
            [
                (s.module_state["layers.0.weight"].shape[0], len(s.history))
                for s in out[0].values()
            ]
        )
        return out

    pretrain.Pretraining.advance = recording
    X, y = load_digits(return_X_y=True)
    search = HalvingGridSearchCV(MLPClassifier(random_state=0), GRID, **HALVING)
    search.fit(X, y)
    pretrain.Pretraining.advance = advance
    splits = list(check_cv(HALVING["cv"], y, classifier=True).split(X, y))
    per_epoch = max(math.ceil(len(train) / BATCH) for train, _ in splits)
    # (rung, width, members, member-steps): the epochs each member trained in
    # the rung (none after it stopped)
    work, before = [], 0
    for i, (budget, states) in enumerate(zip(search.n_resources_, rungs, strict=True)):
        by_width = {}
        for width, ran in states:
            count, epochs = by_width.get(width, (0, 0))
            by_width[width] = (count + 1, epochs + max(0, ran - before))
        for width, (count, epochs) in sorted(by_width.items()):
            work.append((i + 1, width, count, epochs * per_epoch))
        before = budget
    best = search.best_estimator_
    refit_steps = best.n_iter_ * math.ceil(len(X) / BATCH)
    work.append(("refit", best.hidden_layer_sizes[0], 1, refit_steps))
    # each (rung, width): a bare stack of its members, per member-step
    Xt = torch.as_tensor(X, dtype=torch.float64)
    yt = torch.as_tensor(y)
    seconds = []
    for _rung, width, members, member_steps in work:
        step = stack(Xt, yt, members, width, torch.float64)
        times = []
        for _ in range(rounds):
            step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times.append((time.perf_counter() - start) / steps)
        seconds.append(statistics.median(times) * member_steps / members)
    one_core = sum(seconds)
    return {
        "seconds": one_core / 2,
        "one_core_seconds": one_core,
        "work": [
            {"rung": r, "width": w, "members": m, "member_steps": n, "seconds": t}
            for (r, w, m, n), t in zip(work, seconds, strict=True)
        ],
        "refit_seconds": seconds[-1],
        **_found(search, X),
        "stacks": None,  # the floor's own steps, not the search's stacks
    }


def timeline_one(n_jobs, threads, device):
    """Where sknets' halving search spends its seconds, rung by rung (instrumented).

    Wraps, without copying their code, each rung (``Pretraining.advance``),
    each stack's training in it (``_advance`` in a thread; in a worker
    process, from the request to the reply with the states) and each refit
    trained beside the last rung (``_train_run``): their start and end on one
    clock, the thread or worker, members and epochs. Between rungs:
    scikit-learn picking up and scoring the trained states; before the
    first: planning, building and forking the workers.
    """
    import _timing
    import torch

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    from sklearn.datasets import load_digits

    import sknets.model_selection._pretrain as pretrain
    import sknets.model_selection._workers as workers
    from sknets import MLPClassifier
    from sknets.model_selection import HalvingGridSearchCV

    events, clock = [], [0.0]

    def timed(owner, name, label, describe):
        def record(args, kwargs, thread, start, end):
            members, epochs = describe(*args, **kwargs)
            events.append(
                {
                    "what": label,
                    "thread": thread,
                    "members": members,
                    "epochs": epochs,
                    "start": start - clock[0],
                    "end": end - clock[0],
                }
            )

        return _timing.timed(owner, name, record)

    saved = [
        (
            pretrain.Pretraining,
            "advance",
            timed(
                pretrain.Pretraining,
                "advance",
                "rung",
                lambda self, epochs, runs, extra=(), score=False: (len(runs), epochs),
            ),
        ),
        (
            pretrain,
            "_advance",
            timed(
                pretrain,
                "_advance",
                "stack",
                lambda run, epochs, n_workers: (len(run.members), epochs),
            ),
        ),
        (
            pretrain,
            "_train_run",
            timed(
                pretrain, "_train_run", "refit", lambda *a, **k: (1, k["epochs"][-1])
            ),
        ),
    ]
    # stacks in worker processes: from the request to the reply, seen here
    pending, send, receive = {}, workers.ForkedRuns._send, workers.ForkedRuns._receive

    def sending(self, worker, command, *args):
        if command == "advance":
            pending[worker] = (time.perf_counter(), args[1])
        return send(self, worker, command, *args)

    def receiving(self, worker):
        value = receive(self, worker)
        if worker in pending:
            start, epochs = pending.pop(worker)
            # the reply: each run's (states by member, scores)
            members = sum(len(states) for states, _ in value.values())
            events.append(
                {
                    "what": "stacks",
                    "thread": f"worker process {worker}",
                    "members": members,
                    "epochs": epochs,
                    "start": start - clock[0],
                    "end": time.perf_counter() - clock[0],
                }
            )
        return value

    workers.ForkedRuns._send, workers.ForkedRuns._receive = sending, receiving
    saved += [
        (workers.ForkedRuns, "_send", send),
        (workers.ForkedRuns, "_receive", receive),
    ]
    X, y = load_digits(return_X_y=True)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    search = HalvingGridSearchCV(
        MLPClassifier(random_state=0, device=device), GRID, **HALVING, n_jobs=n_jobs
    )
    clock[0] = time.perf_counter()
    search.fit(X, y)
    total = time.perf_counter() - clock[0]
    for owner, name, inner in saved:
        setattr(owner, name, inner)
    return {"seconds": total, "events": sorted(events, key=lambda e: e["start"])}


def _print_timeline(result):
    print(f"sknets halving, {result['seconds']:.2f} s in all (instrumented)")
    last = 0.0
    for e in result["events"]:
        if e["what"] == "rung":
            gap = "plan, build (and fork)" if last == 0.0 else "pick-ups and scoring"
            print(f"  {last:5.2f} -> {e['start']:5.2f}  {gap}")
            print(
                f"  {e['start']:5.2f} -> {e['end']:5.2f}  rung: {e['members']} "
                f"candidates to {e['epochs']} epochs"
            )
            last = e["end"]
        else:
            print(
                f"      {e['start']:5.2f} -> {e['end']:5.2f}  {e['what']} of "
                f"{e['members']} members to {e['epochs']} epochs ({e['thread']})"
            )
    print(f"  {last:5.2f} -> {result['seconds']:5.2f}  pick-ups, scoring and the rest")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", default=",".join(SEARCHES))
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="sknets' search only, instrumented: each rung, stack and refit in time",
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.timeline and args.one:  # a child process: JSON on stdout
        result = timeline_one(args.n_jobs, args.threads, args.device)
        print(json.dumps(result))
        return result
    if args.timeline:
        cmd = [sys.executable, __file__, "--one", "sknets", "--timeline"]
        cmd += ["--n-jobs", str(args.n_jobs), "--threads", str(args.threads)]
        cmd += ["--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        _print_timeline(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return result
    if args.one:  # a child process: one search, JSON on stdout
        if args.one == "floor":
            result = floor_one(args.threads)
        else:
            result = run_one(args.one, args.n_jobs, args.threads, args.device)
        print(json.dumps(result))
        return result

    results = {}
    for name in args.searches.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--n-jobs", str(args.n_jobs)]
        cmd += ["--threads", str(args.threads), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    first = next(iter(results.values()))
    print(
        f"load_digits {first['shape']} float64, {HALVING}, n_jobs={args.n_jobs}, "
        f"torch threads={args.threads}, device={args.device}\ngrid: {GRID}\n"
        f"rungs: epochs {first['n_resources']}, candidates {first['n_candidates']}"
    )
    base = results.get("sklearn", first)["seconds"]
    print(
        f"{'search':12s} {'seconds':>8s} {'ratio':>6s} {'refit s':>8s} {'best':>7s}"
        "  best params"
    )
    for name, r in results.items():
        if name == "floor":
            ratio = r["seconds"] / base
            print(f"{'floor, 2 cores':12s} {r['seconds']:8.1f} {ratio:6.2f}")
            continue
        print(
            f"{name:12s} {r['seconds']:8.1f} {r['seconds'] / base:6.2f} "
            f"{r['refit_seconds']:8.2f} {r['best_score']:7.4f}  {r['best_params']}"
            + (f"  members per stack: {r['stacks']}" if r["stacks"] else "")
        )
    if "floor" in results:
        print("floor, one core: (rung, width, members, member-steps, seconds)")
        for w in results["floor"]["work"]:
            print(
                f"  {w['rung']!s:>5} {w['width']:4d} {w['members']:3d} "
                f"{w['member_steps']:6d} {w['seconds']:6.2f}"
            )
        print(
            f"  {results['floor']['one_core_seconds']:.2f} s on one core, "
            f"{results['floor']['seconds']:.2f} s on two"
        )
    if "sknets" in results and "sklearn" in results:
        diff = max(
            abs(a - b)
            for a, b in zip(
                results["sknets"]["mean_test_score"],
                results["sklearn"]["mean_test_score"],
                strict=True,
            )
        )
        print(f"max |mean_test_score(sknets) - (sklearn)|: {diff:.3g}")
        results["max_score_diff"] = diff
    report = {
        "args": vars(args),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "results": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
