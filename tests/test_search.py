"""Tests of sknets.model_selection: searches that share runs across max_iter."""

import os
import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import model_selection as skms
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sknets import MLPClassifier
from sknets._plan import TrainedState
from sknets.model_selection import GridSearchCV, RandomizedSearchCV

SCORE_KEYS = ("split0_test_score", "split1_test_score", "split2_test_score")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:240] / 16.0, y[:240]


def _mlp(**params):
    # tol=0 and a large n_iter_no_change: every run reaches max_iter
    base = dict(
        hidden_layer_sizes=(8,),
        learning_rate_init=0.01,
        batch_size=40,
        tol=0.0,
        n_iter_no_change=1000,
        random_state=0,
        device="cpu",
    )
    base.update(params)
    return MLPClassifier(**base)


def _assert_same_results(ours, theirs, keys=SCORE_KEYS + ("mean_test_score",)):
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    for key in keys + ("rank_test_score",):
        assert_allclose(ours.cv_results_[key], theirs.cv_results_[key], atol=1e-10)
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_score_ == pytest.approx(theirs.best_score_, abs=1e-10)


pytestmark = pytest.mark.usefixtures("quiet_one_thread")


def test_epoch_grid_trains_once_per_fold_and_matches_sklearn(digits, epoch_counter):
    X, y = digits
    grid = {"max_iter": [5, 10, 20], "hidden_layer_sizes": [(32,), (128,)]}
    ours = GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    assert (epoch_counter["runs"], epoch_counter["epochs"]) == (6, 6 * 20)

    epoch_counter.update(runs=0, epochs=0)
    theirs = skms.GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    assert (epoch_counter["runs"], epoch_counter["epochs"]) == (
        18,
        3 * (5 + 10 + 20) * 2,
    )
    _assert_same_results(ours, theirs)

    # the shared run's time is attributed cumulatively: longer is never cheaper
    mean_fit_time = ours.cv_results_["mean_fit_time"].reshape(2, 3)
    assert np.all(np.diff(mean_fit_time, axis=1) > 0)


def test_pipeline_step_max_iter(digits, epoch_counter):
    X, y = digits
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", _mlp())])
    grid = {"mlp__max_iter": [2, 4, 6], "mlp__alpha": [1e-4, 1e-2]}
    ours = GridSearchCV(pipe, grid, cv=3, refit=False).fit(X, y)
    assert (epoch_counter["runs"], epoch_counter["epochs"]) == (6, 6 * 6)
    theirs = skms.GridSearchCV(pipe, grid, cv=3, refit=False).fit(X, y)
    _assert_same_results(ours, theirs)


def test_train_scores_and_multimetric_match(digits):
    X, y = digits
    grid = {"max_iter": [2, 5]}
    scoring = {"acc": "accuracy", "nll": "neg_log_loss"}
    kw = dict(cv=3, scoring=scoring, refit="nll", return_train_score=True)
    ours = GridSearchCV(_mlp(), grid, **kw).fit(X, y)
    theirs = skms.GridSearchCV(_mlp(), grid, **kw).fit(X, y)
    for key in theirs.cv_results_:
        if "_test_" in key or "_train_" in key:
            assert_allclose(ours.cv_results_[key], theirs.cv_results_[key], atol=1e-10)
    assert ours.best_params_ == theirs.best_params_


def test_early_stopping_and_convergence_match_sklearn(digits, epoch_counter):
    """Best-weight restore at each epoch count; runs that stop before max_iter."""
    X, y = digits
    grid = {"max_iter": [2, 4, 30], "early_stopping": [True, False]}
    est = _mlp(tol=1e-2, n_iter_no_change=2, validation_fraction=0.2)
    ours = GridSearchCV(est, grid, cv=3, refit=False).fit(X, y)
    assert epoch_counter["runs"] == 6
    theirs = skms.GridSearchCV(est, grid, cv=3, refit=False).fit(X, y)
    _assert_same_results(ours, theirs)


def test_refit_uses_best_max_iter(digits):
    X, y = digits
    search = GridSearchCV(_mlp(), {"max_iter": [1, 15]}, cv=3).fit(X, y)
    best = search.best_estimator_
    assert best.max_iter == search.best_params_["max_iter"] == 15
    assert best.n_iter_ == 15
    assert search.predict(X[:5]).shape == (5,)
    restored = pickle.loads(pickle.dumps(search))
    assert_array_equal(restored.predict_proba(X), search.predict_proba(X))


def test_randomized_search_matches_sklearn(digits, epoch_counter):
    X, y = digits
    dist = {"max_iter": [2, 4, 6], "hidden_layer_sizes": [(4,), (8,)]}
    kw = dict(n_iter=4, cv=3, random_state=0, refit=False)
    ours = RandomizedSearchCV(_mlp(), dist, **kw).fit(X, y)
    runs = epoch_counter["runs"]
    assert runs < 4 * 3
    theirs = skms.RandomizedSearchCV(_mlp(), dist, **kw).fit(X, y)
    _assert_same_results(ours, theirs)


@pytest.mark.parametrize(
    "estimator, grid",
    [
        (_mlp(max_iter=3), {"hidden_layer_sizes": [(4,), (8,)]}),
        (LogisticRegression(), {"max_iter": [5, 50]}),
        (_mlp(solver="lbfgs"), {"max_iter": [5, 10]}),
    ],
    ids=["no-epoch-param", "not-sknets", "lbfgs"],
)
def test_without_shared_runs_behaves_like_sklearn(digits, estimator, grid):
    X, y = digits
    ours = GridSearchCV(estimator, grid, cv=3).fit(X, y)
    theirs = skms.GridSearchCV(estimator, grid, cv=3).fit(X, y)
    _assert_same_results(ours, theirs)
    assert set(ours.cv_results_) == set(theirs.cv_results_)


class _FailsAfterFiveEpochs(MLPClassifier):
    """A network whose fit fails when it trained more than five epochs."""

    def _set_model_attributes(self):
        super()._set_model_attributes()
        if self.n_iter_ > 5:
            raise ValueError("late failure")


def test_failing_shared_run_falls_back_to_separate_fits(digits):
    """A run that fails late must not fail the shorter epoch counts."""
    X, y = digits
    params = _mlp().get_params()
    grid = {"max_iter": [2, 4, 8]}
    ours = GridSearchCV(_FailsAfterFiveEpochs(**params), grid, cv=3, refit=False)
    theirs = skms.GridSearchCV(_FailsAfterFiveEpochs(**params), grid, cv=3)
    ours.fit(X, y)
    theirs.set_params(refit=False).fit(X, y)
    scores = ours.cv_results_["mean_test_score"]
    assert np.isfinite(scores[:2]).all() and np.isnan(scores[2])
    for key in SCORE_KEYS:
        assert_allclose(ours.cv_results_[key], theirs.cv_results_[key], atol=1e-10)
    with pytest.raises(ValueError, match="late failure"):
        GridSearchCV(
            _FailsAfterFiveEpochs(**params), grid, cv=3, error_score="raise"
        ).fit(X, y)


def test_invalid_epoch_count_is_reported_like_sklearn(digits, epoch_counter):
    X, y = digits
    grid = {"max_iter": [0, 2, 3]}
    ours = GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    assert epoch_counter["epochs"] == 3 * 3
    theirs = skms.GridSearchCV(_mlp(), grid, cv=3, refit=False).fit(X, y)
    assert np.isnan(ours.cv_results_["mean_test_score"][0])
    for key in SCORE_KEYS:
        assert_allclose(ours.cv_results_[key], theirs.cv_results_[key], atol=1e-10)


def _threads_scorer(estimator, X, y):
    return float(torch.get_num_threads())


def test_n_jobs_2_same_results_and_one_thread_per_core(digits):
    X, y = digits
    grid = {"max_iter": [2, 4], "hidden_layer_sizes": [(4,), (8,)]}
    threads_before = torch.get_num_threads()
    one = GridSearchCV(_mlp(), grid, cv=3, n_jobs=1).fit(X, y)
    two = GridSearchCV(_mlp(), grid, cv=3, n_jobs=2).fit(X, y)
    _assert_same_results(two, one)
    assert torch.get_num_threads() == threads_before

    cap = max(1, (os.cpu_count() or 1) // 2)
    threads = GridSearchCV(
        _mlp(), grid, cv=3, n_jobs=2, scoring=_threads_scorer, refit=False
    ).fit(X, y)
    assert threads.cv_results_["mean_test_score"].max() <= cap
    assert torch.get_num_threads() == threads_before


def test_halving_grid_search_over_max_iter(digits):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV

    X, y = digits
    search = HalvingGridSearchCV(
        _mlp(),
        {"hidden_layer_sizes": [(4,), (8,), (16,)]},
        resource="max_iter",
        min_resources=2,
        max_resources=8,
        factor=2,
        cv=3,
        random_state=0,
    ).fit(X, y)
    assert search.n_resources_[0] == 2
    assert search.best_estimator_.max_iter == search.n_resources_[-1]
    assert search.best_estimator_.n_iter_ == search.best_estimator_.max_iter


def test_early_stopping_records_best_epoch_without_test_fold(digits):
    """early_stopping splits validation data off the training fold only."""
    X, y = digits
    est = _mlp(early_stopping=True, max_iter=30, n_iter_no_change=3, tol=1e-3)
    search = skms.GridSearchCV(est, {"alpha": [1e-4]}, cv=3).fit(X, y)
    best = search.best_estimator_
    assert 1 <= best.best_epoch_ <= best.n_iter_
    assert best.validation_scores_[best.best_epoch_ - 1] == pytest.approx(
        best.best_validation_score_
    )


def test_dask_backend_local_cluster(digits):
    distributed = pytest.importorskip("distributed")
    import joblib

    X, y = digits
    grid = {"max_iter": [2, 4], "hidden_layer_sizes": [(4,), (8,)]}
    local = GridSearchCV(_mlp(), grid, cv=3).fit(X, y)
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        with joblib.parallel_backend("dask"):
            remote = GridSearchCV(_mlp(), grid, cv=3).fit(X, y)
            threads = GridSearchCV(
                _mlp(), {"max_iter": [1, 2]}, cv=2, scoring=_threads_scorer
            ).fit(X, y)
    _assert_same_results(remote, local)
    # one torch thread per single-threaded Dask worker process
    assert threads.cv_results_["mean_test_score"].max() == 1
    assert remote.best_estimator_.max_iter == remote.best_params_["max_iter"]


def _offerable(X, y):
    """A network fitted on ``X, y``, its registry key and its state."""
    from sknets import _registry

    trained = _mlp(max_iter=2).fit(X, y)
    params = trained.get_params(deep=False)
    key = _registry.key(trained, params, _registry.fingerprint(X, y))
    monitor = dict(trained.net_.callbacks_)["monitor"]
    state = TrainedState(
        module_state=trained.module_.state_dict(),
        history=tuple(trained.history_),
        state=monitor.state,
        stop_reason=monitor.stop_reason,
    )
    return trained, key, state


def test_trained_states_stand_in_only_for_their_own_fit(digits, epoch_counter):
    """A state on offer is used by the fit with its parameters and data only."""
    from sknets import _registry

    X, y = digits
    trained, key, state = _offerable(X[:100], y[:100])
    epoch_counter.update(runs=0, epochs=0)
    with _registry.offered({key: state}) as offer:
        other_data = _mlp(max_iter=2).fit(X[:99], y[:99])
        other_params = _mlp(max_iter=3).fit(X[:100], y[:100])
        assert epoch_counter["runs"] == 2 and not offer.taken
        same = _mlp(max_iter=2).fit(X[:100], y[:100])
        assert epoch_counter["runs"] == 2 and offer.taken == {key}
    np.testing.assert_array_equal(same.predict_proba(X), trained.predict_proba(X))
    assert same.loss_curve_ == trained.loss_curve_ and same.t_ == trained.t_
    assert other_data.n_iter_ == 2 and other_params.n_iter_ == 3
    again = _mlp(max_iter=2).fit(X[:100], y[:100])  # nothing on offer any more
    assert epoch_counter["runs"] == 3 and again.n_iter_ == 2


class _Promised:
    """Work started ahead (a ForkedCall's interface), its states ready."""

    def __init__(self, states):
        self.states, self.calls = states, []

    def result(self):
        self.calls.append("result")
        return self.states

    def close(self):
        self.calls.append("close")


def test_promised_states_wait_for_the_fit_that_misses(digits, epoch_counter):
    """A promise is collected by the first fit that finds nothing on offer,
    and closed uncollected when the offer ends first."""
    from sknets import _registry

    X, y = digits
    trained, key, state = _offerable(X[:100], y[:100])
    epoch_counter.update(runs=0, epochs=0)
    promised = _Promised({key: state})
    with _registry.offered({}) as offer:
        offer.promise(promised)
        same = _mlp(max_iter=2).fit(X[:100], y[:100])
        assert promised.calls == ["result"] and offer.taken == {key}
        assert epoch_counter["epochs"] == 0
    assert promised.calls == ["result"]  # collected: nothing left to close
    np.testing.assert_array_equal(same.predict_proba(X), trained.predict_proba(X))

    unused = _Promised({key: state})
    with _registry.offered({}) as offer:
        offer.promise(unused)
    assert unused.calls == ["close"]
    assert _mlp(max_iter=2).fit(X[:100], y[:100]).n_iter_ == 2
    assert epoch_counter["epochs"] == 2  # nothing on offer any more: trained


def test_search_is_scikit_learns_fit(digits, capsys):
    """The search itself runs in scikit-learn's BaseSearchCV.fit (its verbose)."""
    X, y = digits
    grid = {"max_iter": [1, 2]}
    GridSearchCV(_mlp(), grid, cv=2, verbose=1, refit=False).fit(X, y)
    ours = capsys.readouterr().out
    skms.GridSearchCV(_mlp(), grid, cv=2, verbose=1, refit=False).fit(X, y)
    assert ours == capsys.readouterr().out
    assert "Fitting 2 folds for each of 2 candidates, totalling 4 fits" in ours
