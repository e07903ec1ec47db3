"""Hyper-parameter searches that train each network once for every epoch count.

scikit-learn's searches fit every (candidate, fold) pair from scratch. When the
grid holds several values of the epoch parameter (``max_iter``) of a sknets
network, the candidates that differ only in ``max_iter`` share one training run
per fold here: the run goes to the largest requested ``max_iter`` and the
held-out fold is scored at every requested epoch count on the way, through the
``epoch_callback`` hook of :meth:`sknets._base._BaseNet._fit`. Everything else
(scoring, ``cv_results_``, ranking, refit) is scikit-learn's own code.
"""

import numbers
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch
from joblib import effective_n_jobs
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV as _SkGridSearchCV
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import indexable

from sknets._base import _BaseNet
from sknets._compat import MultimetricScorer as _MultimetricScorer
from sknets._compat import check_method_params as _check_method_params
from sknets._compat import fit_and_score as _fit_and_score
from sknets._compat import fit_context as _fit_context
from sknets._compat import insert_error_scores as _insert_error_scores
from sknets._compat import num_samples as _num_samples
from sknets._compat import safe_split as _safe_split
from sknets._compat import score as _score
from sknets._compat import (
    warn_or_raise_about_fit_failures as _warn_or_raise_about_fit_failures,
)

_EPOCH_PARAM = "max_iter"
_EPOCH_SOLVERS = ("sgd", "adam")


# --------------------------------------------------------------------------- helpers


def _find_net(estimator):
    """Return ``(net, param_prefix)`` of the network trained last, or ``None``.

    The network is the estimator itself or the final step of a (nested)
    ``Pipeline``: only then does its training come after everything else in
    ``fit``, so that one run can stand for several epoch counts.
    """
    prefix = ""
    while isinstance(estimator, Pipeline):
        name, estimator = estimator.steps[-1]
        prefix += f"{name}__"
    if isinstance(estimator, _BaseNet):
        return estimator, prefix
    return None


def _epoch_param_of(estimator):
    """Name of the epoch parameter a search can share runs over, or ``None``."""
    found = _find_net(estimator)
    if found is None:
        return None
    net, prefix = found
    if net.solver not in _EPOCH_SOLVERS:  # lbfgs: max_iter is not an epoch count
        return None
    return prefix + _EPOCH_PARAM


def _same(a, b):
    """Whether two parameter values are interchangeable (no exception escapes)."""
    if a is b:
        return True
    if type(a) is not type(b):
        if not (isinstance(a, numbers.Number) and isinstance(b, numbers.Number)):
            return False
    try:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return bool(np.array_equal(a, b))
        return bool(a == b)
    except Exception:
        return False


def _group_candidates(base_estimator, candidate_params):
    """Group candidates that differ only in the network's epoch count.

    Returns a list of ``(epoch_param, indices)``; ``epoch_param`` is ``None``
    for a candidate trained on its own.
    """
    groups = []  # [epoch_param, common params, [indices]]
    for i, params in enumerate(candidate_params):
        try:
            est = clone(base_estimator).set_params(**clone(params, safe=False))
            name = _epoch_param_of(est)
        except Exception:  # reported by scikit-learn's _fit_and_score
            name = None
        value = params.get(name)
        if not (
            isinstance(value, numbers.Integral)
            and not isinstance(value, bool)
            and value >= 1
        ):  # no epoch count here, or an invalid one: scikit-learn reports it
            groups.append([None, None, [i]])
            continue
        common = {k: v for k, v in params.items() if k != name}
        for group in groups:
            g_name, g_common, _ = group
            if (
                g_name == name
                and g_common.keys() == common.keys()
                and all(_same(common[k], g_common[k]) for k in common)
            ):
                group[2].append(i)
                break
        else:
            groups.append([name, common, [i]])
    return [(name, indices) for name, _, indices in groups]


@contextmanager
def _worker_threads(parent_pid, n_workers):
    """Cap torch's intra-op threads in a worker process, for this task only.

    In a process other than the search's own (joblib's loky workers, Dask
    workers) each of ``n_workers`` concurrent tasks gets at most
    ``cpu_count // n_workers`` threads (at least one), so that the workers
    together do not oversubscribe the cores. The parent process, where
    ``n_jobs=1`` runs, is never touched.
    """
    if os.getpid() == parent_pid:
        yield
        return
    before = torch.get_num_threads()
    cap = max(1, (os.cpu_count() or 1) // max(1, n_workers))
    if before > cap:
        torch.set_num_threads(cap)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _fit_and_score_single(*args, parent_pid, n_workers, **kwargs):
    """scikit-learn's ``_fit_and_score`` under the worker thread cap."""
    with _worker_threads(parent_pid, n_workers):
        return _fit_and_score(*args, **kwargs)


def _hooked_fit(net, epoch_callback):
    """A ``fit`` for ``net`` that passes ``epoch_callback`` to ``_BaseNet._fit``."""

    def fit(estimator, X, y, sample_weight=None):
        return estimator._fit(
            X, y, sample_weight, incremental=False, epoch_callback=epoch_callback
        )

    fit.__name__ = "fit"
    return partial(_fit_context(prefer_skip_nested_validation=True)(fit), net)


def _set_epoch_state(net, state, epoch, best_epoch):
    """Make a fitted ``net`` look like the ``max_iter=epoch`` fit (for scorers)."""
    net.module_.load_state_dict(state)
    net.n_iter_ = epoch
    if getattr(net, "loss_curve_", None) is not None:
        net.loss_curve_ = net.loss_curve_[:epoch]
        net.loss_ = net.loss_curve_[-1]
    if getattr(net, "history_", None) is not None:
        net.history_ = net.history_[:epoch]
    if getattr(net, "validation_scores_", None) is not None:
        net.validation_scores_ = net.validation_scores_[:epoch]
        net.best_validation_score_ = max(net.validation_scores_)
        net.best_epoch_ = best_epoch
    net._set_model_attributes()


def _fit_and_score_epochs(
    estimator,
    X,
    y,
    *,
    scorer,
    train,
    test,
    verbose,
    common_params,
    epoch_param,
    epochs,
    fit_params,
    score_params,
    return_train_score,
    error_score,
    parent_pid,
    n_workers,
):
    """Train once to ``max(epochs)`` and score the fold at each epoch count.

    Returns one result dict per entry of ``epochs``, in that order, in the
    format of scikit-learn's ``_fit_and_score`` (``fit_time`` of epoch count
    ``k`` is the time the shared run took to reach epoch ``k``).
    """
    with _worker_threads(parent_pid, n_workers):
        return _fit_and_score_epochs_body(
            estimator,
            X,
            y,
            scorer=scorer,
            train=train,
            test=test,
            verbose=verbose,
            common_params=common_params,
            epoch_param=epoch_param,
            epochs=epochs,
            fit_params=fit_params,
            score_params=score_params,
            return_train_score=return_train_score,
            error_score=error_score,
        )


def _fit_and_score_epochs_body(
    estimator,
    X,
    y,
    *,
    scorer,
    train,
    test,
    verbose,
    common_params,
    epoch_param,
    epochs,
    fit_params,
    score_params,
    return_train_score,
    error_score,
):
    if not isinstance(error_score, numbers.Number) and error_score != "raise":
        raise ValueError(
            "error_score must be the string 'raise' or a numeric value. "
            "(Hint: if using 'raise', please make sure that it has been "
            "spelled correctly.)"
        )
    train, test = np.asarray(train), np.asarray(test)
    all_fit_params, score_params = fit_params or {}, score_params or {}
    fit_params = _check_method_params(X, params=all_fit_params, indices=train)
    score_params_train = _check_method_params(X, params=score_params, indices=train)
    score_params_test = _check_method_params(X, params=score_params, indices=test)

    unfitted = clone(estimator)
    wanted = sorted({int(k) for k in epochs})
    last = wanted[-1]
    estimator = estimator.set_params(**clone(common_params, safe=False))
    estimator.set_params(**{epoch_param: last})
    net, _ = _find_net(estimator)

    start_time = time.time()
    X_train, y_train = _safe_split(estimator, X, y, train)
    X_test, y_test = _safe_split(estimator, X, y, test, train)
    snapshots = {}  # epoch -> (state, time since start, best_epoch)

    def on_epoch(epoch, skorch_net, monitor, stopping):
        if epoch in wanted and epoch != last and not stopping:
            best = monitor.state.best_state
            if net.early_stopping and best is not None:
                # a max_iter=epoch fit ends by restoring the best weights so far
                state = {k: v.clone() for k, v in best.items()}
            else:
                state = {
                    k: v.detach().clone()
                    for k, v in skorch_net.module_.state_dict().items()
                }
            snapshots[epoch] = (
                state,
                time.time() - start_time,
                monitor.state.best_epoch,
            )

    net.fit = _hooked_fit(net, on_epoch)
    try:
        if y_train is None:
            estimator.fit(X_train, **fit_params)
        else:
            estimator.fit(X_train, y_train, **fit_params)
    except Exception:
        # A shared run that fails (e.g. diverges at epoch d) says nothing about
        # the epoch counts before d: fit each candidate on its own instead, as
        # scikit-learn would, and let it record (or raise) the same errors.
        failed = True
    else:
        failed = False
    finally:
        del net.fit
    if failed:
        return [
            _fit_and_score(
                clone(unfitted),
                X,
                y,
                scorer=scorer,
                train=train,
                test=test,
                verbose=verbose,
                parameters={**common_params, epoch_param: k},
                fit_params=all_fit_params,
                score_params=score_params,
                return_train_score=return_train_score,
                return_n_test_samples=True,
                return_times=True,
                error_score=error_score,
            )
            for k in epochs
        ]
    total_fit_time = time.time() - start_time

    def score_now(fit_time):
        t0 = time.time()
        result = {"fit_error": None, "n_test_samples": _num_samples(X_test)}
        result["test_scores"] = _score(
            estimator, X_test, y_test, scorer, score_params_test, error_score
        )
        result["fit_time"] = fit_time
        result["score_time"] = time.time() - t0
        if return_train_score:
            result["train_scores"] = _score(
                estimator, X_train, y_train, scorer, score_params_train, error_score
            )
        return result

    # The fitted model is the max_iter=k model for every k it reached
    # (training stopped earlier by convergence, or k is the largest).
    by_epoch = {}
    final = score_now(total_fit_time)
    for k in wanted:
        if k not in snapshots:
            by_epoch[k] = final
    for k in sorted(snapshots, reverse=True):
        state, fit_time, best_epoch = snapshots.pop(k)
        _set_epoch_state(net, state, k, best_epoch)
        by_epoch[k] = score_now(fit_time)
    if verbose > 1:
        for k in wanted:
            r = by_epoch[k]
            print(
                f"[CV] END {epoch_param}={k}; fit_time={r['fit_time']:.2f}s "
                f"(shared run), score={r['test_scores']}"
            )
    return [dict(by_epoch[int(k)]) for k in epochs]


# --------------------------------------------------------------------------- searches


class _EpochSharingMixin:
    """``fit`` of a search that shares one training run across epoch counts."""

    def _candidate_params(self):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _grid_keys(self):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _shares_epochs(self):
        """Whether any candidate can reuse a run (else: scikit-learn's ``fit``)."""
        found = _find_net(self.estimator)
        if found is None:
            return False
        try:
            keys = self._grid_keys()
        except Exception:  # invalid input: let scikit-learn's fit report it
            return False
        return found[1] + _EPOCH_PARAM in keys

    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters.

        Candidates that differ only in the network's ``max_iter`` share one
        training run per fold; without such candidates this is exactly
        scikit-learn's ``fit``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors.
        y : array-like of shape (n_samples, n_outputs) or (n_samples,), \
                default=None
            Target relative to X for classification or regression.
        **params : dict of str -> object
            Parameters passed to the ``fit`` method of the estimator, the
            scorer, and the CV splitter.

        Returns
        -------
        self : object
            Instance of fitted estimator.
        """
        if not self._shares_epochs():
            return super().fit(X, y, **params)
        return self._fit_sharing_epochs(X, y, **params)

    @_fit_context(prefer_skip_nested_validation=False)
    def _fit_sharing_epochs(self, X, y=None, **params):
        # Mirrors sklearn.model_selection.BaseSearchCV.fit; only the evaluation
        # of the candidates differs.
        scorers, refit_metric = self._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed_params = self._get_routed_params_for_fit(params)

        self._checked_cv_orig = check_cv(
            self.cv, y, classifier=is_classifier(self.estimator)
        )
        if hasattr(self, "_check_input_parameters"):
            self._check_input_parameters(
                X=X, y=y, split_params=routed_params.splitter.split
            )
        self.n_splits_ = self._checked_cv_orig.get_n_splits(
            X, y, **routed_params.splitter.split
        )
        n_splits = self.n_splits_
        base_estimator = clone(self.estimator)
        candidate_params = list(self._candidate_params())
        n_candidates = len(candidate_params)
        cv_splits = list(
            self._checked_cv_orig.split(X, y, **routed_params.splitter.split)
        )
        if len(cv_splits) != n_splits:
            raise ValueError(
                "cv.split and cv.get_n_splits return inconsistent results. "
                f"Expected {n_splits} splits, got {len(cv_splits)}"
            )
        groups = _group_candidates(base_estimator, candidate_params)
        n_runs = len(groups) * n_splits
        if self.verbose > 0:
            print(
                f"Fitting {n_splits} folds for each of {n_candidates} candidates, "
                f"totalling {n_candidates * n_splits} fits in {n_runs} training runs"
            )
        common = dict(
            scorer=scorers,
            verbose=self.verbose,
            score_params=routed_params.scorer.score,
            return_train_score=self.return_train_score,
            error_score=self.error_score,
            parent_pid=os.getpid(),
            n_workers=effective_n_jobs(self.n_jobs),
        )
        tasks, slots = [], []
        for epoch_param, indices in groups:
            for split_idx, (train, test) in enumerate(cv_splits):
                if epoch_param is None:
                    (cand_idx,) = indices
                    tasks.append(
                        delayed(_fit_and_score_single)(
                            clone(base_estimator),
                            X,
                            y,
                            train=train,
                            test=test,
                            parameters=candidate_params[cand_idx],
                            fit_params=routed_params.estimator.fit,
                            split_progress=(split_idx, n_splits),
                            candidate_progress=(cand_idx, n_candidates),
                            return_n_test_samples=True,
                            return_times=True,
                            return_parameters=False,
                            **common,
                        )
                    )
                else:
                    first = candidate_params[indices[0]]
                    tasks.append(
                        delayed(_fit_and_score_epochs)(
                            clone(base_estimator),
                            X,
                            y,
                            train=train,
                            test=test,
                            common_params={
                                k: v for k, v in first.items() if k != epoch_param
                            },
                            epoch_param=epoch_param,
                            epochs=[candidate_params[i][epoch_param] for i in indices],
                            fit_params=routed_params.estimator.fit,
                            **common,
                        )
                    )
                slots.append([i * n_splits + split_idx for i in indices])

        parallel = Parallel(n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch)
        with parallel:
            outputs = parallel(tasks)
        if n_candidates * n_splits < 1:
            raise ValueError(
                "No fits were performed. Was the CV iterator empty? "
                "Were there no candidates?"
            )
        out = [None] * (n_candidates * n_splits)
        for where, result in zip(slots, outputs, strict=True):
            results = result if isinstance(result, list) else [result]
            for slot, r in zip(where, results, strict=True):
                out[slot] = r

        _warn_or_raise_about_fit_failures(out, self.error_score)
        if callable(self.scoring):
            _insert_error_scores(out, self.error_score)
        results = self._format_results(
            candidate_params, n_splits, out, defaultdict(list)
        )

        first_test_score = out[0]["test_scores"]
        self.multimetric_ = isinstance(first_test_score, dict)
        if callable(self.scoring) and self.multimetric_:
            self._check_refit_for_multimetric(first_test_score)
            refit_metric = self.refit

        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(
                self.refit, refit_metric, results
            )
            if not callable(self.refit):
                self.best_score_ = results[f"mean_test_{refit_metric}"][
                    self.best_index_
                ]
            self.best_params_ = results["params"][self.best_index_]

        if self.refit:
            self.best_estimator_ = clone(base_estimator).set_params(
                **clone(self.best_params_, safe=False)
            )
            refit_start_time = time.time()
            if y is not None:
                self.best_estimator_.fit(X, y, **routed_params.estimator.fit)
            else:
                self.best_estimator_.fit(X, **routed_params.estimator.fit)
            self.refit_time_ = time.time() - refit_start_time
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_

        if isinstance(scorers, _MultimetricScorer):
            self.scorer_ = scorers._scorers
        else:
            self.scorer_ = scorers
        self.cv_results_ = results
        return self


def _keys(grid):
    grids = [grid] if hasattr(grid, "keys") else list(grid)
    return {key for g in grids for key in g.keys()}


class GridSearchCV(_EpochSharingMixin, _SkGridSearchCV):
    """Exhaustive search that trains each network once for all its epoch counts.

    A drop-in for :class:`sklearn.model_selection.GridSearchCV`: the same
    parameters, attributes (``cv_results_``, ``best_params_``,
    ``best_estimator_``, ``best_score_``, ``refit_time_``, ...) and methods.
    When ``estimator`` is a sknets network, or a ``Pipeline`` ending in one,
    and the grid holds its epoch parameter (``max_iter``, or
    ``<step>__max_iter`` in a pipeline), the candidates that differ only in
    ``max_iter`` share one training run per fold: the run goes to the largest
    requested ``max_iter`` and the held-out fold is scored at every requested
    epoch count along the way. With ``max_iter`` in ``[5, 10, 20]`` that is 20
    epochs per fold and setting instead of 35. Any other grid or estimator is
    searched exactly as scikit-learn does.

    Parameters
    ----------
    estimator : estimator object
        The estimator to tune, e.g. :class:`sknets.MLPClassifier` or a
        ``Pipeline`` whose last step is one.

    param_grid : dict or list of dictionaries
        Parameter names mapped to lists of values to try, or a list of such
        dictionaries.

    scoring : str, callable, list, tuple or dict, default=None
        Strategy to evaluate the held-out folds, as in scikit-learn.

    n_jobs : int, default=None
        Number of training runs in parallel (joblib). ``-1`` uses all
        processors; ``with joblib.parallel_backend("dask"):`` sends them to a
        Dask cluster.

    refit : bool, str, or callable, default=True
        Refit an estimator with the best parameters on the whole dataset
        (with the best ``max_iter``: a fresh training run of that length).

    cv : int, cross-validation generator or an iterable, default=None
        Cross-validation splitting strategy, as in scikit-learn.

    verbose : int, default=0
        Verbosity of the search.

    pre_dispatch : int or str, default="2*n_jobs"
        Number of jobs dispatched during parallel execution.

    error_score : "raise" or numeric, default=np.nan
        Score of a candidate whose fit fails.

    return_train_score : bool, default=False
        Also score the training folds (at every epoch count).

    Attributes
    ----------
    cv_results_ : dict of numpy (masked) ndarrays
        As in scikit-learn. For candidates that shared a run,
        ``split<i>_fit_time`` is the time the run took to reach that
        candidate's epoch count (so the mean fit times grow with ``max_iter``
        the way separate fits would, and their sum over-counts the shared
        work); ``score_time`` is the time spent scoring that epoch count.

    best_estimator_ : estimator
        Estimator refitted with the best parameters (if ``refit``).

    best_score_ : float
        Mean cross-validated score of the best candidate.

    best_params_ : dict
        Parameters of the best candidate.

    best_index_ : int
        Index of the best candidate in ``cv_results_``.

    scorer_ : function or dict
        Scorer(s) used on the held-out data.

    n_splits_ : int
        Number of cross-validation splits.

    refit_time_ : float
        Seconds used to refit the best model.

    multimetric_ : bool
        Whether the scorers compute several metrics.

    See Also
    --------
    RandomizedSearchCV : The same for sampled candidates.
    sklearn.model_selection.GridSearchCV : The search this one extends.
    sklearn.model_selection.HalvingGridSearchCV : Successive halving; with
        ``resource="max_iter"`` it allocates epochs to promising candidates
        and works with sknets networks as is.

    Notes
    -----
    **Why the scores match separate fits.** A sknets network draws every seed
    from ``random_state`` independently of ``max_iter``, so a ``max_iter=20``
    run is identical to a ``max_iter=k`` run for its first ``k`` epochs. The
    ``max_iter=k`` model is scored with the weights after epoch ``k``; with
    ``early_stopping=True`` with the best weights seen up to epoch ``k``
    (what a ``max_iter=k`` fit restores); if training stops by convergence at
    epoch ``s < k``, with the final model. ``solver="lbfgs"`` (where
    ``max_iter`` counts LBFGS iterations, not epochs) and candidates set
    without ``max_iter`` are fitted separately. With ``random_state=None``
    every fit is random anyway and nothing can match.

    **Early stopping instead of an epoch grid.** ``early_stopping=True``
    splits its own validation set (``validation_fraction``) off the training
    fold, never the CV test fold, stops when the validation score stops
    improving, restores the best weights and records the chosen epoch in
    ``best_epoch_``: a search over everything but epochs is then sound, and
    ``HalvingGridSearchCV(resource="max_iter")`` is a third option.

    **Scale-out.** ``n_jobs`` runs the training runs in joblib processes;
    estimators and fitted models pickle. In a worker process (never in the
    search's own process) torch's intra-op threads are capped at
    ``cpu_count // n_jobs`` for the duration of a task so that workers do not
    oversubscribe the cores (loky already sets this through
    ``OMP_NUM_THREADS``). For a cluster install ``sknets[dask]`` and run
    ``with joblib.parallel_backend("dask"): search.fit(X, y)`` under a
    ``dask.distributed.Client``. On a machine with several GPUs, give each
    worker process its own device by starting it with its own
    ``CUDA_VISIBLE_DEVICES`` (dask-cuda's ``LocalCUDACluster`` does this, one
    worker per GPU) and leave ``device="cuda"`` in the estimator: inside each
    worker ``cuda`` is that worker's GPU. Alternatively put the device in the
    grid (``{"device": ["cuda:0", "cuda:1"]}``) only if the device is meant to
    be a searched parameter: it multiplies the candidates.

    Scikit-learn's experimental callback API is not run for candidates that
    share a run.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknets import MLPClassifier
    >>> from sknets.model_selection import GridSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> mlp = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01,
    ...                     random_state=0, device="cpu")
    >>> search = GridSearchCV(mlp, {"max_iter": [5, 10, 20]}, cv=3)
    >>> search.fit(X, y).best_params_["max_iter"] in (5, 10, 20)
    True
    >>> search.cv_results_["mean_test_score"].shape
    (3,)
    """

    def _candidate_params(self):
        return ParameterGrid(self.param_grid)

    def _grid_keys(self):
        return _keys(self.param_grid)


class RandomizedSearchCV(_EpochSharingMixin, _SkRandomizedSearchCV):
    """Randomized search that trains each network once for all its epoch counts.

    A drop-in for :class:`sklearn.model_selection.RandomizedSearchCV`; the
    sampled candidates that differ only in the network's ``max_iter`` share one
    training run per fold, exactly as in :class:`GridSearchCV` (see its Notes).
    Sampling ``max_iter`` from a short list (``[5, 10, 20]``) makes such
    candidates common; a continuous distribution makes them rare.

    Parameters
    ----------
    estimator : estimator object
        The estimator to tune.

    param_distributions : dict or list of dicts
        Parameter names mapped to distributions or lists to sample from.

    n_iter : int, default=10
        Number of sampled candidates.

    scoring : str, callable, list, tuple or dict, default=None
        Strategy to evaluate the held-out folds.

    n_jobs : int, default=None
        Number of training runs in parallel (joblib).

    refit : bool, str, or callable, default=True
        Refit an estimator with the best parameters on the whole dataset.

    cv : int, cross-validation generator or an iterable, default=None
        Cross-validation splitting strategy.

    verbose : int, default=0
        Verbosity of the search.

    pre_dispatch : int or str, default="2*n_jobs"
        Number of jobs dispatched during parallel execution.

    random_state : int, RandomState instance or None, default=None
        Seed of the candidate sampling.

    error_score : "raise" or numeric, default=np.nan
        Score of a candidate whose fit fails.

    return_train_score : bool, default=False
        Also score the training folds.

    Attributes
    ----------
    cv_results_ : dict of numpy (masked) ndarrays
        As in scikit-learn; fit times as in :class:`GridSearchCV`.

    best_estimator_ : estimator
        Estimator refitted with the best parameters (if ``refit``).

    best_score_ : float
        Mean cross-validated score of the best candidate.

    best_params_ : dict
        Parameters of the best candidate.

    best_index_ : int
        Index of the best candidate in ``cv_results_``.

    scorer_ : function or dict
        Scorer(s) used on the held-out data.

    n_splits_ : int
        Number of cross-validation splits.

    refit_time_ : float
        Seconds used to refit the best model.

    multimetric_ : bool
        Whether the scorers compute several metrics.

    See Also
    --------
    GridSearchCV : The exhaustive search, with the details.
    sklearn.model_selection.RandomizedSearchCV : The search this one extends.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknets import MLPClassifier
    >>> from sknets.model_selection import RandomizedSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> mlp = MLPClassifier(learning_rate_init=0.01, random_state=0, device="cpu")
    >>> search = RandomizedSearchCV(
    ...     mlp,
    ...     {"max_iter": [5, 10], "hidden_layer_sizes": [(4,), (8,)]},
    ...     n_iter=3, cv=3, random_state=0,
    ... )
    >>> len(search.fit(X, y).cv_results_["params"])
    3
    """

    def _candidate_params(self):
        return ParameterSampler(
            self.param_distributions, self.n_iter, random_state=self.random_state
        )

    def _grid_keys(self):
        return _keys(self.param_distributions)
