"""What sknets adds to skorch: data path, penalized loss, sklearn-style stopping.

skorch runs the training loop (``NeuralNet.fit_loop``: epochs, train steps,
optimizer calls, callbacks, history). This module supplies the pieces that make
it fast and make it behave like scikit-learn's MLP:

- :class:`ArrayDataset` / :class:`BatchIterator`: whole batches sliced out of
  tensors that were placed on the device once, sparse rows densified one batch
  at a time; never one ``__getitem__`` call per sample.
- :class:`SkorchNet`: a ``NeuralNet`` whose loss is the weighted mean of the
  per-sample losses plus an elastic-net penalty on weights (not biases), and
  whose history is written once per epoch, not once per batch.
- :class:`EpochMonitor`: scikit-learn's stopping rules (``tol``,
  ``n_iter_no_change``, ``early_stopping`` with best-weight restore), its
  learning-rate schedules for SGD, a divergence guard, and ``verbose`` lines.
"""

import math
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from skorch import NeuralNet
from skorch.callbacks import Callback
from torch import nn

from sknets._sparse import take_rows


class StopTraining(KeyboardInterrupt):
    """Raised by :class:`EpochMonitor` to end ``fit_loop``.

    skorch ends training cleanly on ``KeyboardInterrupt``; subclassing it lets
    us tell our own stop from a user's Ctrl-C.
    """


# --------------------------------------------------------------------------- data


class ArrayDataset(torch.utils.data.Dataset):
    """Features, targets and sample weights held as whole arrays.

    Dense ``X`` becomes one tensor without a copy when its dtype already
    matches (``torch.from_numpy`` shares memory, read-only arrays and
    ``numpy.memmap`` included) and is moved to ``device`` once; with
    ``lazy=True`` it is never converted whole, only batch by batch. On a GPU, data
    larger than half the free device memory stays on the host and is streamed
    in pinned batches. Sparse ``X`` stays a CSR matrix on the host and is
    densified one batch at a time.
    """

    def __init__(
        self,
        X,
        y=None,
        sample_weight=None,
        *,
        device,
        dtype,
        lazy=False,
        sparse_batches=False,
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.sparse = sp.issparse(X)
        # sparse_batches: hand the module torch CSR batches (its first layer
        # is a Linear, which multiplies them without densifying)
        self.sparse_batches = self.sparse and sparse_batches
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

    def __len__(self):
        return self.X.shape[0]

    def __getitem__(self, i):  # pragma: no cover - never on our hot path
        return self.take(slice(i, i + 1))

    def take(self, index):
        """Return ``(X_batch, (y_batch, w_batch))`` for a slice or index tensor."""
        if self.sparse:
            rows = index if isinstance(index, slice) else index.numpy()
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
        with warnings.catch_warnings():
            # read-only arrays (memmaps) are shared too: nothing writes to them
            warnings.filterwarnings("ignore", message="The given NumPy array")
            t = torch.from_numpy(a)
    return t.to(device=device, dtype=dtype if dtype is not None else t.dtype)


class BatchIterator:
    """Iterate over an :class:`ArrayDataset` in batches of whole-tensor slices.

    A new permutation is drawn for each pass when ``shuffle`` is true, from a
    generator seeded once, so runs with the same seed see the same batches.
    """

    def __init__(self, dataset, batch_size, shuffle, seed):
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
        return F.cross_entropy(raw, y, reduction="none")
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


def penalized_parameters(module):
    """Weights of the linear and convolutional layers (biases and norms excluded)."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    return [
        m.weight
        for m in module.modules()
        if isinstance(m, kinds) and m.weight.requires_grad
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
    """skorch ``NeuralNet`` configured by a sknets estimator.

    Extra (non-skorch) settings are plain attributes set by the estimator
    before each fit: ``out_activation``, ``alpha``, ``l1_ratio``,
    ``batch_size_``, ``valid_batch_size_``, ``shuffle_``, ``seed_``, and,
    before each fit and prediction, ``compile_options_`` (None, or keyword
    arguments for ``torch.compile``) and ``autocast_`` (bfloat16 autocast).
    """

    compile_options_ = None
    autocast_ = False

    def forward_module(self):
        """``module_``, or its ``torch.compile`` wrapper (built once, not pickled)."""
        if self.compile_options_ is None:
            return self.module_
        cached = self.__dict__.get("_compiled")
        if (
            cached is None
            or cached[0] is not self.module_
            or cached[1] != self.compile_options_
        ):
            options = dict(self.compile_options_)
            cached = (self.module_, options, torch.compile(self.module_, **options))
            self._compiled = cached
        return cached[2]

    def infer(self, x, **fit_params):
        """Forward pass of one batch (compiled and autocast when asked)."""
        # sparse CSR batches go through scipy: nothing to compile there
        compiled = x.layout == torch.strided
        forward = self.forward_module() if compiled else self.module_
        if not self.autocast_:
            return forward(x, **fit_params)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = forward(x, **fit_params)
        # losses and probabilities in the module's own precision
        return out.to(next(self.module_.parameters()).dtype)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_compiled", None)
        return state

    def get_default_callbacks(self):
        # Timing, loss bookkeeping and printing live in EpochMonitor.
        return []

    def get_iterator(self, dataset, training=False):
        if training:
            return BatchIterator(dataset, self.batch_size_, self.shuffle_, self.seed_)
        return BatchIterator(dataset, self.batch_size_, False, 0)

    def get_train_step_accumulator(self):
        if isinstance(self.optimizer_, torch.optim.LBFGS):
            return _LastStepAccumulator()
        return super().get_train_step_accumulator()

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y, w = y_true
        loss = weighted_mean(sample_losses(y_pred, y, self.out_activation), w)
        if training and self.alpha > 0:
            loss = loss + self.penalty(len(y) if w is None else w.sum())
        return loss

    def penalty(self, n):
        """sklearn's ``alpha/2 * ||W||^2 / n``, mixed with L1 by ``l1_ratio``."""
        params = penalized_parameters(self.module_)  # walked once per batch
        value = 0.0
        if self.l1_ratio < 1:
            value = 0.5 * (1.0 - self.l1_ratio) * sum((p * p).sum() for p in params)
        if self.l1_ratio > 0:
            value = value + self.l1_ratio * sum(p.abs().sum() for p in params)
        return self.alpha * value / n

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """One pass over the data; history is written once, not per batch.

        The epoch loss is the batch losses averaged by batch length, as in
        scikit-learn, accumulated on the device so that no batch waits for a
        host synchronisation.
        """
        if iterator is None:
            return
        total, count, n_batches = None, 0, 0
        for batch in iterator:
            self.notify("on_batch_begin", batch=batch, training=training)
            step = step_fn(batch, **fit_params)
            n = len(batch[1][0])  # targets: X may be a sparse tensor
            part = step["loss"].detach() * n
            total = part if total is None else total + part
            count += n
            self.notify("on_batch_end", batch=batch, training=training, **step)
            n_batches += 1
        self.history.record(prefix + "_batch_count", n_batches)
        self.history.record(prefix + "_n_samples", count)
        self.history.record(prefix + "_loss", float(total.item()) / max(count, 1))


# --------------------------------------------------------------------------- callback


class EpochMonitor(Callback):
    """scikit-learn's end-of-epoch logic as a skorch callback.

    Parameters
    ----------
    tol, n_iter_no_change : float, int
        As in scikit-learn's MLP.
    early_stopping : bool
        Track ``valid_score`` (``score_fn`` of the raw outputs on the
        ``valid_data`` :class:`ArrayDataset`) and
        restore the best weights at the end; else track the training loss.
    lr_schedule : {'constant', 'invscaling', 'adaptive'} or None
        Learning-rate schedule (SGD only, as in scikit-learn).
    learning_rate_init, power_t : float
        Schedule parameters.
    verbose : int
        Print one line per epoch to stderr when positive; with 2 or more, also
        a progress bar over the batches of each epoch (tqdm).
    stochastic : bool
        False for LBFGS (one skorch epoch runs the whole optimisation).
    """

    def __init__(
        self,
        *,
        tol,
        n_iter_no_change,
        early_stopping,
        lr_schedule,
        learning_rate_init,
        power_t,
        verbose,
        stochastic,
    ):
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.lr_schedule = lr_schedule
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.verbose = verbose
        self.stochastic = stochastic
        self.reset()

    def reset(self):
        """Forget everything learned (a first, non-warm fit)."""
        self.no_improvement_count = 0
        self.best_loss = np.inf
        self.best_score = -np.inf
        self.best_state = None
        self.best_epoch = None
        self.t = 0
        self.learning_rate = self.learning_rate_init

    def prepare(self, *, valid_data, score_fn, t, epoch_callback=None):
        """Set the per-fit inputs; called before every ``partial_fit``.

        ``epoch_callback(epoch, net, monitor, stopping)``, when given, runs at
        the end of every completed epoch, after the stopping rules decided
        (``stopping``) and before training ends.
        """
        self.epoch_callback = epoch_callback
        self.valid_data = valid_data
        self.score_fn = score_fn
        self.t = t
        self.stop_reason = None
        self.epochs_run = 0

    def release(self):
        """Drop per-fit references (data, closures) so the fitted net pickles small."""
        self._close_bar()
        self.valid_data = None
        self.score_fn = None
        self.epoch_callback = None
        if self.best_state is not None:  # keep it loadable on a machine without GPU
            self.best_state = {k: v.cpu() for k, v in self.best_state.items()}

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        self._start = time.perf_counter()
        self._bar = None
        if self.verbose >= 2 and dataset_train is not None:
            from tqdm.auto import tqdm  # comes with skorch

            self._bar = tqdm(
                total=math.ceil(len(dataset_train) / net.batch_size_),
                desc=f"epoch {len(net.history)}",
                unit="batch",
                leave=False,
                file=sys.stderr,
                disable=None,  # silent when stderr is not a terminal (n_jobs workers)
            )

    def on_batch_end(self, net, training=False, **kwargs):
        if training and getattr(self, "_bar", None) is not None:
            self._bar.update()

    def _close_bar(self):
        if getattr(self, "_bar", None) is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, net, **kwargs):
        self._close_bar()
        h = net.history
        loss = h[-1, "train_loss"]
        self.t += h[-1, "train_n_samples"]
        h.record("epoch_", len(h))
        if not math.isfinite(loss):
            self.stop_reason = "diverged"
            raise StopTraining
        self.epochs_run += 1
        if self.valid_data is not None:
            valid_loss, score = self._validate(net)
            h.record("valid_loss", valid_loss)
            h.record("valid_score", score)
        h.record("dur", time.perf_counter() - self._start)
        if self.verbose:
            self._print(h[-1])
        stop = self._end_of_epoch_rules(net, loss) if self.stochastic else False
        if self.epoch_callback is not None:
            self.epoch_callback(self.epochs_run, net, self, stop)
        if stop:
            self.stop_reason = "converged"
            raise StopTraining

    def _end_of_epoch_rules(self, net, loss):
        """scikit-learn's stopping and schedule rules; True means stop now."""
        self._update_no_improvement(net, loss)
        if self.lr_schedule == "invscaling":
            self._set_lr(net, self.learning_rate_init / (self.t + 1) ** self.power_t)
        if self.no_improvement_count <= self.n_iter_no_change:
            return False
        what = "Validation score" if self.early_stopping else "Training loss"
        msg = (
            f"{what} did not improve more than tol={self.tol:f} for "
            f"{self.n_iter_no_change} consecutive epochs."
        )
        if self.lr_schedule == "adaptive" and self.learning_rate > 1e-6:
            self._set_lr(net, self.learning_rate / 5.0)
            self.no_improvement_count = 0
            if self.verbose:
                print(
                    f"{msg} Setting learning rate to {self.learning_rate:f}",
                    file=sys.stderr,
                )
            return False
        if self.verbose:
            print(f"{msg} Stopping.", file=sys.stderr)
        return True

    def _update_no_improvement(self, net, loss):
        if self.early_stopping:
            score = net.history[-1, "valid_score"]
            if score < self.best_score + self.tol:
                self.no_improvement_count += 1
            else:
                self.no_improvement_count = 0
            if score > self.best_score:
                self.best_score = score
                self.best_state = _clone_state(net.module_)
                self.best_epoch = len(net.history)
        else:
            if loss > self.best_loss - self.tol:
                self.no_improvement_count += 1
            else:
                self.no_improvement_count = 0
            self.best_loss = min(self.best_loss, loss)

    def _validate(self, net):
        data = self.valid_data
        raw = predict_raw(net.module_, data, net.valid_batch_size_, net.infer)
        losses = sample_losses(raw, data.y, net.out_activation)
        valid_loss = float(weighted_mean(losses, data.w))
        return valid_loss, float(self.score_fn(raw))

    def _set_lr(self, net, lr):
        self.learning_rate = lr
        for group in net.optimizer_.param_groups:
            group["lr"] = lr

    def _print(self, row):
        parts = [f"epoch {row['epoch_']:4d}", f"train_loss {row['train_loss']:.6f}"]
        if "valid_loss" in row:
            parts += [
                f"valid_loss {row['valid_loss']:.6f}",
                f"valid_score {row['valid_score']:.4f}",
            ]
        parts.append(f"{row['dur']:.2f}s")
        print("  ".join(parts), file=sys.stderr, flush=True)


def _clone_state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


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
    """Raw outputs of ``module`` for an :class:`ArrayDataset`, in eval mode.

    Batches are large and run under ``torch.inference_mode``, through
    ``forward`` (e.g. :meth:`SkorchNet.infer`) when given; the module's
    train/eval mode is restored afterwards.
    """
    forward = module if forward is None else forward
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            outs = [
                forward(Xb)
                for Xb, _ in BatchIterator(X, max(int(batch_size), 1), False, 0)
            ]
    finally:
        module.train(was_training)
    return torch.cat(outs) if len(outs) > 1 else outs[0]
