"""Side-by-side speed of sknets, a plain PyTorch loop, skorch and scikit-learn.

Every contender trains the same network on the same data with the same batch
size, optimizer (Adam, lr 1e-3, no weight penalty) and number of epochs, in
one process, interleaved round by round (the order rotates each round). The
table reports median seconds per epoch (fit wall time / epochs, setup
included), predict_proba time on 10,000 rows, and the ratio of each contender
to the plain loop. ``--memory`` measures, for each fit in a fresh subprocess,
the peak growth of anonymous resident memory while ``fit`` runs (data already
loaded).

Run ``python benchmarks/bench_speed.py --help`` for options; see
``benchmarks/README.md``.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _datasets import imdb_bag_of_words, mnist_float32  # noqa: E402

import sknets  # noqa: E402
from sknets.modules import MLPModule  # noqa: E402

warnings.filterwarnings("ignore")
RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------- workloads


class CNN(nn.Module):
    """The classic digit CNN on flat 784-pixel rows."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1600, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    channels_last = False  # set by the tuned loop

    def forward(self, X):
        X = X.reshape(-1, 1, 28, 28)
        if self.channels_last:
            X = X.contiguous(memory_format=torch.channels_last)
        return self.body(X)


def workloads(args):
    Xtr, ytr, Xte, yte, source = mnist_float32()
    n = args.rows or len(Xtr)
    out = {
        "mlp": dict(
            X=Xtr[:n],
            y=ytr[:n],
            Xp=Xte[:10_000],
            source=source,
            module=lambda: MLPModule(784, (512,), 10),
            n_out=10,
            sknets=lambda e: sknets.MLPClassifier((512,), **e),
            sklearn=True,
        ),
        "cnn": dict(
            X=Xtr[: n // 4],
            y=ytr[: n // 4],
            Xp=Xte[:10_000],
            source=source,
            module=CNN,
            n_out=10,
            sklearn=False,
            sknets=_convnet if hasattr(sknets, "ConvNetClassifier") else None,
        ),
    }
    bow = imdb_bag_of_words()
    if bow is not None:
        Xs, ys, Xst, _ = bow
        out["sparse"] = dict(
            X=Xs,
            y=ys,
            Xp=Xst[:10_000],
            source="imdb",
            module=lambda: MLPModule(Xs.shape[1], (16, 16), 2),
            n_out=2,
            sklearn=True,
            sknets=lambda e: sknets.MLPClassifier((16, 16), **e),
        )
    return {k: v for k, v in out.items() if k in args.workloads}


def _convnet(e):
    return sknets.ConvNetClassifier(
        filters=(32, 64),
        kernel_size=3,
        pooling="max",
        hidden_layer_sizes=(64,),
        input_shape=(28, 28),
        **e,
    )


# --------------------------------------------------------------- contenders

# layers whose weights (not biases) sknets' ``alpha`` penalizes
PENALIZED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _seeded(make):
    torch.manual_seed(0)
    return make()


def run_plain(w, args, tuned=False, *, dtype=torch.float32, alpha=0.0, record=None):
    """The limit: tensors loaded once, batches sliced from a permutation.

    ``tuned``: the same loop with what sknets does on top (torch's fused
    Adam, channels-last images for the CNN, prediction in 256-row batches).
    ``dtype``: of the module and the data. ``alpha``: scikit-learn's L2
    penalty, ``alpha / 2 * ||W||^2 / n`` on the weights (not the biases) of
    each batch of ``n`` rows. ``record``: a list that receives, per epoch,
    ``(seconds, loss)``; the loop then also computes each epoch's mean loss
    (sknets' ``loss_curve_``), accumulated on the device and read once per
    epoch, and times each epoch from the permutation to that read.
    """
    device = torch.device(args.device)
    module = _seeded(w["module"]).to(device, dtype)
    if tuned and isinstance(module, CNN):
        module.channels_last = True
        module = module.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, fused=tuned or None)
    forward = torch.compile(module) if tuned and args.compile else module
    autocast = torch.autocast(
        device.type, torch.bfloat16, enabled=tuned and args.autocast
    )
    weights = [m.weight for m in module.modules() if isinstance(m, PENALIZED)]
    X, y = w["X"], torch.as_tensor(w["y"]).to(device)
    sparse = not isinstance(X, np.ndarray)
    Xt = None if sparse else torch.from_numpy(X).to(device, dtype)
    g = torch.Generator().manual_seed(0)
    n, bs = X.shape[0], args.batch_size
    start = time.perf_counter()
    for _ in range(args.epochs):
        epoch_start = time.perf_counter()
        total = 0.0
        perm = torch.randperm(n, generator=g)
        permd = perm.to(device)
        for i in range(0, n, bs):
            if sparse:
                xb = torch.from_numpy(X[perm[i : i + bs].numpy()].toarray())
                xb = xb.to(device, dtype)
            else:
                xb = Xt[permd[i : i + bs]]
            yb = y[permd[i : i + bs]]
            with autocast:
                out = forward(xb)
            loss = F.cross_entropy(out.to(dtype), yb)
            if alpha:
                squares = sum((W * W).sum() for W in weights)
                loss = loss + alpha * 0.5 * squares / len(yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if record is not None:
                total = total + loss.detach() * len(yb)
        if record is not None:
            epoch_loss = float(total) / n
            record.append((time.perf_counter() - epoch_start, epoch_loss))
    _sync(device)
    fit = time.perf_counter() - start

    def predict():
        module.eval()
        Xp = w["Xp"]
        step = 256 if tuned else Xp.shape[0]
        outs = []
        with torch.inference_mode():
            for i in range(0, Xp.shape[0], step):
                xb = Xp[i : i + step]
                xb = torch.from_numpy(xb.toarray() if sparse else xb).to(device, dtype)
                with autocast:
                    out = forward(xb)
                outs.append(torch.softmax(out.float(), 1).cpu())
        return torch.cat(outs).numpy()

    return fit, predict


def run_sknets(w, args):
    est = w["sknets"](
        dict(
            batch_size=args.batch_size,
            max_iter=args.epochs,
            alpha=0.0,
            n_iter_no_change=10**6,
            random_state=0,
            device=args.device,
            compile=args.compile,
            autocast=args.autocast,
        )
    )
    start = time.perf_counter()
    est.fit(w["X"], w["y"])
    _sync(torch.device(args.device))
    return time.perf_counter() - start, lambda: est.predict_proba(w["Xp"])


def run_skorch(w, args):
    from skorch import NeuralNetClassifier

    net = NeuralNetClassifier(
        _seeded(w["module"]),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        train_split=None,
        iterator_train__shuffle=True,
        device=args.device,
        verbose=0,
    )
    start = time.perf_counter()
    net.fit(w["X"], w["y"])
    _sync(torch.device(args.device))
    return time.perf_counter() - start, lambda: net.predict_proba(w["Xp"])


def run_sklearn(w, args):
    from sklearn.neural_network import MLPClassifier

    hidden = (512,) if w["n_out"] == 10 else (16, 16)
    est = MLPClassifier(
        hidden,
        batch_size=args.batch_size,
        max_iter=args.epochs,
        alpha=0.0,
        n_iter_no_change=10**6,
        random_state=0,
    )
    start = time.perf_counter()
    est.fit(w["X"], w["y"])
    return time.perf_counter() - start, lambda: est.predict_proba(w["Xp"])


CONTENDERS = {
    "plain": run_plain,
    # The same loop with sknets' own speed-ups written by hand: the ratio to
    # this one is sknets' overhead; the ratio to "plain" is what someone
    # writing the usual loop sees.
    "plain_tuned": lambda w, args: run_plain(w, args, tuned=True),
    "sknets": run_sknets,
    "skorch": run_skorch,
    "sklearn": run_sklearn,
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_predict(predict):
    """Seconds per call: one call, or the median of up to 20 if calls are short."""
    times = []
    deadline = time.perf_counter() + 0.3
    while not times or (
        times[0] < 0.1 and len(times) < 20 and time.perf_counter() < deadline
    ):
        start = time.perf_counter()
        predict()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _applies(name, w):
    return (name != "sklearn" or w["sklearn"]) and (name != "sknets" or w["sknets"])


# -------------------------------------------------------------------- runs


def speed(args):
    rows = []
    for wname, w in workloads(args).items():
        names = [c for c in args.contenders if _applies(c, w)]
        fit_t = {c: [] for c in names}
        pred_t = {c: [] for c in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for c in order:
                fit, predict = CONTENDERS[c](w, args)
                fit_t[c].append(fit / args.epochs)
                pred_t[c].append(_time_predict(predict))
                print(
                    f"  round {r + 1} {wname:6s} {c:11s} "
                    f"{fit / args.epochs:7.3f} s/epoch predict {pred_t[c][-1]:.3f} s",
                    file=sys.stderr,
                    flush=True,
                )
        # ratios are to the plain loop; without it, to the first contender
        base = "plain" if "plain" in names else names[0]
        base_fit = statistics.median(fit_t[base])
        base_pred = statistics.median(pred_t[base])
        for c in names:
            f, p = statistics.median(fit_t[c]), statistics.median(pred_t[c])
            rows.append(
                dict(
                    workload=wname,
                    data=w["source"],
                    rows=int(w["X"].shape[0]),
                    contender=c,
                    s_per_epoch=f,
                    predict_s=p,
                    epoch_ratio=f / base_fit,
                    predict_ratio=p / base_pred,
                    all_s_per_epoch=fit_t[c],
                )
            )
    return rows


def memory(args):
    """Peak RSS of one fit per (workload, contender), each in a fresh process."""
    rows = []
    for wname in args.workloads:
        for c in args.contenders:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                c,
                "--workloads",
                wname,
                "--epochs",
                "1",
                "--device",
                args.device,
                "--batch-size",
                str(args.batch_size),
            ]
            if args.rows:
                cmd += ["--rows", str(args.rows)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            elif out.returncode != 3:
                print(out.stderr[-2000:], file=sys.stderr)
    return rows


def child(args):
    """One fit; peak growth of anonymous resident memory while it runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_large_data import peak_growth

    w = next(iter(workloads(args).values()), None)
    if w is None or not _applies(args.child, w):
        sys.exit(3)
    X = w["X"]
    x_bytes = (
        X.nbytes
        if isinstance(X, np.ndarray)
        else (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)
    )
    model_bytes = sum(p.numel() * 4 for p in w["module"]().parameters())
    _, growth = peak_growth(lambda: CONTENDERS[args.child](w, args))
    print(
        json.dumps(
            dict(
                workload=args.workloads[0],
                contender=args.child,
                x_mb=x_bytes / 2**20,
                model_mb=model_bytes / 2**20,
                fit_extra_mb=growth / 2**20,
                ratio_to_x_plus_model=(x_bytes + growth) / (x_bytes + model_bytes),
                dense_x_mb=X.shape[0] * X.shape[1] * 4 / 2**20,
            )
        )
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", nargs="+", default=["mlp", "cnn", "sparse"])
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rows", type=int, default=None, help="subsample training rows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--memory", action="store_true", help="measure peak memory instead")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile in sknets and plain_tuned (compile time is in the fit)",
    )
    p.add_argument(
        "--autocast",
        action="store_true",
        help="bfloat16 autocast in sknets and plain_tuned",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="where to write the results")
    args = p.parse_args()
    if args.child:
        return child(args)
    rows = memory(args) if args.memory else speed(args)
    meta = dict(
        sknets=sknets.__version__,
        torch=torch.__version__,
        device=args.device,
        threads=torch.get_num_threads(),
        machine=platform.machine(),
        epochs=args.epochs,
        rounds=args.rounds,
        batch_size=args.batch_size,
        compile=args.compile,
        autocast=args.autocast,
        time=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    RESULTS.mkdir(exist_ok=True)
    path = Path(
        args.json
        or RESULTS
        / f"{'memory' if args.memory else 'speed'}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    path.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print(f"# {meta}")
    for r in rows:
        if args.memory:
            print(
                f"{r['workload']:7s} {r['contender']:11s} X {r['x_mb']:8.1f} MB  "
                f"model {r['model_mb']:6.1f} MB  "
                f"fit extra {r['fit_extra_mb']:8.1f} MB  "
                f"(X + extra) / (X + model) {r['ratio_to_x_plus_model']:.2f}  "
                f"(dense X: {r['dense_x_mb']:.0f} MB)"
            )
        else:
            print(
                f"{r['workload']:7s} {r['contender']:11s} "
                f"{r['s_per_epoch']:8.3f} s/epoch "
                f"x{r['epoch_ratio']:5.2f}   predict {r['predict_s']:7.3f} s "
                f"x{r['predict_ratio']:5.2f}"
            )
    print(f"# written to {path}")


if __name__ == "__main__":
    main()
