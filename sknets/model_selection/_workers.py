"""Where successive halving's stacks live from rung to rung: threads or processes.

A halving search trains its stacks rung by rung (:class:`~sknets._members.MemberRun`
goes on from where it stopped), so the runs must live somewhere between
rungs. Two keepers do the same thing, rung after rung: drop the members of
eliminated candidates, split runs so that the workers finish together
(:func:`balance_runs`), train every live run up to the rung's epoch count
beside the ``extra`` tasks (the refit), and hand back each member's state at
that count.

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
  While scikit-learn picks a rung up (Python, in this process) the workers
  train the next rung ahead for the survivors their own held-out scores
  predict (:meth:`ForkedRuns.speculate`, :class:`Guide`).
"""

import multiprocessing
import pickle
import signal
import traceback

import numpy as np
import torch
from sklearn.utils.parallel import delayed

from sknets._engine import _sigint_flag
from sknets.model_selection._runs import _threads


def _put(conn, obj):
    """Send ``obj`` down ``conn`` as the bytes of a plain pickle.

    multiprocessing's own pickler (``Connection.send``) hands each torch
    tensor over as shared memory: a file descriptor per storage, fetched from
    the sender by a socket round trip that needs the sender alive. States
    and runs are many small tensors: by value is quicker, and a child may
    exit once it has sent.
    """
    conn.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _get(conn):
    """What :func:`_put` sent down ``conn``."""
    return pickle.loads(conn.recv_bytes())


def _states_at(run, epochs, every=False):
    """Each live member's state at ``epochs`` (None where it did not get there);
    with ``every``, its states at all its counts so far (``{count: state}``)."""
    results = run.results
    if every:
        return {m: results[m] for m in run.members}
    return {m: results[m].get(epochs) for m in run.members}


# What a run's step costs beyond its members' own arithmetic, in members: the
# batch's bookkeeping, the loss and the optimizer step, in Python. Measured
# on the digits with 64-128-10 members, one process: a step of 1 member took
# 1.1 ms, of 3 members 2.1 ms, of 9 members 6 to 7 ms.
RUN_OVERHEAD = 0.7


def run_cost(cost, chunk, members, overhead=RUN_OVERHEAD):
    """What training ``members`` as one run costs: theirs, and the run's own."""
    c = cost(chunk, members)
    return c + overhead * c / max(1, len(members))


def makespan(costs, n_workers):
    """When ``n_workers`` finish ``costs``, the costliest first to the least loaded."""
    loads = [0.0] * max(1, n_workers)
    for c in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += c
    return max(loads)


def _split_sizes(n, limit=32):
    """How many members a split of ``n`` may keep: every count, or ``limit`` of them."""
    if n - 1 <= limit:
        return range(1, n)
    return sorted({max(1, min(n - 1, round(n * k / limit))) for k in range(1, limit)})


def balance_runs(live, cost, n_workers, tolerance=1.1, overhead=RUN_OVERHEAD):
    """Split stacks' runs so that ``n_workers`` workers finish together.

    ``live`` holds ``(chunk, run)`` pairs (a run: :class:`~sknets._members.MemberRun`,
    or anything with ``members`` and ``split``) and ``cost(chunk, members)``
    says what training those members costs; a run costs ``overhead``
    members more (:func:`run_cost`). While splitting one run in two makes
    the workers finish (:func:`makespan`) at least ``tolerance`` times
    sooner, the split that does it best is made (``run.split``: the members
    after the first ``keep`` move to a run of their own). Successive
    halving's late rungs keep few stacks, and one stack of nine members would
    leave the second worker idle; three stacks of unequal cost on two
    workers finish together when a piece of one goes beside another; and a
    run of one member split off for a small imbalance costs more than it
    saves. Returned costliest first, the order in which the workers take
    them.
    """
    live = list(live)

    def costed(chunk, members):
        return run_cost(cost, chunk, members, overhead)

    while n_workers > 1 and live:
        costs = [costed(chunk, run.members) for chunk, run in live]
        now, best = makespan(costs, n_workers), None
        for i, (chunk, run) in enumerate(live):
            others = costs[:i] + costs[i + 1 :]
            for keep in _split_sizes(len(run.members)):
                parts = [
                    costed(chunk, run.members[:keep]),
                    costed(chunk, run.members[keep:]),
                ]
                span = makespan(others + parts, n_workers)
                if best is None or span < best[0]:
                    best = (span, i, keep)
        if best is None or best[0] * tolerance > now:
            break
        _, i, keep = best
        chunk, run = live[i]
        live.append((chunk, run.split(run.members[keep:])))
    return sorted(live, key=lambda pair: -costed(pair[0], pair[1].members))


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
    # no rung is trained ahead (:meth:`ForkedRuns.speculate`): while
    # scikit-learn picks the states up, its Python holds the GIL
    ahead = False

    def __init__(self, live, n_workers, parallel, task):
        self.live, self.n_workers = list(live), n_workers
        self.parallel, self.task = parallel, task

    def advance(self, epochs, keep, extra, cost, score=False):
        """Train the members that ``keep(chunk)`` names up to ``epochs``.

        Runs are split (:func:`balance_runs`, by ``cost(chunk, members)``)
        so that the workers finish together; ``extra`` (joblib tasks) train
        beside them, a worker each.

        Returns
        -------
        states : list of (chunk, {member: TrainedState or None})
        extra_results : list
            What the ``extra`` tasks returned, in order.
        scores : None
            No held-out scores (:meth:`ForkedRuns.advance` has them).
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
        return states, done[len(tasks) :], None

    def close(self):
        """Nothing to release: the runs go with this object."""
        self.live = []


# --------------------------------------------------------------------------- guesses


class Guide:
    """What a worker needs to guess a rung's survivors: members' held-out scores.

    Parameters
    ----------
    folds : dict
        Split number -> ``(X_test, y_test)``: the held-out rows as the
        network takes them, and their labels (together a copy of ``X``, at
        most the 64 MB under which the workers fork).
    members : dict
        Chunk number -> for each of its members ``(split, classes, binary)``:
        which rows it holds out, its ``classes_`` and whether its one output
        is a logistic unit (else the most likely of its outputs).
    """

    def __init__(self, folds, members):
        self.folds, self.members = folds, members


def held_out_scores(module, members, info, folds, rows=4096):
    """Each member's accuracy on its held-out rows, as its own ``score``.

    ``module`` is a :class:`~sknets.modules.StackedMLP` of the members
    ``members`` (in its order; ``info`` is indexed by them). One forward pass
    per ``rows`` rows: member ``m``'s block holds its own split's rows
    (``info[m]``, see :class:`Guide`).
    """
    like = module.weights[0]
    n = max(len(folds[info[m][0]][1]) for m in members)
    correct = np.zeros(len(members))
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, rows):
                width = min(rows, n - start)
                X = torch.zeros(
                    (len(members), width, like.shape[1]),
                    dtype=like.dtype,
                    device=like.device,
                )
                for position, m in enumerate(members):
                    part = folds[info[m][0]][0][start : start + width]
                    X[position, : len(part)] = torch.as_tensor(part)
                out = module(X).cpu()
                for position, m in enumerate(members):
                    split, classes, binary = info[m]
                    y = folds[split][1][start : start + width]
                    o = out[position, : len(y)]
                    code = (o[:, 0] > 0).long() if binary else o.argmax(1)
                    correct[position] += np.count_nonzero(classes[code.numpy()] == y)
    finally:
        module.train(training)
    return {
        m: correct[position] / len(folds[info[m][0]][1])
        for position, m in enumerate(members)
    }


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


def _forked_start():
    """What every forked child of a search does first.

    Ctrl-C is the search's to handle, so the child ignores it. And torch runs
    on one thread there: torch's CPU kernels parallelize with OpenMP, whose
    thread pool does not survive a fork. A child that opens a parallel
    region after its parent has used one waits forever (a 2,000 x 2,000
    product, or a large ``torch.zeros``, is enough), so the child stays out
    of parallel regions altogether. The search's parallelism is its
    processes: one per worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if torch.get_num_threads() > 1:
        torch.set_num_threads(1)


class _Kept:
    """A worker's runs (id -> MemberRun), the chunk of each, the guide."""

    def __init__(self, runs, chunk_of, guide):
        self.runs, self.chunk_of, self.guide = runs, chunk_of, guide


def _serve(conn, kept, inherited):
    """A worker's loop: keep the runs of ``kept`` (:class:`_Kept`), do as told."""
    for other in inherited:  # the other workers' ends, copied by the fork
        other.close()
    _forked_start()
    while True:
        try:
            request = _get(conn)
        except (EOFError, OSError):  # the search is gone
            return
        if request is None:
            return
        command, args = request
        try:
            reply = ("ok", _COMMANDS[command](kept, *args), None)
        except BaseException as exc:  # the search re-raises it
            trace = traceback.format_exc()
            try:
                pickle.dumps(exc)
            except Exception:
                exc = _Failed(trace)
            reply = ("error", exc, trace)
        try:
            _put(conn, reply)
        except (BrokenPipeError, OSError):
            return


def _keep(kept, rid, members):
    kept.runs[rid].keep(members)
    if not kept.runs[rid].members:
        del kept.runs[rid], kept.chunk_of[rid]


def _split(kept, rid, members, new):
    kept.runs[new] = kept.runs[rid].split(members)
    kept.chunk_of[new] = kept.chunk_of[rid]


def _give(kept, rid):
    return kept.runs.pop(rid), kept.chunk_of.pop(rid)


def _take(kept, rid, run, chunk):
    kept.runs[rid], kept.chunk_of[rid] = run, chunk


def _advance_runs(kept, rids, epochs, score, every=False):
    out = {}
    for rid in rids:
        run = kept.runs[rid].advance(epochs)
        scores = None
        if score:
            info = kept.guide.members[kept.chunk_of[rid]]
            try:
                scores = held_out_scores(
                    run.net.module_, run.members, info, kept.guide.folds
                )
            except Exception:  # a guess only: none, and nothing trains ahead
                scores = None
        out[rid] = (_states_at(run, epochs, every), scores)
    return out


def _call(kept, task):
    function, args, kwargs = task
    return function(*args, **kwargs)


_COMMANDS = {
    "keep": _keep,
    "split": _split,
    "give": _give,
    "take": _take,
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

    While scikit-learn picks a rung's states up and scores them (Python, in
    this process, on one core), the workers can already train the next rung
    for the survivors that their own scores predict (:meth:`speculate`):
    each worker scores its members on their held-out rows as they would
    score themselves (:class:`Guide`), and the members not predicted to go
    on wait, untrained, in runs of their own. :meth:`advance` then takes the
    trained states of the members that did go on, and trains those that
    were not predicted (the results are the same either way; a wrong guess
    costs time only).

    Parameters
    ----------
    live : list of (chunk, MemberRun)
        The runs, built in this process; each worker gets its share by the
        fork (nothing is pickled) and this process lets its copies go.
    n_workers : int
        Worker processes.
    cost : callable
        ``cost(chunk, members)``: what training those members costs.
    guide : Guide or None
        For the held-out scores (None: no guesses).
    """

    kind = "processes"

    def __init__(self, live, n_workers, cost, guide=None):
        self.n_workers = n_workers
        self.ahead = guide is not None
        self._next = len(live)
        self.pending = None  # a rung trained ahead (speculate)
        holders = place(
            [run_cost(cost, chunk, run.members) for chunk, run in live],
            [0] * len(live),
            n_workers,
            n_workers,
        )
        number = {id(chunk): i for i, (chunk, _) in enumerate(live)}
        context = multiprocessing.get_context("fork")
        self.conns, self.processes = [], []
        try:
            for w in range(n_workers):
                own = [i for i in range(len(live)) if holders[i] == w]
                kept = _Kept(
                    {i: live[i][1] for i in own},
                    {i: number[id(live[i][0])] for i in own},
                    guide,
                )
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=_serve,
                    args=(theirs, kept, list(self.conns)),
                    name=f"sknets-stacks-{w}",
                    daemon=True,
                )
                process.start()
                theirs.close()
                self.conns.append(ours)
                self.processes.append(process)
        except BaseException:
            self.close(wait=False)
            raise
        self.live = [
            (chunk, _Remote(self, i, holders[i], run.members))
            for i, (chunk, run) in enumerate(live)
        ]

    def new_id(self):
        self._next += 1
        return self._next - 1

    def _send(self, worker, command, *args):
        _put(self.conns[worker], (command, args))

    def _receive(self, worker):
        try:
            status, value, trace = _get(self.conns[worker])
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

    def _guarded(self, method, *args):
        with _sigint_flag():  # Ctrl-C: the workers go, the interrupt goes on
            try:
                return method(*args)
            except BaseException:
                self.close(wait=False)
                raise

    def _keep(self, keep):
        """Drop the members that ``keep(chunk)`` does not name; the runs left."""
        live = []
        for chunk, run in self.live:
            wanted = set(keep(chunk))
            kept = [m for m in run.members if m in wanted]
            if kept != run.members:
                self.call(run.worker, "keep", run.rid, kept)
                run.members = kept
            if kept:
                live.append((chunk, run))
        return live

    def _start(self, live, epochs, cost, n_slots, score, every=False):
        """Balance, place and start training ``live``; what :meth:`_finish` takes.

        ``every``: the workers hand back each member's states at all its
        counts, not only at ``epochs``."""
        live = balance_runs(live, cost, n_slots)
        where = place(
            [run_cost(cost, chunk, run.members) for chunk, run in live],
            [run.worker for _, run in live],
            self.n_workers,
            n_slots,
        )
        for (_, run), w in zip(live, where, strict=True):
            if w != run.worker:  # pickled from one worker to the other
                moved = self.call(run.worker, "give", run.rid)
                self.call(w, "take", run.rid, *moved)
                run.worker = w
        busy = sorted(set(where))
        for w in busy:
            rids = [r.rid for (_, r), at in zip(live, where, strict=True) if at == w]
            self._send(w, "advance", rids, epochs, score, every)
        return live, busy

    def _finish(self, started):
        """Each run's (chunk, run, states, scores) once its worker replied."""
        live, busy = started
        replies = {}
        for w in busy:
            replies.update(self._receive(w))
        return [(chunk, run, *replies[run.rid]) for chunk, run in live]

    def train(self, epochs, cost):
        """Train every run up to ``epochs`` at once: no rungs, no guesses.

        What a grid search's stacks need (:meth:`Pretraining.train`).
        Returns ``[(chunk, {member: {count: state}})]``, each member's states
        at every count it was asked for; a chunk's members may come in more
        than one entry (its run split to balance the workers).
        """
        return self._guarded(self._train, epochs, cost)

    def _train(self, epochs, cost):
        started = self._start(self.live, epochs, cost, self.n_workers, False, True)
        finished = self._finish(started)
        self.live = [(chunk, run) for chunk, run, _, _ in finished]
        return [(chunk, states) for chunk, _, states, _ in finished]

    def speculate(self, epochs, keep, cost, n_extra, score):
        """Start training, up to ``epochs``, the members ``keep(chunk)`` names.

        The others wait in runs of their own, untrained, until
        :meth:`advance` knows whether they go on. ``n_extra`` workers' worth
        is left to the extra tasks of that :meth:`advance`; ``score``: the
        trained members are scored on their held-out rows too. Returns at
        once.
        """
        return self._guarded(self._speculate, epochs, keep, cost, n_extra, score)

    def _speculate(self, epochs, keep, cost, n_extra, score):
        ahead, waiting = [], []
        for chunk, run in self.live:
            wanted = set(keep(chunk))
            rest = [m for m in run.members if m not in wanted]
            if len(rest) == len(run.members):
                waiting.append((chunk, run))
                continue
            if rest:
                waiting.append((chunk, run.split(rest)))
            ahead.append((chunk, run))
        started = self._start(ahead, epochs, cost, self.n_workers - n_extra, score)
        self.live = started[0] + waiting
        self.pending = (epochs, started)

    def advance(self, epochs, keep, extra, cost, score=False):
        """As :meth:`ThreadRuns.advance`, and each member's held-out score.

        The first ``extra`` trains in this process. Returns ``(states,
        extra_results, scores)``: ``scores`` as ``states``, with
        ``{member: score}`` (None without ``score``).
        """
        return self._guarded(self._advance, epochs, keep, extra, cost, score)

    def _advance(self, epochs, keep, extra, cost, score):
        done, started = {}, None
        if self.pending is not None:  # trained ahead
            ahead, started = self.pending
            self.pending = None
            if ahead == epochs and self._guessed(keep, started[0]):
                # as guessed: the extra tasks start now, beside the last of it;
                # the members that waited leave at the next rung
                return self._collect(started, extra, score)
            # not as guessed: the right members go on from where they are
            finished = self._finish(started)
            if ahead == epochs:  # (the schedule fixes it: always)
                done = {id(run): (s, g) for _, run, s, g in finished}
        live = self._keep(keep)
        todo = [(chunk, run) for chunk, run in live if id(run) not in done]
        started = None
        if todo:
            n_slots = self.n_workers - len(extra)
            started = self._start(todo, epochs, cost, n_slots, score)
        ready = [(c, r, *done[id(r)]) for c, r in live if id(r) in done]
        return self._collect(started, extra, score, ready)

    def _guessed(self, keep, ahead):
        """Whether ``keep`` names exactly the members trained ahead."""
        trained = {id(run) for _, run in ahead}
        for chunk, run in self.live:
            wanted = set(keep(chunk))
            if id(run) in trained and not wanted.issuperset(run.members):
                return False
            if id(run) not in trained and wanted.intersection(run.members):
                return False
        return True

    def _collect(self, started, extra, score, ready=()):
        """Train ``extra`` (the first here), gather ``started``: the rung's results."""
        busy = started[1] if started else []
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
        finished = (self._finish(started) if started else []) + list(ready)
        trained = {id(run) for _, run, _, _ in finished}
        # the runs that waited for a guess that did not come true stay listed,
        # to leave their workers at the next rung
        self.live = [(c, r) for c, r, _, _ in finished] + [
            (c, r) for c, r in self.live if id(r) not in trained
        ]
        states, scores = [], []
        for chunk, run, by_member, guesses in finished:
            states.append((chunk, {m: by_member[m] for m in run.members}))
            if score and guesses is not None:
                scores.append((chunk, {m: guesses[m] for m in run.members}))
        if not score or len(scores) < len(finished):
            scores = None  # none asked for, or trained ahead without: no guess
        return states, here + [self._receive(w) for w in queued], scores

    def close(self, wait=True):
        """Stop the workers: when told (``wait``, none busy), else at once."""
        wait = wait and self.pending is None
        for conn in self.conns if wait else ():
            try:
                _put(conn, None)
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
        self.pending = None


# --------------------------------------------------------------------------- ahead


def _send_result(conn, function):
    """A forked child's body: ``function()``'s result (or ``{}``) down ``conn``."""
    _forked_start()
    try:
        result = function()
    except BaseException:  # a guess only: nothing comes of it
        result = {}
    try:
        _put(conn, result)
    except Exception:  # unpicklable or the search is gone
        pass
    finally:
        conn.close()


class ForkedCall:
    """``function()`` in a forked child process, while this one goes on.

    For work done ahead on a guess (:meth:`Pretraining.refit_ahead`): its
    result is ``{}`` whatever goes wrong in the child (an exception, a
    crash), so a guess that fails costs time, never the search. The child
    is forked where :func:`~sknets.model_selection._pretrain.stack_backend`
    says forking is safe.
    """

    def __init__(self, function):
        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_send_result,
            args=(theirs, function),
            name="sknets-ahead",
            daemon=True,
        )
        self.process.start()
        theirs.close()
        self.conn = ours

    def result(self):
        """What ``function()`` returned, once the child sent it (``{}``: nothing)."""
        if self.conn is None:
            return {}
        try:
            return _get(self.conn)
        except (EOFError, OSError):  # the child ended without a result
            return {}
        finally:
            self.close()

    def close(self):
        """End the child (at once if it is still working)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.process.is_alive():
            self.process.join(timeout=0.1)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5.0)
