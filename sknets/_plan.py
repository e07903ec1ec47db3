"""The training plan: every estimator parameter that training needs, resolved once.

``fit`` and ``partial_fit`` read the estimator's parameters exactly once, into
an immutable :class:`TrainingPlan`; the engine (:mod:`sknets._engine`) reads
only the plan. Nothing below ``fit`` reads or writes an estimator parameter,
so phases (fine-tuning), warm starts and searches are plans, never temporary
edits of the estimator.
"""

from dataclasses import dataclass, field, fields
from types import MappingProxyType

import numpy as np
import torch


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs with one learning rate and one frozen state.

    Parameters
    ----------
    epochs : int or None
        How many epochs the phase lasts at most; None: until the run ends.
        A phase also ends early when the stopping rules say the network has
        converged, unless it is the last one.
    lr : float
        The learning rate of every parameter group while the phase runs.
    frozen : bool or None
        Whether the module's pretrained part is frozen (``module.set_frozen``);
        None for modules without one.
    """

    epochs: int | None
    lr: float
    frozen: bool | None = None


@dataclass(frozen=True)
class StoppingRules:
    """scikit-learn's MLP stopping and learning-rate rules.

    ``score`` names the validation score used by ``early_stopping``
    (``'accuracy'``, ``'r2'`` or ``'loss'``, minus the validation loss);
    ``lr_schedule`` is the SGD schedule or
    None; ``stochastic`` is False for L-BFGS, where one skorch epoch runs the
    whole optimization and no epoch rule applies.
    """

    tol: float
    n_iter_no_change: float
    early_stopping: bool
    score: str
    lr_schedule: str | None
    power_t: float
    stochastic: bool


def _frozen_array(a):
    if a is None:
        return None
    a = np.asarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class TrainingPlan:
    """What one call of ``fit`` or ``partial_fit`` will do, and nothing else.

    Attributes
    ----------
    first_pass : bool
        A new network (else the fitted one continues: ``warm_start`` or
        ``partial_fit``).
    incremental : bool
        ``partial_fit``: one epoch, the optimizer's state kept.
    epochs : int
        Epochs this call runs at most (skorch's ``max_epochs``).
    max_iter : int
        The estimator's epoch budget, for its ``ConvergenceWarning``.
    batch_size : int
        Rows per training batch (``'auto'`` and clipping resolved).
    shuffle : bool
        Draw a new row order for every epoch.
    optimizer : type
        The ``torch.optim.Optimizer`` class.
    optimizer_kwargs : mapping
        Its keyword arguments (the learning rate excepted).
    phases : tuple of Phase
        The learning rate and frozen state, epoch by epoch.
    stopping : StoppingRules
        When training ends before ``epochs``.
    alpha, l1_ratio : float
        The elastic-net penalty on weights.
    out_activation : str
        ``'softmax'``, ``'logistic'``, ``'identity'`` or ``'exp'``: the loss
        and the predictions follow from it.
    torch_seed, shuffle_seed : int
        Seeds of the initialization and dropout masks, and of the row orders.
    train_rows, valid_rows : ndarray of int or None
        The rows of ``X`` that train and that validate (early stopping), or
        None for all rows and no validation.
    dtype, device : torch.dtype, torch.device
        Where and in what precision the network computes.
    forward_compile : dict or None
        Keyword arguments of ``torch.compile`` for forward passes, or None.
    autocast : bool
        bfloat16 autocast of forward passes.
    verbose : int
        0 silent, 1 a line per epoch, 2 also a progress bar.
    callbacks : tuple
        The user's skorch callbacks (copies), after sknets' own.
    label_smoothing : float
        Share of the classification targets spread uniformly over the
        classes in the loss, training and validation (0: none).
    """

    first_pass: bool
    incremental: bool
    epochs: int
    max_iter: int
    batch_size: int
    shuffle: bool
    optimizer: type
    optimizer_kwargs: MappingProxyType
    phases: tuple
    stopping: StoppingRules
    alpha: float
    l1_ratio: float
    out_activation: str
    torch_seed: int
    shuffle_seed: int
    dtype: torch.dtype
    device: torch.device
    train_rows: np.ndarray | None = field(default=None, repr=False)
    valid_rows: np.ndarray | None = field(default=None, repr=False)
    forward_compile: MappingProxyType | None = None
    autocast: bool = False
    verbose: int = 0
    callbacks: tuple = ()
    label_smoothing: float = 0.0

    def __post_init__(self):
        set_ = object.__setattr__  # frozen dataclass: fix up the containers once
        set_(self, "optimizer_kwargs", MappingProxyType(dict(self.optimizer_kwargs)))
        set_(self, "phases", tuple(self.phases))
        set_(self, "callbacks", tuple(self.callbacks))
        set_(self, "train_rows", _frozen_array(self.train_rows))
        set_(self, "valid_rows", _frozen_array(self.valid_rows))
        if self.forward_compile is not None:
            set_(self, "forward_compile", MappingProxyType(dict(self.forward_compile)))

    def __reduce__(self):
        # the read-only mappings do not pickle: the plan travels as its
        # fields (a search's stacks trained in processes, Dask workers) and
        # is rebuilt, read-only again, on the other side
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["optimizer_kwargs"] = dict(self.optimizer_kwargs)
        if self.forward_compile is not None:
            values["forward_compile"] = dict(self.forward_compile)
        return (_rebuilt, (type(self), values))

    @property
    def lr(self):
        """The learning rate the optimizer is built with (the first phase's)."""
        return self.phases[0].lr


def _rebuilt(cls, values):
    return cls(**values)


@dataclass(frozen=True)
class TrainedState:
    """A network trained elsewhere (a search's shared run), ready to be adopted.

    What one ``fit`` would have ended with: the module's weights, the history
    rows, the stopping state and why training ended. A search trains these
    (one network, or many members stacked as one) and hands them to the
    candidates' own ``fit`` through :mod:`sknets._registry`; there
    :meth:`sknets._base._BaseNet._adopt` builds the skorch net from them, as
    ``fit`` would have.

    Attributes
    ----------
    module_state : dict
        The module's ``state_dict`` at the end of training.
    history : tuple of dict
        One row per completed epoch (``epoch``, ``train_loss``, and
        ``valid_loss``/``valid_score`` with early stopping, ``dur``).
    state : StoppingState
        The stopping rules' state after the last epoch (``best_state``: the
        best weights with early stopping).
    stop_reason : str or None
        ``'converged'``, ``'diverged'`` or None (the epoch budget ran out).
    seconds : float
        Training time up to this state (the shared run's clock).
    """

    module_state: dict = field(repr=False)
    history: tuple
    state: object
    stop_reason: str | None
    seconds: float = 0.0

    @property
    def epochs_run(self):
        """Completed epochs."""
        return len(self.history)


@dataclass(frozen=True)
class PreparedFit:
    """A ``fit`` call after validation, before training: its data and its plan.

    ``X`` as validated, ``target`` encoded for the loss (class codes, label
    indicators or numbers), ``sample_weight`` checked (or None), the number
    of network outputs, the :class:`TrainingPlan`, and a given validation set
    ``(X_val, target_val, sample_weight_val)`` validated the same way, or None.
    """

    X: object = field(repr=False)
    target: object = field(repr=False)
    sample_weight: object = field(repr=False)
    n_outputs: int
    plan: TrainingPlan
    valid: tuple | None = field(default=None, repr=False)
