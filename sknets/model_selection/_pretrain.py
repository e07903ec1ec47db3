"""Train a search's networks before scikit-learn's own search runs.

A search (or :func:`~sknets.model_selection.cross_validate`) needs one
training run per (candidate, fold). Here those runs are planned and trained
ahead, as few and as wide as they can be:

1. **Runs.** Candidates that differ only in the network's epoch count
   (``max_iter``) share one run per fold, to the largest count, and are
   handed a state at every count on the way.
2. **Members.** Each (run, fold) is *prepared*: the estimator's ``fit`` runs
   on the training fold (a ``Pipeline`` fits its transformers) until the
   network is about to train; the network validates its input and resolves
   its :class:`~sknets._plan.TrainingPlan`. Nothing is trained yet.
3. **Stacks.** Prepared members whose networks can be trained as one (the
   same ``_stack_signature``: class, layer sizes, activation, optimizer and
   its settings, batch size, output, precision, device) form a stack, split
   to fit memory and to keep ``n_jobs`` workers busy; each stack is one
   skorch run of a stacked network (:func:`sknets._members.train_members`).
   Networks that cannot be stacked (or with ``vectorize=False``) train one
   run per (run, fold) as before, through their own ``fit``.
4. **Hand-over.** Every state is offered in :mod:`sknets._registry` under
   the key of the ``fit`` it stands for (class, parameters with that epoch
   count, fingerprint of the data that ``fit`` receives); scikit-learn's
   search then fits and scores as always, and those fits adopt the states.
"""

import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

import numpy as np
import torch
from joblib import effective_n_jobs, parallel_config
from sklearn.base import clone, is_classifier
from sklearn.utils.parallel import Parallel, delayed

from sknets import _registry as registry
from sknets._compat import joblib_default_backend
from sknets._engine import _sigint_flag
from sknets._epochs import USER_INTERRUPT
from sknets._members import MemberRun, MemberSpec
from sknets.model_selection._runs import (
    EPOCH_PARAM,
    _prepare_member,
    _threads,
    _train_run,
    find_net,
    plan_runs,
)
from sknets.model_selection._workers import (
    ForkedCall,
    ForkedRuns,
    Guide,
    ThreadRuns,
    held_out_scores,
)

# At most this share of the available host memory (or of the free memory of
# the GPU) is planned for one stack's members.
MEMORY_SHARE = 0.25


def _member_bytes(net, prepared):
    """Memory one member takes in a stack: weights, gradients, two moments, a batch."""
    plan = prepared.plan
    sizes = [prepared.X.shape[1], *net._hidden_sizes(), prepared.n_outputs]
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
    activations = plan.batch_size * sum(sizes) * 3  # forward, gradient, mask
    itemsize = torch.finfo(plan.dtype).bits // 8
    return (4 * params + activations) * itemsize


def _memory_budget(device):
    """Bytes a stack may plan for (a share of free GPU or available host memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_SHARE * 2)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        available = 4 << 30
    return int(available * MEMORY_SHARE)


class _Running:
    """How many stacks train in this process (``with _RUNNING:``)."""

    def __init__(self):
        self.count = 0
        self.changed = threading.Condition()

    def __enter__(self):
        with self.changed:
            self.count += 1

    def __exit__(self, *exc):
        with self.changed:
            self.count -= 1
            self.changed.notify_all()

    def wait_idle(self, timeout=60.0):
        """Wait until no stack trains (at most ``timeout`` seconds)."""
        with self.changed:
            self.changed.wait_for(lambda: self.count == 0, timeout)


_RUNNING = _Running()


def split_stacks(stacks, cost, n_workers, limit):
    """Split stacks (lists of members) to at most ``limit`` members each, and
    until there are at least ``n_workers`` of them when members allow; the
    most expensive first (``cost(member)``)."""
    out = []
    for members in stacks:
        size = max(1, int(limit))
        out += [members[i : i + size] for i in range(0, len(members), size)]
    while out and len(out) < n_workers:
        big = max(out, key=len)
        if len(big) < 2:
            break
        out.remove(big)
        half = (len(big) + 1) // 2
        out += [big[:half], big[half:]]
    return sorted(out, key=lambda ms: -sum(cost(m) for m in ms))


def _stack_run(members, blocks):
    """The :class:`~sknets._members.MemberRun` of ``(net, prepared, block, epochs)``.

    ``blocks`` maps a block number to ``(X, target, sample_weight)`` of one
    training fold; the members' rows index the blocks they use, concatenated.
    """
    used = sorted({b for _, _, b, _ in members})
    offsets, start = {}, 0
    for b in used:
        offsets[b], start = start, start + len(blocks[b][0])

    def joined(i):
        parts = [blocks[b][i] for b in used]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    weights = [blocks[b][2] for b in used]
    sample_weight = (
        None
        if all(w is None for w in weights)
        else np.concatenate(
            [
                np.ones(len(blocks[b][0])) if w is None else w
                for b, w in zip(used, weights, strict=True)
            ]
        )
    )
    specs, pairs = [], []
    for net, prepared, b, epochs in members:
        plan, n = prepared.plan, len(blocks[b][0])
        rows = np.arange(n) if plan.train_rows is None else plan.train_rows
        valid = None if plan.valid_rows is None else plan.valid_rows + offsets[b]
        specs.append(MemberSpec(plan, rows + offsets[b], valid, tuple(epochs)))
        pairs.append((net, replace(prepared, X=blocks[b][0][:0])))
    module = pairs[0][0]._stack(pairs)
    return MemberRun(module, specs, joined(0), joined(1), sample_weight)


def _train_stack(members, blocks, parent_pid, n_workers):
    """Train members as one stacked network; per member ``{epoch: TrainedState}``."""
    with _threads(n_workers, parent_pid), _RUNNING:
        results = _stack_run(members, blocks).advance().results
        return [results[m] for m in range(len(members))]


def _advance(run, epochs, n_workers):
    """Train a stack (in a thread of this process) up to ``epochs``."""
    with _threads(n_workers), _RUNNING:
        return run.advance(epochs)


@contextmanager
def _switching(interval=1e-4):
    """Let threads take the GIL every ``interval`` seconds, for a while.

    A stack's thread holds the GIL only between torch kernels; with Python's
    default 5 ms switch interval a thread that wants it back after a kernel
    often waits for the other's Python to time out, and both stacks train
    about 1.5x slower side by side than alone. The interval is process-wide:
    it is restored on exit (unless somebody else changed it meanwhile).
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, interval))
    try:
        yield
    finally:
        if sys.getswitchinterval() == min(before, interval):
            sys.setswitchinterval(before)


def trained_ahead(seconds, n_candidates, n_splits):
    """Whether every (candidate, split) has a state in ``seconds`` (:meth:`train`)."""
    return all((i, s) in seconds for i in range(n_candidates) for s in range(n_splits))


def pickup_config(complete):
    """joblib's configuration for scikit-learn's ``fit`` to pick trained states up.

    Picking a state up and scoring it is Python, a few milliseconds a fit
    that holds the GIL: threads only contend for it (the 90 pick-ups of a
    30-member grid take about 1.4x longer in 2 threads than in one), so with
    every fit trained ahead (``complete``) they run one after another.
    Otherwise threads of this process, where the states are, for the fits
    left to train.
    """
    return parallel_config(backend="sequential" if complete else "threading")


# Stacks whose data take at most this many bytes may train in forked
# processes (:func:`stack_backend`); larger ones train in threads, sharing
# the data that is already in this process.
FORK_BYTES = 64 * 2**20


def stack_backend(blocks, devices, n_workers, n_tasks):
    """How a search's stacks train: ``"multiprocessing"`` (forked) or None.

    A stack's step is small torch kernels between Python bookkeeping, and its
    thread holds the GIL between kernels: two stacks in two threads of one
    process train about 1.35x slower than the bare-torch floor of the same
    work, while two processes side by side are within 1.1x. So, where
    forking is cheap and safe, the stacks train in worker processes forked
    from this one (:class:`~sknets.model_selection._workers.ForkedRuns`: no
    interpreter start-up, no import, nothing pickled on the way there; one
    torch thread each), and their states come back by pickle. That is when
    every one of these holds (else None: threads of this process, or the
    joblib backend the user set):

    - no joblib backend was chosen (``parallel_config``), beyond loky, the
      default;
    - at least two workers and two stacks, all on the CPU;
    - ``multiprocessing`` forks (its default start method), this is the main
      thread of the main process, and, from Python 3.12 on (which warns
      against forking a process with threads), no other thread runs;
    - the stacks' data (``blocks``) take at most :data:`FORK_BYTES` (it is
      copied to the workers).
    """
    import multiprocessing

    if n_workers < 2 or n_tasks < 2 or any(d.type != "cpu" for d in devices):
        return None
    if not joblib_default_backend():
        return None
    if multiprocessing.get_start_method(allow_none=True) not in (None, "fork"):
        return None
    if multiprocessing.get_context().get_start_method() != "fork":
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    if multiprocessing.current_process().name != "MainProcess":
        return None
    if sys.version_info >= (3, 12) and threading.active_count() > 1:
        return None
    size = sum(
        getattr(a, "nbytes", 0)
        for block in blocks.values()
        for a in block
        if a is not None
    )
    return "multiprocessing" if size <= FORK_BYTES else None


def _parallel(tasks, n_jobs, pre_dispatch, backend=None):
    """Run stack tasks in threads (or ``backend``); Ctrl-C stops every stack."""
    with _threads(effective_n_jobs(n_jobs)), _sigint_flag(), _switching():
        try:
            return Parallel(
                n_jobs=n_jobs,
                pre_dispatch=pre_dispatch,
                prefer="threads",
                backend=backend,
            )(tasks)
        except KeyboardInterrupt:
            # Ctrl-C: stacks in other threads stop at their next batch; wait
            # for them before the interrupt goes on
            USER_INTERRUPT.set()
            _RUNNING.wait_idle()
            raise


# --------------------------------------------------------------------------- all of it


class Pretraining:
    """What a search needs trained, prepared: members in stacks, solo runs.

    Construction plans the runs, prepares every (run, fold), groups the
    members into stacks (split to the memory budget and into at least
    ``n_jobs`` stacks) and leaves the rest as solo runs; nothing is trained.
    :meth:`train` then trains everything, once; successive halving instead
    trains the stacks rung by rung (:meth:`start`, :meth:`advance`), dropping
    eliminated runs between rungs.

    Parameters
    ----------
    base : estimator
        The search's (cloned) estimator.
    candidates : list of dict
        The candidates' parameters.
    X, y : array-like
        The search's data.
    splits : list of (train, test)
        The cross-validation splits.
    fit_params : dict
        ``sample_weight`` or nothing.
    n_jobs, pre_dispatch :
        joblib's, for the runs or stacks.
    vectorize : bool
        Train stackable members as stacked networks (else one run each).
    share_all : bool
        Pre-train every candidate (else only the ones that share runs).

    Attributes
    ----------
    runs : list of (epoch_param, common, {candidate: epochs})
        The runs (:func:`plan_runs`).
    stats : dict
        ``members``, ``stacks`` (members per stack), ``member_bytes``.
    """

    def __init__(
        self,
        base,
        candidates,
        X,
        y,
        splits,
        fit_params,
        *,
        n_jobs,
        pre_dispatch,
        vectorize,
        share_all,
    ):
        USER_INTERRUPT.clear()  # a Ctrl-C of an earlier search is over
        self.base, self.X, self.y = base, X, y
        self.splits, self.fit_params = splits, fit_params
        self.n_jobs, self.pre_dispatch = n_jobs, pre_dispatch
        self.n_workers = effective_n_jobs(n_jobs)
        self.runs = plan_runs(base, candidates, share_all=share_all)
        self.stats = {"members": 0, "stacks": [], "member_bytes": {}}
        self.solo, stacks, blocks = [], {}, {}
        for r, (epoch_param, common, epochs) in enumerate(self.runs):
            wanted = tuple(sorted(set(epochs.values())))
            for s, (train, _) in enumerate(splits):
                member = None
                if vectorize:
                    member = self._member(
                        r, s, train, epoch_param, common, wanted, stacks, blocks
                    )
                if member is None:
                    self.solo.append((r, s))
        # numbered data blocks, so that a stack ships only its own
        self.block_of = {data: i for i, data in enumerate(blocks)}
        self.blocks = {self.block_of[d]: v for d, v in blocks.items()}
        self.chunks = self._chunks(stacks)
        for chunk in self.chunks:
            self.stats["stacks"].append(len(chunk))
            self.stats["members"] += len(chunk)
            self.stats["member_bytes"][len(self.stats["stacks"]) - 1] = _member_bytes(
                chunk[0][0], chunk[0][1]
            )
        self.keeper = None
        self.stack_states = None  # per chunk, per member {count: state} (train)

    def _member(self, r, s, train, epoch_param, common, wanted, stacks, blocks):
        """Prepare (run ``r``, split ``s``) and file it in its stack, or None."""
        try:
            net, data, prepared = _prepare_member(
                clone(self.base),
                self.X,
                self.y,
                train=train,
                common=common,
                epoch_param=epoch_param,
                last=wanted[-1],
                fit_params=self.fit_params,
            )
            signature = net._stack_signature(prepared)
        except Exception:  # scikit-learn's fit reports it
            return None
        if signature is None:
            return None
        # targets are encoded per class, weights per class_weight
        weights = registry.fingerprint(prepared.sample_weight)[0]
        data = (type(net).__qualname__, data, weights)
        if data not in blocks:
            blocks[data] = (prepared.X, prepared.target, prepared.sample_weight)
        slim = replace(prepared, X=prepared.X[:0], target=None, sample_weight=None)
        member = (net, slim, data, wanted, r, s)
        stacks.setdefault(signature, []).append(member)
        return member

    def _chunks(self, stacks):
        """Stacks split to the memory budget, then into ``n_jobs`` at least."""
        cost = lambda m: _member_bytes(m[0], m[1]) * m[3][-1]  # noqa: E731
        chunks = []
        for ms in stacks.values():
            per_member = _member_bytes(ms[0][0], ms[0][1])
            limit = max(1, _memory_budget(ms[0][1].plan.device) // per_member)
            chunks += split_stacks([ms], cost, 0, limit)
        return split_stacks(
            chunks, cost, self.n_workers, max(len(c) for c in chunks) if chunks else 1
        )

    def _stack_members(self, chunk):
        return [(m[0], m[1], self.block_of[m[2]], m[3]) for m in chunk]

    def _record(self, net, data, r, s, states, trained, seconds):
        """File a member's states under their registry keys (and their times)."""
        params = net.get_params(deep=False)
        for k, state in states.items():
            key = registry.key(net, {**params, EPOCH_PARAM: k}, data[1])
            trained[key] = state
            for i, e in self.runs[r][2].items():
                if e == k:
                    seconds[(i, s)] = (key, state.seconds)

    def train(self):
        """Train every member and solo run to its last epoch count.

        Returns
        -------
        trained : dict
            Registry key -> :class:`~sknets._plan.TrainedState`.
        seconds : dict
            ``(candidate, split) -> (key, seconds)``: when its state was ready.
        stats : dict
            ``members``, ``stacks`` (members per stack), ``member_bytes``.
        """
        pid = os.getpid()
        solo_tasks = []
        for r, s in self.solo:
            epoch_param, common, epochs = self.runs[r]
            solo_tasks.append(
                delayed(_train_run)(
                    clone(self.base),
                    self.X,
                    self.y,
                    train=self.splits[s][0],
                    common=common,
                    epoch_param=epoch_param,
                    epochs=list(epochs.values()),
                    fit_params=self.fit_params,
                    parent_pid=pid,
                    n_workers=self.n_workers,
                )
            )
        results = []
        if self.chunks:
            devices = {chunk[0][1].plan.device for chunk in self.chunks}
            forked = stack_backend(
                self.blocks, devices, self.n_workers, len(self.chunks)
            )
            self.stats["workers"] = "processes" if forked else "threads"
            if forked:
                results += self._train_forked()
            else:
                # threads: the stacks' data need no copy, no worker starts,
                # and torch releases the GIL in its kernels (an explicit
                # joblib backend, e.g. Dask, is used as set)
                tasks = []
                for chunk in self.chunks:
                    members = self._stack_members(chunk)
                    used = {b for _, _, b, _ in members}
                    blocks = {b: self.blocks[b] for b in used}
                    tasks.append(
                        delayed(_train_stack)(members, blocks, pid, self.n_workers)
                    )
                results += _parallel(tasks, self.n_jobs, self.pre_dispatch)
        if solo_tasks:
            results += Parallel(n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch)(
                solo_tasks
            )
        self.stack_states = results[: len(self.chunks)]
        trained, seconds = {}, {}
        for chunk, result in zip(self.chunks, results, strict=False):
            for (net, _, data, _, r, s), states in zip(chunk, result, strict=True):
                self._record(net, data, r, s, states, trained, seconds)
        for (r, s), result in zip(self.solo, results[len(self.chunks) :], strict=True):
            for k, (key, state) in result.items():
                trained[key] = state
                for i, e in self.runs[r][2].items():
                    if e == k:
                        seconds[(i, s)] = (key, state.seconds)
        return trained, seconds, self.stats

    def _train_forked(self):
        """Train the stacks in forked workers (:class:`ForkedRuns`), at once.

        The runs are built here and reach the workers by the fork, nothing
        pickled on the way in (joblib's ``"multiprocessing"`` backend would
        pickle every stack's members and data to its pool, after a full
        ``gc.collect`` of this process: about 0.25 s before the first step
        of the digits grid); runs are split between the workers to finish
        together (:func:`balance_runs`). Per chunk, per member, the states at
        its counts.
        """
        live = [
            (chunk, _stack_run(self._stack_members(chunk), self.blocks))
            for chunk in self.chunks
        ]
        last = max(m[3][-1] for chunk in self.chunks for m in chunk)
        keeper = ForkedRuns(live, self.n_workers, self._run_cost)
        try:
            pieces = keeper.train(last, self._run_cost)
        finally:
            keeper.close()
        states = {id(chunk): {} for chunk in self.chunks}
        for chunk, by_member in pieces:
            states[id(chunk)].update(by_member)
        return [
            [states[id(chunk)][m] for m in range(len(chunk))] for chunk in self.chunks
        ]

    def refit_ahead(self):
        """Start the refit scikit-learn's search will ask for, on a guess.

        After :meth:`train` in forked workers, where the network scores
        itself by accuracy (:meth:`_guide`) and every (candidate, split) was
        stacked: a forked child scores every state on its held-out rows as
        the search will, takes the candidate it will rank first (the first
        of the best mean) and trains that candidate's refit on all the data
        (:meth:`refits`), while this process picks the states up and scores
        them. Returns a :class:`~sknets.model_selection._workers.ForkedCall`
        whose result is ``{registry key: state}`` (for
        :meth:`sknets._registry.Offer.promise`), or None: nothing started. A
        wrong guess trains a refit nobody takes (time, not results).
        """
        if self.solo or self.stack_states is None:
            return None
        devices = {chunk[0][1].plan.device for chunk in self.chunks}
        if not stack_backend(self.blocks, devices, self.n_workers, self.n_workers):
            return None
        guide = self._guide()
        if guide is None:
            return None
        return ForkedCall(partial(self._refit_best, guide))

    def _refit_best(self, guide):
        """The refit of the candidate whose states score best on held-out rows."""
        scores = {}  # (run, split, count) -> accuracy
        for c, (chunk, states) in enumerate(
            zip(self.chunks, self.stack_states, strict=True)
        ):
            module = chunk[0][0]._stack(
                [(net, prepared) for net, prepared, *_ in chunk]
            )
            members = range(len(chunk))
            for k in set.intersection(*(set(s) for s in states)):
                for m in members:
                    module.load_member_state(m, states[m][k].module_state)
                for m, value in held_out_scores(
                    module, members, guide.members[c], guide.folds
                ).items():
                    scores[(chunk[m][4], chunk[m][5], k)] = value
        n_splits = len(self.splits)
        best = None
        for r, (_, _, epochs) in enumerate(self.runs):
            for i, e in epochs.items():
                mean = np.mean([scores[(r, s, e)] for s in range(n_splits)])
                if best is None or (mean, -i) > (best[0], -best[1]):
                    best = (mean, i, r, e)
        _, _, r, e = best
        function, args, kwargs = self.refits([r], e)[0]
        return dict(function(*args, **kwargs).values())

    # ------------------------------------------------------------ rung by rung

    def start(self, guess=False):
        """Build every stack's run (nothing trained yet); solo runs are left out.

        The runs live in forked worker processes from here on where forking
        is safe (:func:`stack_backend`), else in this process
        (:mod:`~sknets.model_selection._workers`); :meth:`close` ends them.
        ``guess``: the search scores with the network's own ``score``, so
        the workers may guess each rung's survivors (:meth:`speculate`).
        """
        live = [
            (chunk, _stack_run(self._stack_members(chunk), self.blocks))
            for chunk in self.chunks
        ]
        devices = {chunk[0][1].plan.device for chunk in self.chunks}
        # the runs are split between the workers as the rungs go (a run may be one)
        forked = stack_backend(self.blocks, devices, self.n_workers, self.n_workers)
        if forked:
            guide = self._guide() if guess else None
            self.keeper = ForkedRuns(live, self.n_workers, self._run_cost, guide)
        else:
            parallel = partial(
                _parallel,
                n_jobs=self.n_jobs,
                pre_dispatch=self.pre_dispatch,
                backend="threading",
            )
            self.keeper = ThreadRuns(live, self.n_workers, parallel, _advance)
        self.stats["workers"] = self.keeper.kind
        return self

    def _guide(self):
        """The held-out rows and labels for the workers' guesses, or None.

        Only for a classifier network itself (not a pipeline) with one label
        per row and numeric array ``X``: its ``score`` is the accuracy of
        its most likely class on those rows.
        """
        X, y = self.X, self.y
        if (
            not is_classifier(self.base)
            or (find_net(self.base) or (None,))[0] is not self.base
            or not isinstance(X, np.ndarray)
            or X.dtype.kind not in "biuf"
            or X.ndim != 2
            or np.ndim(y) != 1
        ):
            return None
        y = np.asarray(y)
        dtype = self.chunks[0][0][1].plan.dtype
        numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        folds = {
            s: (X[test].astype(numpy_dtype), y[test])
            for s, (_, test) in enumerate(self.splits)
        }
        members = {}
        for c, chunk in enumerate(self.chunks):
            info = []
            for net, prepared, *_, s in chunk:
                classes = getattr(net, "classes_", None)
                if classes is None or np.ndim(classes) != 1:
                    return None
                binary = prepared.n_outputs == 1
                info.append((s, np.asarray(classes), binary))
            members[c] = info
        return Guide(folds, members)

    def close(self):
        """End the runs (and their workers) of :meth:`start`."""
        if self.keeper is not None:
            self.keeper.close()
            self.keeper = None

    def refits(self, runs, epochs):
        """Refits of ``runs`` (run indices) on all the data, to ``epochs``.

        What scikit-learn's refit of one of these candidates trains, as solo
        runs through the network's own ``fit`` (one network each is fastest
        alone), to be trained beside a rung (:meth:`advance`'s ``extra``).
        """
        n = self.X.shape[0] if hasattr(self.X, "shape") else len(self.X)
        return [
            delayed(_train_run)(
                clone(self.base),
                self.X,
                self.y,
                train=np.arange(n),
                common=self.runs[r][1],
                epoch_param=self.runs[r][0],
                epochs=[epochs],
                fit_params=self.fit_params,
                parent_pid=os.getpid(),
                n_workers=self.n_workers,
            )
            for r in sorted(runs)
        ]

    @staticmethod
    def _run_cost(chunk, members):
        """What training ``members`` of a stack's run costs, one epoch (bytes)."""
        return sum(_member_bytes(chunk[m][0], chunk[m][1]) for m in members)

    def _keeping(self, runs):
        """Which members of a chunk go on: those of ``runs`` (run indices)."""
        runs = set(runs)
        return lambda chunk: [m for m, member in enumerate(chunk) if member[4] in runs]

    def speculate(self, epochs, runs, n_extra, score):
        """Start training ``runs`` up to ``epochs`` ahead of :meth:`advance`.

        Where the runs live in worker processes that can guess
        (``start(guess=True)``), they train while scikit-learn picks up the
        rung just trained; else nothing happens. Returns at once.
        """
        if self.keeper.ahead:
            self.keeper.speculate(
                epochs, self._keeping(runs), self._run_cost, n_extra, score
            )

    def advance(self, epochs, runs, extra=(), score=False):
        """Train the members of ``runs`` (run indices) up to ``epochs``.

        Members of other runs leave their stacks first, for good; stacks left
        empty are dropped. ``extra`` (:meth:`refits`) train at the same time,
        in the workers the rung leaves free. Members trained ahead
        (:meth:`speculate`) are not trained again.

        Returns
        -------
        trained, seconds : dict
            As :meth:`train`, for the states at ``epochs`` only.
        extra_trained : dict
            Registry key -> state of the ``extra`` members.
        scores : dict or None
            With ``score`` and workers that guess, ``(run, split) -> score``
            of each member on its held-out rows (else None).
        """
        states, extra_done, guesses = self.keeper.advance(
            epochs,
            self._keeping(runs),
            list(extra),
            self._run_cost,
            score=score and self.keeper.ahead,
        )
        trained, seconds = {}, {}
        for chunk, by_member in states:
            for m, state in by_member.items():
                net, _, data, _, r, s = chunk[m]
                if state is not None:
                    self._record(net, data, r, s, {epochs: state}, trained, seconds)
        extra_trained = {
            key: state for result in extra_done for key, state in result.values()
        }
        scores = None
        if guesses is not None:
            scores = {
                (chunk[m][4], chunk[m][5]): value
                for chunk, by_member in guesses
                for m, value in by_member.items()
            }
        return trained, seconds, extra_trained, scores


def pretrain(base, candidates, X, y, splits, fit_params, **kwargs):
    """Train what the search will need (:meth:`Pretraining.train`)."""
    return Pretraining(base, candidates, X, y, splits, fit_params, **kwargs).train()
