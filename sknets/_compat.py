"""Every private name of scikit-learn, scipy and torch that sknets uses.

The rest of the package imports these from here and nowhere else, so that a
change in a dependency breaks one file, with a clear message or a fallback,
instead of a ``TypeError`` deep in training (LightGBM's ``compat.py`` is the
model). Each entry says what it is for and when it can go.
"""

import functools
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator

__all__ = [
    "Interval",
    "Options",
    "ParamNamesCache",
    "StrOptions",
    "check_matplotlib_support",
    "check_method_params",
    "check_partial_fit_first_call",
    "check_sample_weight",
    "fit_context",
    "fused_adam",
    "fused_sgd",
    "joblib_default_backend",
    "safe_split",
    "sparsetools",
]


# --------------------------------------------------------------------------- joblib

try:
    # The backend joblib would use now (``parallel_config``, else loky): a
    # search's stacks train in forked processes only when the user chose
    # none. Not in joblib's documented API (``joblib.parallel`` module
    # level, there since joblib 0.10). Can go when joblib documents a way to
    # read the active configuration.
    from joblib.parallel import get_active_backend as _get_active_backend
except ImportError:  # pragma: no cover - depends on the installed joblib
    _get_active_backend = None


def joblib_default_backend():
    """Whether joblib's active backend is its default, loky (None: unknown)."""
    if _get_active_backend is None:  # pragma: no cover
        return None
    try:
        backend = _get_active_backend()[0]
    except Exception:  # pragma: no cover - a changed signature
        return None
    return type(backend).__name__ == "LokyBackend"


# --------------------------------------------------------------------------- sklearn

# Parameter constraints. scikit-learn has no public form of these; every
# third-party estimator that validates like scikit-learn imports them. Can go
# when scikit-learn makes them public.
from sklearn.utils._param_validation import Interval, Options, StrOptions

try:
    # Validates parameters once per outer fit and skips nested validation.
    # Can go when scikit-learn exposes it publicly.
    from sklearn.base import _fit_context as fit_context
except ImportError:  # pragma: no cover - depends on the installed scikit-learn

    def fit_context(prefer_skip_nested_validation):
        """Fallback: validate the parameters, then fit."""

        def decorator(fit_method):
            @functools.wraps(fit_method)
            def wrapper(estimator, *args, **kwargs):
                estimator._validate_params()
                return fit_method(estimator, *args, **kwargs)

            return wrapper

        return decorator


try:
    # ``partial_fit``'s first-call rule for ``classes``, with scikit-learn's
    # messages. Can go when it is public.
    from sklearn.utils.multiclass import (
        _check_partial_fit_first_call as check_partial_fit_first_call,
    )
except ImportError:  # pragma: no cover - depends on the installed scikit-learn

    def check_partial_fit_first_call(clf, classes=None):
        """Fallback with scikit-learn's behaviour and messages."""
        if getattr(clf, "classes_", None) is None and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is not None:
            if getattr(clf, "classes_", None) is not None:
                if not np.array_equal(clf.classes_, np.unique(classes)):
                    raise ValueError(
                        f"`classes={classes!r}` is not the same as on last call "
                        f"to partial_fit, was: {clf.classes_!r}"
                    )
            else:
                clf.classes_ = np.unique(classes)
                return True
        return False


try:
    # sample_weight validation with scikit-learn's messages. Can go when it is
    # public.
    from sklearn.utils.validation import _check_sample_weight as check_sample_weight
except ImportError:  # pragma: no cover - depends on the installed scikit-learn

    def check_sample_weight(sample_weight, X, dtype=None):
        """Fallback: a 1-D float array with one weight per row of X."""
        n = X.shape[0]
        if sample_weight is None:
            return np.ones(n, dtype=dtype or np.float64)
        w = np.asarray(sample_weight, dtype=dtype or np.float64)
        if w.ndim == 0:
            return np.full(n, w, dtype=w.dtype)
        if w.shape != (n,):
            raise ValueError(f"sample_weight.shape == {w.shape}, expected {(n,)}!")
        return w


try:
    # matplotlib's lazy import with scikit-learn's message.
    from sklearn.utils._optional_dependencies import check_matplotlib_support
except ImportError:  # pragma: no cover - depends on the installed scikit-learn

    def check_matplotlib_support(caller_name):
        """Fallback: import matplotlib or say who needs it."""
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f"{caller_name} requires matplotlib. You can install matplotlib "
                "with `pip install matplotlib`"
            ) from exc


# ``BaseEstimator._get_param_names`` reads ``inspect.signature(__init__)`` on
# every ``get_params``, and a search's ``clone``/``set_params``/``get_params``
# call it thousands of times (the 120 pick-ups of the halving benchmark spend
# about 0.15 s there). The names are a property of the class: this mixin
# (before ``BaseEstimator`` in the MRO) asks scikit-learn once per class and
# keeps its answer. Private name; without it, nothing is cached. Can go when
# scikit-learn caches the names itself.
_PARAM_NAMES = {}

if hasattr(BaseEstimator, "_get_param_names"):

    class ParamNamesCache:
        """scikit-learn's parameter names of a class, asked once per class."""

        @classmethod
        def _get_param_names(cls):
            names = _PARAM_NAMES.get(cls)
            if names is None:
                names = _PARAM_NAMES[cls] = super()._get_param_names()
            return list(names)

else:  # pragma: no cover - depends on the installed scikit-learn

    class ParamNamesCache:
        """Fallback: scikit-learn's own ``get_params``, uncached."""


# scikit-learn's experimental callback API (``sklearn.callback``, public since
# 1.9): the networks report every epoch as a task of their fit. Remove the
# fallback when the minimum is 1.9.
try:
    from sklearn.callback import (
        AutoPropagatedCallback,
        CallbackSupportMixin,
        with_callbacks,
    )

    CALLBACK_BASES = (CallbackSupportMixin,)
except ImportError:  # scikit-learn < 1.9: no callbacks to report to
    AutoPropagatedCallback = None
    CALLBACK_BASES = ()

    def with_callbacks(method):
        """Fallback: the method as it is."""
        return method


def callback_fit_state(estimator):
    """The attributes scikit-learn's callback API keeps during one ``fit``.

    ``with_callbacks`` tears the callbacks down after ``fit`` from these; a
    failed fit that restores the estimator's previous state keeps them.
    """
    keys = ("_callback_fit_ctx", "_skl_callbacks_to_teardown")
    return {k: estimator.__dict__[k] for k in keys if k in estimator.__dict__}


def auto_propagated_callbacks(estimator):
    """The auto-propagated scikit-learn callbacks set on ``estimator``."""
    if AutoPropagatedCallback is None:
        return []
    return [
        cb
        for cb in getattr(estimator, "_skl_callbacks", [])
        if isinstance(cb, AutoPropagatedCallback)
    ]


# The epoch-sharing search trains its runs on the folds before handing over
# to scikit-learn's ``fit``: it splits rows and fit parameters as scikit-learn
# does. Can go when these are public.
from sklearn.utils.metaestimators import _safe_split as safe_split
from sklearn.utils.validation import _check_method_params as check_method_params

# --------------------------------------------------------------------------- scipy

_KERNELS = ("csr_row_index", "csc_matvecs")


def _self_check(module):
    """Whether scipy's compiled CSR kernels take the arguments sknets passes.

    Runs both kernels once on a small matrix and compares with public scipy;
    any exception or mismatch (a changed signature, a removed kernel) means
    sknets uses the public operations instead: the same results, only slower.
    """
    try:
        X = sp.random(7, 5, density=0.5, format="csr", random_state=0, dtype=float)
        rows = np.array([4, 0, 4, 6], dtype=X.indptr.dtype)
        counts = X.indptr[rows + 1] - X.indptr[rows]
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(X.indptr.dtype)
        indices = np.empty(indptr[-1], dtype=X.indptr.dtype)
        data = np.empty(indptr[-1], dtype=X.dtype)
        module.csr_row_index(
            len(rows), rows, X.indptr, X.indices, X.data, indices, data
        )
        got = sp.csr_matrix((data, indices, indptr), shape=(len(rows), 5)).toarray()
        if not np.array_equal(got, X[rows].toarray()):
            return False
        dense = np.arange(14, dtype=float).reshape(7, 2)
        out = np.zeros((5, 2))
        module.csc_matvecs(
            5, 7, 2, X.indptr, X.indices, X.data, dense.ravel(), out.ravel()
        )
        return bool(np.allclose(out, X.T @ dense))
    except Exception:
        return False


def _checked(module):
    """``module`` if it has both kernels and they pass the self-check, else None."""
    if module is None or not all(hasattr(module, k) for k in _KERNELS):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return module if _self_check(module) else None


try:
    # The kernels behind scipy's own ``X[rows]`` and ``X.T @ dense``, called on
    # plain arrays (no csr_matrix built per batch). Self-checked at import;
    # None means: use public scipy. Can go if scipy exposes array-level kernels.
    from scipy.sparse import _sparsetools
except ImportError:  # pragma: no cover - depends on the installed scipy
    _sparsetools = None
sparsetools = _checked(_sparsetools)


# --------------------------------------------------------------------------- torch

# torch's fused Adam and SGD kernels: what ``torch.optim.Adam(fused=True)`` and
# ``torch.optim.SGD(fused=True)`` run, called by ``sknets._optim`` and the
# stacked Adam step. torch's ``step`` methods (and the functional
# ``torch.optim.adam.adam``) are wrapped in guards that import
# ``torch._dynamo`` (1-1.5 s) on their first call and touch it at every step.
# None where torch has no such kernel: the callers then use torch's own
# ``step``. Can go if torch exposes the kernels or stops importing dynamo there.
_fused_adam_kernel = getattr(torch, "_fused_adam_", None)
_fused_sgd_kernel = getattr(torch, "_fused_sgd_", None)


def _fused_adam(
    params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, counted=False
):
    """One fused Adam step (no weight decay, no amsgrad), in place.

    Each step count of ``steps`` is counted first (as torch's ``Adam`` does),
    unless ``counted``: then they already hold this step's number (one tensor
    may then stand for many parameters).
    """
    if not counted:
        for t in steps:
            t.add_(1)
    _fused_adam_kernel(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],
        steps,
        amsgrad=False,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=0.0,
        eps=eps,
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )


def _fused_sgd(params, grads, buffers, *, lr, momentum, dampening, nesterov, first):
    """One fused SGD step (no weight decay), in place; ``buffers`` the momentum
    buffers (none when ``momentum`` is 0; uninitialized on the ``first`` step)."""
    _fused_sgd_kernel(
        params,
        grads,
        buffers,
        weight_decay=0.0,
        momentum=momentum,
        lr=lr,
        dampening=dampening,
        nesterov=nesterov,
        maximize=False,
        is_first_step=first,
        grad_scale=None,
        found_inf=None,
    )


fused_adam = None if _fused_adam_kernel is None else _fused_adam
fused_sgd = None if _fused_sgd_kernel is None else _fused_sgd
