"""Small-data speed: sknets against a plain PyTorch loop and scikit-learn on digits.

Two workloads, each measured side by side in one process, interleaved round
by round (the order alternates), reported as medians and as ratios:

1. **Epoch time.** ``sknets.MLPClassifier`` (64-100-10, relu, batch 200, Adam
   lr 1e-3, ``alpha=1e-4``, shuffled every epoch, ``tol=0`` and
   ``n_iter_no_change=max_iter`` so that it never stops early) against
   bench_speed's ``plain_tuned`` loop doing the same work: the same module,
   dtype and seed, data placed as tensors once, batches sliced from a
   ``randperm`` per epoch, fused Adam, the same L2 penalty on the weights,
   and the epoch's mean loss accumulated on the device and read once per
   epoch (sknets' ``loss_curve_``). In float32 and float64 (the input dtype
   decides sknets' compute dtype).

   The clocks start and stop at the same places: sknets' ``history_[i]['dur']``
   runs from the start of epoch ``i`` (before its permutation is drawn) to
   the end of its bookkeeping (the epoch loss read, the history row written),
   and the plain loop times each epoch from its ``randperm`` to its loss
   read. Each round fits both contenders back to back (the order alternates)
   and takes, per fit, the median epoch without the first (warm-up); the
   ratio is the median over rounds of the per-round ratios, with their
   quartiles, so that a co-tenant's load spike hits both sides of a ratio.
   The whole ``fit`` call divided by the epochs (validation, set-up and the
   loop's work between epochs included; for the plain loop, building the
   module, the optimizer and the tensors) is reported next to it.

2. **One-row latency.** ``predict_proba`` on one ``(1, 64)`` numpy row for
   ``sknets.MLPClassifier`` and ``sklearn.neural_network.MLPClassifier``
   fitted on the same digits with the same architecture and dtype: the
   median over ``--calls`` calls per contender (after warm-up calls), timed
   one by one in interleaved blocks, one block per contender and round; the
   ratio is the median of the per-round ratios of the block medians. The
   bare module forward (a prepared tensor, ``torch.inference_mode``, eval
   mode, no softmax) is the floor.

torch and the BLAS libraries run on ``--threads`` threads (1 by default).
Results go to ``benchmarks/results/small-*.json``; see ``benchmarks/README.md``.
"""

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier as SklearnMLP
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import RESULTS, run_plain  # noqa: E402

import sknets  # noqa: E402
from sknets.modules import MLPModule  # noqa: E402

warnings.filterwarnings("ignore")

HIDDEN = 100
BATCH = 200
ALPHA = 1e-4
LR = 1e-3
DTYPES = {
    "float32": (np.float32, torch.float32),
    "float64": (np.float64, torch.float64),
}
TARGETS = {"epoch": 1.10, "predict": 1.5}


def digits(np_dtype):
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np_dtype), y


# ---------------------------------------------------------------- epoch time


def sknets_fit(X, y, epochs):
    """Wall time of one fit and the per-epoch clock (``history_`` 'dur')."""
    est = sknets.MLPClassifier(
        (HIDDEN,),
        batch_size=BATCH,
        learning_rate_init=LR,
        alpha=ALPHA,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=epochs,
        random_state=0,
    )
    start = time.perf_counter()
    est.fit(X, y)
    wall = time.perf_counter() - start
    assert est.n_iter_ == epochs, est.n_iter_
    durs = [row.get("dur") for row in getattr(est, "history_", [])]
    return wall, durs if durs and None not in durs else None


def plain_fit(X, y, epochs, torch_dtype):
    """The same work in bench_speed's tuned plain loop."""
    w = dict(X=X, y=y, module=lambda: MLPModule(X.shape[1], (HIDDEN,), 10))
    args = argparse.Namespace(
        device="cpu", epochs=epochs, batch_size=BATCH, compile=False, autocast=False
    )
    record = []
    start = time.perf_counter()
    run_plain(w, args, tuned=True, dtype=torch_dtype, alpha=ALPHA, record=record)
    wall = time.perf_counter() - start
    return wall, [seconds for seconds, _ in record]


def paired(first, second):
    """Median and quartiles of the per-round ratios ``first[r] / second[r]``."""
    ratios = [f / s for f, s in zip(first, second, strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return statistics.median(ratios), (q1, q3), ratios


def epoch_time(args):
    """Per-round medians of the epoch clocks, the two contenders side by side."""
    data = {name: digits(np_dt) for name, (np_dt, _) in DTYPES.items()}
    runs = {(name, c): {"epoch": [], "fit": []} for name in DTYPES for c in "sp"}
    clocks = set()

    def one(name, c):
        X, y = data[name]
        if c == "s":
            wall, durs = sknets_fit(X, y, args.epochs)
            clocks.add("history_ dur" if durs else "fit / epochs")
        else:
            wall, durs = plain_fit(X, y, args.epochs, DTYPES[name][1])
        return wall / args.epochs, durs

    for name in DTYPES:  # warm-up: first calls, lazy initialization
        for c in "sp":
            one(name, c)
    for r in range(args.rounds):
        for name in DTYPES:
            for c in "sp" if r % 2 == 0 else "ps":
                per_epoch, durs = one(name, c)
                runs[name, c]["fit"].append(per_epoch)
                # without sknets' clock, both sides fall back to fit / epochs
                runs[name, c]["epoch"].append(
                    statistics.median(durs[1:]) if durs else per_epoch
                )
        print(f"  epoch-time round {r + 1}/{args.rounds}", file=sys.stderr)
    clock = "history_ dur" if clocks == {"history_ dur"} else "fit / epochs"
    rows = []
    for name in DTYPES:
        sk, pl = runs[name, "s"], runs[name, "p"]
        if clock != "history_ dur":
            sk["epoch"], pl["epoch"] = sk["fit"], pl["fit"]
        ratio, iqr, _ = paired(sk["epoch"], pl["epoch"])
        fit_ratio, fit_iqr, _ = paired(sk["fit"], pl["fit"])
        rows.append(
            dict(
                workload="epoch",
                dtype=name,
                clock=clock,
                sknets_s=statistics.median(sk["epoch"]),
                plain_s=statistics.median(pl["epoch"]),
                ratio=ratio,
                ratio_iqr=iqr,
                sknets_fit_per_epoch_s=statistics.median(sk["fit"]),
                plain_fit_per_epoch_s=statistics.median(pl["fit"]),
                fit_ratio=fit_ratio,
                fit_ratio_iqr=fit_iqr,
                target=TARGETS["epoch"],
                rounds_sknets_s=sk["epoch"],
                rounds_plain_s=pl["epoch"],
                rounds_sknets_fit_per_epoch_s=sk["fit"],
                rounds_plain_fit_per_epoch_s=pl["fit"],
            )
        )
    return rows


# ------------------------------------------------------------ one-row predict


def predict_latency(args):
    """Per-call times on one row, in interleaved blocks of calls."""
    rows = []
    for name, (np_dt, _) in DTYPES.items():
        X, y = digits(np_dt)
        common = dict(batch_size=BATCH, learning_rate_init=LR, alpha=ALPHA)
        ours = sknets.MLPClassifier(
            (HIDDEN,), max_iter=args.predict_epochs, random_state=0, **common
        ).fit(X, y)
        theirs = SklearnMLP(
            (HIDDEN,), max_iter=args.predict_epochs, random_state=0, **common
        ).fit(X, y)
        row = np.ascontiguousarray(X[:1])
        module = copy.deepcopy(ours.module_).eval()
        xt = torch.from_numpy(row)

        def forward(module=module, xt=xt):
            with torch.inference_mode():
                return module(xt)

        calls = {
            "sknets": lambda ours=ours, row=row: ours.predict_proba(row),
            "sklearn": lambda theirs=theirs, row=row: theirs.predict_proba(row),
            "module": forward,
        }
        assert ours.predict_proba(row).shape == theirs.predict_proba(row).shape
        for f in calls.values():
            for _ in range(args.warmup):
                f()
        block = max(args.calls // args.rounds, 1)
        names = list(calls)
        times = {c: [] for c in names}  # every call
        medians = {c: [] for c in names}  # one per block
        for r in range(args.rounds):
            for c in names[r % len(names) :] + names[: r % len(names)]:
                f, out = calls[c], []
                for _ in range(block):
                    start = time.perf_counter_ns()
                    f()
                    out.append(time.perf_counter_ns() - start)
                times[c] += out
                medians[c].append(statistics.median(out))
        us = {c: statistics.median(t) / 1e3 for c, t in times.items()}
        ratio, iqr, _ = paired(medians["sknets"], medians["sklearn"])
        rows.append(
            dict(
                workload="predict_proba_1_row",
                dtype=name,
                sknets_us=us["sknets"],
                sklearn_us=us["sklearn"],
                module_forward_us=us["module"],
                ratio=ratio,
                ratio_iqr=iqr,
                target=TARGETS["predict"],
                calls=len(times["sknets"]),
                rounds_sknets_us=[m / 1e3 for m in medians["sknets"]],
                rounds_sklearn_us=[m / 1e3 for m in medians["sklearn"]],
            )
        )
        print(f"  predict latency {name} done", file=sys.stderr)
    return rows


# --------------------------------------------------------------------- report


def _commit():
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _ratio(row, key="ratio"):
    q1, q3 = row[key + "_iqr"]
    return f"{row[key]:.2f} ({q1:.2f}-{q3:.2f})"


def table(rows):
    """The results as the Markdown table of ``benchmarks/README.md``."""
    lines = [
        "| workload | dtype | sknets | reference | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = "met" if r["ratio"] <= r["target"] else "**not met**"
        if r["workload"] == "epoch":
            lines.append(
                f"| epoch, digits 64-100-10 (ms) | {r['dtype']} | "
                f"{r['sknets_s'] * 1e3:.2f} | plain_tuned {r['plain_s'] * 1e3:.2f} | "
                f"{_ratio(r)} | <= {r['target']:.2f} ({ok}) |"
            )
            lines.append(
                f"| fit / epochs, set-up included (ms) | {r['dtype']} | "
                f"{r['sknets_fit_per_epoch_s'] * 1e3:.2f} | plain_tuned "
                f"{r['plain_fit_per_epoch_s'] * 1e3:.2f} | "
                f"{_ratio(r, 'fit_ratio')} | |"
            )
        else:
            lines.append(
                f"| predict_proba, 1 row (us) | {r['dtype']} | "
                f"{r['sknets_us']:.1f} | scikit-learn {r['sklearn_us']:.1f} | "
                f"{_ratio(r)} | <= {r['target']:.1f} ({ok}) |"
            )
            lines.append(
                f"| module forward, 1 row (us) | {r['dtype']} | "
                f"{r['module_forward_us']:.1f} | | | |"
            )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", nargs="+", default=["epoch", "predict"])
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    p.add_argument("--epochs", type=int, default=20, help="epochs per fit")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--calls", type=int, default=2000, help="one-row calls each")
    p.add_argument("--warmup", type=int, default=200, help="untimed calls first")
    p.add_argument(
        "--predict-epochs", type=int, default=20, help="epochs of the fits to predict"
    )
    p.add_argument("--json", default=None, help="where to write the results")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    with threadpool_limits(limits=args.threads):
        if "epoch" in args.workloads:
            rows += epoch_time(args)
        if "predict" in args.workloads:
            rows += predict_latency(args)
    meta = dict(
        commit=_commit(),
        sknets=sknets.__version__,
        torch=torch.__version__,
        sklearn=sklearn.__version__,
        numpy=np.__version__,
        threads=args.threads,
        machine=platform.machine(),
        processor=platform.processor(),
        epochs=args.epochs,
        rounds=args.rounds,
        calls=args.calls,
        wall_s=time.perf_counter() - start,
        load_avg_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        cpus=os.cpu_count(),
        time=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.json or RESULTS / f"small-{time.strftime('%Y%m%d-%H%M%S')}.json")
    path.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print(f"# {meta}")
    print(table(rows))
    print(f"# written to {path}")


if __name__ == "__main__":
    main()
