"""Successive halving with epochs as the budget, in one training run per fold.

scikit-learn's ``HalvingGridSearchCV(resource="max_iter")`` retrains every
surviving candidate from scratch at every rung. Here, when the resource is
the epoch count of an sknets network, every candidate's networks (one per
fold) are members of stacked networks (:mod:`sknets._members`) that train
rung by rung: at each rung the live members train up to the rung's epoch
count, scikit-learn's own ``evaluate_candidates`` fits (picking up the
trained states) and scores them, the best candidates go on from where they
are and the others leave their stacks. The rung loop (``_run_search``, the
extension point that scikit-learn's ``BaseSearchCV`` documents for custom
schedules) is written here, so it does not depend on scikit-learn's own
halving loop; the schedule is scikit-learn's, tested against it.
"""

import numpy as np
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import HalvingGridSearchCV as _SkHalvingGridSearchCV
from sklearn.model_selection import (
    HalvingRandomSearchCV as _SkHalvingRandomSearchCV,
)
from sklearn.model_selection import ParameterGrid, ParameterSampler

from sknets.model_selection._rungs import _EpochHalvingMixin


class HalvingGridSearchCV(_EpochHalvingMixin, _SkHalvingGridSearchCV):
    """Successive halving over a grid, with epochs as the budget.

    A drop-in for :class:`sklearn.model_selection.HalvingGridSearchCV`: the
    same parameters (plus ``vectorize``), attributes (``cv_results_`` with
    ``iter`` and ``n_resources``, ``n_resources_``, ``n_candidates_``, ...)
    and methods.
    With ``resource`` set to the network's epoch count (``"max_iter"``, or
    ``"<step>__max_iter"`` when the network ends a ``Pipeline``), each fold
    trains all candidates in one run and eliminates at the rungs: the
    candidates' networks are the members of stacked networks
    (:class:`GridSearchCV`'s Notes), trained up to the first rung's epoch
    count, fitted and scored by scikit-learn's own search code, and the best
    ``1 / factor`` go on training from where they are (no retraining from
    scratch) while the others leave their stacks. Any other ``resource``, an
    estimator that is not an sknets network (or a pipeline ending in one),
    networks that cannot be stacked, or ``vectorize=False`` give scikit-learn's
    successive halving unchanged.

    The rung schedule, the survivors of each rung and their order in
    ``cv_results_`` are scikit-learn's; a resumed run equals a fresh run of
    that many epochs (every seed of a sknets network is independent of
    ``max_iter``), so ``cv_results_`` equals scikit-learn's halving over the
    same estimator (tested, dropout included on the CPU).

    Parameters
    ----------
    estimator : estimator object
        The estimator to tune, e.g. :class:`sknets.MLPClassifier` or a
        ``Pipeline`` whose last step is one.

    param_grid : dict or list of dictionaries
        Parameter names mapped to lists of values to try; must not hold
        ``resource``.

    factor : int or float, default=3
        The proportion of candidates kept at each rung is ``1 / factor``;
        the budget grows by ``factor`` from rung to rung.

    resource : str, default='n_samples'
        What grows from rung to rung: ``'max_iter'`` (or
        ``'<step>__max_iter'``) for epochs, trained on; ``'n_samples'`` or
        any other parameter as in scikit-learn.

    max_resources : int or 'auto', default='auto'
        The largest budget of a candidate (epochs with ``resource='max_iter'``;
        ``'auto'`` only for ``n_samples``).

    min_resources : int, {'exhaust', 'smallest'}, default='exhaust'
        The budget of the first rung, as in scikit-learn ('smallest' is one
        epoch; 'exhaust' the largest first budget whose last rung uses
        ``max_resources``).

    aggressive_elimination : bool, default=False
        Repeat the first budget until few enough candidates are left to end
        at ``max_resources``.

    cv : int, cross-validation generator or an iterable, default=5
        Cross-validation splitting strategy; splits must be the same on
        every call to ``split``.

    scoring : str, callable or None, default=None
        One scorer for the held-out folds.

    refit : bool, default=True
        Refit the best candidate of the last rung on the whole dataset.

    error_score : 'raise' or numeric, default=np.nan
        Score of a candidate whose fit fails.

    return_train_score : bool, default=True
        Also score the training folds.

    random_state : int, RandomState instance or None, default=None
        Seed of the subsampling with ``resource='n_samples'``.

    n_jobs : int, default=None
        Stacks trained in parallel: in as many worker processes, forked
        once and kept from rung to rung, where that is safe (the user guide's
        conditions), else in threads. The candidates' fits pick the trained
        states up and are scored in the search's process.

    verbose : int, default=0
        Verbosity of the search.

    vectorize : bool, default=True
        Train the candidates' networks as stacked members that go on from
        rung to rung; ``False`` is scikit-learn's halving (every survivor
        retrained from scratch at each rung).

    Attributes
    ----------
    n_resources_ : list of int
        The budget of each rung.

    n_candidates_ : list of int
        The candidates evaluated at each rung.

    n_remaining_candidates_ : int
        Candidates left after the last rung.

    max_resources_ : int
        The largest budget.

    min_resources_ : int
        The budget of the first rung.

    n_possible_iterations_ : int
        Rungs possible from ``min_resources_`` without exceeding
        ``max_resources_``.

    n_required_iterations_ : int
        Rungs needed to end with fewer than ``factor`` candidates.

    n_iterations_ : int
        Rungs run.

    cv_results_ : dict of numpy (masked) ndarrays
        As in scikit-learn, one row per (candidate, rung); fit times as in
        :class:`GridSearchCV` (the time the shared run took to reach the
        rung's epoch count).

    best_estimator_ : estimator
        Estimator refitted with the best parameters of the last rung.

    best_score_ : float
        Mean cross-validated score of the best candidate.

    best_params_ : dict
        Parameters of the best candidate.

    best_index_ : int
        Row of the best candidate in ``cv_results_``.

    scorer_ : function or dict
        Scorer used on the held-out data.

    n_splits_ : int
        Number of cross-validation splits.

    refit_time_ : float
        Seconds used to refit the best model.

    multimetric_ : bool
        Whether the scorers compute several metrics (always False).

    stacking_ : dict
        How the candidates' networks were stacked (see :class:`GridSearchCV`);
        no members when scikit-learn's halving ran.

    See Also
    --------
    HalvingRandomSearchCV : The same over sampled candidates.
    GridSearchCV : Every candidate to every epoch count, sharing runs.
    sklearn.model_selection.HalvingGridSearchCV : The search this one extends.

    Notes
    -----
    Candidates are eliminated on their mean test score at each rung; ties and
    NaN scores are broken as scikit-learn does. The trained stacks live in
    the search's process and train in its threads (``n_jobs`` of them);
    Ctrl-C stops every stack at its next batch. With ``refit=True`` the refit
    of each candidate of the last rung trains beside that rung, in the threads
    it leaves free (the best one's is picked up by the refit, the others are
    dropped; ``refit_time_`` is its training time). Candidates whose networks
    cannot be stacked (batch normalization, sparse input, L-BFGS, ...) are
    fitted from scratch at each rung, as in scikit-learn.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknets import MLPClassifier
    >>> from sknets.model_selection import HalvingGridSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> mlp = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01,
    ...                     random_state=0, device="cpu")
    >>> search = HalvingGridSearchCV(
    ...     mlp, {"alpha": [1e-4, 1e-3, 1e-2], "learning_rate_init": [0.01, 0.03]},
    ...     resource="max_iter", min_resources=5, max_resources=20, factor=2,
    ...     cv=3,
    ... ).fit(X, y)
    >>> search.n_resources_, search.n_candidates_
    ([5, 10, 20], [6, 3, 2])
    >>> search.best_params_["max_iter"]
    20
    """

    _parameter_constraints: dict = {
        **_SkHalvingGridSearchCV._parameter_constraints,
        "vectorize": ["boolean"],
    }

    def __init__(
        self,
        estimator,
        param_grid,
        *,
        factor=3,
        resource="n_samples",
        max_resources="auto",
        min_resources="exhaust",
        aggressive_elimination=False,
        cv=5,
        scoring=None,
        refit=True,
        error_score=np.nan,
        return_train_score=True,
        random_state=None,
        n_jobs=None,
        verbose=0,
        vectorize=True,
    ):
        super().__init__(
            estimator,
            param_grid,
            factor=factor,
            resource=resource,
            max_resources=max_resources,
            min_resources=min_resources,
            aggressive_elimination=aggressive_elimination,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.vectorize = vectorize

    def _candidates(self, n_first):
        return ParameterGrid(self.param_grid)


class HalvingRandomSearchCV(_EpochHalvingMixin, _SkHalvingRandomSearchCV):
    """Successive halving over sampled candidates, with epochs as the budget.

    A drop-in for :class:`sklearn.model_selection.HalvingRandomSearchCV`,
    trained as :class:`HalvingGridSearchCV` is.
    With ``resource`` set to the network's epoch count (``"max_iter"``, or
    ``"<step>__max_iter"`` when the network ends a ``Pipeline``), each fold
    trains all candidates in one run and eliminates at the rungs: the
    candidates' networks are the members of stacked networks
    (:class:`GridSearchCV`'s Notes), trained up to the first rung's epoch
    count, fitted and scored by scikit-learn's own search code, and the best
    ``1 / factor`` go on training from where they are (no retraining from
    scratch) while the others leave their stacks. Any other ``resource``, an
    estimator that is not an sknets network (or a pipeline ending in one),
    networks that cannot be stacked, or ``vectorize=False`` give scikit-learn's
    successive halving unchanged.

    Parameters
    ----------
    estimator : estimator object
        The estimator to tune.

    param_distributions : dict or list of dicts
        Parameter names mapped to distributions or lists to sample from;
        must not hold ``resource``.

    n_candidates : 'exhaust' or int, default='exhaust'
        Candidates sampled for the first rung; 'exhaust' samples
        ``max_resources // min_resources`` of them.

    factor : int or float, default=3
        The proportion of candidates kept at each rung is ``1 / factor``.

    resource : str, default='n_samples'
        What grows from rung to rung (``'max_iter'`` for epochs).

    max_resources : int or 'auto', default='auto'
        The largest budget of a candidate.

    min_resources : int, {'exhaust', 'smallest'}, default='smallest'
        The budget of the first rung.

    aggressive_elimination : bool, default=False
        Repeat the first budget until few enough candidates are left.

    cv : int, cross-validation generator or an iterable, default=5
        Cross-validation splitting strategy.

    scoring : str, callable or None, default=None
        One scorer for the held-out folds.

    refit : bool, default=True
        Refit the best candidate of the last rung on the whole dataset.

    error_score : 'raise' or numeric, default=np.nan
        Score of a candidate whose fit fails.

    return_train_score : bool, default=True
        Also score the training folds.

    random_state : int, RandomState instance or None, default=None
        Seed of the candidate sampling (and of subsampling with
        ``resource='n_samples'``).

    n_jobs : int, default=None
        Stacks trained in parallel: in as many worker processes, forked
        once and kept from rung to rung, where that is safe (the user guide's
        conditions), else in threads. The candidates' fits pick the trained
        states up and are scored in the search's process.

    verbose : int, default=0
        Verbosity of the search.

    vectorize : bool, default=True
        Train the candidates' networks as stacked members that go on from
        rung to rung; ``False`` is scikit-learn's halving.

    Attributes
    ----------
    n_resources_ : list of int
        The budget of each rung.

    n_candidates_ : list of int
        The candidates evaluated at each rung.

    n_remaining_candidates_ : int
        Candidates left after the last rung.

    max_resources_ : int
        The largest budget.

    min_resources_ : int
        The budget of the first rung.

    n_possible_iterations_ : int
        Rungs possible from ``min_resources_``.

    n_required_iterations_ : int
        Rungs needed to end with fewer than ``factor`` candidates.

    n_iterations_ : int
        Rungs run.

    cv_results_ : dict of numpy (masked) ndarrays
        As in scikit-learn, one row per (candidate, rung).

    best_estimator_ : estimator
        Estimator refitted with the best parameters of the last rung.

    best_score_ : float
        Mean cross-validated score of the best candidate.

    best_params_ : dict
        Parameters of the best candidate.

    best_index_ : int
        Row of the best candidate in ``cv_results_``.

    scorer_ : function or dict
        Scorer used on the held-out data.

    n_splits_ : int
        Number of cross-validation splits.

    refit_time_ : float
        Seconds used to refit the best model.

    multimetric_ : bool
        Whether the scorers compute several metrics (always False).

    stacking_ : dict
        How the candidates' networks were stacked.

    See Also
    --------
    HalvingGridSearchCV : The same over a grid, with the details.
    sklearn.model_selection.HalvingRandomSearchCV : The search this one
        extends.

    Examples
    --------
    >>> from scipy.stats import loguniform
    >>> from sklearn.datasets import load_iris
    >>> from sknets import MLPClassifier
    >>> from sknets.model_selection import HalvingRandomSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> mlp = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01,
    ...                     random_state=0, device="cpu")
    >>> search = HalvingRandomSearchCV(
    ...     mlp, {"alpha": loguniform(1e-5, 1e-1)}, n_candidates=4,
    ...     resource="max_iter", min_resources=5, max_resources=20, factor=2,
    ...     cv=3, random_state=0,
    ... ).fit(X, y)
    >>> search.n_candidates_
    [4, 2, 1]
    """

    _parameter_constraints: dict = {
        **_SkHalvingRandomSearchCV._parameter_constraints,
        "vectorize": ["boolean"],
    }

    def __init__(
        self,
        estimator,
        param_distributions,
        *,
        n_candidates="exhaust",
        factor=3,
        resource="n_samples",
        max_resources="auto",
        min_resources="smallest",
        aggressive_elimination=False,
        cv=5,
        scoring=None,
        refit=True,
        error_score=np.nan,
        return_train_score=True,
        random_state=None,
        n_jobs=None,
        verbose=0,
        vectorize=True,
    ):
        super().__init__(
            estimator,
            param_distributions,
            n_candidates=n_candidates,
            factor=factor,
            resource=resource,
            max_resources=max_resources,
            min_resources=min_resources,
            aggressive_elimination=aggressive_elimination,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.vectorize = vectorize

    def _candidates(self, n_first):
        n = n_first if self.n_candidates == "exhaust" else self.n_candidates
        return ParameterSampler(
            self.param_distributions, n, random_state=self.random_state
        )
