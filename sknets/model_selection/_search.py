"""Hyper-parameter searches that train many networks as one.

scikit-learn's searches fit every (candidate, fold) pair from scratch. Here
the networks are trained first (:mod:`sknets.model_selection._pretrain`):
candidates that differ only in ``max_iter`` share one run per fold, and runs
of networks of one shape are trained as the members of one stacked network.
Then scikit-learn's own ``BaseSearchCV.fit`` runs the search, and each
candidate's ``fit`` picks up its trained state from :mod:`sknets._registry`
instead of training. Everything else (splitting, scoring, ``cv_results_``, ranking,
``error_score``, the callback API, refit) is scikit-learn's own code; nothing
of it is copied here.
"""

from contextlib import nullcontext

import numpy as np
from sklearn import get_config
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV as _SkGridSearchCV
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV

from sknets import _catalog
from sknets import _registry as registry
from sknets._compat import auto_propagated_callbacks
from sknets.model_selection._pretrain import (
    Pretraining,
    pickup_config,
    trained_ahead,
)
from sknets.model_selection._runs import EPOCH_PARAM, _threads, find_net

# --------------------------------------------------------------------------- searches


class _EpochSharingMixin:
    """``fit`` of a search that trains its networks first, as few and wide runs.

    The runs are trained first (:func:`~sknets.model_selection._pretrain.pretrain`:
    stacked members, in parallel with ``n_jobs`` and the joblib backend in
    use); then scikit-learn's own ``fit`` runs the search, and each
    candidate's network picks its trained state up instead of training
    (:mod:`sknets._registry`). Scoring, ``cv_results_``, ``error_score``,
    multimetric scoring, callbacks and refit are scikit-learn's.
    """

    def _candidate_params(self):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _grid_keys(self):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _pretrains(self):
        """Whether any candidate is trained ahead (else: scikit-learn's ``fit``)."""
        found = find_net(self.estimator)
        if found is None or auto_propagated_callbacks(self):
            # callbacks that follow every candidate's fit see it train
            return False
        if self.vectorize:
            return True
        try:
            keys = self._grid_keys()
        except Exception:  # invalid input: let scikit-learn's fit report it
            return False
        return found[1] + EPOCH_PARAM in keys

    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters.

        The networks are trained first: candidates that differ only in the
        network's ``max_iter`` share one run per fold, and with
        ``vectorize=True`` runs of networks of one shape are trained as one
        stacked network. The search itself is scikit-learn's ``fit``.

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
        self._validate_params()
        if not self._pretrains():
            self.stacking_ = {"members": 0, "stacks": [], "member_bytes": {}}
            return super().fit(X, y, **params)
        trained, seconds, self.stacking_, complete, ahead = self._pretrain(X, y, params)
        # the states live in this process: candidates are fitted (picked up)
        # and scored here, whatever backend trained them; the refit may be
        # training meanwhile, in a child process (``refit_ahead``), and then
        # this process takes its share of the cores, not all of them (torch's
        # threads spinning beside the child's would slow both down)
        sharing = _threads(2) if ahead is not None else nullcontext()
        with registry.offered(trained) as offer, pickup_config(complete), sharing:
            if ahead is not None:
                offer.promise(ahead)
            super().fit(X, y, **params)
        report_shared_fit_times(self, seconds, offer.taken)
        return self

    def _pretrain(self, X, y, params):
        """Train every (run, fold) ahead; the states, their times, the stacks,
        whether every fit has its state, and the refit started ahead (or None)."""
        nothing = {}, {}, {"members": 0, "stacks": [], "member_bytes": {}}, False, None
        other = set(params) - {"sample_weight", "groups"}
        if other or get_config().get("enable_metadata_routing"):
            return nothing  # routed or other parameters: scikit-learn's fit trains
        fit_params = {k: v for k, v in params.items() if k == "sample_weight"}
        groups = {k: v for k, v in params.items() if k == "groups"}
        try:
            cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
            splits = list(cv.split(X, y, **groups))
            candidates = list(self._candidate_params())
        except Exception:  # scikit-learn's fit reports it
            return nothing
        pretraining = Pretraining(
            clone(self.estimator),
            candidates,
            X,
            y,
            splits,
            fit_params,
            n_jobs=self.n_jobs,
            pre_dispatch=self.pre_dispatch,
            vectorize=self.vectorize,
            share_all=self.vectorize,
        )
        trained, seconds, stats = pretraining.train()
        complete = trained_ahead(seconds, len(candidates), len(splits))
        ahead = None
        if complete and self.refit is True and self.scoring is None:
            # the refit trains beside the pick-ups, for the candidate the
            # held-out scores say scikit-learn will rank first
            ahead = pretraining.refit_ahead()
        return trained, seconds, stats, complete, ahead


def report_shared_fit_times(search, seconds, taken):
    """``mean_fit_time``/``std_fit_time``: the shared runs' time to each count.

    scikit-learn timed the pick-up of a trained state; for a candidate (a
    ``cv_results_`` row) whose every fold was picked up, report how long its
    run took to reach its epoch count instead (so the times grow with
    ``max_iter`` as separate fits would; their sum over-counts the shared
    work). ``seconds`` maps ``(row, split)`` to ``(registry key, seconds)``.
    """
    results = search.cv_results_
    for i in range(len(results["params"])):
        times = [
            seconds[(i, s)][1]
            for s in range(search.n_splits_)
            if (i, s) in seconds and seconds[(i, s)][0] in taken
        ]
        if len(times) == search.n_splits_:
            results["mean_fit_time"][i] = np.mean(times)
            results["std_fit_time"][i] = np.std(times)


def _keys(grid):
    grids = [grid] if hasattr(grid, "keys") else list(grid)
    return {key for g in grids for key in g.keys()}


@_catalog.register("search")
class GridSearchCV(_EpochSharingMixin, _SkGridSearchCV):
    """Exhaustive search that trains many networks as one.

    A drop-in for :class:`sklearn.model_selection.GridSearchCV`: the same
    parameters (plus ``vectorize``), attributes (``cv_results_``,
    ``best_params_``, ``best_estimator_``, ``best_score_``, ``refit_time_``,
    ...) and methods. When ``estimator`` is a sknets network, or a
    ``Pipeline`` ending in one, the networks are trained before scikit-learn's
    search runs, in two ways that compound:

    - candidates that differ only in the epoch parameter (``max_iter``, or
      ``<step>__max_iter`` in a pipeline) share one training run per fold:
      the run goes to the largest requested ``max_iter`` and the held-out fold
      is scored at every requested epoch count along the way (with
      ``max_iter`` in ``[5, 10, 20]``, 20 epochs per fold and setting instead
      of 35);
    - the runs of networks of one shape (all the folds, and candidates that
      differ in ``alpha``, ``learning_rate_init``, ``dropout``, ``tol``...)
      are trained at once, as the members of one stacked network.

    Any other estimator is searched exactly as scikit-learn does.

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

    vectorize : bool, default=True
        Train the (candidate, fold) runs of networks of one shape as the
        members of one stacked network (see Notes). ``False``: one training
        run per candidate group and fold, each a standalone network, and only
        when the grid holds ``max_iter``.

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

    stacking_ : dict
        How the runs were trained ahead: ``members`` (runs trained as stacked
        members), ``stacks`` (members per stacked network, in training order)
        and ``member_bytes`` (planned memory per member of each stack:
        weights, gradients, two Adam moments, one batch of activations);
        with stacks, ``workers``: ``"processes"`` when they trained in forked
        processes (small data on the CPU, several stacks and jobs, no joblib
        backend chosen), else ``"threads"`` (or the joblib backend set).

    See Also
    --------
    RandomizedSearchCV : The same for sampled candidates.
    sklearn.model_selection.GridSearchCV : The search this one extends.
    HalvingGridSearchCV : Successive halving; with ``resource="max_iter"``
        it gives epochs to promising candidates, and the survivors of each
        rung go on training instead of starting again.

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
    :class:`HalvingGridSearchCV` with ``resource="max_iter"`` is a third
    option.

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

    **Many networks trained as one** (``vectorize=True``). Every run the
    search needs (a candidate group on a training fold) is first *prepared*:
    the estimator's ``fit`` runs on the fold (a ``Pipeline`` fits its
    transformers) until the network is about to train, and the network
    resolves its training plan. Runs whose networks share the class, the
    layer sizes, the activation, the optimizer and its settings, the batch
    size, the output, the precision and the device are grouped, and each
    group is trained as one stacked network: weights ``(members, in, out)``,
    one batched matrix product per layer, one optimizer step for all. Each
    member keeps its own initialization (the same draw as its own ``fit``),
    its fold rows and their order, its ``alpha``/``l1_ratio``, learning rate
    and schedule, its early-stopping split and its stopping rules; a member
    that stops is frozen while the others go on. Groups are split to stay
    under a quarter of the available host memory (or half the free GPU
    memory) and so that ``n_jobs`` of them train at once: in threads of this
    process, or with the joblib backend in use (e.g. Dask). Networks that
    cannot be stacked (batch normalization, sparse input, convolutional
    networks, L-BFGS, ``compile``/``autocast``) are trained one run at a time.

    **Exactness.** Every score in ``cv_results_`` equals what
    ``sklearn.model_selection.GridSearchCV`` gives over the same sknets
    estimator, to float rounding (1e-6 in float64; tested), dropout included:
    on the CPU each member draws its dropout masks from a generator of its
    own, in the state its own ``fit`` has after initialization, exactly as
    that fit's ``nn.Dropout`` layers would (on a GPU the generator is seeded
    from the member's seed instead, so masks differ as another seed would).
    ``vectorize=False`` trains one standalone network at a time.

    **scikit-learn does the searching.** The shared runs are trained first;
    then scikit-learn's own ``fit`` runs the search, and each candidate's
    network picks up the state trained for its parameters and its training
    fold instead of training again (it is keyed by the parameters and a
    fingerprint of the data, so nothing else can match). Scoring,
    ``cv_results_``, ``error_score``, multimetric scoring, the experimental
    callback API and refit are scikit-learn's. The pick-ups and the scoring
    run in threads of the search's process.

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

    _parameter_constraints: dict = {
        **_SkGridSearchCV._parameter_constraints,
        "vectorize": ["boolean"],
    }

    def __init__(
        self,
        estimator,
        param_grid,
        *,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=None,
        verbose=0,
        pre_dispatch="2*n_jobs",
        error_score=np.nan,
        return_train_score=False,
        vectorize=True,
    ):
        super().__init__(
            estimator,
            param_grid,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.vectorize = vectorize

    def _candidate_params(self):
        return ParameterGrid(self.param_grid)

    def _grid_keys(self):
        return _keys(self.param_grid)


@_catalog.register("search")
class RandomizedSearchCV(_EpochSharingMixin, _SkRandomizedSearchCV):
    """Randomized search that trains many networks as one.

    A drop-in for :class:`sklearn.model_selection.RandomizedSearchCV`; the
    sampled candidates that differ only in the network's ``max_iter`` share one
    training run per fold, and runs of networks of one shape train as one
    stacked network, exactly as in :class:`GridSearchCV` (see its Notes).
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

    vectorize : bool, default=True
        Train runs of networks of one shape as one stacked network (see
        :class:`GridSearchCV`).

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

    stacking_ : dict
        How the runs were trained ahead (see :class:`GridSearchCV`).

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

    _parameter_constraints: dict = {
        **_SkRandomizedSearchCV._parameter_constraints,
        "vectorize": ["boolean"],
    }

    def __init__(
        self,
        estimator,
        param_distributions,
        *,
        n_iter=10,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=None,
        verbose=0,
        pre_dispatch="2*n_jobs",
        random_state=None,
        error_score=np.nan,
        return_train_score=False,
        vectorize=True,
    ):
        super().__init__(
            estimator,
            param_distributions,
            n_iter=n_iter,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            random_state=random_state,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.vectorize = vectorize

    def _candidate_params(self):
        return ParameterSampler(
            self.param_distributions, self.n_iter, random_state=self.random_state
        )

    def _grid_keys(self):
        return _keys(self.param_distributions)
