"""Learning curves per epoch: train loss, validation loss and score, best epoch."""

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from sknets._base import _BaseNet
from sknets._compat import check_matplotlib_support

_METRICS = ("loss", "score")


def _network_estimator(estimator):
    """The fitted sknets network inside ``estimator``.

    Unwraps, as often as needed, a fitted search (``best_estimator_``), a
    :class:`~sklearn.pipeline.Pipeline` (its last step) and a
    :class:`~sklearn.compose.TransformedTargetRegressor` (``regressor_``).
    """
    seen = estimator
    check_is_fitted(estimator)
    for _ in range(10):
        if hasattr(estimator, "best_estimator_") or hasattr(estimator, "cv_results_"):
            if not hasattr(estimator, "best_estimator_"):
                raise ValueError(
                    f"{type(estimator).__name__} has no best_estimator_: fit it "
                    "with refit=True to plot the training history of the best "
                    "candidate."
                )
            estimator = estimator.best_estimator_
        elif isinstance(estimator, Pipeline):
            estimator = estimator.steps[-1][1]
        elif hasattr(estimator, "regressor_"):
            estimator = estimator.regressor_
        else:
            break
    if not isinstance(estimator, _BaseNet):
        raise TypeError(
            "TrainingHistoryDisplay needs a sknets network estimator, a Pipeline "
            "ending in one, or a fitted search over one; got "
            f"{type(seen).__name__}."
        )
    check_is_fitted(estimator)
    return estimator


def _check_metrics(metrics):
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown or not metrics:
        raise ValueError(
            f"metrics must be a non-empty subset of {_METRICS}, got {metrics!r}."
        )
    return metrics


class TrainingHistoryDisplay:
    """Learning curves of a fitted network: losses and score per epoch.

    Use :meth:`from_estimator` to build the display from a fitted estimator
    (a sknets network, a :class:`~sklearn.pipeline.Pipeline` ending in one, or
    a fitted search, whose ``best_estimator_`` is used). The constructor only
    stores the curves; :meth:`plot` draws them. matplotlib is imported only
    when plotting.

    Parameters
    ----------
    epochs : array-like of shape (n_epochs,)
        Epoch numbers (1-based), the x values of every curve.

    train_loss : array-like of shape (n_epochs,)
        Training loss (with the weight penalty) of each epoch.

    valid_loss : array-like of shape (n_epochs,), default=None
        Loss on the held-out validation set (``early_stopping=True``).

    valid_score : array-like of shape (n_epochs,), default=None
        Score (accuracy or R^2) on the validation set.

    best_epoch : int, default=None
        The epoch whose weights early stopping restored; marked by a vertical
        line.

    estimator_name : str, default=None
        Name used in the title.

    Attributes
    ----------
    line_ : dict of matplotlib Line2D
        The plotted curves, keyed by ``'train_loss'``, ``'valid_loss'`` and
        ``'valid_score'`` (only those drawn).

    best_epoch_line_ : matplotlib Line2D or None
        The vertical line at ``best_epoch``, or None when there is none.

    ax_ : matplotlib Axes
        The axes of the losses (of the score when only the score is drawn).

    score_ax_ : matplotlib Axes or None
        The axes of the validation score: a twin of ``ax_`` (right-hand
        y-axis) when losses and score are both drawn, ``ax_`` itself when only
        the score is, None when it is not drawn.

    figure_ : matplotlib Figure
        The figure holding ``ax_``.

    See Also
    --------
    sklearn.model_selection.LearningCurveDisplay : Scores against the number
        of training samples.
    sklearn.model_selection.ValidationCurveDisplay : Scores against a
        parameter.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_digits
    >>> from sknets import MLPClassifier
    >>> from sknets.inspection import TrainingHistoryDisplay
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5,
    ...                     early_stopping=True, random_state=0).fit(X / 16, y)
    >>> display = TrainingHistoryDisplay.from_estimator(clf)
    >>> sorted(display.line_)
    ['train_loss', 'valid_loss']
    >>> display.ax_.get_xlabel()
    'Epoch'
    """

    def __init__(
        self,
        *,
        epochs,
        train_loss,
        valid_loss=None,
        valid_score=None,
        best_epoch=None,
        estimator_name=None,
    ):
        self.epochs = epochs
        self.train_loss = train_loss
        self.valid_loss = valid_loss
        self.valid_score = valid_score
        self.best_epoch = best_epoch
        self.estimator_name = estimator_name

    def plot(
        self,
        ax=None,
        *,
        metrics=("loss",),
        name=None,
        line_kw=None,
        best_epoch_kw=None,
    ):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure and axes are created when None.

        metrics : tuple of {'loss', 'score'}, default=('loss',)
            ``'loss'`` draws the training loss and, when recorded, the
            validation loss; ``'score'`` draws the validation score (on a
            right-hand y-axis when drawn with the losses).

        name : str, default=None
            Title of the plot; defaults to ``estimator_name``.

        line_kw : dict, default=None
            Keyword arguments passed to every ``Axes.plot`` call.

        best_epoch_kw : dict, default=None
            Keyword arguments passed to ``Axes.axvline`` for the best epoch.

        Returns
        -------
        display : TrainingHistoryDisplay
            The display, with ``line_``, ``ax_`` and ``figure_`` set.
        """
        check_matplotlib_support(f"{self.__class__.__name__}.plot")
        import matplotlib.pyplot as plt

        metrics = _check_metrics(metrics)
        if "score" in metrics and self.valid_score is None:
            raise ValueError(
                "metrics includes 'score' but no validation score was recorded: "
                "fit the estimator with early_stopping=True."
            )
        if ax is None:
            _, ax = plt.subplots()
        line_kw = {} if line_kw is None else dict(line_kw)
        if len(self.epochs) == 1:
            line_kw.setdefault("marker", "o")
        epochs = np.asarray(self.epochs)

        lines, handles = {}, []
        score_ax = None
        if "loss" in metrics:
            curves = [("train_loss", "Training loss", self.train_loss)]
            if self.valid_loss is not None:
                curves.append(("valid_loss", "Validation loss", self.valid_loss))
            for key, label, values in curves:
                (lines[key],) = ax.plot(
                    epochs, np.asarray(values), label=label, **line_kw
                )
                handles.append(lines[key])
            ax.set_ylabel("Loss")
        if "score" in metrics:
            if "loss" in metrics:
                score_ax = ax.twinx()
                # keep ax (and its legend) above the twin's curve
                ax.set_zorder(score_ax.get_zorder() + 1)
                ax.patch.set_visible(False)
            else:
                score_ax = ax
            kw = dict(line_kw)
            if "loss" in metrics:
                # the next colour of ax's cycle, so the three curves differ
                kw.setdefault("color", f"C{len(lines)}")
                kw.setdefault("linestyle", "--")
            (lines["valid_score"],) = score_ax.plot(
                epochs, np.asarray(self.valid_score), label="Validation score", **kw
            )
            handles.append(lines["valid_score"])
            score_ax.set_ylabel("Validation score")

        self.best_epoch_line_ = None
        if self.best_epoch is not None:
            kw = {"color": "black", "linestyle": ":", "linewidth": 1}
            kw.update(best_epoch_kw or {})
            kw.setdefault("label", f"Best epoch ({self.best_epoch})")
            self.best_epoch_line_ = ax.axvline(self.best_epoch, **kw)
            handles.append(self.best_epoch_line_)

        ax.set_xlabel("Epoch")
        title = name if name is not None else self.estimator_name
        if title:
            ax.set_title(title)
        # "best" cannot see the twin axes' curve; losses fall towards the
        # bottom and scores rise towards the top, so the middle is free
        loc = "center right" if score_ax not in (None, ax) else "best"
        ax.legend(handles=handles, loc=loc)

        self.line_ = lines
        self.ax_ = ax
        self.score_ax_ = score_ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator,
        *,
        metrics=("loss",),
        ax=None,
        name=None,
        line_kw=None,
        best_epoch_kw=None,
    ):
        """Plot the training history of a fitted estimator.

        Parameters
        ----------
        estimator : estimator instance
            A fitted sknets network, a fitted
            :class:`~sklearn.pipeline.Pipeline` whose last step is one, or a
            fitted search (``GridSearchCV`` and friends, with ``refit=True``)
            over either: its ``best_estimator_`` is plotted.

        metrics : tuple of {'loss', 'score'}, default=('loss',)
            ``'loss'`` draws the training loss and, with
            ``early_stopping=True``, the validation loss; ``'score'`` draws the
            validation score (``early_stopping=True`` only).

        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure and axes are created when None.

        name : str, default=None
            Title of the plot; defaults to the estimator's class name.

        line_kw : dict, default=None
            Keyword arguments passed to every ``Axes.plot`` call.

        best_epoch_kw : dict, default=None
            Keyword arguments passed to ``Axes.axvline`` for the best epoch.

        Returns
        -------
        display : TrainingHistoryDisplay
            The display, with ``line_``, ``ax_`` and ``figure_`` set.
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        net = _network_estimator(estimator)
        history = net.history_
        if not history:
            raise ValueError(f"{type(net).__name__} has an empty history_.")

        def column(key):
            if all(key in row for row in history):
                return [float(row[key]) for row in history]
            return None

        display = cls(
            epochs=[int(row["epoch"]) for row in history],
            train_loss=column("train_loss"),
            valid_loss=column("valid_loss"),
            valid_score=column("valid_score"),
            best_epoch=getattr(net, "best_epoch_", None),
            estimator_name=type(net).__name__,
        )
        return display.plot(
            ax=ax,
            metrics=metrics,
            name=name,
            line_kw=line_kw,
            best_epoch_kw=best_epoch_kw,
        )
