"""Specification: scikit-learn's callback API runs through our searches unchanged.

scikit-learn (1.9+) has an experimental callback API (``sklearn.callback``).
Callbacks are set on a search with ``search.set_callbacks(*callbacks)``, and
scikit-learn's ``BaseSearchCV.fit`` reports its task tree to them:

- ``setup`` / ``teardown`` once around the whole ``fit`` (root task);
- ``on_fit_task_begin`` / ``on_fit_task_end`` for every task of the tree::

      fit (root, task_id 0, max_subtasks = 1 + (refit is not False))
      +- search (task_id 0, max_subtasks = n_candidates * n_splits,
      |          non-sequential subtasks)
      |  +- candidate-split-evaluation (task_id = cand_idx * n_splits
      |                                 + split_idx, leaf, X/y = train fold)
      +- refit-with-best-params (task_id 1, X/y = all data; only with refit)

The ``estimator`` argument of every hook is the search itself (the
``caller``), also for the candidate fits, which may run in worker processes.

Our searches must deliver exactly the events that scikit-learn's own searches
deliver for the same estimator, grid, cv and refit, whether or not candidates
share training runs across ``max_iter``. Where scheduling can reorder events
(parallel workers, candidates that share a run), the events are compared as a
sorted multiset and checked for a well-nested order; otherwise as a sequence.
"""

import hashlib
import json
import re
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn import model_selection as skms
from sklearn.datasets import load_digits
from sklearn.model_selection import ParameterSampler

from sknets import MLPClassifier
from sknets.model_selection import GridSearchCV, RandomizedSearchCV

sk_callback = pytest.importorskip(
    "sklearn.callback",
    reason="scikit-learn's callback API (sklearn.callback) needs scikit-learn>=1.9",
)
if not hasattr(skms.GridSearchCV, "set_callbacks"):  # pragma: no cover
    pytest.skip(
        "this scikit-learn's searches do not support callbacks",
        allow_module_level=True,
    )

SHARED_RUNS_GRID = {"max_iter": [1, 2, 3], "alpha": [1e-4, 1e-2]}
SEPARATE_RUNS_GRID = {"alpha": [1e-4, 1e-2]}
GRIDS = {"shared-runs": SHARED_RUNS_GRID, "separate-runs": SEPARATE_RUNS_GRID}

# (our class, scikit-learn's class, extra keyword arguments per grid)
SEARCHES = {
    "grid": (GridSearchCV, skms.GridSearchCV, {}),
    "randomized": (RandomizedSearchCV, skms.RandomizedSearchCV, {"random_state": 0}),
}
N_ITER = {"shared-runs": 4, "separate-runs": 2}
CV = 2
NOT_SUPPORTED = re.compile("does not support callbacks")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp():
    # max_iter=3 keeps the separate-runs grid fast (the shared-runs grid sets
    # it); learning_rate_init and batch_size make the few epochs learn
    # something, so that the scores differ between candidates.
    return MLPClassifier(
        hidden_layer_sizes=(8,),
        max_iter=3,
        learning_rate_init=0.01,
        batch_size=30,
        random_state=0,
        device="cpu",
    )


# --------------------------------------------------------------------------- recorder


def _digest(a):
    """Short, deterministic fingerprint of an array (shape and contents)."""
    if a is None:
        return None
    a = np.ascontiguousarray(np.asarray(a))
    return [list(a.shape), hashlib.sha1(a.tobytes()).hexdigest()[:12]]


def _context_record(context):
    path = []
    ctx = context
    while ctx is not None:
        path.append([ctx.estimator_name, ctx.task_name, ctx.task_id])
        ctx = ctx.parent
    path.reverse()
    return {
        "path": path,
        "depth": len(path) - 1,
        "max_subtasks": context.max_subtasks,
        "sequential_subtasks": context.sequential_subtasks,
        "source": [context.source_estimator_name, context.source_task_name],
    }


class EventRecorder:
    """A callback that records every event it receives, in every process.

    Each event is one JSON line appended to a file, so that copies of the
    callback that run in joblib worker processes (they receive a pickled
    copy) record into the same place as the copy in the search's process. A
    line is small and written with one ``write`` in append mode.

    An event holds the hook name, the class name of the ``estimator`` passed
    to the hook, the task (path of ``(estimator_name, task_name, task_id)``
    from the root, depth, ``max_subtasks``, ``sequential_subtasks``, the task
    it was merged with) and fingerprints of ``X``, ``y`` and ``metadata``.
    """

    def __init__(self, path):
        self.path = str(path)

    def _record(self, hook, estimator, context, **kwargs):
        event = {"hook": hook, "estimator": type(estimator).__name__}
        event.update(_context_record(context))
        event.update(kwargs)
        line = json.dumps(event, sort_keys=True) + "\n"
        with open(self.path, "a") as f:
            f.write(line)

    def _task_kwargs(self, X, y, metadata, fitted_estimator):
        return {
            "X": _digest(X),
            "y": _digest(y),
            "metadata": None
            if metadata is None
            else {k: _digest(v) for k, v in sorted(metadata.items())},
            "fitted_estimator": None
            if fitted_estimator is None
            else type(fitted_estimator).__name__,
        }

    def setup(self, estimator, context):
        self._record("setup", estimator, context)

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
        self._record(
            "on_fit_task_begin",
            estimator,
            context,
            **self._task_kwargs(X, y, metadata, fitted_estimator),
        )

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
        self._record(
            "on_fit_task_end",
            estimator,
            context,
            **self._task_kwargs(X, y, metadata, fitted_estimator),
        )
        return False

    def teardown(self, estimator, context):
        self._record("teardown", estimator, context)

    def events(self):
        """The recorded events, in recording order, as canonical JSON strings."""
        try:
            with open(self.path) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []


class AutoPropagatedEventRecorder(EventRecorder):
    """The same, as an auto-propagated callback (propagated to sub-estimators)."""

    max_propagation_depth = None


def test_recorder_follows_the_callback_protocol(tmp_path):
    assert isinstance(EventRecorder(tmp_path / "e"), sk_callback.FitCallback)
    auto = AutoPropagatedEventRecorder(tmp_path / "e")
    assert isinstance(auto, sk_callback.AutoPropagatedCallback)


# --------------------------------------------------------------------------- checks


def _run(search_cls, X, y, recorder, fit_params=None, **kwargs):
    search = search_cls(_mlp(), **kwargs).set_callbacks(recorder)
    search.fit(X, y, **(fit_params or {}))
    return search, recorder.events()


def _search_kwargs(search, grid_name, **kwargs):
    grid = GRIDS[grid_name]
    if search == "grid":
        return {"param_grid": grid, "cv": CV, **kwargs}
    extra = SEARCHES[search][2]
    return {
        "param_distributions": grid,
        "n_iter": N_ITER[grid_name],
        "cv": CV,
        **extra,
        **kwargs,
    }


def _assert_well_nested(events):
    """setup first, teardown last; every task begins once, before its end, and
    within its parent's begin and end."""
    parsed = [json.loads(e) for e in events]
    assert parsed, "no callback events were recorded"
    assert parsed[0]["hook"] == "setup" and parsed[0]["depth"] == 0
    assert parsed[-1]["hook"] == "teardown" and parsed[-1]["depth"] == 0
    begin, end = {}, {}
    for i, e in enumerate(parsed):
        key = tuple(map(tuple, e["path"]))
        if e["hook"] == "on_fit_task_begin":
            assert key not in begin, f"task {key} began twice"
            begin[key] = i
        elif e["hook"] == "on_fit_task_end":
            assert key not in end, f"task {key} ended twice"
            end[key] = i
    assert begin.keys() == end.keys()
    for key in begin:
        assert begin[key] < end[key], f"task {key} ended before it began"
        if len(key) > 1:
            parent = key[:-1]
            assert begin[parent] < begin[key] and end[key] < end[parent], (
                f"task {key} is not nested in its parent"
            )


def _assert_same_events(ours, theirs, *, ordered):
    assert theirs, "scikit-learn's own search recorded no events"
    _assert_well_nested(theirs)
    # a readable diff first: how many events of each hook and task name
    summary = lambda evs: Counter(  # noqa: E731
        (json.loads(e)["hook"], json.loads(e)["path"][-1][1]) for e in evs
    )
    assert summary(ours) == summary(theirs)
    assert sorted(ours) == sorted(theirs)
    _assert_well_nested(ours)
    if ordered:
        assert ours == theirs


def _skip_unless_sklearn_reports_candidates(theirs, why):
    leaves = [e for e in theirs if "candidate-split-evaluation" in e]
    if not leaves:  # pragma: no cover - depends on the installed scikit-learn
        pytest.skip(f"scikit-learn's own search reports no candidate fits {why}")


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("grid_name", ["shared-runs", "separate-runs"])
@pytest.mark.parametrize("search", ["grid", "randomized"])
def test_callback_events_match_sklearn(digits, tmp_path, search, grid_name, n_jobs):
    X, y = digits
    ours_cls, sk_cls, _ = SEARCHES[search]
    kwargs = _search_kwargs(search, grid_name, n_jobs=n_jobs)
    if search == "randomized" and grid_name == "shared-runs":
        # the sampled candidates must include some that differ only in max_iter
        sampled = ParameterSampler(
            SHARED_RUNS_GRID, N_ITER[grid_name], random_state=kwargs["random_state"]
        )
        alphas = Counter(p["alpha"] for p in sampled)
        assert max(alphas.values()) > 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_search, theirs = _run(
            sk_cls, X, y, EventRecorder(tmp_path / "theirs.jsonl"), **kwargs
        )
        if n_jobs != 1:
            _skip_unless_sklearn_reports_candidates(theirs, f"with n_jobs={n_jobs}")
        ours_search, ours = _run(
            ours_cls, X, y, EventRecorder(tmp_path / "ours.jsonl"), **kwargs
        )

    # Sequential scikit-learn fits (n_jobs=1, nothing shared) fix the order;
    # with workers or shared runs only the nesting is fixed.
    ordered = n_jobs == 1 and grid_name == "separate-runs"
    _assert_same_events(ours, theirs, ordered=ordered)
    assert_allclose(
        ours_search.cv_results_["mean_test_score"],
        theirs_search.cv_results_["mean_test_score"],
        atol=1e-10,
    )


@pytest.mark.parametrize("refit", [False, "accuracy"])
def test_callback_events_match_sklearn_refit_settings(digits, tmp_path, refit):
    """No refit task without refit; a metric name refits like True."""
    X, y = digits
    kwargs = _search_kwargs("grid", "shared-runs", refit=refit)
    if refit:
        kwargs["scoring"] = {"accuracy": "accuracy", "nll": "neg_log_loss"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, theirs = _run(
            skms.GridSearchCV, X, y, EventRecorder(tmp_path / "t.jsonl"), **kwargs
        )
        _, ours = _run(
            GridSearchCV, X, y, EventRecorder(tmp_path / "o.jsonl"), **kwargs
        )
    _assert_same_events(ours, theirs, ordered=False)
    refits = [e for e in theirs if "refit-with-best-params" in e]
    assert len(refits) == (2 if refit else 0)


def test_callback_events_carry_sample_weight_metadata(digits, tmp_path):
    """A fit parameter ``sample_weight`` reaches the hooks as metadata."""
    X, y = digits
    sample_weight = np.random.RandomState(0).uniform(0.5, 1.5, size=len(y))
    kwargs = _search_kwargs("grid", "shared-runs")
    fit_params = {"sample_weight": sample_weight}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, theirs = _run(
            skms.GridSearchCV,
            X,
            y,
            EventRecorder(tmp_path / "t.jsonl"),
            fit_params=fit_params,
            **kwargs,
        )
        _, ours = _run(
            GridSearchCV,
            X,
            y,
            EventRecorder(tmp_path / "o.jsonl"),
            fit_params=fit_params,
            **kwargs,
        )
    assert any('"sample_weight"' in e for e in theirs)
    _assert_same_events(ours, theirs, ordered=False)


def test_auto_propagated_callback_events_match_sklearn(digits, tmp_path):
    """An auto-propagated callback follows every candidate network's fit.

    sknets networks take scikit-learn's callbacks (each epoch is a task), so
    such a search trains every candidate through its own ``fit``: the callback
    sees the same task tree, epochs included, as under scikit-learn's search,
    and neither search warns that a network does not support callbacks.
    """
    X, y = digits
    kwargs = _search_kwargs("grid", "shared-runs")
    with warnings.catch_warnings(record=True) as theirs_warnings:
        warnings.simplefilter("always")
        _, theirs = _run(
            skms.GridSearchCV,
            X,
            y,
            AutoPropagatedEventRecorder(tmp_path / "t.jsonl"),
            **kwargs,
        )
    with warnings.catch_warnings(record=True) as ours_warnings:
        warnings.simplefilter("always")
        _, ours = _run(
            GridSearchCV,
            X,
            y,
            AutoPropagatedEventRecorder(tmp_path / "o.jsonl"),
            **kwargs,
        )
    _assert_same_events(ours, theirs, ordered=False)
    assert any('"epoch"' in e for e in ours), "no epoch tasks were reported"

    def not_supported(caught):
        return {str(w.message) for w in caught if NOT_SUPPORTED.search(str(w.message))}

    assert not_supported(ours_warnings) == not_supported(theirs_warnings) == set()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_halving_over_epochs_reports_sklearns_halving_events(digits, tmp_path, n_jobs):
    """Rung by rung in stacks, the task tree of scikit-learn's own halving."""
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401

    from sknets.model_selection import HalvingGridSearchCV

    X, y = digits
    kwargs = dict(
        param_grid={"alpha": [1e-4, 1e-2, 1e-1], "learning_rate_init": [0.01, 0.03]},
        resource="max_iter",
        min_resources=1,
        max_resources=4,
        factor=2,
        cv=CV,
        n_jobs=n_jobs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_search, theirs = _run(
            skms.HalvingGridSearchCV,
            X,
            y,
            EventRecorder(tmp_path / "t.jsonl"),
            **kwargs,
        )
        ours_search, ours = _run(
            HalvingGridSearchCV, X, y, EventRecorder(tmp_path / "o.jsonl"), **kwargs
        )
    assert ours_search.stacking_["members"] > 0
    assert any("halving-iteration" in e for e in theirs)
    _assert_same_events(ours, theirs, ordered=False)
    assert_allclose(
        ours_search.cv_results_["mean_test_score"],
        theirs_search.cv_results_["mean_test_score"],
        atol=1e-10,
    )


# ------------------------------------------------------------------ ProgressBar


def _progress_descriptions(out):
    """The progress bars' descriptions (without percentages and times)."""
    lines = []
    for line in out.splitlines():
        match = re.match(r"^(\s*\S.*? - \S.*?)\s+[━╸╺ ]*\s*\d+%", line)
        if match:
            lines.append(match.group(1).rstrip())
    return lines


@pytest.mark.parametrize("grid_name", ["shared-runs", "separate-runs"])
def test_progress_bar_smoke(digits, capsys, grid_name):
    """A ready-made callback changes nothing in the results."""
    pytest.importorskip("rich", reason="ProgressBar needs rich")
    X, y = digits
    kwargs = _search_kwargs("grid", grid_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = GridSearchCV(_mlp(), **kwargs).fit(X, y)
        with_bar = GridSearchCV(_mlp(), **kwargs)
        with_bar.set_callbacks(sk_callback.ProgressBar())
        with_bar.fit(X, y)
    assert_allclose(
        with_bar.cv_results_["mean_test_score"],
        plain.cv_results_["mean_test_score"],
        atol=1e-10,
    )
    assert with_bar.best_params_ == plain.best_params_


@pytest.mark.parametrize("grid_name", ["shared-runs", "separate-runs"])
def test_progress_bar_shows_what_sklearn_shows(digits, capsys, grid_name):
    pytest.importorskip("rich", reason="ProgressBar needs rich")
    X, y = digits
    kwargs = _search_kwargs("grid", grid_name)
    outputs = {}
    for name, cls in [("theirs", skms.GridSearchCV), ("ours", GridSearchCV)]:
        capsys.readouterr()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls(_mlp(), **kwargs).set_callbacks(sk_callback.ProgressBar()).fit(X, y)
        outputs[name] = capsys.readouterr().out
    theirs = _progress_descriptions(outputs["theirs"])
    assert any("GridSearchCV - fit" in d for d in theirs), outputs["theirs"]
    assert _progress_descriptions(outputs["ours"]) == theirs, outputs["ours"]
    assert "100%" in outputs["ours"]
    assert not re.search(r"\b[0-9]{1,2}%", outputs["ours"])
