"""A search's runs: planned, prepared, and trained one at a time.

:func:`plan_runs` groups candidates that differ only in their epoch count
into one run per fold; :func:`_prepare_member` runs an estimator's ``fit``
on a fold until its network is about to train; :func:`_train_run` trains a
run that cannot be stacked through the network's own ``fit``, handing over a
state at every epoch count. Stacks of members are :mod:`._pretrain`'s.
"""

import numbers
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

import numpy as np
import torch
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from sknets import _registry as registry
from sknets._base import _BaseNet
from sknets._compat import check_method_params as _check_method_params
from sknets._compat import fit_context as _fit_context
from sknets._compat import safe_split as _safe_split
from sknets._fitted import _HISTORY_KEYS
from sknets._plan import TrainedState

EPOCH_PARAM = "max_iter"
_EPOCH_SOLVERS = ("sgd", "adam")


# --------------------------------------------------------------------------- runs


def find_net(estimator):
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


def _epoch_count(value):
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= 1
    )


def plan_runs(base_estimator, candidate_params, share_all=True):
    """Group candidates into training runs: ``[(epoch_param, common, {i: epochs})]``.

    Candidates that differ only in the network's epoch count share a run.
    ``share_all=False`` keeps only the runs that hold several candidates or
    an epoch count from the grid (scikit-learn's fit trains the rest).
    Candidates that cannot be pre-trained (no sknets network, L-BFGS, an
    invalid epoch count) are left out: scikit-learn's fit trains or reports
    them.
    """
    runs = []  # [epoch_param, common, {i: epochs}]
    for i, params in enumerate(candidate_params):
        try:
            est = clone(base_estimator).set_params(**clone(params, safe=False))
            found = find_net(est)
        except Exception:  # reported by scikit-learn's _fit_and_score
            continue
        if found is None or found[0].solver not in _EPOCH_SOLVERS:
            continue
        name = found[1] + EPOCH_PARAM
        epochs = params.get(name, found[0].max_iter)
        if not _epoch_count(epochs):
            continue
        if name not in params and not share_all:
            continue
        common = {k: v for k, v in params.items() if k != name}
        for run in runs:
            if (
                run[0] == name
                and run[1].keys() == common.keys()
                and all(_same(common[k], run[1][k]) for k in common)
            ):
                run[2][i] = int(epochs)
                break
        else:
            runs.append([name, common, {i: int(epochs)}])
    return [tuple(run) for run in runs]


@contextmanager
def _threads(n_workers, parent_pid=None):
    """Cap torch's intra-op threads at ``cpu_count // n_workers``, for a while.

    Worker tasks (``parent_pid`` given) are capped only in a process other
    than the search's own (joblib's loky workers, Dask workers), where each of
    ``n_workers`` concurrent tasks gets at most ``cpu_count // n_workers``
    threads so that the workers together do not oversubscribe the cores. In
    the search's own process (``parent_pid=None``: stacks training in
    threads) the per-process setting is shared out the same way while they
    train. Either way the setting is restored after.
    """
    if parent_pid is not None and os.getpid() == parent_pid:
        yield
        return
    before = torch.get_num_threads()
    cap = max(1, (os.cpu_count() or 1) // max(1, n_workers))
    if (parent_pid is not None or n_workers > 1) and before > cap:
        torch.set_num_threads(cap)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _hooked(net, fit):
    """``net.fit`` replaced by ``fit(estimator, X, y, sample_weight)`` (a partial)."""
    fit.__name__ = "fit"
    return partial(_fit_context(prefer_skip_nested_validation=True)(fit), net)


def _fit_until_net(estimator, X, y, train, fit_params, net_fit):
    """Run ``estimator.fit`` on the training fold with the network's fit hooked."""
    net, _ = find_net(estimator)
    fit_params = _check_method_params(X, params=fit_params or {}, indices=train)
    X_train, y_train = _safe_split(estimator, X, y, train)
    net.fit = _hooked(net, net_fit)
    try:
        if y_train is None:
            estimator.fit(X_train, **fit_params)
        else:
            estimator.fit(X_train, y_train, **fit_params)
    finally:
        del net.fit
    return net


def _state_of(net, monitor, rows, seconds, reason):
    state = replace(monitor.state)
    return TrainedState(
        module_state={
            k: v.detach().clone() for k, v in net.module_.state_dict().items()
        },
        history=tuple(rows),
        state=state,
        stop_reason=reason,
        seconds=seconds,
    )


def _rows(history):
    return [{k: row[k] for k in _HISTORY_KEYS if k in row} for row in history]


# --------------------------------------------------------------------------- one run


def _train_run(
    estimator,
    X,
    y,
    *,
    train,
    common,
    epoch_param,
    epochs,
    fit_params,
    parent_pid,
    n_workers,
):
    """Train one run through the network's own ``fit``; a state per epoch count.

    Returns ``{epoch: (registry key, TrainedState)}``, or ``{}`` when the run
    fails (scikit-learn's fit then trains and reports each candidate).
    """
    with _threads(n_workers, parent_pid):
        wanted = sorted(set(epochs))
        last = wanted[-1]
        estimator = estimator.set_params(**clone(common, safe=False))
        estimator.set_params(**{epoch_param: last})
        start = time.time()
        states, seen = {}, []

        def on_epoch(epoch, skorch_net, monitor, stopping):
            if epoch in wanted and epoch != last and not stopping:
                rows = _rows(skorch_net.history)
                states[epoch] = _state_of(
                    skorch_net, monitor, rows, time.time() - start, None
                )

        def fit(net, X, y, sample_weight=None):
            seen.append(registry.fingerprint(X, y, sample_weight))
            return net._fit(
                X, y, sample_weight, incremental=False, epoch_callback=on_epoch
            )

        try:
            net = _fit_until_net(estimator, X, y, train, fit_params, fit)
        except Exception:
            return {}
        skorch_net = net.net_
        monitor = dict(skorch_net.callbacks_)["monitor"]
        final = _state_of(
            skorch_net, monitor, net.history_, time.time() - start, monitor.stop_reason
        )
        params = net.get_params(deep=False)
        return {
            k: (
                registry.key(net, {**params, EPOCH_PARAM: k}, seen[-1]),
                states.get(k, final),
            )
            for k in wanted
        }


# --------------------------------------------------------------------------- stacks


def _prepare_member(estimator, X, y, *, train, common, epoch_param, last, fit_params):
    """The network of one (run, fold), validated and planned, not trained.

    Returns ``(net, fingerprint, prepared)``; raises what the fit would.
    """
    estimator = estimator.set_params(**clone(common, safe=False))
    estimator.set_params(**{epoch_param: last})
    seen = {}

    def fit(net, X, y, sample_weight=None):
        seen["data"] = registry.fingerprint(X, y, sample_weight)
        seen["prepared"] = net._prepare(X, y, sample_weight, incremental=False)
        return net

    net = _fit_until_net(estimator, X, y, train, fit_params, fit)
    return net, seen["data"], seen["prepared"]
