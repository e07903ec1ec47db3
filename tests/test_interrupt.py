"""Ctrl-C during ``fit``: keep the completed epochs, then stop the caller.

A real SIGINT goes to a child Python process once it has completed at least
one epoch. ``fit`` must leave the estimator fitted on the completed epochs
(``n_iter_ == len(loss_curve_) >= 1``, the public weights the ones that
``predict`` uses) and re-raise ``KeyboardInterrupt``, so that a script or a
hyper-parameter search stops promptly instead of carrying on with the next
fit.

The child signals that training has really started from a global torch
optimizer-step hook (public torch API), not from sknets' verbose output: it
writes ``READY`` to stderr at the first optimizer step after one full epoch's
worth of steps.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGINT cannot be sent to a child on Windows"
)

ROOT = Path(__file__).resolve().parents[1]

# Generous bounds for a loaded 2-core CI machine; a healthy run needs a few
# seconds to start and well under one second to stop.
START_TIMEOUT = 60  # child imports torch, builds data, completes an epoch
STOP_TIMEOUT = 15  # SIGINT -> child exited
INTERRUPTED = 3  # the child's exit code when fit raised KeyboardInterrupt
RETURNED = 4  # ... when fit returned

PRELUDE = """
import json, math, signal, sys

# Python only installs its SIGINT handler when SIGINT is not ignored at start
# (background jobs of a non-interactive shell inherit SIG_IGN): make sure.
signal.signal(signal.SIGINT, signal.default_int_handler)

import numpy as np
import torch
from sklearn.datasets import make_classification
from torch.optim.optimizer import register_optimizer_step_post_hook

import sknets

torch.set_num_threads(1)
BATCH = 200


def ready_after_one_epoch(n_rows):
    steps_per_epoch = math.ceil(n_rows / BATCH)
    count = [0]

    def hook(optimizer, args, kwargs):
        count[0] += 1
        if count[0] == steps_per_epoch + 1:
            print("READY", file=sys.stderr, flush=True)

    register_optimizer_step_post_hook(hook)
"""

PLAIN_FIT = """
X, y = make_classification(
    n_samples=2000, n_features=20, n_informative=10, n_classes=3, random_state=0
)
X = X.astype(np.float32)
clf = sknets.MLPClassifier(
    (64,), batch_size=BATCH, max_iter=100_000, tol=0.0, n_iter_no_change=100_000,
    random_state=0,
)
ready_after_one_epoch(len(X))
try:
    clf.fit(X, y)
except KeyboardInterrupt:
    outcome, code = "raised", INTERRUPTED
else:
    outcome, code = "returned", RETURNED
report = {"outcome": outcome}
report["n_iter_"] = getattr(clf, "n_iter_", None)
curve = getattr(clf, "loss_curve_", None)
report["len_loss_curve_"] = None if curve is None else len(curve)
try:
    proba = clf.predict_proba(X[:50])
    report["predict"] = clf.predict(X[:50]).shape == (50,)
    # the public weights are the ones predict uses (sklearn's forward pass)
    h = np.maximum(X[:50].astype(np.float64) @ clf.coefs_[0] + clf.intercepts_[0], 0)
    z = h @ clf.coefs_[1] + clf.intercepts_[1]
    z = np.exp(z - z.max(axis=1, keepdims=True))
    report["consistent"] = bool(
        np.allclose(proba, z / z.sum(axis=1, keepdims=True), atol=1e-5)
    )
except Exception as exc:
    report["predict"] = report["consistent"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(report), flush=True)
sys.exit(code)
"""

SEARCH = """
from sklearn import model_selection as skms
from sknets import model_selection as snms

X, y = make_classification(
    n_samples=3000, n_features=100, n_informative=30, n_classes=3, random_state=0
)
X = X.astype(np.float32)
clf = sknets.MLPClassifier(
    (1024,), batch_size=BATCH, tol=0.0, n_iter_no_change=1000, random_state=0
)
# 3 folds x 3 alphas x up to 600 epochs of a 100-1024-3 network: minutes
grid = {"max_iter": [300, 600], "alpha": [1e-4, 1e-3, 1e-2]}
search = {"sklearn": skms, "sknets": snms}[SEARCH_FROM].GridSearchCV(
    clf, grid, cv=3, n_jobs=1
)
ready_after_one_epoch(len(X))
search.fit(X, y)
print("FINISHED", flush=True)
"""


class Child:
    """A Python child process whose stdout and stderr are read as they come."""

    def __init__(self, code, tmp_path):
        script = tmp_path / "child.py"
        script.write_text(code)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        self.out, self.err = [], []
        self.ready = threading.Event()
        self.readers = [
            threading.Thread(target=self._read, args=(s, lines), daemon=True)
            for s, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for r in self.readers:
            r.start()

    def _read(self, stream, lines):
        for line in stream:
            lines.append(line)
            if line.strip() == "READY":
                self.ready.set()

    def interrupt_when_ready(self):
        """Wait for READY, send SIGINT; return the seconds the child took to exit.

        ``None`` if it was still running ``STOP_TIMEOUT`` seconds later (then
        it is killed).
        """
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None:
                self.join()  # the readers may not have seen READY yet
                break
            if time.monotonic() > deadline:
                break
        if not self.ready.is_set():
            alive = self.proc.poll() is None
            self.kill()
            pytest.fail(
                f"child {'never' if alive else 'exited before it'} reported a "
                f"completed epoch within {START_TIMEOUT} s:\n{self.log()}"
            )
        self.proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        elapsed = time.monotonic() - start
        self.join()
        return elapsed

    def join(self):
        for r in self.readers:
            r.join(5)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.join()

    def log(self):
        tail = "".join(self.err)[-3000:]
        return f"--- stdout:\n{''.join(self.out)}--- stderr (tail):\n{tail}"


@pytest.fixture
def child(tmp_path):
    children = []

    def start(code):
        c = Child(code, tmp_path)
        children.append(c)
        return c

    yield start
    for c in children:  # whatever happened, nothing keeps running
        c.kill()


def _script(body, **constants):
    lines = [f"{k} = {v!r}" for k, v in constants.items()]
    return textwrap.dedent(PRELUDE) + "\n".join(lines) + "\n" + textwrap.dedent(body)


def test_ctrl_c_keeps_completed_epochs_and_reraises(child):
    proc = child(_script(PLAIN_FIT, INTERRUPTED=INTERRUPTED, RETURNED=RETURNED))
    elapsed = proc.interrupt_when_ready()
    assert elapsed is not None, (
        f"fit still running {STOP_TIMEOUT} s after SIGINT:\n{proc.log()}"
    )
    code = proc.proc.returncode
    assert code == INTERRUPTED, (
        f"exit code {code}: fit should re-raise KeyboardInterrupt "
        f"(exit {INTERRUPTED}), not return (exit {RETURNED}):\n{proc.log()}"
    )
    assert proc.out, f"the child printed no report:\n{proc.log()}"
    report = json.loads(proc.out[-1])
    assert report["n_iter_"] is not None and report["n_iter_"] >= 1, report
    assert report["n_iter_"] == report["len_loss_curve_"], report
    assert report["predict"] is True, report
    assert report["consistent"] is True, report
    assert elapsed < 10, f"took {elapsed:.1f} s to stop after SIGINT"


@pytest.mark.parametrize("search_from", ["sklearn", "sknets"])
def test_ctrl_c_stops_grid_search(child, search_from):
    proc = child(_script(SEARCH, SEARCH_FROM=search_from))
    elapsed = proc.interrupt_when_ready()
    assert elapsed is not None, (
        f"{search_from} GridSearchCV still running {STOP_TIMEOUT} s after SIGINT "
        f"(the interrupt ended one fit, the search went on):\n{proc.log()}"
    )
    assert proc.proc.returncode != 0, proc.log()
    assert "FINISHED" not in "".join(proc.out), proc.log()
    assert "KeyboardInterrupt" in "".join(proc.err), proc.log()
