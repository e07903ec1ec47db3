"""Stacked training of search members: the same results as scikit-learn's search.

``sknets.model_selection.GridSearchCV``/``RandomizedSearchCV`` (``vectorize``)
and ``cross_validate`` train the (candidate, fold) members whose networks
have one shape as ONE stacked network (``sknets._members``), then hand every
candidate's ``fit`` its trained state. Every test here compares against
scikit-learn's own search or ``cross_validate`` over the same sknets
estimator (or against the standalone ``fit``), never against stored numbers.
"""

import math
import os
import signal
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from joblib import parallel_config
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import loguniform
from sklearn import model_selection as skms
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch.optim.optimizer import register_optimizer_step_post_hook

from sknets import MLPClassifier, MLPRegressor
from sknets._members import MemberSpec, train_members
from sknets.model_selection import (
    GridSearchCV,
    RandomizedSearchCV,
    _pretrain,
    _workers,
    cross_validate,
)

# float64 data: stacked and standalone runs agree to rounding
ATOL = 1e-6
N_ROWS = 240


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:N_ROWS] / 16.0, y[:N_ROWS]


pytestmark = pytest.mark.usefixtures("quiet_one_thread")


_NET_DEFAULTS = dict(
    hidden_layer_sizes=(8,),
    learning_rate_init=0.01,
    batch_size=40,
    max_iter=4,
    # tol=0 and a large n_iter_no_change: every run reaches max_iter
    tol=0.0,
    n_iter_no_change=1000,
    random_state=0,
    device="cpu",
)


def _mlp(**params):
    return MLPClassifier(**{**_NET_DEFAULTS, **params})


def _regressor(**params):
    return MLPRegressor(**{**_NET_DEFAULTS, **params})


# --------------------------------------------------------------------------- scorers
# What each candidate's fitted network ended with, as extra "scores": the
# stacked members must stop, schedule and converge as the standalone fits do.


def _net(estimator):
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


class _Fitted:
    """A "scorer" that reports what the fitted network ended with.

    ``_accept_sample_weight``: scikit-learn's search asks its scorers whether
    they take ``sample_weight`` before it fits with one (plain callables fail).
    """

    def __init__(self, what):
        self.what = what

    def __call__(self, estimator, X, y, **kwargs):
        return float(self.what(_net(estimator)))

    def _accept_sample_weight(self):
        return False


def _final_lr(net):
    return dict(net.net_.callbacks_)["monitor"].state.learning_rate


def _scoring(primary):
    return {
        "score": primary,
        "n_iter": _Fitted(lambda net: net.n_iter_),
        "loss": _Fitted(lambda net: net.loss_),
        "lr": _Fitted(_final_lr),
        "valid": _Fitted(lambda net: getattr(net, "best_validation_score_", 0.0)),
    }


def _scores(search):
    """The split and mean test results of a search, by key."""
    return {
        k: np.asarray(v, dtype=float)
        for k, v in search.cv_results_.items()
        if k.startswith(("split", "mean_test", "std_test"))
        and ("_test_" in k or "_train_" in k)
    }


def _assert_same_results(ours, theirs, atol=ATOL):
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    mine, sk = _scores(ours), _scores(theirs)
    assert mine.keys() == sk.keys() and mine
    for key in sk:
        assert_allclose(mine[key], sk[key], rtol=0, atol=atol, err_msg=key)
    for key in theirs.cv_results_:
        if key.startswith("rank_test"):
            assert_array_equal(ours.cv_results_[key], theirs.cv_results_[key])
    assert ours.best_params_ == theirs.best_params_


def _expected_members(search):
    """(run, fold) pairs: candidates differing only in max_iter share a run."""
    runs = {
        tuple(
            sorted(
                (k, repr(v))
                for k, v in params.items()
                if k.split("__")[-1] != "max_iter"
            )
        )
        for params in search.cv_results_["params"]
    }
    return len(runs) * search.n_splits_


def _assert_stacked(search):
    stacking = search.stacking_
    assert stacking["members"] == _expected_members(search)
    assert sum(stacking["stacks"]) == stacking["members"]
    assert max(stacking["stacks"]) > 1, stacking


# --------------------------------------------------------------------------- cases
# Each case: the estimator, the grid, and what else the search gets; ``check``
# asserts that the case exercises what it names (on our search's results).


def _values(search, name):
    return np.concatenate(
        [
            np.ravel(search.cv_results_[f"split{i}_test_{name}"])
            for i in range(search.n_splits_)
        ]
    )


def _check_lr_decayed(search):
    assert np.all(_values(search, "lr") < 0.1)


def _check_adapted(search):
    lrs = _values(search, "lr")
    assert np.any(lrs < 0.1) and len(np.unique(lrs)) > 1, lrs
    # different momentum: different optimizer settings, never one stack
    assert sorted(search.stacking_["stacks"]) == [6, 6]


def _check_some_stopped_early(max_iter):
    def check(search):
        n_iter = _values(search, "n_iter")
        assert n_iter.min() < max_iter and len(np.unique(n_iter)) > 1, n_iter

    return check


def _check_reach_max_iter(search):
    max_iter = np.tile(search.cv_results_["param_max_iter"], search.n_splits_)
    assert_array_equal(_values(search, "n_iter"), max_iter)


def _case_adam(X, y):
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [2, 4]}
    return dict(estimator=_mlp(), grid=grid, check=_check_reach_max_iter)


def _case_two_layers_tanh(X, y):
    grid = {"alpha": [0.0, 1e-2], "max_iter": [2, 4]}
    est = _mlp(hidden_layer_sizes=(6, 4), activation="tanh")
    return dict(estimator=est, grid=grid)


def _case_sgd_nesterov_invscaling(X, y):
    est = _mlp(
        solver="sgd",
        learning_rate_init=0.1,
        momentum=0.9,
        nesterovs_momentum=True,
        learning_rate="invscaling",
        power_t=0.25,
    )
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [2, 4]}
    return dict(estimator=est, grid=grid, check=_check_lr_decayed)


def _case_sgd_adaptive(X, y):
    est = _mlp(
        solver="sgd",
        learning_rate="adaptive",
        learning_rate_init=0.1,
        tol=0.1,
        n_iter_no_change=1,
        max_iter=10,
    )
    grid = {"alpha": [1e-4, 1e-1], "momentum": [0.0, 0.9]}
    return dict(estimator=est, grid=grid, check=_check_adapted)


def _case_early_stopping(X, y):
    est = _mlp(
        early_stopping=True, validation_fraction=0.2, tol=1e-2, n_iter_no_change=2
    )
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [3, 12]}
    return dict(estimator=est, grid=grid, check=_check_some_stopped_early(12))


def _weights(n):
    return np.random.RandomState(0).uniform(0.1, 3.0, n)


def _case_sample_weight(X, y):
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [2, 4]}
    return dict(
        estimator=_mlp(), grid=grid, fit_params={"sample_weight": _weights(len(X))}
    )


def _case_early_stopping_sample_weight(X, y):
    case = _case_early_stopping(X, y)
    case["fit_params"] = {"sample_weight": _weights(len(X))}
    return case


def _case_learning_rate_grid(X, y):
    # one stack, a learning rate per member (the per-member Adam path)
    return dict(estimator=_mlp(), grid={"learning_rate_init": [0.003, 0.01, 0.03]})


def _case_elastic_net(X, y):
    return dict(estimator=_mlp(alpha=0.05), grid={"l1_ratio": [0.0, 0.5, 1.0]})


def _case_uneven_folds(X, y):
    X, y = X[:161], y[:161]
    batches = {
        math.ceil(len(train) / 40) for train, _ in skms.StratifiedKFold(2).split(X, y)
    }
    assert len(batches) == 2, "the folds must have different numbers of batches"
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [2, 4]}
    return dict(estimator=_mlp(), grid=grid, X=X, y=y, cv=2)


def _case_converge_at_different_epochs(X, y):
    est = _mlp(tol=5e-2, n_iter_no_change=2, max_iter=20)
    grid = {"learning_rate_init": [0.003, 0.03], "alpha": [1e-4, 1e-1]}
    return dict(estimator=est, grid=grid, check=_check_some_stopped_early(20))


def _case_regressor(X, y):
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [2, 4]}
    return dict(
        estimator=_regressor(), grid=grid, y=y.astype(float) / 9.0, primary="r2"
    )


def _case_regressor_early_stopping(X, y):
    est = _regressor(early_stopping=True, max_iter=10, tol=1e-3, n_iter_no_change=2)
    grid = {"alpha": [1e-4, 1e-2], "shuffle": [True, False]}
    return dict(estimator=est, grid=grid, y=y.astype(float) / 9.0, primary="r2")


def _case_multilabel(X, y):
    Y = np.stack([y % 2, y > 4, y % 3 == 0], axis=1).astype(int)
    return dict(estimator=_mlp(), grid={"alpha": [1e-4, 1e-2]}, y=Y)


def _case_binary(X, y):
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [2, 4]}
    return dict(estimator=_mlp(), grid=grid, y=y % 2)


def _case_pipeline(X, y):
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", _mlp())])
    grid = {"mlp__max_iter": [2, 4], "mlp__alpha": [1e-4, 1e-2]}
    return dict(estimator=pipe, grid=grid)


def _case_randomized(X, y):
    dist = {"max_iter": [2, 3, 4], "alpha": loguniform(1e-5, 1e-1)}
    return dict(estimator=_mlp(), grid=dist, randomized=True)


def _case_random_state_grid(X, y):
    # members with their own initialization, row orders and split seeds
    est = _mlp(early_stopping=True, validation_fraction=0.2, max_iter=6)
    return dict(estimator=est, grid={"random_state": [0, 1, 2]})


def _case_two_widths_n_jobs_2(X, y):
    grid = {"hidden_layer_sizes": [(4,), (8,)], "alpha": [1e-4, 1e-2]}
    return dict(estimator=_mlp(), grid=grid, n_jobs=2)


CASES = {
    name.removeprefix("_case_"): fn
    for name, fn in dict(globals()).items()
    if name.startswith("_case_")
}


@pytest.mark.parametrize("case", list(CASES))
def test_stacked_search_equals_sklearn(digits, case):
    c = CASES[case](*digits)
    X, y = c.get("X", digits[0]), c.get("y", digits[1])
    fit_params = c.get("fit_params", {})
    scoring = _scoring(c.get("primary", "accuracy"))
    kw = dict(cv=c.get("cv", 3), scoring=scoring, refit="score")
    if c.get("randomized"):
        ours_cls, sk_cls = RandomizedSearchCV, skms.RandomizedSearchCV
        kw.update(n_iter=4, random_state=0)
    else:
        ours_cls, sk_cls = GridSearchCV, skms.GridSearchCV
    ours = ours_cls(c["estimator"], c["grid"], n_jobs=c.get("n_jobs"), **kw)
    ours.fit(X, y, **fit_params)
    theirs = sk_cls(c["estimator"], c["grid"], **kw).fit(X, y, **fit_params)
    _assert_same_results(ours, theirs)
    _assert_stacked(ours)
    if "check" in c:
        c["check"](ours)


# --------------------------------------------------------------------------- grouping

WIDTH_GRID = {"hidden_layer_sizes": [(4,), (8,)], "alpha": [1e-4, 1e-2]}


def test_stacks_hold_one_shape_and_train_each_member_once(digits, epoch_counter):
    X, y = digits
    grid = {**WIDTH_GRID, "max_iter": [2, 4]}
    ours = GridSearchCV(_mlp(), grid, cv=3, n_jobs=1, refit=False).fit(X, y)
    # 2 widths x 2 alphas x 3 folds; max_iter 2 and 4 share a member
    assert ours.stacking_["members"] == 12
    assert sorted(ours.stacking_["stacks"]) == [6, 6]
    assert len(set(ours.stacking_["member_bytes"].values())) == 2
    assert sorted(epoch_counter["stacked"]) == [(6, 4), (6, 8)]
    assert epoch_counter["runs"] == 12 and epoch_counter["epochs"] == 12 * 4

    epoch_counter.update(runs=0, epochs=0, stacked=[])
    theirs = skms.GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    assert epoch_counter["runs"] == 24 and epoch_counter["epochs"] == 12 * (2 + 4)
    assert epoch_counter["stacked"] == []
    _assert_same_results(ours, theirs)


def test_vectorize_false_trains_standalone_runs(digits, epoch_counter):
    X, y = digits
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [2, 4]}
    plain = GridSearchCV(_mlp(), grid, cv=3, vectorize=False, refit=False).fit(X, y)
    # one standalone run per (alpha, fold), to the largest max_iter
    assert epoch_counter == {"runs": 2 * 3, "epochs": 2 * 3 * 4, "stacked": []}
    assert plain.stacking_["members"] == 0 and plain.stacking_["stacks"] == []

    epoch_counter.update(runs=0, epochs=0, stacked=[])
    stacked = GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    assert epoch_counter["stacked"] == [(6, 8)]
    assert epoch_counter["runs"] == 6 and epoch_counter["epochs"] == 6 * 4
    theirs = skms.GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    _assert_same_results(plain, theirs)
    _assert_same_results(stacked, theirs)

    # nothing to share and nothing to stack: scikit-learn's fit, fit by fit
    epoch_counter.update(runs=0, epochs=0, stacked=[])
    GridSearchCV(_mlp(), {"alpha": [1e-4, 1e-2]}, cv=3, vectorize=False).fit(X, y)
    assert epoch_counter["runs"] == 2 * 3 + 1 and epoch_counter["stacked"] == []


def test_networks_that_cannot_stack_train_standalone(digits, epoch_counter):
    X, y = digits
    est = _mlp(batch_norm=True)
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [2, 4]}
    ours = GridSearchCV(est, grid, cv=3, refit=False).fit(X, y)
    assert ours.stacking_["members"] == 0 and epoch_counter["stacked"] == []
    assert epoch_counter["runs"] == 2 * 3 and epoch_counter["epochs"] == 2 * 3 * 4
    theirs = skms.GridSearchCV(est, grid, cv=3, refit=False).fit(X, y)
    _assert_same_results(ours, theirs)


# --------------------------------------------------------------------------- dropout


def _test_scores(search):
    return {k: v for k, v in _scores(search).items() if "_test_score" in k}


def _assert_identical(a, b):
    sa, sb = _test_scores(a), _test_scores(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert_array_equal(sa[key], sb[key], err_msg=key)


def test_dropout_stacked_search_is_reproducible(digits):
    X, y = digits
    est = _mlp(dropout=0.3)
    grid = {**WIDTH_GRID, "max_iter": [2, 4]}
    one = GridSearchCV(est, grid, cv=3, refit=False).fit(X, y)
    again = GridSearchCV(est, grid, cv=3, refit=False).fit(X, y)
    two = GridSearchCV(est, grid, cv=3, refit=False, n_jobs=2).fit(X, y)
    _assert_stacked(one)
    _assert_identical(one, again)
    _assert_identical(one, two)

    # each member draws its own fit's masks: scikit-learn's results, stacked
    # or one run at a time
    plain = GridSearchCV(est, grid, cv=3, refit=False, vectorize=False).fit(X, y)
    theirs = skms.GridSearchCV(est, grid, cv=3, refit=False).fit(X, y)
    _assert_same_results(plain, theirs)
    _assert_same_results(one, theirs)


@pytest.mark.parametrize("split_by", ["n_jobs", "memory"])
def test_dropout_results_do_not_depend_on_stack_splitting(
    digits, monkeypatch, split_by
):
    X, y = digits
    est = _mlp(dropout=0.3)
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [2, 4]}  # one shape: one stack
    one = GridSearchCV(est, grid, cv=3, refit=False).fit(X, y)
    if one.stacking_["stacks"] != [6]:
        pytest.fail(f"expected one stack: {one.stacking_}")
    if split_by == "memory":
        monkeypatch.setattr(_pretrain, "_memory_budget", lambda device: 1)
        split = GridSearchCV(est, grid, cv=3, refit=False).fit(X, y)
    else:
        split = GridSearchCV(est, grid, cv=3, refit=False, n_jobs=2).fit(X, y)
    if len(split.stacking_["stacks"]) < 2:
        pytest.fail(f"expected split stacks: {split.stacking_}")
    _assert_identical(one, split)


# --------------------------------------------------------------------------- memory


def test_memory_budget_splits_stacks_without_changing_results(digits, monkeypatch):
    X, y = digits
    grid = {"alpha": [1e-4, 1e-2], "max_iter": [2, 4]}
    whole = GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    assert whole.stacking_["stacks"] == [6]

    monkeypatch.setattr(_pretrain, "_memory_budget", lambda device: 1)
    split = GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    assert split.stacking_["members"] == 6
    assert split.stacking_["stacks"] == [1] * 6
    _assert_same_results(split, whole)
    theirs = skms.GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    _assert_same_results(split, theirs)


# ------------------------------------------------------------------ cross_validate


def _cv_scores(result):
    return {k: v for k, v in result.items() if k.startswith(("test_", "train_"))}


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_cross_validate_equals_sklearn(digits, epoch_counter, weighted):
    X, y = digits
    est = _mlp(max_iter=5)
    kw = dict(cv=3, return_train_score=True, return_estimator=True)
    kw["return_indices"] = True
    if weighted:
        kw["params"] = {"sample_weight": _weights(len(X))}
        kw["scoring"] = {"acc": "accuracy", "nll": "neg_log_loss"}
    ours = cross_validate(est, X, y, **kw)
    assert epoch_counter["stacked"] == [(3, 8)]  # the three folds, one stack
    assert epoch_counter["runs"] == 3 and epoch_counter["epochs"] == 3 * 5

    epoch_counter.update(runs=0, epochs=0, stacked=[])
    theirs = skms.cross_validate(est, X, y, **kw)
    assert epoch_counter["runs"] == 3 and epoch_counter["stacked"] == []

    assert set(ours) == set(theirs)
    mine, sk = _cv_scores(ours), _cv_scores(theirs)
    assert mine.keys() == sk.keys() and len(mine) >= 2
    for key in sk:
        assert_allclose(mine[key], sk[key], rtol=0, atol=ATOL, err_msg=key)
    assert len(ours["fit_time"]) == len(ours["score_time"]) == 3
    assert np.all(np.isfinite(ours["fit_time"])) and np.all(ours["fit_time"] >= 0)
    for part in ("train", "test"):
        for a, b in zip(ours["indices"][part], theirs["indices"][part], strict=True):
            assert_array_equal(a, b)
    assert len(ours["estimator"]) == 3
    for a, b in zip(ours["estimator"], theirs["estimator"], strict=True):
        assert a is not b and a.n_iter_ == b.n_iter_ == 5 and a.t_ == b.t_
        assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=0, atol=ATOL)
        assert_allclose(a.loss_curve_, b.loss_curve_, rtol=0, atol=ATOL)


def test_cross_validate_passes_other_estimators_through(digits, epoch_counter):
    X, y = digits
    est = LogisticRegression(max_iter=200)
    kw = dict(cv=3, return_train_score=True)
    ours = cross_validate(est, X, y, **kw)
    theirs = skms.cross_validate(est, X, y, **kw)
    assert epoch_counter == {"runs": 0, "epochs": 0, "stacked": []}
    assert set(ours) == set(theirs)
    for key in ("test_score", "train_score"):
        assert_array_equal(ours[key], theirs[key])
    assert len(ours["fit_time"]) == 3


# --------------------------------------------------------------------------- Ctrl-C

posix_main_thread = pytest.mark.skipif(
    os.name != "posix" or threading.current_thread() is not threading.main_thread(),
    reason="SIGINT to the own process: POSIX, handled in the main thread",
)


@contextmanager
def _ctrl_c_after(n_steps):
    """Send SIGINT to this process once ``n_steps`` optimizer steps were taken.

    Yields ``{"steps": [count], "sent": time or None}``. On the way out the
    sender is called off (if it has not sent yet) and joined, and Python's
    SIGINT handler is restored.
    """
    info = {"steps": [0], "sent": None}
    started, called_off = threading.Event(), threading.Event()

    def count_steps(optimizer, args, kwargs):
        info["steps"][0] += 1
        if info["steps"][0] >= n_steps:
            started.set()

    def interrupt():
        while not started.wait(0.05):
            if called_off.is_set():
                return
        info["sent"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    hook = register_optimizer_step_post_hook(count_steps)
    sender = threading.Thread(target=interrupt, daemon=True)
    sender.start()
    try:
        yield info
    finally:
        called_off.set()
        sender.join(5)
        hook.remove()
        signal.signal(signal.SIGINT, previous)
        assert not sender.is_alive()


@pytest.fixture
def _clear_interrupt():
    # a Ctrl-C sets sknets' process-wide interrupt flag; a new search clears
    # it, and so does this fixture, for whatever else runs in this process
    from sknets._epochs import USER_INTERRUPT

    yield
    USER_INTERRUPT.clear()


@posix_main_thread
@pytest.mark.usefixtures("_clear_interrupt")
def test_ctrl_c_stops_stacks_in_threads_promptly(digits):
    X, y = digits
    # 2 stacks (n_jobs=2) of 6 members, 2000 epochs: well over 20 s to train
    est = _mlp(max_iter=2000)
    grid = {"alpha": [1e-4, 1e-3, 1e-2, 1e-1]}
    search = GridSearchCV(est, grid, cv=3, n_jobs=2, refit=False)
    start = time.perf_counter()
    with _ctrl_c_after(40) as info:  # both stacks are training
        with pytest.raises(KeyboardInterrupt), parallel_config(backend="threading"):
            search.fit(X, y)
        stopped = time.perf_counter()
        assert info["sent"] is not None and info["steps"][0] >= 40
        assert stopped - info["sent"] < 5, "the search went on after Ctrl-C"
        assert stopped - start < 10
        # nothing trains on in the background
        assert _pretrain._RUNNING.count == 0
        after = info["steps"][0]
        time.sleep(0.3)
        assert info["steps"][0] == after

    # the interrupt is over: the next search trains as usual
    grid = {"hidden_layer_sizes": [(4,), (8,)], "max_iter": [1, 2]}
    again = GridSearchCV(_mlp(), grid, cv=2, n_jobs=2, refit=False).fit(X, y)
    theirs = skms.GridSearchCV(_mlp(), grid, cv=2, refit=False).fit(X, y)
    _assert_same_results(again, theirs)


forking = pytest.mark.skipif(
    _pretrain.stack_backend({}, {torch.device("cpu")}, 2, 2) is None,
    reason="stacks train in forked processes only where multiprocessing forks",
)


@forking
def test_stacks_train_in_forked_processes_with_the_same_results(digits):
    X, y = digits
    grid = {"hidden_layer_sizes": [(4,), (8,)], "alpha": [1e-4, 1e-2]}
    forked = GridSearchCV(_mlp(), grid, cv=3, n_jobs=2).fit(X, y)
    assert forked.stacking_["workers"] == "processes"
    assert len(forked.stacking_["stacks"]) >= 2
    with parallel_config(backend="threading"):
        threads = GridSearchCV(_mlp(), grid, cv=3, n_jobs=2).fit(X, y)
    assert threads.stacking_["workers"] == "threads"
    for key in forked.cv_results_:
        if "_test_" in key or "_train_" in key:
            assert_array_equal(forked.cv_results_[key], threads.cv_results_[key])


def _backwards(held_out_scores):
    """``held_out_scores`` with every score negated: each guess the worst."""

    def backwards(module, members, info, folds, rows=4096):
        scored = held_out_scores(module, members, info, folds, rows)
        return {m: -value for m, value in scored.items()}

    return backwards


REFIT_GRID = {
    "hidden_layer_sizes": [(4,), (16,)],
    "alpha": [1e-4, 1e-2],
    "max_iter": [3, 6],
}


def _assert_same_refit(ours, theirs):
    assert ours.best_params_ == theirs.best_params_
    for a, b in zip(
        ours.best_estimator_.coefs_, theirs.best_estimator_.coefs_, strict=True
    ):
        assert_allclose(a, b, rtol=0, atol=ATOL)


@forking
def test_grid_refit_trains_beside_the_pick_ups(digits, epoch_counter):
    # the refit of the candidate the held-out scores rank first trains in a
    # child process while this one picks the states up: nothing trains here
    X, y = digits
    ours = GridSearchCV(_mlp(), REFIT_GRID, cv=3, n_jobs=2).fit(X, y)
    assert ours.stacking_["workers"] == "processes"
    assert epoch_counter["epochs"] == 0
    assert ours.best_estimator_.n_iter_ == ours.best_params_["max_iter"]
    theirs = skms.GridSearchCV(_mlp(), REFIT_GRID, cv=3).fit(X, y)
    _assert_same_results(ours, theirs)
    _assert_same_refit(ours, theirs)
    assert _no_workers_left()


class _ScoringThreads(MLPClassifier):
    """An MLPClassifier whose ``score`` notes torch's thread count."""

    seen = []

    def score(self, X, y, sample_weight=None):
        type(self).seen.append(torch.get_num_threads())
        return super().score(X, y, sample_weight=sample_weight)


@forking
def test_grid_pick_ups_share_the_cores_with_the_refit_ahead(
    digits, monkeypatch, epoch_counter
):
    # while the refit trains in a child, this process scores on its share of
    # the cores (half of them), and its own thread count comes back after
    X, y = digits
    monkeypatch.setattr(_ScoringThreads, "seen", [])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        GridSearchCV(
            _ScoringThreads(**_NET_DEFAULTS),
            REFIT_GRID,
            cv=3,
            n_jobs=2,
        ).fit(X, y)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert epoch_counter["epochs"] == 0  # the refit came from the child
    assert after == 2
    assert set(_ScoringThreads.seen) == {min(2, max(1, (os.cpu_count() or 1) // 2))}
    assert len(_ScoringThreads.seen) == 3 * len(skms.ParameterGrid(REFIT_GRID))


@forking
def test_grid_refit_of_a_wrong_guess_trains_as_always(
    digits, monkeypatch, epoch_counter
):
    X, y = digits
    backwards = _backwards(_workers.held_out_scores)
    monkeypatch.setattr(_pretrain, "held_out_scores", backwards)  # the child forks it
    ours = GridSearchCV(_mlp(), REFIT_GRID, cv=3, n_jobs=2).fit(X, y)
    # the child refitted the worst candidate; the best one trained here
    assert epoch_counter["epochs"] == ours.best_params_["max_iter"]
    theirs = skms.GridSearchCV(_mlp(), REFIT_GRID, cv=3).fit(X, y)
    _assert_same_results(ours, theirs)
    _assert_same_refit(ours, theirs)
    assert _no_workers_left()


@forking
@pytest.mark.parametrize("how", ["raises", "exits"])
def test_grid_refit_ahead_that_fails_leaves_the_search_as_it_is(
    digits, monkeypatch, how
):
    X, y = digits

    def failing(self, guide):
        if how == "exits":
            os._exit(3)  # the child dies without a word
        raise RuntimeError("no refit ahead")

    monkeypatch.setattr(_pretrain.Pretraining, "_refit_best", failing)
    ours = GridSearchCV(_mlp(), REFIT_GRID, cv=3, n_jobs=2).fit(X, y)
    theirs = skms.GridSearchCV(_mlp(), REFIT_GRID, cv=3).fit(X, y)
    _assert_same_results(ours, theirs)
    _assert_same_refit(ours, theirs)
    assert _no_workers_left()


@forking
@pytest.mark.parametrize(
    "kwargs", [{"refit": False}, {"scoring": "accuracy"}, {"refit": "accuracy"}]
)
def test_grid_refit_ahead_only_for_the_default_score_and_refit(
    digits, monkeypatch, kwargs
):
    X, y = digits
    started = []
    ahead = _pretrain.Pretraining.refit_ahead
    monkeypatch.setattr(
        _pretrain.Pretraining,
        "refit_ahead",
        lambda self: started.append(1) or ahead(self),
    )
    scoring = {"scoring": "accuracy"} if kwargs.get("refit") == "accuracy" else {}
    ours = GridSearchCV(_mlp(), REFIT_GRID, cv=3, n_jobs=2, **scoring, **kwargs).fit(
        X, y
    )
    assert started == []
    theirs = skms.GridSearchCV(_mlp(), REFIT_GRID, cv=3, **scoring, **kwargs).fit(X, y)
    _assert_same_results(ours, theirs)
    if ours.refit:
        _assert_same_refit(ours, theirs)


_AFTER_THREADS = """
import json, sys
import torch
from sklearn.datasets import load_digits
from sknets import MLPClassifier
from sknets.model_selection import GridSearchCV

torch.set_num_threads(2)
torch.zeros(4_000_000).add_(1.0)  # a parallel region: torch's OpenMP pool is up
X, y = load_digits(return_X_y=True)
X, y = X[:{rows}] / 16.0, y[:{rows}]
search = GridSearchCV(MLPClassifier(**{net}), {grid}, cv=3, n_jobs=2).fit(X, y)
json.dump([search.stacking_["workers"], search.best_params_], sys.stdout)
"""


@forking
def test_forked_search_after_the_caller_used_threads_finishes(digits):
    # torch's OpenMP pool does not survive a fork: a child that opens a
    # parallel region after its parent used one waits forever. A search in a
    # process that ran torch on two threads still finishes, refit included.
    import json
    import subprocess
    import sys

    script = _AFTER_THREADS.format(rows=N_ROWS, net=_NET_DEFAULTS, grid=REFIT_GRID)
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its workers end with it if it hangs
    )
    try:
        out, _ = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        pytest.fail("the search hung in a forked child")
    assert child.returncode == 0
    workers, best = json.loads(out)
    assert workers == "processes"
    X, y = digits
    theirs = skms.GridSearchCV(_mlp(), REFIT_GRID, cv=3).fit(X, y)
    assert best == {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in theirs.best_params_.items()
    }


@forking
def test_forked_grid_hands_back_every_count_of_split_runs(digits):
    # one costly stack beside a cheap one: the workers split the costly
    # run to finish together, and every member's states at both epoch
    # counts come back from whichever worker trained it
    X, y = digits
    grid = {
        "hidden_layer_sizes": [(2,), (48,)],
        "alpha": [1e-4, 1e-3, 1e-2],
        "max_iter": [2, 5],
    }
    forked = GridSearchCV(_mlp(), grid, cv=3, n_jobs=2, refit=False).fit(X, y)
    assert forked.stacking_["workers"] == "processes"
    assert forked.stacking_["members"] == 18
    with parallel_config(backend="threading"):
        threads = GridSearchCV(_mlp(), grid, cv=3, n_jobs=2, refit=False).fit(X, y)
    theirs = skms.GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    _assert_same_results(forked, theirs)
    for key in forked.cv_results_:
        if "_test_" in key:
            assert_array_equal(forked.cv_results_[key], threads.cv_results_[key])
    theirs = skms.GridSearchCV(_mlp(), grid, cv=3).fit(X, y)
    _assert_same_results(forked, theirs)
    # one job, a GPU, a backend the user chose, big data or a thread: threads
    assert _pretrain.stack_backend({}, {torch.device("cpu")}, 1, 2) is None
    assert _pretrain.stack_backend({}, {torch.device("cuda")}, 2, 2) is None
    with parallel_config(backend="threading"):
        assert _pretrain.stack_backend({}, {torch.device("cpu")}, 2, 2) is None
    big = {0: (np.zeros(_pretrain.FORK_BYTES // 8 + 1), None, None)}
    assert _pretrain.stack_backend(big, {torch.device("cpu")}, 2, 2) is None
    seen = []
    worker = threading.Thread(
        target=lambda: seen.append(
            _pretrain.stack_backend({}, {torch.device("cpu")}, 2, 2)
        )
    )
    worker.start()
    worker.join()
    assert seen == [None]


def _ctrl_c_during(fit, after=2.0):
    """Send SIGINT to this process ``after`` seconds into ``fit()``, which
    must raise ``KeyboardInterrupt``; the seconds from the signal to the end."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sent = {}

    def interrupt():
        sent["at"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(after, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fit()
        stopped = time.perf_counter()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert "at" in sent, "fit ended before the signal"
    return stopped - sent["at"]


def _no_workers_left(timeout=5.0):
    """Whether every worker process ends within ``timeout`` seconds (joblib
    keeps its idle loky workers for reuse: those are not counted)."""
    import multiprocessing

    def workers():
        return [
            p
            for p in multiprocessing.active_children()
            if not type(p).__name__.startswith("Loky")
        ]

    deadline = time.perf_counter() + timeout
    while workers() and time.perf_counter() < deadline:
        time.sleep(0.05)
    return not workers()


@forking
@posix_main_thread
@pytest.mark.usefixtures("_clear_interrupt")
def test_ctrl_c_stops_forked_stacks_promptly(digits):
    X, y = digits
    est = _mlp(max_iter=5000)  # well over 20 s to train
    grid = {"alpha": [1e-4, 1e-3, 1e-2, 1e-1]}
    search = GridSearchCV(est, grid, cv=3, n_jobs=2, refit=False)
    assert _ctrl_c_during(lambda: search.fit(X, y)) < 5
    assert _no_workers_left()  # no worker trains on
    grid = {"hidden_layer_sizes": [(4,), (8,)], "max_iter": [1, 2]}
    again = GridSearchCV(_mlp(), grid, cv=2, n_jobs=2, refit=False).fit(X, y)
    theirs = skms.GridSearchCV(_mlp(), grid, cv=2, refit=False).fit(X, y)
    _assert_same_results(again, theirs)


@posix_main_thread
@pytest.mark.usefixtures("_clear_interrupt")
def test_search_in_a_thread_after_ctrl_c_trains(digits):
    X, y = digits
    with _ctrl_c_after(10):  # a plain fit, interrupted by the user
        with pytest.raises(KeyboardInterrupt):
            _mlp(max_iter=100_000).fit(X, y)

    grid = {"alpha": [1e-4, 1e-2]}
    outcome = {}

    def search():
        try:
            outcome["search"] = GridSearchCV(_mlp(), grid, cv=3).fit(X, y)
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    worker = threading.Thread(target=search)
    worker.start()
    worker.join(60)
    assert "error" not in outcome, f"the search raised {outcome['error']!r}"
    theirs = skms.GridSearchCV(_mlp(), grid, cv=3).fit(X, y)
    _assert_same_results(outcome["search"], theirs)


# --------------------------------------------------------------------------- engine


def _standalone(params, X, y):
    return MLPClassifier(**params).fit(X, y)


def _assert_same_net(a, b):
    assert a.n_iter_ == b.n_iter_
    assert_allclose(a.loss_curve_, b.loss_curve_, rtol=0, atol=1e-10)
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        assert_allclose(wa, wb, rtol=0, atol=1e-10)


def test_converged_member_stops_moving_others_train_on(digits):
    X, y = digits
    members = [
        (_mlp(max_iter=30), N_ROWS, (10, 30)),
        # converges at epoch 3: the loss never improves by tol
        (_mlp(max_iter=30, tol=10.0, n_iter_no_change=1), N_ROWS, (10, 30)),
        (_mlp(max_iter=30, alpha=1e-2, learning_rate_init=0.03), N_ROWS, (10, 30)),
        # its last epoch count is 5: frozen from then on
        (_mlp(max_iter=5), N_ROWS, (5,)),
        # 150 rows: 4 batches an epoch, the others 6 (padded, no step)
        (_mlp(max_iter=30), 150, (10, 30)),
    ]
    preps = [(est, est._prepare(X[:n], y[:n], None, False)) for est, n, _ in members]
    assert len({est._stack_signature(p) for est, p in preps}) == 1
    specs = [
        MemberSpec(p.plan, np.arange(n), None, epochs)
        for (_, p), (_, n, epochs) in zip(preps, members, strict=True)
    ]
    full = preps[0][1]
    module = preps[0][0]._stack(preps)
    results = train_members(module, specs, full.X, full.target)
    assert [sorted(r) for r in results] == [list(s.epochs) for s in specs]

    for (est, n, epochs), states in zip(members, results, strict=True):
        for count in epochs:
            params = {**est.get_params(), "max_iter": count}
            adopted = MLPClassifier(**params)._fit(
                X[:n], y[:n], None, False, trained=states[count]
            )
            _assert_same_net(adopted, _standalone(params, X[:n], y[:n]))

    # frozen members did not move after their end: the stacked module holds
    # every member's final state
    for m, states in enumerate(results):
        final = states[specs[m].epochs[-1]].module_state
        for key, value in module.member_state(m).items():
            assert torch.equal(value, final[key]), (m, key)

    early = results[1]
    assert early[30].stop_reason == "converged"
    assert early[10] is early[30] and early[30].epochs_run == 3
    assert results[3][5].epochs_run == 5
    for m in (0, 2, 4):
        assert results[m][10].epochs_run == 10 and results[m][10].stop_reason is None
        assert results[m][30].epochs_run == 30
