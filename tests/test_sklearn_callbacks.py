"""scikit-learn's callback API on the networks: the fit a task, each epoch a sub-task.

``est.set_callbacks(callback)`` (scikit-learn >= 1.9, ``sklearn.callback``)
makes ``fit`` report its task tree: the fit, then one ``"epoch"`` task per
epoch, with the fit's data and a ``fitted_estimator`` as if the fit had
stopped there; a hook returning True ends training after that epoch.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sknets import ConvNetClassifier, MLPClassifier, MLPRegressor

sk_callback = pytest.importorskip(
    "sklearn.callback",
    reason="scikit-learn's callback API (sklearn.callback) needs scikit-learn>=1.9",
)

pytestmark = pytest.mark.usefixtures("quiet_one_thread")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


class Recorder:
    """Records every hook: (hook, task name, task id, score of fitted_estimator).

    ``stop_at``: return True from ``on_fit_task_end`` of that epoch.
    """

    def __init__(self, stop_at=None):
        self.events, self.stop_at = [], stop_at
        self.fitted = []

    def setup(self, estimator, context):
        self.events.append(("setup", context.task_name, context.task_id))

    def teardown(self, estimator, context):
        self.events.append(("teardown", context.task_name, context.task_id))

    def on_fit_task_begin(
        self,
        estimator,
        context,
        *,
        X=None,
        y=None,
        metadata=None,
        fitted_estimator=None,
    ):
        self.events.append(("begin", context.task_name, context.task_id))

    def on_fit_task_end(
        self,
        estimator,
        context,
        *,
        X=None,
        y=None,
        metadata=None,
        fitted_estimator=None,
    ):
        self.events.append(("end", context.task_name, context.task_id))
        if context.task_name == "epoch" and fitted_estimator is not None:
            self.fitted.append(
                (fitted_estimator.score(X, y), metadata is not None, len(X))
            )
        return context.task_name == "epoch" and context.task_id == self.stop_at


class AutoRecorder(Recorder):
    """The same, propagated by meta-estimators (Pipeline) to their steps."""

    max_propagation_depth = None


def _mlp(**params):
    return MLPClassifier(
        **{
            "hidden_layer_sizes": (16,),
            "max_iter": 6,
            "learning_rate_init": 0.01,
            "random_state": 0,
            "device": "cpu",
            **params,
        }
    )


def _epochs(events):
    return [e for e in events if e[1] == "epoch"]


def test_one_task_per_epoch(digits):
    X, y = digits
    recorder = Recorder()
    clf = _mlp().set_callbacks(recorder).fit(X, y)
    assert isinstance(recorder, sk_callback.FitCallback)
    n = clf.n_iter_
    expected = [("setup", "fit", 0), ("begin", "fit", 0)]
    for i in range(n):
        expected += [("begin", "epoch", i), ("end", "epoch", i)]
    expected += [("end", "fit", 0), ("teardown", "fit", 0)]
    assert recorder.events == expected
    # every epoch's fitted_estimator predicts: its accuracy, epoch after epoch,
    # ends at the fitted model's
    scores = [s for s, _, _ in recorder.fitted]
    assert len(scores) == n and scores[-1] == pytest.approx(clf.score(X, y))
    assert scores[-1] > scores[0]
    # nothing of the callback machinery stays on the estimator or in the net
    assert not hasattr(clf, "_callback_fit_ctx")
    assert "sklearn_tasks" not in dict(clf.net_.callbacks_)


def test_early_stopping_and_sample_weight_reach_the_hooks(digits):
    X, y = digits
    recorder = Recorder()
    weights = np.random.RandomState(0).uniform(0.5, 1.5, len(y))
    clf = _mlp(early_stopping=True, max_iter=30, n_iter_no_change=2, tol=1e-2)
    clf.set_callbacks(recorder).fit(X, y, sample_weight=weights)
    assert len(_epochs(recorder.events)) == 2 * clf.n_iter_
    assert all(has_metadata for _, has_metadata, _ in recorder.fitted)
    assert all(n == len(X) for _, _, n in recorder.fitted)


def test_a_hook_returning_true_stops_training(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # stopped on purpose
        stopped = _mlp(max_iter=20).set_callbacks(Recorder(stop_at=2)).fit(X, y)
    assert stopped.n_iter_ == 3
    # the same model as a fit of that many epochs
    short = _mlp(max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        short.fit(X, y)
    assert_allclose(stopped.loss_curve_, short.loss_curve_, rtol=0, atol=1e-12)
    for a, b in zip(stopped.coefs_, short.coefs_, strict=True):
        assert_allclose(a, b, rtol=0, atol=1e-12)


def test_partial_fit_is_one_epoch_task(digits):
    X, y = digits
    recorder = Recorder()
    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0, device="cpu")
    reg.set_callbacks(recorder)
    reg.partial_fit(X, y.astype(float))
    reg.partial_fit(X, y.astype(float))
    assert _epochs(recorder.events) == [("begin", "epoch", 0), ("end", "epoch", 0)] * 2
    assert [e[0] for e in recorder.events].count("teardown") == 2


def test_convnet_reports_epochs(digits):
    X, y = digits
    recorder = Recorder()
    net = ConvNetClassifier(
        filters=(4,),
        kernel_size=3,
        hidden_layer_sizes=(),
        input_shape=(1, 8, 8),
        max_iter=2,
        random_state=0,
        device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.set_callbacks(recorder).fit(X, y)
    assert len(_epochs(recorder.events)) == 2 * 2
    assert recorder.fitted[-1][0] == pytest.approx(net.score(X, y))


def test_in_a_pipeline_epochs_are_tasks_of_the_final_step(digits):
    X, y = digits
    recorder = AutoRecorder()
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", _mlp(max_iter=3))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.set_callbacks(recorder).fit(X, y)
    assert len(_epochs(recorder.events)) == 2 * 3
    # the network's fit is the pipeline's second sub-task (task 1): its
    # epochs come inside it
    start = recorder.events.index(("begin", "fit", 1))
    end = recorder.events.index(("end", "fit", 1))
    epochs = [i for i, e in enumerate(recorder.events) if e[1] == "epoch"]
    assert start < min(epochs) and max(epochs) < end
    # the epochs' fitted estimators see the scaled data, as the network does
    assert recorder.fitted[-1][0] == pytest.approx(pipe.score(X, y))


def test_a_failed_fit_tears_callbacks_down_and_keeps_the_estimator(digits):
    X, y = digits
    recorder = Recorder()
    reg = MLPRegressor(
        solver="sgd", learning_rate_init=1e6, max_iter=50, random_state=0, device="cpu"
    )
    clf = reg.set_callbacks(recorder)
    with pytest.raises(ValueError, match="diverged"):
        clf.fit(X * 1e3, y * 1e3)
    assert recorder.events[-1][0] == "teardown"
    begun = [e for e in recorder.events if e[0] == "begin" and e[1] == "epoch"]
    ended = [e for e in recorder.events if e[0] == "end" and e[1] == "epoch"]
    assert len(begun) == len(ended)  # no epoch task is left open
    assert len(recorder.fitted) == len(ended) - 1  # the diverged epoch: none
    assert not hasattr(clf, "net_") and not hasattr(clf, "_callback_fit_ctx")


def test_progress_bar_runs(digits, capsys):
    pytest.importorskip("rich")
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = _mlp(max_iter=2).set_callbacks(sk_callback.ProgressBar()).fit(X, y)
    assert clf.n_iter_ == 2
