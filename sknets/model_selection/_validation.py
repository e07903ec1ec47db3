"""``cross_validate`` that trains the folds of one network as one."""

import numpy as np
from sklearn import get_config
from sklearn.base import clone, is_classifier
from sklearn.model_selection import check_cv
from sklearn.model_selection import cross_validate as sklearn_cross_validate

from sknets import _registry as registry
from sknets.model_selection._pretrain import pickup_config, pretrain, trained_ahead
from sknets.model_selection._runs import find_net


def cross_validate(
    estimator,
    X,
    y=None,
    *,
    groups=None,
    scoring=None,
    cv=None,
    n_jobs=None,
    verbose=0,
    params=None,
    pre_dispatch="2*n_jobs",
    return_train_score=False,
    return_estimator=False,
    return_indices=False,
    error_score=np.nan,
):
    """Evaluate metric(s) by cross-validation, the folds trained as one network.

    The same signature and return value as
    :func:`sklearn.model_selection.cross_validate`. When ``estimator`` is a
    sknets network (or a ``Pipeline`` ending in one) that can be stacked,
    its fits on the training folds are trained first, as the members of one
    stacked network (see :class:`~sknets.model_selection.GridSearchCV`);
    then scikit-learn's own ``cross_validate`` fits and scores, and each fold's
    fit adopts its trained state. Scores equal scikit-learn's
    ``cross_validate`` over the same estimator, to float rounding. Anything
    that cannot be stacked is cross-validated exactly as scikit-learn does.

    Parameters
    ----------
    estimator : estimator object
        The estimator to evaluate.
    X : array-like of shape (n_samples, n_features)
        The data to fit.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
        The target.
    groups : array-like of shape (n_samples,), default=None
        Group labels for a group splitter.
    scoring : str, callable, list, tuple, or dict, default=None
        Strategy to evaluate the test folds, as in scikit-learn.
    cv : int, cross-validation generator or an iterable, default=None
        Cross-validation splitting strategy, as in scikit-learn.
    n_jobs : int, default=None
        Parallel jobs (the stacked training and scikit-learn's fits).
    verbose : int, default=0
        Verbosity.
    params : dict, default=None
        Parameters for the estimator's ``fit`` (``sample_weight`` is sliced
        per fold, as scikit-learn does).
    pre_dispatch : int or str, default="2*n_jobs"
        Jobs dispatched during parallel execution.
    return_train_score : bool, default=False
        Also score the training folds.
    return_estimator : bool, default=False
        Return the fitted estimator of each fold.
    return_indices : bool, default=False
        Return the train and test indices of each split.
    error_score : "raise" or numeric, default=np.nan
        Score of a fold whose fit fails.

    Returns
    -------
    scores : dict of float arrays of shape (n_splits,)
        As in scikit-learn: ``test_score`` (or ``test_<name>``),
        ``fit_time`` (for stacked folds: the stacked run's time), ``score_time``
        and what ``return_*`` asks for.

    See Also
    --------
    sklearn.model_selection.cross_validate : The function this one extends.
    GridSearchCV : The search that stacks candidates and folds.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknets import MLPClassifier
    >>> from sknets.model_selection import cross_validate
    >>> X, y = load_iris(return_X_y=True)
    >>> mlp = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01,
    ...                     max_iter=50, random_state=0, device="cpu")
    >>> result = cross_validate(mlp, X, y, cv=3)
    >>> result["test_score"].shape
    (3,)
    """
    params = {} if params is None else dict(params)
    trained, seconds, splits = {}, {}, None
    routed = get_config().get("enable_metadata_routing")
    if (
        find_net(estimator) is not None
        and set(params) <= {"sample_weight"}
        and not routed
    ):
        try:
            splitter = check_cv(cv, y, classifier=is_classifier(estimator))
            splits = list(splitter.split(X, y, groups))
        except Exception:  # scikit-learn's cross_validate reports it
            splits = None
    if splits is not None:
        trained, seconds, _ = pretrain(
            clone(estimator),
            [{}],
            X,
            y,
            splits,
            params,
            n_jobs=n_jobs,
            pre_dispatch=pre_dispatch,
            vectorize=True,
            share_all=True,
        )
    kwargs = dict(
        groups=groups,
        scoring=scoring,
        cv=cv if splits is None else splits,  # the same splits, drawn once
        n_jobs=n_jobs,
        verbose=verbose,
        params=params or None,
        pre_dispatch=pre_dispatch,
        return_train_score=return_train_score,
        return_estimator=return_estimator,
        return_indices=return_indices,
        error_score=error_score,
    )
    if not trained:
        return sklearn_cross_validate(estimator, X, y, **kwargs)
    # the states live in this process: the folds are fitted (adopted) here
    complete = splits is not None and trained_ahead(seconds, 1, len(splits))
    with registry.offered(trained) as offer, pickup_config(complete):
        result = sklearn_cross_validate(estimator, X, y, **kwargs)
    for s in range(len(splits)):
        key, t = seconds.get((0, s), (None, None))
        if key in offer.taken:
            result["fit_time"][s] = t
    return result
