"""scikit-learn's callback API inside the training loop: one task per epoch."""

from skorch.callbacks import Callback


class EpochTasks(Callback):
    """scikit-learn's callback API inside the training loop: one task per epoch.

    The fit is the root task of the estimator's callback context (see
    ``sklearn.callback``); every epoch is a sub-task named ``"epoch"``, begun
    when the epoch begins and ended when it is complete, with the fit's
    ``X``, ``y`` and ``sample_weight`` metadata. Its ``fitted_estimator`` is
    the estimator as if ``fit`` had stopped after that epoch (the network's
    current weights, valid while the hook runs). A hook that returns True ends
    training after that epoch. :meth:`finish` ends the fit's task and drops
    the references to the data and the context.
    """

    def __init__(self, context, estimator, X, y, metadata, attributes):
        self.context, self.estimator = context, estimator
        self.X, self.y, self.metadata = X, y, metadata
        self.attributes = attributes
        self.task = None

    def _data(self):
        return {"X": self.X, "y": self.y, "metadata": self.metadata}

    def on_epoch_begin(self, net, **kwargs):
        task = self.context.subcontext(task_name="epoch")
        self.task = task.call_on_fit_task_begin(
            estimator=self.estimator, **self._data()
        )

    def end_epoch(self, net):
        """End this epoch's task; True when a callback asks to stop."""
        task, self.task = self.task, None
        if task is None:
            return False
        attributes = self.attributes
        return task.call_on_fit_task_end(
            estimator=self.estimator,
            reconstruction_attributes=lambda: {**attributes, "net_": net},
            **self._data(),
        )

    def on_train_end(self, net, **kwargs):
        if self.task is not None:  # an epoch that did not complete
            self.task.call_on_fit_task_end(estimator=self.estimator)
            self.task = None

    def finish(self):
        """End the fit's task; drop every reference to the data."""
        self.context.call_on_fit_task_end(estimator=self.estimator, **self._data())
        self.task = self.context = self.estimator = self.attributes = None
        self.X = self.y = self.metadata = None


def _with_epoch_tasks(epoch_callback, tasks):
    """``epoch_callback`` that also ends the epoch's task (True: stop)."""

    def on_epoch(epoch, net, monitor, stopping):
        if epoch_callback is not None:
            epoch_callback(epoch, net, monitor, stopping)
        return tasks.end_epoch(net)

    return on_epoch
