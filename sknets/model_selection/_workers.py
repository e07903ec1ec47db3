"""Where successive halving's stacks live from rung to rung: threads or processes.

A halving search trains its stacks rung by rung (:class:`~sknets._members.MemberRun`
goes on from where it stopped), so the runs must live somewhere between
rungs. Two keepers do the same thing, rung after rung: drop the members of
eliminated candidates, split runs so that the workers finish together
(:func:`~sknets.model_selection._pretrain.balance_runs`), train every live
run up to the rung's epoch count beside the ``extra`` tasks (the refit), and
hand back each member's state at that count.

- :class:`ThreadRuns` keeps the runs in this process and trains them in
  threads (any backend, device or thread; the default where forking is not
  safe).
- :class:`ForkedRuns` keeps them in worker processes forked once, when the
  rungs start, and trains them there. A stack's step is small torch kernels
  between Python bookkeeping: in two threads of one process the stacks take
  turns at the GIL, and the late rungs (a few members each, or one stack
  beside the refit) trained hardly faster side by side than one after the
  other. Processes do not share a GIL. A run moves between workers (pickled:
  weights, optimizer moments, generators and stopping states, exactly) only
  when balancing needs it; the refit trains in this process meanwhile.
"""

import multiprocessing
import os
import pickle
import signal
import traceback

import torch
from sklearn.utils.parallel import delayed

from sknets._engine import _sigint_flag
from sknets.model_selection._runs import _threads


def _states_at(run, epochs):
    """Each live member's state at ``epochs`` (None where it did not get there)."""
    results = run.results
    return {m: results[m].get(epochs) for m in run.members}


def balance_runs(live, cost, n_workers, tolerance=1.1):
    """Split stacks' runs so that ``n_workers`` workers finish together.

    ``live`` holds ``(chunk, run)`` pairs (:class:`~sknets._members.MemberRun`)
    and ``cost(chunk, members)`` says what training those members of the run
    costs. While the costliest run takes more than ``tolerance`` times a
    worker's fair share (the total over ``n_workers``), the members beyond a
    fair share move to a run of their own (``MemberRun.split``): successive
    halving's late rungs keep few stacks, and one stack of nine members would
    leave the second worker idle. Returned costliest first, the order in
    which the workers take them.
    """
    live = list(live)
    while n_workers > 1 and live:
        costs = [cost(chunk, run.members) for chunk, run in live]
        fair = sum(costs) / n_workers
        i = max(range(len(live)), key=costs.__getitem__)
        chunk, run = live[i]
        each = costs[i] / max(1, len(run.members))
        # members are indivisible: within half a member of fair is balanced
        if len(run.members) < 2 or costs[i] <= max(tolerance * fair, fair + each / 2):
            break
        keep = min(len(run.members) - 1, max(1, int(fair / each + 0.5)))
        live.append((chunk, run.split(run.members[keep:])))
    return sorted(live, key=lambda pair: -cost(pair[0], pair[1].members))


class ThreadRuns:
    """Stacks' runs in this process, each rung trained in threads.

    Parameters
    ----------
    live : list of (chunk, MemberRun)
        The runs, each with the chunk of members it was built from.
    n_workers : int
        Threads at a time.
    parallel : callable
        ``parallel(tasks)`` runs joblib tasks in threads, in order.
    task : callable
        ``task(run, epochs, n_workers)`` trains ``run`` up to ``epochs``.
    """

    kind = "threads"

    def __init__(self, live, n_workers, parallel, task):
        self.live, self.n_workers = list(live), n_workers
        self.parallel, self.task = parallel, task

    def advance(self, epochs, keep, extra, cost):
        """Train the members that ``keep(chunk)`` names up to ``epochs``.

        Runs are split (:func:`balance_runs`, by ``cost(chunk, members)``)
        so that the workers finish together; ``extra`` (joblib tasks) train
        beside them, a worker each.

        Returns
        -------
        states : list of (chunk, {member: TrainedState or None})
        extra_results : list
            What the ``extra`` tasks returned, in order.
        """
        live = []
        for chunk, run in self.live:
            run.keep(keep(chunk))
            if run.members:
                live.append((chunk, run))
        self.live = balance_runs(live, cost, self.n_workers - len(extra))
        tasks = [
            delayed(self.task)(run, epochs, self.n_workers) for _, run in self.live
        ]
        done = self.parallel([*tasks, *extra])
        states = [(chunk, _states_at(run, epochs)) for chunk, run in self.live]
        return states, done[len(tasks) :]

    def close(self):
        """Nothing to release: the runs go with this object."""
        self.live = []


# --------------------------------------------------------------------------- processes


class _Remote:
    """This process's view of a run that lives in worker ``worker``."""

    def __init__(self, keeper, rid, worker, members):
        self.keeper, self.rid, self.worker = keeper, rid, worker
        self.members = list(members)

    def split(self, members):
        """Move ``members`` to a new run in the same worker (``MemberRun.split``)."""
        wanted = set(members)
        moved = [m for m in self.members if m in wanted]
        rid = self.keeper.new_id()
        self.keeper.call(self.worker, "split", self.rid, moved, rid)
        self.members = [m for m in self.members if m not in wanted]
        return _Remote(self.keeper, rid, self.worker, moved)


class _Failed(Exception):
    """An exception of a worker that does not pickle, as its traceback."""


class _RemoteTraceback(Exception):
    """Where in a worker process an exception was raised (its ``__cause__``)."""

    def __str__(self):
        return f"\n\nIn the worker process:\n{self.args[0]}"


def _serve(conn, runs, n_workers, inherited):
    """A worker's loop: keep ``runs`` (id -> MemberRun), do what it is told."""
    for other in inherited:  # the other workers' ends, copied by the fork
        other.close()
    # Ctrl-C is the search's to handle: it ends this worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cap = max(1, (os.cpu_count() or 1) // max(1, n_workers))
    if torch.get_num_threads() > cap:
        torch.set_num_threads(cap)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the search is gone
            return
        if request is None:
            return
        command, args = request
        try:
            reply = ("ok", _COMMANDS[command](runs, *args), None)
        except BaseException as exc:  # the search re-raises it
            trace = traceback.format_exc()
            try:
                pickle.dumps(exc)
            except Exception:
                exc = _Failed(trace)
            reply = ("error", exc, trace)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


def _keep(runs, rid, members):
    runs[rid].keep(members)
    if not runs[rid].members:
        del runs[rid]


def _split(runs, rid, members, new):
    runs[new] = runs[rid].split(members)


def _advance_runs(runs, rids, epochs):
    return {rid: _states_at(runs[rid].advance(epochs), epochs) for rid in rids}


def _call(runs, task):
    function, args, kwargs = task
    return function(*args, **kwargs)


_COMMANDS = {
    "keep": _keep,
    "split": _split,
    "give": lambda runs, rid: runs.pop(rid),
    "take": lambda runs, rid, run: runs.__setitem__(rid, run),
    "advance": _advance_runs,
    "call": _call,
}


def place(costs, holders, n_workers, n_slots):
    """The worker that trains each run: the costliest first to the least loaded.

    ``costs[i]`` and ``holders[i]`` are run ``i``'s cost and the worker that
    holds it. At most ``n_slots`` workers are used, those holding the most
    cost; a run stays with its holder unless another worker is less loaded
    (moving a run costs a pickle).
    """
    held = [0.0] * n_workers
    for c, h in zip(costs, holders, strict=True):
        held[h] += c
    slots = sorted(range(n_workers), key=lambda w: (-held[w], w))[: max(1, n_slots)]
    load = dict.fromkeys(slots, 0.0)
    out = [None] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        least = min(load.values())
        home = holders[i]
        w = home if load.get(home) == least else min(slots, key=lambda s: (load[s], s))
        out[i] = w
        load[w] += costs[i]
    return out


class ForkedRuns:
    """Stacks' runs in worker processes forked once, trained there rung by rung.

    Parameters
    ----------
    live : list of (chunk, MemberRun)
        The runs, built in this process; each worker gets its share by the
        fork (nothing is pickled) and this process lets its copies go.
    n_workers : int
        Worker processes.
    cost : callable
        ``cost(chunk, members)``: what training those members costs.
    """

    kind = "processes"

    def __init__(self, live, n_workers, cost):
        self.n_workers = n_workers
        self._next = len(live)
        holders = place(
            [cost(chunk, run.members) for chunk, run in live],
            [0] * len(live),
            n_workers,
            n_workers,
        )
        context = multiprocessing.get_context("fork")
        self.conns, self.processes = [], []
        try:
            for w in range(n_workers):
                own = {i: run for i, (_, run) in enumerate(live) if holders[i] == w}
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=_serve,
                    args=(theirs, own, n_workers, list(self.conns)),
                    name=f"sknets-stacks-{w}",
                    daemon=True,
                )
                process.start()
                theirs.close()
                self.conns.append(ours)
                self.processes.append(process)
        except BaseException:
            self.close()
            raise
        self.live = [
            (chunk, _Remote(self, i, holders[i], run.members))
            for i, (chunk, run) in enumerate(live)
        ]

    def new_id(self):
        self._next += 1
        return self._next - 1

    def _send(self, worker, command, *args):
        self.conns[worker].send((command, args))

    def _receive(self, worker):
        try:
            status, value, trace = self.conns[worker].recv()
        except (EOFError, OSError):
            code = self.processes[worker].exitcode
            raise RuntimeError(
                f"A worker process that trained stacked networks ended "
                f"unexpectedly (exit code {code})."
            ) from None
        if status == "error":
            raise value from _RemoteTraceback(trace)
        return value

    def call(self, worker, command, *args):
        """Have ``worker`` do ``command``; what it returned."""
        self._send(worker, command, *args)
        return self._receive(worker)

    def advance(self, epochs, keep, extra, cost):
        """As :meth:`ThreadRuns.advance`; the first ``extra`` trains here."""
        with _sigint_flag():  # Ctrl-C: the workers go, the interrupt goes on
            try:
                return self._advance(epochs, keep, extra, cost)
            except BaseException:
                self.close(wait=False)
                raise

    def _advance(self, epochs, keep, extra, cost):
        live = []
        for chunk, run in self.live:
            members = keep(chunk)
            wanted = set(members)
            kept = [m for m in run.members if m in wanted]
            if kept != run.members:
                self.call(run.worker, "keep", run.rid, kept)
                run.members = kept
            if kept:
                live.append((chunk, run))
        live = balance_runs(live, cost, self.n_workers - len(extra))
        where = place(
            [cost(chunk, run.members) for chunk, run in live],
            [run.worker for _, run in live],
            self.n_workers,
            self.n_workers - len(extra),
        )
        for (_, run), w in zip(live, where, strict=True):
            if w != run.worker:  # pickled from one worker to the other
                self.call(w, "take", run.rid, self.call(run.worker, "give", run.rid))
                run.worker = w
        self.live = live
        busy = sorted(set(where))
        for w in busy:
            rids = [
                run.rid for (_, run), at in zip(live, where, strict=True) if at == w
            ]
            self._send(w, "advance", rids, epochs)
        # extra tasks but the first go to the least busy workers, after their runs
        queued = []
        for i, task in enumerate(extra[1:]):
            w = min(range(self.n_workers), key=lambda w: (w in busy, i + w))
            self._send(w, "call", task)
            queued.append(w)
        here = []
        if extra:
            function, args, kwargs = extra[0]
            with _threads(self.n_workers):
                here.append(function(*args, **kwargs))
        by_worker = {w: self._receive(w) for w in busy}
        states = [
            (chunk, by_worker[w][run.rid])
            for (chunk, run), w in zip(live, where, strict=True)
        ]
        return states, here + [self._receive(w) for w in queued]

    def close(self, wait=True):
        """Stop the workers: when told (``wait``), else at once."""
        for conn in self.conns if wait else ():
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for process in self.processes:
            if wait:
                process.join(timeout=1.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5.0)
        for conn in self.conns:
            conn.close()
        self.conns, self.processes, self.live = [], [], []
