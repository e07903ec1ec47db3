"""Trained states that a search prepared, for scikit-learn's own search to use.

The epoch-sharing searches train their networks first (one run per fold for
all the epoch counts of a candidate group), then hand over to scikit-learn's
``BaseSearchCV.fit``. There every candidate's network is cloned, set and
fitted as usual; its ``fit`` first asks :func:`take` whether a state trained
for exactly these parameters on exactly these data is on offer, and uses it
instead of training. The key is the estimator's class, its parameters and a
fingerprint of ``(X, y, sample_weight)`` as ``fit`` receives them, so a state
can only stand in for the fit it is: anything else (other data, other
parameters, a refit on the whole data) trains as always. The registry is
empty outside :func:`offered`, and then costs ``fit`` nothing.
"""

import hashlib
import threading
from contextlib import contextmanager

import joblib
import numpy as np
import scipy.sparse as sp

_LOCK = threading.Lock()
_STATES = {}


def fingerprint(X, y=None, sample_weight=None):
    """A hash of the data a ``fit`` receives (SHA-1 of numeric buffers)."""
    return tuple(_digest(a) for a in (X, y, sample_weight))


def _digest(a):
    if a is None:
        return None
    if sp.issparse(a):
        a = a.tocsr()
        return ("csr", a.shape, _digest(a.data), _digest(a.indices), _digest(a.indptr))
    if isinstance(a, np.ndarray) and a.dtype.kind in "biufc":
        # about 1 GB/s: a 10,000 x 784 float64 fold in ~60 ms (joblib.hash: ~150)
        data = np.ascontiguousarray(a)
        return (a.shape, a.dtype.str, hashlib.sha1(data.view(np.uint8)).hexdigest())
    return joblib.hash(a)  # dataframes, lists, object arrays


def key(estimator, params, data):
    """Registry key of an estimator class, its parameters and a data fingerprint."""
    cls = type(estimator)
    return (f"{cls.__module__}.{cls.__qualname__}", joblib.hash(params), data)


class Offer:
    """The states on offer during one search; ``taken`` holds the keys used."""

    def __init__(self, states):
        self.states = states
        self.taken = set()
        self.pending = []

    def add(self, states):
        """Offer ``states`` too, until the offer ends."""
        with _LOCK:
            self.states.update(states)
            _STATES.update(states)

    def promise(self, pending):
        """Offer what ``pending.result()`` returns, once a ``fit`` looks for it.

        ``pending`` is work started ahead on a guess (e.g. a refit training
        in another process, :class:`~sknets.model_selection._workers.ForkedCall`):
        the first :func:`take` that finds nothing waits for it and offers its
        states (a dict of key -> state, maybe empty); ``pending.close()`` ends
        it when the offer ends first.
        """
        with _LOCK:
            self.pending.append(pending)

    def _collect(self):
        with _LOCK:
            pending, self.pending = self.pending, []
        for p in pending:
            self.add(p.result())
        return bool(pending)


_OFFERS = []


@contextmanager
def offered(states):
    """Offer ``states`` (a dict of key -> fitted attributes) while in the block."""
    offer = Offer(dict(states))
    with _LOCK:
        _OFFERS.append(offer)
        _STATES.update(offer.states)
    try:
        yield offer
    finally:
        with _LOCK:
            _OFFERS.remove(offer)
            for k in offer.states:
                _STATES.pop(k, None)
            pending, offer.pending = offer.pending, []
        for p in pending:
            p.close()


def take(estimator, X, y=None, sample_weight=None):
    """The fitted attributes on offer for this ``fit``, or None (train as usual)."""
    if not _STATES and not any(offer.pending for offer in _OFFERS):
        return None
    k = key(
        estimator, estimator.get_params(deep=False), fingerprint(X, y, sample_weight)
    )
    state = _pop(k)
    if state is None and any([offer._collect() for offer in list(_OFFERS)]):
        state = _pop(k)  # a state promised ahead, now in
    return state


def _pop(k):
    with _LOCK:
        state = _STATES.pop(k, None)
        if state is not None:
            for offer in _OFFERS:
                if k in offer.states:
                    offer.taken.add(k)
    return state
