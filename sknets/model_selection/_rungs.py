"""Successive halving over epochs: the rungs, trained as stacked members.

:func:`rung_schedule` is scikit-learn's schedule of candidates and epochs;
:class:`_EpochHalvingMixin` runs it: the first rung's candidates are
prepared and stacked once, and each rung trains the survivors on from where
they are, while scikit-learn's own halving picks them up, scores them and
keeps the best (and refits the winner, trained beside the last rung).
"""

import numbers
from math import ceil, floor, log

import numpy as np
from sklearn import get_config
from sklearn.base import clone, is_classifier
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import check_cv

from sknets import _registry as registry
from sknets._compat import auto_propagated_callbacks
from sknets.model_selection._pretrain import Pretraining, pickup_config
from sknets.model_selection._runs import EPOCH_PARAM, find_net
from sknets.model_selection._search import report_shared_fit_times

_NO_STACKS = {"members": 0, "stacks": [], "member_bytes": {}}


def rung_schedule(n_candidates, min_resources, max_resources, factor, aggressive):
    """scikit-learn's successive-halving schedule for a non-sample resource.

    Parameters
    ----------
    n_candidates : int
        Candidates of the first rung.
    min_resources : int or {'smallest', 'exhaust'}
        As the searches' ``min_resources`` ('smallest' is 1 for a resource
        other than samples).
    max_resources : int
        As the searches' ``max_resources``.
    factor : float
        The elimination factor.
    aggressive : bool
        ``aggressive_elimination``.

    Returns
    -------
    schedule : dict
        ``min_resources`` (resolved), ``n_required_iterations``,
        ``n_possible_iterations`` and ``resources`` (one per rung).
    """
    required = 1 + floor(log(n_candidates, factor))
    smallest = 1 if min_resources in ("smallest", "exhaust") else int(min_resources)
    if min_resources == "exhaust":
        # the last required rung gets as much of the budget as possible
        smallest = max(smallest, max_resources // factor ** (required - 1))
    possible = 1 + floor(log(max_resources // smallest, factor))
    n_rungs = required if aggressive else min(possible, required)
    resources = []
    for itr in range(n_rungs):
        # aggressive elimination repeats the first budget until the
        # candidates left fit the possible rungs
        power = max(0, itr - required + possible) if aggressive else itr
        resources.append(min(int(factor**power * smallest), max_resources))
    return {
        "min_resources": smallest,
        "n_required_iterations": required,
        "n_possible_iterations": possible,
        "resources": resources,
    }


def best_last(scores, k):
    """Indices of the ``k`` best scores, best last; NaN scores rank lowest.

    The survivors of a rung, in the order scikit-learn's halving lists them
    in the next rung.
    """
    scores = np.asarray(scores, dtype=float)
    order = np.roll(np.argsort(scores), np.count_nonzero(np.isnan(scores)))
    return order[-k:] if k else order[:0]


class _Rungs:
    """What one epoch-halving fit plans: candidates, schedule, the stacks."""

    def __init__(self, candidates, schedule, pretraining, run_of):
        self.candidates = candidates
        self.schedule = schedule
        self.pretraining = pretraining
        self.run_of = run_of  # candidate -> its run in ``pretraining.runs``
        self.seconds = {}  # (cv_results_ row, split) -> (key, seconds)
        self.taken = set()
        self.refit_offer = None  # the refits trained beside the last rung
        self.refit_seconds = {}  # their registry keys -> training seconds


class _EpochHalvingMixin:
    """``fit`` of a halving search whose resource is the network's epoch count."""

    def _candidates(self, n_first):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _plan_rungs(self, X, y, params):
        """The rungs to train rung by rung, or None (scikit-learn's halving)."""
        found = find_net(self.estimator)
        if (
            not self.vectorize
            or found is None
            or auto_propagated_callbacks(self)  # they follow every fit's epochs
            or self.resource != found[1] + EPOCH_PARAM
            or set(params) - {"sample_weight", "groups"}
            or get_config().get("enable_metadata_routing")
            or not isinstance(self.max_resources, numbers.Integral)
        ):
            return None
        try:
            cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
            groups = {k: v for k, v in params.items() if k == "groups"}
            splits = list(cv.split(X, y, **groups))
            smallest = self.min_resources
            if smallest in ("smallest", "exhaust"):
                smallest = 1
            candidates = list(self._candidates(self.max_resources // smallest))
        except Exception:  # scikit-learn's fit reports it
            return None
        if (
            not candidates
            or any(self.resource in c for c in candidates)
            or (
                isinstance(self.min_resources, numbers.Integral)
                and self.min_resources > self.max_resources
            )
        ):
            return None  # scikit-learn's fit reports it
        schedule = rung_schedule(
            len(candidates),
            self.min_resources,
            self.max_resources,
            self.factor,
            self.aggressive_elimination,
        )
        budgets = sorted(set(schedule["resources"]))
        # every candidate at every budget: one run per candidate (and fold)
        wanted = [{**c, self.resource: b} for c in candidates for b in budgets]
        fit_params = {k: v for k, v in params.items() if k == "sample_weight"}
        pretraining = Pretraining(
            clone(self.estimator),
            wanted,
            X,
            y,
            splits,
            fit_params,
            n_jobs=self.n_jobs,
            pre_dispatch="2*n_jobs",
            vectorize=True,
            share_all=True,
        )
        if not pretraining.chunks:
            return None
        run_of = {}
        for r, (_, _, epochs) in enumerate(pretraining.runs):
            for i in epochs:
                run_of[i // len(budgets)] = r
        return _Rungs(candidates, schedule, pretraining, run_of)

    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters, rung by rung.

        With ``resource`` the network's epoch count (``max_iter``, or
        ``<step>__max_iter`` in a pipeline), the candidates' networks train
        as stacked members that go on from rung to rung; otherwise this is
        scikit-learn's successive halving.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), \
                default=None
            Target relative to X for classification or regression.
        **params : dict of str -> object
            Parameters passed to the ``fit`` method of the estimator.

        Returns
        -------
        self : object
            Instance of fitted estimator.
        """
        self._validate_params()
        rungs = self._plan_rungs(X, y, params)
        if rungs is None:
            self.stacking_ = dict(_NO_STACKS)
            return super().fit(X, y, **params)
        self.__dict__["_rungs"] = rungs
        try:
            # the stacks' runs, kept (in worker processes where forking is
            # safe) from rung to rung; joblib's default backend is still on
            rungs.pretraining.start(guess=self.scoring is None)
            # the states live in this process: candidates are fitted (picked
            # up) and scored here; the refit picks up its state too. (joblib's
            # backend is fixed for the whole search when scikit-learn's fit
            # starts; the rungs train in threads of their own.)
            with (
                registry.offered({}) as rungs.refit_offer,
                pickup_config(not rungs.pretraining.solo),
            ):
                super().fit(X, y, **params)
        finally:
            rungs.pretraining.close()
            del self.__dict__["_rungs"]
        self.stacking_ = rungs.pretraining.stats
        report_shared_fit_times(self, rungs.seconds, rungs.taken)
        for key in rungs.refit_offer.taken:  # the refit's training, not its pick-up
            self.refit_time_ = rungs.refit_seconds[key]
        return self

    def _run_search(self, evaluate_candidates, *, callback_ctx=None):
        rungs = self.__dict__.get("_rungs")
        if rungs is None:  # scikit-learn's own halving
            if callback_ctx is None:  # scikit-learn < 1.9: no callback API
                return super()._run_search(evaluate_candidates)
            return super()._run_search(evaluate_candidates, callback_ctx=callback_ctx)
        return self._run_rungs(rungs, evaluate_candidates, callback_ctx)

    def _speculate(self, rungs, alive, guesses, itr):
        """Start the next rung for the survivors that ``guesses`` predict.

        ``guesses`` maps ``(run, split)`` to a member's held-out score as its
        own ``score`` gives it; the predicted survivors are the best
        ``1 / factor`` by their mean over the splits, as scikit-learn ranks
        them. Nothing starts if a candidate's members were not all scored.
        """
        splits = range(len(rungs.pretraining.splits))
        scores = []
        for j in alive:
            r = rungs.run_of.get(j)
            if r is None or any((r, s) not in guesses for s in splits):
                return
            scores.append(np.mean([guesses[(r, s)] for s in splits]))
        n = len(alive)
        survivors = [alive[i] for i in best_last(scores, ceil(n / self.factor))]
        runs = {rungs.run_of[j] for j in survivors}
        resources = rungs.schedule["resources"]
        next_last = itr + 1 == len(resources) - 1
        n_extra = len(runs) if next_last and self.refit is True else 0
        rungs.pretraining.speculate(
            resources[itr + 1], runs, n_extra, score=not next_last
        )

    def _run_rungs(self, rungs, evaluate_candidates, callback_ctx):
        """Every rung: train the survivors on, score them, keep the best."""
        schedule = rungs.schedule
        resources = schedule["resources"]
        self.min_resources_ = schedule["min_resources"]
        if self.verbose:
            print(f"n_iterations: {len(resources)}")
            print(f"n_required_iterations: {schedule['n_required_iterations']}")
            print(f"n_possible_iterations: {schedule['n_possible_iterations']}")
            print(f"min_resources_: {self.min_resources_}")
            print(f"max_resources_: {self.max_resources_}")
            print(f"aggressive_elimination: {self.aggressive_elimination}")
            print(f"factor: {self.factor}")
        search_ctx = _task(
            callback_ctx, self, task_name="search", max_subtasks=len(resources)
        )
        self.n_resources_, self.n_candidates_ = [], []
        alive = list(range(len(rungs.candidates)))
        rows = 0  # cv_results_ rows so far
        for itr, n_resources in enumerate(resources):
            n = len(alive)
            rung_ctx = _task(
                search_ctx,
                self,
                task_name="halving-iteration",
                max_subtasks=n * len(rungs.pretraining.splits),
                sequential_subtasks=False,
            )
            self.n_resources_.append(n_resources)
            self.n_candidates_.append(n)
            if self.verbose:
                print("-" * 10)
                print(f"iter: {itr}")
                print(f"n_candidates: {n}")
                print(f"n_resources: {n_resources}")
            runs = {rungs.run_of[j] for j in alive if j in rungs.run_of}
            extra = ()
            if itr == len(resources) - 1 and self.refit is True:
                # the best of the last rung is refitted with its budget: train
                # those refits now, beside the rung (the workers it leaves free)
                extra = rungs.pretraining.refits(runs, n_resources)
            last = itr == len(resources) - 1
            trained, seconds, refits, guesses = rungs.pretraining.advance(
                n_resources, runs, extra, score=not last
            )
            if guesses is not None and not last:
                # train the next rung ahead for the survivors the workers'
                # own scores predict, while scikit-learn scores this one
                self._speculate(rungs, alive, guesses, itr)
            rungs.refit_offer.add(refits)
            rungs.refit_seconds.update({k: s.seconds for k, s in refits.items()})
            budgets = sorted(set(resources))
            row_of = {
                j * len(budgets) + budgets.index(n_resources): rows + position
                for position, j in enumerate(alive)
            }
            for (i, s), value in seconds.items():
                if i in row_of:
                    rungs.seconds[(row_of[i], s)] = value
            candidates = [
                {**rungs.candidates[j], self.resource: n_resources} for j in alive
            ]
            more = {"iter": [itr] * n, "n_resources": [n_resources] * n}
            kwargs = {} if rung_ctx is None else {"callback_ctx": rung_ctx}
            with registry.offered(trained) as offer:
                results = evaluate_candidates(candidates, more_results=more, **kwargs)
            rungs.taken |= offer.taken
            scores = np.asarray(results["mean_test_score"])[rows : rows + n]
            alive = [alive[i] for i in best_last(scores, ceil(n / self.factor))]
            rows += n
            if rung_ctx is not None:
                rung_ctx.call_on_fit_task_end(estimator=self)
        self.n_remaining_candidates_ = len(alive)
        self.n_required_iterations_ = schedule["n_required_iterations"]
        self.n_possible_iterations_ = schedule["n_possible_iterations"]
        self.n_iterations_ = len(resources)
        if search_ctx is not None:
            search_ctx.call_on_fit_task_end(estimator=self)


def _task(ctx, search, **kwargs):
    """A begun sub-task of scikit-learn's callback context ``ctx`` (None: none)."""
    if ctx is None:
        return None
    return ctx.subcontext(**kwargs).call_on_fit_task_begin(estimator=search)
