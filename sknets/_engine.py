"""The training engine: skorch, configured through its public API.

skorch runs the loop (``NeuralNet.partial_fit`` -> ``fit_loop``: epochs,
train and validation steps, optimizer calls, callbacks, history). A sknets
estimator resolves its parameters into a :class:`~sknets._plan.TrainingPlan`
and :func:`build_net` turns the plan into constructor arguments of
:class:`SkorchNet`; nothing is set on the net after it is built. What this
module contributes, each through a door skorch documents:

- ``dataset=ArrayDataset``, ``iterator_train=BatchIterator`` (and
  ``iterator_valid``): whole batches sliced out of tensors placed on the device
  once, sparse rows handed over as CSR batches or densified one batch at a
  time; never one ``__getitem__`` call per sample. The same classes serve
  ``net_.predict`` / ``net_.predict_proba`` on new data.
- ``criterion=WeightedLoss`` and :meth:`SkorchNet.get_loss`: the weighted mean
  of scikit-learn's per-sample losses plus an elastic-net penalty on weights
  (not biases); ``predict_nonlinearity=Probabilities``.
- ``train_split=predefined_split(...)``: the plan's validation rows.
- named callbacks: ``'phases'`` (:class:`PhaseSwitch`: learning rate and
  frozen backbone per phase, in the manner of skorch's ``Unfreezer``) and
  ``'monitor'`` (:class:`EpochMonitor`: scikit-learn's stopping rules, SGD
  schedules, validation score, divergence guard, ``verbose`` lines), after
  skorch's default ones (``print_log`` off).
- :func:`train`: ``partial_fit`` with Ctrl-C told apart from a callback's stop:
  a SIGINT is re-raised after skorch has ended the loop cleanly.
"""

import copy
import math
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.helper import predefined_split
from torch import nn

from sknets._sparse import take_rows

# torch's global generator is one per process: threads that seed and draw from
# it (initializations, dropout masks) take turns (see :func:`seeded`)
RNG_LOCK = threading.RLock()


@contextmanager
def seeded(seed=None, devices=()):
    """torch's global RNG for this thread alone: forked, seeded, then restored.

    Holds :data:`RNG_LOCK`, so that fits running in threads (a search's
    ``threading`` backend) neither interleave their draws nor restore each
    other's generator state.
    """
    with RNG_LOCK, torch.random.fork_rng(devices=list(devices)):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield


def draws_random(module):
    """Whether training ``module`` draws from torch's global RNG (dropout)."""
    kinds = (
        nn.Dropout,
        nn.Dropout1d,
        nn.Dropout2d,
        nn.Dropout3d,
        nn.AlphaDropout,
        nn.FeatureAlphaDropout,
    )
    return any(isinstance(m, kinds) and m.p > 0 for m in module.modules())


class StopTraining(KeyboardInterrupt):
    """Raised by :class:`EpochMonitor` to end skorch's ``fit_loop``.

    A callback ends skorch's training by raising ``KeyboardInterrupt``
    (skorch's own ``EarlyStopping`` does); a user's Ctrl-C is recognised by
    its signal instead (see :func:`train`).
    """


# --------------------------------------------------------------------------- data


class ArrayDataset(torch.utils.data.Dataset):
    """Features, targets and sample weights held as whole arrays.

    Dense ``X`` becomes one tensor without a copy when its dtype already
    matches (``torch.from_numpy`` shares memory, read-only arrays and
    ``numpy.memmap`` included) and is moved to ``device`` once; with
    ``lazy=True`` it is never converted whole, only batch by batch. On a GPU,
    data larger than half the free device memory stays on the host and is
    streamed in pinned batches. Sparse ``X`` stays a CSR matrix on the host.
    :meth:`subset` gives a view of some rows (the training and validation
    rows of one placed copy) without copying anything.

    skorch builds one for ``net_.predict(X)`` (``dataset=ArrayDataset`` with
    ``dataset__lazy=True``); the estimators build theirs themselves.
    """

    def __init__(
        self,
        X,
        y=None,
        sample_weight=None,
        *,
        device="cpu",
        dtype=torch.float32,
        lazy=False,
        sparse_batches=False,
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.sparse = sp.issparse(X)
        # sparse_batches: hand the module torch CSR batches (its first layer
        # is a Linear, which multiplies them without densifying)
        self.sparse_batches = self.sparse and sparse_batches
        if not self.sparse and not isinstance(X, torch.Tensor):
            X = np.asarray(X)
        # lazy: leave X where and as it is, cast batch by batch (bounded memory,
        # used for prediction); else convert once, up front (training).
        self.host = self.sparse or lazy or not fits_on_device(X, dtype, self.device)
        store = torch.device("cpu") if self.host else self.device
        if self.sparse:
            self.X = X.tocsr()
        else:
            self.X = as_tensor(X, None if lazy else dtype, store)
        self.y = None if y is None else as_tensor(y, None, store)
        self.w = (
            None if sample_weight is None else as_tensor(sample_weight, dtype, store)
        )
        self.rows = None

    def subset(self, rows):
        """The same data restricted to ``rows`` (row numbers; nothing copied)."""
        view = copy.copy(self)
        store = torch.device("cpu") if self.host else self.device
        view.rows = torch.as_tensor(np.array(rows, dtype=np.int64), device=store)
        return view

    def __len__(self):
        return self.X.shape[0] if self.rows is None else len(self.rows)

    def __getitem__(self, i):  # pragma: no cover - never on our hot path
        return self.take(slice(i, i + 1))

    def targets(self):
        """``(y, w)`` of the dataset's rows, on its storage device."""
        if self.rows is None:
            return self.y, self.w
        return (
            None if self.y is None else self.y[self.rows],
            None if self.w is None else self.w[self.rows],
        )

    def take(self, index):
        """Return ``(X_batch, (y_batch, w_batch))`` for a slice or index tensor."""
        if self.rows is not None:
            index = self.rows[index]
        if self.sparse:
            rows = index if isinstance(index, slice) else index.cpu().numpy()
            if self.sparse_batches:
                Xb = csr_tensor(take_rows(self.X, rows), self.X.shape[1], self.dtype)
            else:
                Xb = torch.from_numpy(np.asarray(self.X[rows].toarray(), order="C"))
        else:
            Xb = self.X[index]
        yb = None if self.y is None else self.y[index]
        wb = None if self.w is None else self.w[index]
        if self.host:
            Xb, yb, wb = (to_device(t, self.device, self.dtype) for t in (Xb, yb, wb))
        return Xb, (yb, wb)


def csr_tensor(arrays, n_cols, dtype):
    """A torch CSR tensor sharing the ``(indptr, indices, data)`` arrays."""
    indptr, indices, data = arrays
    index = np.int64 if indices.dtype != indptr.dtype else indices.dtype
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
        return torch.sparse_csr_tensor(
            torch.from_numpy(indptr.astype(index, copy=False)),
            torch.from_numpy(indices.astype(index, copy=False)),
            torch.from_numpy(data).to(dtype),
            size=(len(indptr) - 1, n_cols),
            check_invariants=False,
        )


def fits_on_device(X, dtype, device):
    """Whether ``X`` in ``dtype`` takes at most half the free memory of a GPU."""
    if device.type != "cuda":
        return True
    nbytes = X.shape[0] * int(np.prod(X.shape[1:])) * torch.finfo(dtype).bits // 8
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 2


def to_device(t, device, dtype=None):
    """Move a host batch to ``device`` (pinned, asynchronous on CUDA)."""
    if t is None:
        return None
    if t.is_floating_point() and dtype is not None:
        t = t.to(dtype)
    if device.type == "cuda" and t.layout == torch.strided:
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def as_tensor(a, dtype, device):
    """Tensor view of ``a`` (no copy when dtype and device already match)."""
    if isinstance(a, torch.Tensor):
        t = a
    else:
        a = np.asarray(a)
        if a.dtype == bool:
            a = a.astype(np.uint8)
        t = from_numpy(a)
    return t.to(device=device, dtype=dtype if dtype is not None else t.dtype)


def from_numpy(a):
    """``torch.from_numpy``, read-only arrays (memmaps) included: only read."""
    if a.flags.writeable:
        return torch.from_numpy(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array")
        return torch.from_numpy(a)


class BatchIterator:
    """Iterate over an :class:`ArrayDataset` in batches of whole-tensor slices.

    A new permutation is drawn for each pass when ``shuffle`` is true, from a
    generator seeded once, so runs with the same seed see the same batches.
    skorch builds one per ``fit_loop`` from ``iterator_train__shuffle``,
    ``iterator_train__seed`` and ``batch_size`` (``iterator_valid__batch_size``
    for validation and prediction).
    """

    def __init__(self, dataset, batch_size, shuffle=False, seed=0):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self):
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle and n > 1:
            order = torch.randperm(n, generator=self.generator)
            if not self.dataset.host:
                order = order.to(self.dataset.X.device)
            for start in range(0, n, self.batch_size):
                yield self.dataset.take(order[start : start + self.batch_size])
        else:
            for start in range(0, n, self.batch_size):
                yield self.dataset.take(slice(start, start + self.batch_size))


# --------------------------------------------------------------------------- losses


def sample_losses(raw, y, out_activation):
    """Per-sample loss with scikit-learn's MLP definitions.

    ``softmax``: cross-entropy (``y`` holds class indices); ``logistic``:
    binary cross-entropy summed over outputs; ``identity``: half squared error
    averaged over outputs; ``exp``: half Poisson deviance summed over outputs.
    """
    if out_activation == "softmax":
        # log-sum-exp minus the true logit: F.cross_entropy's value to an ulp,
        # in half its time on narrow outputs (its log_softmax runs per row)
        true = raw.gather(1, y.long().unsqueeze(1)).squeeze(1)
        return raw.logsumexp(1) - true
    if out_activation == "logistic":
        y = y.to(raw.dtype).reshape(raw.shape)
        return F.binary_cross_entropy_with_logits(raw, y, reduction="none").sum(1)
    y = y.to(raw.dtype).reshape(raw.shape)
    if out_activation == "identity":
        return 0.5 * ((raw - y) ** 2).mean(1)
    if out_activation == "exp":
        return (torch.xlogy(y, y) - y * raw - y + torch.exp(raw)).sum(1)
    raise ValueError(f"unknown output activation {out_activation!r}")


def weighted_mean(losses, w):
    """``sum(w * l) / sum(w)``, or the plain mean without weights."""
    if w is None:
        return losses.mean()
    return (w * losses).sum() / w.sum()


def penalized_weights(module):
    """Weights of the linear and convolutional layers (biases and norms excluded).

    The parameters themselves: an input-major first layer's ``weight_t`` (its
    sums of squares and of absolute values are the weight's).
    """
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    return [
        getattr(m, "weight_t", None) if hasattr(m, "weight_t") else m.weight
        for m in module.modules()
        if isinstance(m, kinds)
    ]


def output_activation(raw, out_activation):
    """Turn raw network outputs into predictions (probabilities for classifiers)."""
    if out_activation == "softmax":
        return torch.softmax(raw, dim=1)
    if out_activation == "logistic":
        return torch.sigmoid(raw)
    if out_activation == "exp":
        return torch.exp(raw)
    return raw


class WeightedLoss(nn.Module):
    """skorch's criterion: ``sum(w * l) / sum(w)`` of :func:`sample_losses`.

    ``y_true`` is the ``(y, w)`` pair of a batch (``w`` None: the plain mean).
    """

    def __init__(self, out_activation="identity"):
        super().__init__()
        self.out_activation = out_activation

    def forward(self, raw, y_true):
        y, w = y_true
        if w is None:  # the same means, in one reduction (fewer kernels)
            act = self.out_activation
            if act == "softmax":
                return F.cross_entropy(raw, y)
            if act == "logistic":
                y = y.to(raw.dtype).reshape(raw.shape)
                total = F.binary_cross_entropy_with_logits(raw, y, reduction="sum")
                return total / raw.shape[0]
            if act == "identity":
                return 0.5 * F.mse_loss(raw, y.to(raw.dtype).reshape(raw.shape))
        return weighted_mean(sample_losses(raw, y, self.out_activation), w)


class Probabilities:
    """skorch's ``predict_nonlinearity``: what the estimator's predictions use.

    Softmax rows, sigmoid columns (one output: the two columns ``[1 - p, p]``
    of a binary ``predict_proba``), ``exp`` for Poisson, identity otherwise, so
    that ``net_.predict_proba(X)`` equals the classifier's ``predict_proba``.
    """

    def __init__(self, out_activation):
        self.out_activation = out_activation

    def __call__(self, raw):
        out = output_activation(raw, self.out_activation)
        if self.out_activation == "logistic" and out.shape[1] == 1:
            out = torch.cat([1 - out, out], dim=1)
        return out


def validation_score(name, raw, y, w, out_activation):
    """``'accuracy'`` (subset accuracy for multilabel) or ``'r2'`` of raw outputs."""
    if name == "accuracy":
        if out_activation == "softmax":
            correct = raw.argmax(1) == y
        else:
            correct = ((raw > 0) == (y.reshape(raw.shape) > 0)).all(1)
        correct = correct.to(raw.dtype)
        return float(correct.mean() if w is None else (w * correct).sum() / w.sum())
    pred = output_activation(raw, out_activation)
    w = None if w is None else w.cpu().numpy()
    return r2_score(y.cpu().numpy(), pred.cpu().numpy(), sample_weight=w)


# --------------------------------------------------------------------------- the net


class _LastStepAccumulator:
    """Keep the last closure evaluation (LBFGS calls the closure many times)."""

    def __init__(self):
        self.step = None

    def store_step(self, step):
        self.step = step

    def get_step(self):
        return self.step


class SkorchNet(NeuralNet):
    """skorch ``NeuralNet`` with sknets' penalty and forward options.

    Parameters
    ----------
    module, criterion, ... : see ``skorch.NeuralNet``
        Everything skorch takes; :func:`build_net` passes them from a plan.
    alpha : float, default=0.0
        Strength of the penalty on weights, scaled as scikit-learn's MLP does
        (``alpha / 2 * ||W||^2 / n`` per batch of total weight ``n``).
    l1_ratio : float, default=0.0
        Share of L1 in the penalty (elastic net).
    forward_compile : dict or None, default=None
        Keyword arguments of ``torch.compile`` for the forward passes (the
        compiled wrapper is built on first use and never pickled), or None.
    autocast : bool, default=False
        Run forward passes under bfloat16 autocast; losses and outputs stay
        in the module's precision.
    """

    def __init__(
        self,
        module,
        *args,
        alpha=0.0,
        l1_ratio=0.0,
        forward_compile=None,
        autocast=False,
        **kwargs,
    ):
        super().__init__(module, *args, **kwargs)
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.forward_compile = forward_compile
        self.autocast = autocast

    def forward_module(self):
        """``module_``, or its ``torch.compile`` wrapper (built once, not pickled)."""
        if self.forward_compile is None:
            return self.module_
        options = dict(self.forward_compile)
        cached = self.__dict__.get("_compiled")
        if cached is None or cached[0] is not self.module_ or cached[1] != options:
            cached = (self.module_, options, torch.compile(self.module_, **options))
            self.__dict__["_compiled"] = cached
        return cached[2]

    def infer(self, x, **fit_params):
        """Forward pass of one batch (compiled and autocast when asked)."""
        if x.device != torch.device(self.device):
            x = x.to(self.device)
        # sparse CSR batches go through scipy: nothing to compile there
        compiled = x.layout == torch.strided
        forward = self.forward_module() if compiled else self.module_
        if not self.autocast:
            return forward(x, **fit_params)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = forward(x, **fit_params)
        # losses and probabilities in the module's own precision
        return out.to(next(self.module_.parameters()).dtype)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_compiled", None)
        state.pop("_penalized", None)
        return state

    def get_train_step_accumulator(self):
        if isinstance(self.optimizer_, torch.optim.LBFGS):
            return _LastStepAccumulator()
        return super().get_train_step_accumulator()

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion's weighted mean loss, plus the penalty when training."""
        loss = self.criterion_(y_pred, y_true)
        if training and self.alpha > 0:
            y, w = y_true
            loss = loss + self.penalty(len(y) if w is None else w.sum())
        return loss

    def penalty(self, n):
        """sklearn's ``alpha/2 * ||W||^2 / n``, mixed with L1 by ``l1_ratio``."""
        cached = self.__dict__.get("_penalized")  # the module is walked once
        if cached is None or cached[0] is not self.module_:
            cached = (self.module_, penalized_weights(self.module_))
            self.__dict__["_penalized"] = cached
        params = [p for p in cached[1] if p.requires_grad]  # phases freeze some
        value = 0.0
        if self.l1_ratio < 1:
            squares = sum((p * p).sum() for p in params)
            value = (0.5 * (1.0 - self.l1_ratio) * self.alpha) * squares
        if self.l1_ratio > 0:
            value = value + (self.l1_ratio * self.alpha) * sum(
                p.abs().sum() for p in params
            )
        return value / n


# --------------------------------------------------------------------------- callbacks


@dataclass
class StoppingState:
    """What scikit-learn's MLP carries from epoch to epoch (and across warm fits)."""

    no_improvement_count: int = 0
    best_loss: float = np.inf
    best_score: float = -np.inf
    best_state: dict | None = None
    best_epoch: int | None = None
    t: int = 0
    learning_rate: float | None = None
    base_learning_rate: float | None = None


def epoch_rules(rules, state, loss, score=None):
    """scikit-learn's MLP end-of-epoch rules, applied to ``state`` in place.

    One function for a single network (:class:`EpochMonitor`) and for every
    member of a stacked one (:mod:`sknets._members`).

    Parameters
    ----------
    rules : StoppingRules
        ``tol``, ``n_iter_no_change``, ``early_stopping``, the SGD schedule.
    state : StoppingState
        Changed in place: the no-improvement count, the best loss or score,
        the learning rate (``invscaling``: every epoch; ``adaptive``: divided
        by 5 instead of stopping).
    loss : float
        The epoch's training loss.
    score : float or None
        The epoch's validation score (``early_stopping``).

    Returns
    -------
    stop : bool
        Training should end now.
    improved : bool
        The validation score is the best so far (keep these weights).
    message : str or None
        What happened, for ``verbose`` output.
    """
    improved = False
    if rules.early_stopping:
        if score < state.best_score + rules.tol:
            state.no_improvement_count += 1
        else:
            state.no_improvement_count = 0
        if score > state.best_score:
            state.best_score = score
            improved = True
    else:
        if loss > state.best_loss - rules.tol:
            state.no_improvement_count += 1
        else:
            state.no_improvement_count = 0
        state.best_loss = min(state.best_loss, loss)
    if rules.lr_schedule == "invscaling":
        decay = (state.t + 1) ** rules.power_t
        state.learning_rate = state.base_learning_rate / decay
    if state.no_improvement_count <= rules.n_iter_no_change:
        return False, improved, None
    what = "Validation score" if rules.early_stopping else "Training loss"
    msg = (
        f"{what} did not improve more than tol={rules.tol:f} for "
        f"{rules.n_iter_no_change} consecutive epochs."
    )
    if rules.lr_schedule == "adaptive" and state.learning_rate > 1e-6:
        state.learning_rate = state.learning_rate / 5.0
        state.no_improvement_count = 0
        lr = state.learning_rate
        return False, improved, f"{msg} Setting learning rate to {lr:f}"
    return True, improved, f"{msg} Stopping."


class PhaseSwitch(Callback):
    """Walk through the plan's phases: learning rate and frozen part per phase.

    In the manner of skorch's ``Freezer``/``Unfreezer``: at the start of a
    phase the module's pretrained part is frozen or unfrozen
    (``module_.set_frozen``) and every parameter group takes the phase's
    learning rate. A phase ends after its ``epochs``, or earlier when the
    monitor finds it converged (:meth:`end_phase`); the last phase runs until
    training ends.

    Parameters
    ----------
    phases : tuple of Phase
        The plan's phases.
    keep_lr : bool
        Leave the optimizer's learning rate as it is in the first phase
        (``partial_fit`` continues with the optimizer's own state).
    """

    def __init__(self, phases, keep_lr=False):
        self.phases = tuple(phases)
        self.keep_lr = keep_lr

    def on_train_begin(self, net, **kwargs):
        self.index, self.epochs_in_phase, self._end = 0, 0, False
        self._apply(net, self.phases[0], set_lr=not self.keep_lr)

    def has_next(self):
        """Whether a later phase exists."""
        return self.index + 1 < len(self.phases)

    def end_phase(self):
        """End the current phase after this epoch (it converged)."""
        self._end = True

    def on_epoch_begin(self, net, **kwargs):
        limit = self.phases[self.index].epochs
        done = self._end or (limit is not None and self.epochs_in_phase >= limit)
        if done and self.has_next():
            self.index, self.epochs_in_phase, self._end = self.index + 1, 0, False
            self._apply(net, self.phases[self.index], set_lr=True)
            monitor = dict(net.callbacks_).get("monitor")
            if monitor is not None:
                monitor.start_phase(self.phases[self.index].lr)
        self.epochs_in_phase += 1

    @staticmethod
    def _apply(net, phase, set_lr):
        if phase.frozen is not None:
            net.module_.set_frozen(phase.frozen)
        if set_lr:
            for group in net.optimizer_.param_groups:
                group["lr"] = phase.lr


class EpochMonitor(Callback):
    """scikit-learn's end-of-epoch logic as a skorch callback.

    Parameters
    ----------
    rules : StoppingRules
        ``tol``, ``n_iter_no_change``, ``early_stopping`` (track the
        validation score and restore the best weights at the end; else track
        the training loss), the SGD learning-rate schedule, the score name.
    state : StoppingState
        Where the rules start (a copy is kept; the caller's is never changed).
    out_activation : str
        For the validation score.
    verbose : int
        Print one line per epoch to stderr when positive; with 2 or more, also
        a progress bar over the batches of each epoch (tqdm).
    epoch_callback : callable or None
        ``epoch_callback(epoch, net, monitor, stopping)`` after every
        completed epoch, once the rules decided (``stopping``); the
        epoch-sharing search scores its epoch counts with it, and
        scikit-learn's callbacks end their epoch task there. A true return
        value ends training (``stop_reason="callback"``).
    """

    def __init__(
        self,
        rules,
        state,
        out_activation,
        verbose=0,
        epoch_callback=None,
        epoch_scorer=None,
    ):
        self.epoch_scorer = epoch_scorer
        self.rules = rules
        self.state = replace(state)
        self.out_activation = out_activation
        self.verbose = verbose
        self.epoch_callback = epoch_callback
        self.stop_reason = None
        self.epochs_run = 0

    def start_phase(self, lr):
        """A new phase of the plan begins at learning rate ``lr``."""
        self.state.learning_rate = self.state.base_learning_rate = lr
        self.state.no_improvement_count = 0

    def on_train_begin(self, net, **kwargs):
        self.stop_reason, self.epochs_run, self._outputs = None, 0, None

    def on_train_end(self, net, **kwargs):
        self._close_bar()
        self._outputs = None
        self.epoch_callback = None  # no closure (or its data) in the fitted net
        self.epoch_scorer = None
        if self.state.best_state is not None:  # loadable on a machine without GPU
            self.state.best_state = {
                k: v.cpu() for k, v in self.state.best_state.items()
            }

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self._start = time.perf_counter()
        self._outputs = [] if dataset_valid is not None else None
        self._bar = None
        if self.verbose >= 2 and dataset_train is not None:
            from tqdm.auto import tqdm  # comes with skorch

            self._bar = tqdm(
                total=math.ceil(len(dataset_train) / net.batch_size),
                desc=f"epoch {len(net.history)}",
                unit="batch",
                leave=False,
                file=sys.stderr,
                disable=None,  # silent when stderr is not a terminal (n_jobs workers)
            )

    def on_batch_end(self, net, training=False, y_pred=None, **kwargs):
        if training:
            if getattr(self, "_bar", None) is not None:
                self._bar.update()
        elif self._outputs is not None:
            self._outputs.append(y_pred.detach())

    def _close_bar(self):
        if getattr(self, "_bar", None) is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self._close_bar()
        h = net.history
        loss = h[-1, "train_loss"]
        self.state.t += len(dataset_train)
        if not math.isfinite(loss):
            self.stop_reason = "diverged"
            raise StopTraining
        self.epochs_run += 1
        if dataset_valid is not None:
            valid_loss, score = self._validate(net, dataset_valid)
            h.record("valid_loss", valid_loss)  # exact weighted mean, not per batch
            h.record("valid_score", score)
        if self.verbose:
            self._print(h[-1], time.perf_counter() - self._start)
        stop = self._end_of_epoch_rules(net, loss) if self.rules.stochastic else False
        if stop:
            phases = dict(net.callbacks_).get("phases")
            if phases is not None and phases.has_next():
                phases.end_phase()
                stop = False
        if self.epoch_callback is not None:
            if self.epoch_callback(self.epochs_run, net, self, stop) and not stop:
                self.stop_reason = "callback"  # a callback asked to stop
                raise StopTraining
        if stop:
            self.stop_reason = "converged"
            raise StopTraining

    def _validate(self, net, dataset):
        raw = torch.cat(self._outputs) if len(self._outputs) > 1 else self._outputs[0]
        self._outputs = None
        y, w = dataset.targets()
        y = y.to(raw.device)
        w = None if w is None else w.to(raw.device)
        valid_loss = float(net.criterion_(raw, (y, w)))
        if self.epoch_scorer is not None:  # the estimator's ``scoring``
            return valid_loss, float(self.epoch_scorer(net))
        score = validation_score(self.rules.score, raw, y, w, self.out_activation)
        return valid_loss, float(score)

    def _end_of_epoch_rules(self, net, loss):
        """scikit-learn's stopping and schedule rules; True means stop now."""
        score = net.history[-1, "valid_score"] if self.rules.early_stopping else None
        lr = self.state.learning_rate
        stop, improved, message = epoch_rules(self.rules, self.state, loss, score)
        if improved:
            self.state.best_state = _clone_state(net.module_)
            self.state.best_epoch = len(net.history)
        if self.state.learning_rate != lr:
            self._set_lr(net, self.state.learning_rate)
        if message and self.verbose:
            print(message, flush=True)
        return stop

    def _set_lr(self, net, lr):
        self.state.learning_rate = lr
        for group in net.optimizer_.param_groups:
            group["lr"] = lr

    def _print(self, row, seconds):
        """scikit-learn's MLP lines, on stdout: the loss, the validation score."""
        print(f"Iteration {row['epoch']}, loss = {row['train_loss']:.8f}", flush=True)
        if "valid_score" in row:
            print(f"Validation score: {row['valid_score']:f}", flush=True)


# --------------------------------------------------------------------------- the run


def build_net(
    plan,
    module,
    *,
    state,
    valid_batch_size,
    sparse_batches=False,
    valid=None,
    epoch_callback=None,
    previous=None,
    epoch_scorer=None,
    extra_callbacks=(),
):
    """The skorch net that carries out ``plan``, from constructor arguments only.

    Parameters
    ----------
    plan : TrainingPlan
        What to do.
    module : torch.nn.Module
        A new module (first pass) or the fitted one (continuing).
    state : StoppingState
        Where the stopping rules start.
    valid_batch_size : int
        Rows per validation and prediction batch.
    sparse_batches : bool
        The module takes CSR batches (``net_.predict`` on sparse input).
    valid : ArrayDataset or None
        The validation rows (``train_split=predefined_split(valid)``).
    epoch_callback : callable or None
        See :class:`EpochMonitor`.
    previous : SkorchNet or None
        The fitted net that this call continues: its history goes on, and
        ``partial_fit`` goes on from its optimizer's state.
    epoch_scorer : callable or None
        ``epoch_scorer(net) -> float``: the validation score of each epoch
        (the estimator's ``scoring``), instead of accuracy or R^2.
    extra_callbacks : sequence of (name, skorch callback)
        Run after sknets' own (e.g. scikit-learn's epoch tasks).

    Returns
    -------
    net : SkorchNet
        Initialized, ready for :func:`train`.
    """
    monitor = EpochMonitor(
        plan.stopping,
        state,
        plan.out_activation,
        plan.verbose,
        epoch_callback,
        epoch_scorer,
    )
    optimizer_kwargs = {f"optimizer__{k}": v for k, v in plan.optimizer_kwargs.items()}
    net = SkorchNet(
        module=module,
        criterion=WeightedLoss,
        criterion__out_activation=plan.out_activation,
        optimizer=plan.optimizer,
        lr=plan.lr,
        max_epochs=plan.epochs,
        batch_size=plan.batch_size,
        iterator_train=BatchIterator,
        iterator_train__shuffle=plan.shuffle,
        iterator_train__seed=plan.shuffle_seed,
        iterator_valid=BatchIterator,
        iterator_valid__batch_size=valid_batch_size,
        dataset=ArrayDataset,
        dataset__dtype=plan.dtype,
        dataset__lazy=True,
        dataset__sparse_batches=sparse_batches,
        train_split=None if valid is None else predefined_split(valid),
        callbacks=[
            (
                "phases",
                PhaseSwitch(
                    plan.phases, keep_lr=not plan.first_pass and plan.incremental
                ),
            ),
            ("monitor", monitor),
            *plan.callbacks,  # the user's, after ours
            *extra_callbacks,
        ],
        callbacks__print_log=None,  # EpochMonitor prints (verbose)
        predict_nonlinearity=Probabilities(plan.out_activation),
        device=plan.device,
        verbose=0,
        alpha=plan.alpha,
        l1_ratio=plan.l1_ratio,
        forward_compile=(
            None if plan.forward_compile is None else dict(plan.forward_compile)
        ),
        autocast=plan.autocast,
        **optimizer_kwargs,
    )
    net.initialize()
    if previous is not None:
        net.history = previous.history
        if plan.incremental:
            net.optimizer_.load_state_dict(previous.optimizer_.state_dict())
    return net


# Set by a Ctrl-C caught in :func:`_sigint_flag`: training in other threads
# (a search's stacks) sees it at its next batch and stops too.
USER_INTERRUPT = threading.Event()


@contextmanager
def _sigint_flag():
    """Note a Ctrl-C (SIGINT) while training, then let it do what it does.

    The handler that was there before still runs (Python's raises
    ``KeyboardInterrupt``, which skorch's ``partial_fit`` catches to end the
    loop cleanly); the flag says that the interrupt came from the user, not
    from a callback, and :data:`USER_INTERRUPT` tells training threads. Outside
    the main thread signals cannot be handled, and nothing changes.
    """
    flag = {"interrupted": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    USER_INTERRUPT.clear()
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN or previous is None:
        yield flag
        return

    def handler(signum, frame):
        if not callable(previous):  # SIG_DFL: Python would end the process
            flag["interrupted"] = True
            USER_INTERRUPT.set()
            raise KeyboardInterrupt
        try:
            previous(signum, frame)
        except KeyboardInterrupt:
            flag["interrupted"] = True
            USER_INTERRUPT.set()
            raise

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def train(net, dataset, plan):
    """Run skorch's ``partial_fit`` on ``dataset``; True when Ctrl-C cut it short.

    A stop requested by a callback (``KeyboardInterrupt`` raised by
    :class:`EpochMonitor`, or by skorch's own ``EarlyStopping``) ends training
    normally, as skorch intends. A user's Ctrl-C also ends skorch's loop
    cleanly, and is reported here so that the caller can keep the completed
    epochs and then re-raise it. The epoch that was cut short is dropped from
    the history.
    """
    start = len(net.history)
    with _sigint_flag() as flag:
        try:
            net.partial_fit(dataset, None)
        except torch.OutOfMemoryError as exc:
            raise torch.OutOfMemoryError(
                f"{plan.device} ran out of memory while training with batch_size="
                f"{plan.batch_size}. Use a smaller batch_size, a smaller network, "
                f"dtype='float32', or device='cpu'. ({exc})"
            ) from exc
    monitor = dict(net.callbacks_)["monitor"]
    del net.history[start + monitor.epochs_run :]  # an epoch cut short, if any
    return flag["interrupted"]


class Rollback:
    """Weights and optimizer state of a fitted net, to undo a failed continuation.

    A continuing fit trains the fitted module in place, and ``partial_fit``
    steps optimizer state that it shares with the fitted net. :meth:`save`
    copies those tensors into buffers allocated on the first call and reused
    afterwards (``copy_``: no allocation and no deep copy per ``partial_fit``);
    :meth:`restore` copies them back in place. Held by the estimator, never
    pickled.
    """

    def __init__(self):
        self._buffers = None

    @staticmethod
    def _tensors(net):
        tensors = list(net.module_.state_dict(keep_vars=True).values())
        for state in net.optimizer_.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        return [t.detach() for t in tensors]

    def save(self, net):
        """Remember ``net``'s weights and optimizer state."""
        tensors = self._tensors(net)
        buffers = self._buffers
        if (
            buffers is not None
            and len(buffers) == len(tensors)
            and all(
                b.shape == t.shape and b.dtype == t.dtype and b.device == t.device
                for b, t in zip(buffers, tensors, strict=True)
            )
        ):
            for b, t in zip(buffers, tensors, strict=True):
                b.copy_(t)
        else:
            self._buffers = [t.clone() for t in tensors]
        return self

    def restore(self, net):
        """Put the remembered weights and optimizer state back in place."""
        with torch.no_grad():
            for t, b in zip(self._tensors(net), self._buffers, strict=True):
                t.copy_(b)


# --------------------------------------------------------------------------- helpers


def _clone_state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def prediction_rows(width):
    """Rows per prediction batch for activations ``width`` values wide."""
    return int(np.clip(2**22 // max(width, 1), 64, 8192))


def widest_activation(module, n_features):
    """Largest number of values one input row produces in any layer of ``module``.

    Measured with forward hooks on one all-zero row, in eval mode.
    """
    param = next(module.parameters(), None)
    kw = {} if param is None else {"dtype": param.dtype, "device": param.device}
    widths = [0]

    def record(layer, args, out):
        if isinstance(out, torch.Tensor):
            widths.append(out.numel())

    hooks = [m.register_forward_hook(record) for m in module.modules()]
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            module(torch.zeros(1, n_features, **kw))
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()
    return max(widths)


def predict_raw(module, X, batch_size, forward=None):
    """Raw outputs of ``module`` for an :class:`ArrayDataset` or a batch, in eval mode.

    Batches are large and run under ``torch.inference_mode``, through
    ``forward`` (e.g. :meth:`SkorchNet.infer`) when given. A module in train
    mode is put in eval mode for the call and back afterwards; fitted modules
    are left in eval mode, so predictions toggle nothing.
    """
    forward = module if forward is None else forward
    was_training = module.training
    if was_training:
        module.eval()
    try:
        with torch.inference_mode():
            if isinstance(X, torch.Tensor):  # one batch, already a tensor
                return forward(X)
            if len(X) <= batch_size:  # one batch: no iterator
                return forward(X.take(slice(None))[0])
            outs = [
                forward(Xb)
                for Xb, _ in BatchIterator(X, max(int(batch_size), 1), False, 0)
            ]
    finally:
        if was_training:
            module.train()
    return torch.cat(outs) if len(outs) > 1 else outs[0]
