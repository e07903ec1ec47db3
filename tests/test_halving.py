"""Successive halving with epochs as the budget: scikit-learn's results, less training.

``sknets.model_selection.HalvingGridSearchCV`` / ``HalvingRandomSearchCV``
with ``resource="max_iter"`` train every candidate's networks as stacked
members that go on from rung to rung. Everything here is compared with
scikit-learn's own halving over the same estimator (which retrains every
survivor from scratch at every rung), or with standalone fits, never with
stored numbers.
"""

import os
import threading
import time
import warnings

import numpy as np
import pytest
from joblib import parallel_config
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import loguniform
from sklearn.datasets import load_digits, load_iris
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import HalvingGridSearchCV as SkHalvingGrid
from sklearn.model_selection import HalvingRandomSearchCV as SkHalvingRandom
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sknets import MLPClassifier, MLPRegressor
from sknets._members import MemberRun, MemberSpec
from sknets.model_selection import (
    HalvingGridSearchCV,
    HalvingRandomSearchCV,
    _pretrain,
    _workers,
)
from sknets.model_selection._rungs import rung_schedule
from tests.test_members import (  # noqa: F401 (a fixture)
    _backwards,
    _clear_interrupt,
    _ctrl_c_after,
    _ctrl_c_during,
    _no_workers_left,
    forking,
    posix_main_thread,
)

ATOL = 1e-6  # float64: stacked members and standalone fits agree to rounding
N_ROWS = 240

pytestmark = pytest.mark.usefixtures("quiet_one_thread")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:N_ROWS] / 16.0, y[:N_ROWS]


_NET = dict(
    hidden_layer_sizes=(8,),
    learning_rate_init=0.01,
    batch_size=40,
    # tol=0 and a large n_iter_no_change: every run reaches its budget
    tol=0.0,
    n_iter_no_change=1000,
    random_state=0,
    device="cpu",
)
GRID = {"alpha": [1e-4, 1e-2, 1e-1], "learning_rate_init": [3e-3, 1e-2, 3e-2]}
RUNGS = dict(resource="max_iter", min_resources=2, max_resources=18, factor=3, cv=3)


def _mlp(**params):
    return MLPClassifier(**{**_NET, **params})


def _assert_same_halving(ours, theirs, atol=ATOL):
    """The same rungs, survivors, scores and choice as scikit-learn's halving."""
    for name in (
        "n_resources_",
        "n_candidates_",
        "n_remaining_candidates_",
        "n_required_iterations_",
        "n_possible_iterations_",
        "n_iterations_",
        "min_resources_",
        "max_resources_",
    ):
        assert getattr(ours, name) == getattr(theirs, name), name
    ours_r, theirs_r = ours.cv_results_, theirs.cv_results_
    assert ours_r["params"] == theirs_r["params"]
    assert_array_equal(ours_r["iter"], theirs_r["iter"])
    assert_array_equal(ours_r["n_resources"], theirs_r["n_resources"])
    scores = [
        k
        for k in theirs_r
        if k.startswith("split") or k.startswith(("mean_t", "std_t"))
    ]
    scores = [k for k in scores if "_time" not in k]
    assert any("train" in k for k in scores) and any("test" in k for k in scores)
    for key in scores:
        assert_allclose(ours_r[key], theirs_r[key], rtol=0, atol=atol, err_msg=key)
    assert_array_equal(ours_r["rank_test_score"], theirs_r["rank_test_score"])
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_index_ == theirs.best_index_
    assert ours.best_score_ == pytest.approx(theirs.best_score_, abs=atol)


def _both(ours_cls, sk_cls, estimator, space, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = ours_cls(estimator, space, **kwargs).fit(X, y)
        theirs = sk_cls(estimator, space, **kwargs).fit(X, y)
    return ours, theirs


# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    "n_candidates, min_resources, max_resources, factor, aggressive",
    [
        (27, 5, 135, 3, False),
        (27, "exhaust", 135, 3, False),
        (27, "smallest", 135, 3, False),
        (10, 4, 20, 2, False),  # more candidates than the budget allows
        (10, 4, 20, 2, True),  # ... eliminated at the first budget
        (7, "exhaust", 100, 2.5, False),
        (3, 1, 1000, 4, False),  # fewer candidates than possible rungs
        (1, 3, 9, 3, False),
    ],
)
def test_rung_schedule_is_sklearns(
    n_candidates, min_resources, max_resources, factor, aggressive
):
    X, y = load_iris(return_X_y=True)
    grid = {"C": list(np.logspace(-2, 2, n_candidates))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SkHalvingGrid(
            LogisticRegression(),
            grid,
            resource="max_iter",
            min_resources=min_resources,
            max_resources=max_resources,
            factor=factor,
            aggressive_elimination=aggressive,
            cv=2,
        ).fit(X, y)
    schedule = rung_schedule(
        n_candidates, min_resources, max_resources, factor, aggressive
    )
    assert schedule["resources"] == theirs.n_resources_
    assert schedule["min_resources"] == theirs.min_resources_
    assert schedule["n_required_iterations"] == theirs.n_required_iterations_
    assert schedule["n_possible_iterations"] == theirs.n_possible_iterations_


# --------------------------------------------------------------------------- results


def _pipeline():
    return Pipeline([("scale", StandardScaler()), ("mlp", _mlp())])


CASES = {
    "grid": lambda: (_mlp(), GRID, RUNGS),
    "dropout": lambda: (_mlp(dropout=0.2), GRID, RUNGS),
    "pipeline": lambda: (
        _pipeline(),
        {f"mlp__{k}": v for k, v in GRID.items()},
        {**RUNGS, "resource": "mlp__max_iter"},
    ),
    "aggressive": lambda: (
        _mlp(),
        {**GRID, "hidden_layer_sizes": [(8,), (4, 4)]},
        {
            **RUNGS,
            "min_resources": 3,
            "max_resources": 9,
            "aggressive_elimination": True,
        },
    ),
    # members converge (tol) at different epochs, between and within rungs
    "converging": lambda: (_mlp(tol=1e-2, n_iter_no_change=2), GRID, RUNGS),
    "early-stopping": lambda: (
        _mlp(early_stopping=True, n_iter_no_change=3, tol=1e-3),
        GRID,
        {**RUNGS, "scoring": "neg_log_loss"},
    ),
    "sgd-schedules": lambda: (
        _mlp(solver="sgd", momentum=0.9),
        {
            "learning_rate": ["constant", "invscaling", "adaptive"],
            "alpha": [1e-4, 1e-1],
        },
        {**RUNGS, "factor": 2, "min_resources": 3, "max_resources": 12},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_halving_grid_equals_sklearn(digits, case):
    X, y = digits
    estimator, grid, kwargs = CASES[case]()
    ours, theirs = _both(
        HalvingGridSearchCV, SkHalvingGrid, estimator, grid, X, y, **kwargs
    )
    _assert_same_halving(ours, theirs)
    assert ours.stacking_["members"] > 0
    assert_allclose(
        ours.best_estimator_.predict_proba(X),
        theirs.best_estimator_.predict_proba(X),
        rtol=0,
        atol=ATOL,
    )


def test_halving_regressor_equals_sklearn(digits):
    X, y = digits
    ours, theirs = _both(
        HalvingGridSearchCV,
        SkHalvingGrid,
        MLPRegressor(**_NET),
        GRID,
        X,
        y.astype(float),
        **RUNGS,
    )
    _assert_same_halving(ours, theirs)


def test_halving_random_search_equals_sklearn(digits):
    X, y = digits
    space = {"alpha": loguniform(1e-5, 1e-1), "learning_rate_init": [3e-3, 1e-2, 3e-2]}
    kwargs = dict(RUNGS, n_candidates=7, random_state=0, factor=2, min_resources=3)
    ours, theirs = _both(
        HalvingRandomSearchCV, SkHalvingRandom, _mlp(), space, X, y, **kwargs
    )
    _assert_same_halving(ours, theirs)
    # 'exhaust' samples max_resources // min_resources candidates, as theirs
    kwargs = dict(RUNGS, random_state=1, min_resources=6)
    ours, theirs = _both(
        HalvingRandomSearchCV, SkHalvingRandom, _mlp(), space, X, y, **kwargs
    )
    assert ours.n_candidates_[0] == 3
    _assert_same_halving(ours, theirs)


# --------------------------------------------------------------------------- training


def test_survivors_resume_instead_of_retraining(digits, epoch_counter):
    X, y = digits
    search = HalvingGridSearchCV(_mlp(), GRID, **RUNGS).fit(X, y)
    assert search.n_resources_ == [2, 6, 18] and search.n_candidates_ == [9, 3, 1]
    # one stack: every candidate on every fold, trained once (the refit of
    # the last rung's candidate trains alone, beside that rung)
    assert epoch_counter["stacked"] == [(9 * 3, 8)]
    # each member trains to the last rung it reaches, never again from 0:
    # 6 candidates stop at 2 epochs, 2 at 6, 1 goes to 18 (3 folds each);
    # scikit-learn's halving trains (9 * 2 + 3 * 6 + 1 * 18) * 3 = 162
    stacked = (6 * 2 + 2 * 6 + 1 * 18) * 3
    refit = 18
    assert epoch_counter["epochs"] == stacked + refit
    assert epoch_counter["runs"] == 27 + 1  # the members and the refit
    assert search.refit_time_ > 0  # its training time, not its pick-up
    # the reported fit times grow with the rungs, as separate fits' would
    results = search.cv_results_
    first = results["mean_fit_time"][results["iter"] == 0]
    last = results["mean_fit_time"][results["iter"] == 2]
    assert last.min() > first.max()


def test_other_resources_and_estimators_are_sklearns_halving(digits, epoch_counter):
    X, y = digits
    # samples as the resource: scikit-learn's halving, nothing stacked
    kwargs = dict(cv=3, factor=3, min_resources=60, random_state=0)
    ours, theirs = _both(
        HalvingGridSearchCV, SkHalvingGrid, _mlp(max_iter=3), GRID, X, y, **kwargs
    )
    _assert_same_halving(ours, theirs)
    assert ours.stacking_["members"] == 0 and epoch_counter["stacked"] == []
    # vectorize=False: the same
    kwargs = dict(RUNGS, vectorize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = HalvingGridSearchCV(_mlp(), GRID, **kwargs).fit(X, y)
    theirs = SkHalvingGrid(_mlp(), GRID, **RUNGS).fit(X, y)
    _assert_same_halving(ours, theirs)
    assert epoch_counter["stacked"] == []
    # not a network
    lr_grid = {"C": [0.1, 1.0, 10.0]}
    ours, theirs = _both(
        HalvingGridSearchCV,
        SkHalvingGrid,
        LogisticRegression(),
        lr_grid,
        X,
        y,
        **{**RUNGS, "max_resources": 30},
    )
    _assert_same_halving(ours, theirs, atol=0)


def test_networks_that_cannot_stack_are_fitted_per_rung(digits, epoch_counter):
    X, y = digits
    ours, theirs = _both(
        HalvingGridSearchCV, SkHalvingGrid, _mlp(batch_norm=True), GRID, X, y, **RUNGS
    )
    _assert_same_halving(ours, theirs)
    assert ours.stacking_["members"] == 0 and epoch_counter["stacked"] == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_resources": "auto"}, "max_resources='auto'"),
        ({"min_resources": 40}, "greater than max_resources_"),
    ],
)
def test_invalid_settings_raise_sklearns_errors(digits, kwargs, match):
    X, y = digits
    for cls in (HalvingGridSearchCV, SkHalvingGrid):
        with pytest.raises(ValueError, match=match):
            cls(_mlp(), GRID, **{**RUNGS, **kwargs}).fit(X, y)
    grid = {**GRID, "max_iter": [2, 4]}
    with pytest.raises(ValueError, match="part of the searched parameters"):
        HalvingGridSearchCV(_mlp(), grid, **RUNGS).fit(X, y)


# --------------------------------------------------------------------------- engine


def test_member_run_resumes_and_drops_members_exactly(digits):
    """advance/keep: each kept member equals its standalone fit at every count."""
    X, y = digits
    members = [
        _mlp(max_iter=12),
        _mlp(max_iter=12, learning_rate_init=0.03, alpha=1e-2),  # own lr: no fusing
        _mlp(max_iter=12, dropout=0.3),
        _mlp(max_iter=12, early_stopping=True, n_iter_no_change=2, tol=1e-3),
        _mlp(max_iter=12, random_state=3),
    ]
    preps = [(est, est._prepare(X, y, None, False)) for est in members]
    assert len({est._stack_signature(p) for est, p in preps}) == 1
    counts = (3, 7, 12)
    specs = [
        MemberSpec(
            p.plan,
            np.arange(len(X)) if p.plan.train_rows is None else p.plan.train_rows,
            p.plan.valid_rows,
            counts,
        )
        for _, p in preps
    ]
    full = preps[0][1]
    run = MemberRun(preps[0][0]._stack(preps), specs, full.X, full.target)
    run.advance(3).keep([1, 2, 3, 4]).advance(7).keep([2, 3, 1]).advance()
    assert run.members == [1, 2, 3]
    reached = {0: (3,), 4: (3, 7), 1: counts, 2: counts, 3: counts}
    results = run.results
    for m, est in enumerate(members):
        assert sorted(results[m]) == sorted(reached[m]), m
        for count in reached[m]:
            params = {**est.get_params(), "max_iter": count}
            adopted = MLPClassifier(**params)._fit(
                X, y, None, False, trained=results[m][count]
            )
            alone = MLPClassifier(**params).fit(X, y)
            assert adopted.n_iter_ == alone.n_iter_, (m, count)
            assert_allclose(adopted.loss_curve_, alone.loss_curve_, atol=1e-10)
            for a, b in zip(adopted.coefs_, alone.coefs_, strict=True):
                assert_allclose(a, b, rtol=0, atol=1e-10, err_msg=f"{m} at {count}")


@pytest.mark.parametrize("moved", ["thread", "pickle"])
def test_member_run_split_in_two_equals_one_run(digits, moved):
    """split: the moved members and the kept ones each go on as in one run,
    side by side in two threads, or moved by pickle (as between processes)."""
    import pickle

    X, y = digits
    members = [
        _mlp(max_iter=10),
        _mlp(max_iter=10, learning_rate_init=0.03, alpha=1e-2),
        _mlp(max_iter=10, dropout=0.3),
        _mlp(max_iter=10, early_stopping=True, n_iter_no_change=2, tol=1e-3),
        _mlp(max_iter=10, random_state=3),
    ]
    preps = [(est, est._prepare(X, y, None, False)) for est in members]
    specs = [
        MemberSpec(
            p.plan,
            np.arange(len(X)) if p.plan.train_rows is None else p.plan.train_rows,
            p.plan.valid_rows,
            (4, 10),
        )
        for _, p in preps
    ]
    full = preps[0][1]
    whole = MemberRun(preps[0][0]._stack(preps), specs, full.X, full.target)
    whole.advance(4).keep([0, 1, 2, 3]).advance()
    run = MemberRun(preps[0][0]._stack(preps), specs, full.X, full.target)
    run.advance(4).keep([0, 1, 2, 3])
    other = run.split([3, 1])
    if moved == "pickle":
        other = pickle.loads(pickle.dumps(other))
    assert run.members == [0, 2] and other.members == [1, 3]
    threads = [threading.Thread(target=r.advance) for r in (run, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = whole.results
    for m in range(4):
        owner = other if m in other.members else run
        got = owner.results[m]
        assert sorted(got) == sorted(expected[m]) == [4, 10], m
        for count in (4, 10):
            a, b = got[count], expected[m][count]
            assert [r["train_loss"] for r in a.history] == pytest.approx(
                [r["train_loss"] for r in b.history], abs=1e-12
            )
            for k in b.module_state:
                assert_allclose(a.module_state[k], b.module_state[k], atol=1e-12)
    assert sorted(run.results[4]) == [4]  # dropped before the split, kept here
    assert 4 not in other.results


def test_balance_runs_splits_the_costliest_run_to_a_fair_share():
    class Run:
        def __init__(self, members):
            self.members = list(members)

        def split(self, moved):
            self.members = [m for m in self.members if m not in moved]
            return Run(moved)

    def cost(chunk, members):
        return chunk * len(members)  # the chunk stands for a member's cost

    def sizes(live, n_workers=2, overhead=0.0):
        out = _workers.balance_runs(live, cost, n_workers, overhead=overhead)
        return [(chunk, len(run.members)) for chunk, run in out]

    # one stack of nine on two workers: five and four
    assert sizes([(1, Run(range(9)))]) == [(1, 5), (1, 4)]
    # eighteen wide members (cost 36) beside nine narrow ones (9): a fair
    # share (22) for one worker, the rest (14 + 9) for the other
    live = [(2, Run(range(18))), (1, Run(range(9)))]
    assert sizes(live) == [(2, 11), (2, 7), (1, 9)]
    # balanced already, one worker, or members that cannot be split: as is
    assert sizes([(1, Run(range(4))), (1, Run(range(5)))]) == [(1, 5), (1, 4)]
    assert sizes([(1, Run(range(9)))], n_workers=1) == [(1, 9)]
    assert sizes([(1, Run([0]))]) == [(1, 1)]
    # a run costs more than its members: nine still split in two, but a run
    # of five beside one of four stays (one member more here would cost a
    # run of one there); two members on two idle workers do split
    assert sizes([(1, Run(range(9)))], overhead=0.7) == [(1, 5), (1, 4)]
    live = [(1, Run(range(4))), (1, Run(range(6)))]
    assert sizes(live, overhead=0.7) == [(1, 6), (1, 4)]
    assert sizes(live, overhead=0.0) == [(1, 5), (1, 4), (1, 1)]
    assert sizes([(1, Run(range(2)))], overhead=2.0) == [(1, 1), (1, 1)]


def test_makespan_is_the_costliest_first_to_the_least_loaded():
    assert _workers.makespan([3, 3, 2, 2, 2], 2) == 7
    assert _workers.makespan([5, 1], 1) == 6
    assert _workers.makespan([], 2) == 0


# --------------------------------------------------------------------------- Ctrl-C


def _long_halving():
    """A halving search that trains for well over the seconds of a test."""
    rungs = {**RUNGS, "min_resources": 500, "max_resources": 5000}
    return HalvingGridSearchCV(_mlp(), GRID, **rungs, n_jobs=2, refit=False)


@posix_main_thread
@pytest.mark.usefixtures("_clear_interrupt")
def test_ctrl_c_stops_a_halving_search(digits):
    X, y = digits
    search = _long_halving()
    start = time.perf_counter()
    with _ctrl_c_after(40) as info:  # the stacks train in threads of this process
        with pytest.raises(KeyboardInterrupt), parallel_config(backend="threading"):
            search.fit(X, y)
        stopped = time.perf_counter()
        assert info["sent"] is not None
        assert stopped - info["sent"] < 5, "the search went on after Ctrl-C"
        assert stopped - start < 20
        assert _pretrain._RUNNING.count == 0
        after = info["steps"][0]
        time.sleep(0.3)
        assert info["steps"][0] == after  # nothing trains in the background
    # the interrupt is over: the next halving search trains as usual
    ours, theirs = _both(
        HalvingGridSearchCV, SkHalvingGrid, _mlp(), GRID, X, y, **RUNGS
    )
    _assert_same_halving(ours, theirs)


# --------------------------------------------------------------------------- processes

WIDE = {"hidden_layer_sizes": [(4,), (8,), (16,)], "alpha": [1e-4, 1e-2, 1e-1]}


def _wide_case(name):
    if name == "classifier":
        return _mlp(), WIDE, RUNGS
    if name == "pipeline":
        pipe = Pipeline([("scale", StandardScaler()), ("mlp", _mlp())])
        grid = {f"mlp__{k}": v for k, v in WIDE.items()}
        return pipe, grid, {**RUNGS, "resource": "mlp__max_iter"}
    return MLPRegressor(**_NET), WIDE, RUNGS


@forking
@pytest.mark.parametrize("case", ["classifier", "pipeline", "regressor"])
def test_halving_in_worker_processes_equals_threads_and_sklearn(digits, case):
    """Runs kept in forked workers (and moved between them to balance the
    rungs; trained ahead for the classifier, whose survivors the workers
    guess) give the threads' results exactly, and scikit-learn's."""
    X, y = digits
    estimator, grid, rungs = _wide_case(case)
    if case == "regressor":
        y = y.astype(float)
    kw = dict(rungs, n_jobs=2)
    forked = HalvingGridSearchCV(estimator, grid, **kw).fit(X, y)
    assert forked.stacking_["workers"] == "processes"
    assert _no_workers_left()
    with parallel_config(backend="threading"):
        threads = HalvingGridSearchCV(estimator, grid, **kw).fit(X, y)
    assert threads.stacking_["workers"] == "threads"
    for key in forked.cv_results_:
        if "_test_" in key or "_train_" in key:
            assert_array_equal(forked.cv_results_[key], threads.cv_results_[key])
    assert_array_equal(
        forked.best_estimator_.predict(X), threads.best_estimator_.predict(X)
    )
    theirs = SkHalvingGrid(estimator, grid, **rungs).fit(X, y)  # (its own jobs)
    _assert_same_halving(forked, theirs)


def test_place_keeps_runs_where_they_are_unless_a_worker_idles():
    # balanced where they are: nothing moves
    assert _workers.place([3, 3], [0, 1], 2, 2) == [0, 1]
    # both runs in worker 0: the smaller one goes to the idle worker 1
    assert _workers.place([3, 2], [0, 0], 2, 2) == [0, 1]
    # one slot (the other worker trains the refit): the holder of most trains all
    assert _workers.place([3, 2], [1, 0], 2, 1) == [1, 1]
    # the costliest first, each to the least loaded
    assert _workers.place([1, 5, 2, 2], [0, 0, 0, 0], 2, 2) == [1, 0, 1, 1]


@forking
@posix_main_thread
@pytest.mark.usefixtures("_clear_interrupt")
def test_ctrl_c_stops_a_forked_halving_search(digits):
    X, y = digits
    search = _long_halving()
    assert _ctrl_c_during(lambda: search.fit(X, y)) < 5
    assert _no_workers_left()  # no worker trains on
    ours = HalvingGridSearchCV(_mlp(), GRID, **RUNGS, n_jobs=2).fit(X, y)
    _assert_same_halving(ours, SkHalvingGrid(_mlp(), GRID, **RUNGS).fit(X, y))


@forking
@pytest.mark.parametrize("failure", ["raises", "dies"])
def test_a_failing_worker_process_fails_the_search(digits, monkeypatch, failure):
    X, y = digits
    search = HalvingGridSearchCV(_mlp(), WIDE, **RUNGS, n_jobs=2)
    parent = os.getpid()
    advance = MemberRun.advance

    def failing(self, epochs=None):
        if os.getpid() != parent and epochs is not None and epochs > 2:
            if failure == "dies":
                os._exit(7)
            raise ValueError("a worker's own error")
        return advance(self, epochs)

    monkeypatch.setattr(MemberRun, "advance", failing)  # the workers fork it
    expected = (
        pytest.raises(ValueError, match="a worker's own error")
        if failure == "raises"
        else pytest.raises(RuntimeError, match=r"ended unexpectedly \(exit code 7\)")
    )
    with expected:
        search.fit(X, y)
    assert _no_workers_left()
    monkeypatch.undo()  # the next search trains, in new workers, as ever
    again = HalvingGridSearchCV(_mlp(), WIDE, **RUNGS, n_jobs=2).fit(X, y)
    assert again.stacking_["workers"] == "processes"
    with parallel_config(backend="threading"):
        threads = HalvingGridSearchCV(_mlp(), WIDE, **RUNGS, n_jobs=2).fit(X, y)
    assert_array_equal(
        again.cv_results_["mean_test_score"], threads.cv_results_["mean_test_score"]
    )


@forking
def test_workers_guess_each_rung_with_the_scores_scikit_learn_gives(
    digits, monkeypatch
):
    """The held-out scores the workers guess the survivors by are the very
    split scores of ``cv_results_``, and a guess that comes true trains the
    next rung ahead (here every one does)."""
    X, y = digits
    seen = []
    speculate = HalvingGridSearchCV._speculate

    def spy(self, rungs, alive, guesses, itr):
        seen.append((dict(rungs.run_of), list(alive), dict(guesses), itr))
        return speculate(self, rungs, alive, guesses, itr)

    monkeypatch.setattr(HalvingGridSearchCV, "_speculate", spy)
    search = HalvingGridSearchCV(_mlp(), WIDE, **RUNGS, n_jobs=2).fit(X, y)
    assert search.stacking_["workers"] == "processes"
    results = search.cv_results_
    assert [itr for *_, itr in seen] == list(range(search.n_iterations_ - 1))
    for run_of, alive, guesses, itr in seen:
        rows = np.flatnonzero(results["iter"] == itr)
        assert len(rows) == len(alive)
        for row, j in zip(rows, alive, strict=True):
            for s in range(3):
                got = guesses[(run_of[j], s)]
                assert got == results[f"split{s}_test_score"][row], (itr, j, s)
    theirs = SkHalvingGrid(_mlp(), WIDE, **RUNGS).fit(X, y)
    _assert_same_halving(search, theirs)


@forking
def test_a_wrong_guess_costs_time_not_results(digits, monkeypatch):
    """Survivors guessed backwards: the next rung trains the wrong members
    ahead; the right ones train after, and the search is scikit-learn's."""
    X, y = digits
    backwards = _backwards(_workers.held_out_scores)
    monkeypatch.setattr(_workers, "held_out_scores", backwards)  # the workers fork it
    ours = HalvingGridSearchCV(_mlp(), WIDE, **RUNGS, n_jobs=2).fit(X, y)
    assert ours.stacking_["workers"] == "processes"
    theirs = SkHalvingGrid(_mlp(), WIDE, **RUNGS).fit(X, y)
    _assert_same_halving(ours, theirs)
    assert _no_workers_left()


@forking
def test_a_guess_that_fails_leaves_the_search_as_it_is(digits, monkeypatch):
    X, y = digits

    def failing(module, members, info, folds, rows=4096):
        raise RuntimeError("no guess")

    monkeypatch.setattr(_workers, "held_out_scores", failing)  # the workers fork it
    spoken = []
    speculate = _pretrain.Pretraining.speculate
    monkeypatch.setattr(
        _pretrain.Pretraining,
        "speculate",
        lambda self, *a, **k: spoken.append(a) or speculate(self, *a, **k),
    )
    ours = HalvingGridSearchCV(_mlp(), WIDE, **RUNGS, n_jobs=2).fit(X, y)
    assert ours.stacking_["workers"] == "processes"
    assert spoken == []  # no scores, so nothing was trained ahead
    theirs = SkHalvingGrid(_mlp(), WIDE, **RUNGS).fit(X, y)
    _assert_same_halving(ours, theirs)
