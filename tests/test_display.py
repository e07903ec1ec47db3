"""TrainingHistoryDisplay and the text form of summary(): what is drawn and printed."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sknets import MLPClassifier, MLPRegressor
from sknets.inspection import TrainingHistoryDisplay

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FAST = dict(hidden_layer_sizes=(16,), random_state=0, device="cpu")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:400] / 16.0, y[:400]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def early(digits):
    """Early stopping that runs every epoch (n_iter_no_change is large)."""
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(
            max_iter=8,
            early_stopping=True,
            n_iter_no_change=50,
            learning_rate_init=0.01,
            **FAST,
        ).fit(X, y)


def _fit_quiet(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def test_loss_curves_are_the_history(early):
    display = TrainingHistoryDisplay.from_estimator(early)
    assert set(display.line_) == {"train_loss", "valid_loss"}
    epochs = [r["epoch"] for r in early.history_]
    assert epochs == list(range(1, 9))
    for key in ("train_loss", "valid_loss"):
        x, y = display.line_[key].get_data()
        np.testing.assert_array_equal(x, epochs)
        np.testing.assert_allclose(y, [r[key] for r in early.history_])
    np.testing.assert_allclose(
        display.line_["train_loss"].get_ydata(), early.loss_curve_
    )
    # two curves and the best-epoch marker, nothing else
    assert len(display.ax_.get_lines()) == 3
    assert display.ax_.get_xlabel() == "Epoch"
    assert display.ax_.get_ylabel() == "Loss"
    assert display.ax_.get_title() == "MLPClassifier"
    assert display.figure_ is display.ax_.figure
    assert display.score_ax_ is None
    labels = [t.get_text() for t in display.ax_.get_legend().get_texts()]
    assert labels == [
        "Training loss",
        "Validation loss",
        f"Best epoch ({early.best_epoch_})",
    ]


def test_best_epoch_marker_position(early):
    display = TrainingHistoryDisplay.from_estimator(early)
    assert early.best_epoch_ == 1 + int(np.argmax(early.validation_scores_))
    x = display.best_epoch_line_.get_xdata()
    assert list(x) == [early.best_epoch_, early.best_epoch_]
    assert display.best_epoch_line_ in display.ax_.get_lines()


def test_score_on_twin_axis(early):
    display = TrainingHistoryDisplay.from_estimator(early, metrics=("loss", "score"))
    assert set(display.line_) == {"train_loss", "valid_loss", "valid_score"}
    assert display.score_ax_ is not display.ax_
    assert display.line_["valid_score"].axes is display.score_ax_
    np.testing.assert_allclose(
        display.line_["valid_score"].get_ydata(), early.validation_scores_
    )
    assert display.score_ax_.get_ylabel() == "Validation score"
    assert len(display.ax_.get_legend().get_texts()) == 4


def test_score_alone(early):
    display = TrainingHistoryDisplay.from_estimator(early, metrics="score")
    assert list(display.line_) == ["valid_score"]
    assert display.score_ax_ is display.ax_
    assert display.ax_.get_ylabel() == "Validation score"


def test_without_early_stopping_only_train_loss(digits):
    X, y = digits
    clf = _fit_quiet(MLPClassifier(max_iter=4, **FAST), X, y)
    display = TrainingHistoryDisplay.from_estimator(clf)
    assert list(display.line_) == ["train_loss"]
    assert display.best_epoch_line_ is None
    assert len(display.ax_.get_lines()) == 1
    np.testing.assert_allclose(display.line_["train_loss"].get_ydata(), clf.loss_curve_)
    with pytest.raises(ValueError, match="early_stopping=True"):
        TrainingHistoryDisplay.from_estimator(clf, metrics=("loss", "score"))


def test_pipeline_and_search_best_estimator(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=3, **FAST))
    search = _fit_quiet(
        GridSearchCV(pipe, {"mlpclassifier__max_iter": [2, 4]}, cv=2), X, y
    )
    best = search.best_estimator_[-1]
    display = TrainingHistoryDisplay.from_estimator(search)
    np.testing.assert_allclose(
        display.line_["train_loss"].get_ydata(), best.loss_curve_
    )
    assert len(display.line_["train_loss"].get_xdata()) == best.n_iter_
    display = TrainingHistoryDisplay.from_estimator(search.best_estimator_)
    np.testing.assert_allclose(
        display.line_["train_loss"].get_ydata(), best.loss_curve_
    )


def test_regressor_in_transformed_target_regressor():
    X, y = make_regression(n_samples=60, n_features=4, noise=1.0, random_state=0)
    ttr = _fit_quiet(
        TransformedTargetRegressor(
            MLPRegressor(max_iter=5, early_stopping=True, **FAST),
            transformer=StandardScaler(),
        ),
        X,
        y,
    )
    display = TrainingHistoryDisplay.from_estimator(ttr, metrics=("loss", "score"))
    reg = ttr.regressor_
    np.testing.assert_allclose(
        display.line_["valid_score"].get_ydata(), reg.validation_scores_
    )
    assert display.ax_.get_title() == "MLPRegressor"


def test_lbfgs_single_record_gets_a_marker(digits):
    X, y = digits
    clf = _fit_quiet(MLPClassifier(solver="lbfgs", max_iter=5, **FAST), X, y)
    display = TrainingHistoryDisplay.from_estimator(clf)
    assert len(display.line_["train_loss"].get_xdata()) == 1
    assert display.line_["train_loss"].get_marker() == "o"


def test_given_axes_title_and_keywords(early):
    fig, (ax1, ax2) = plt.subplots(1, 2)
    display = TrainingHistoryDisplay.from_estimator(
        early,
        ax=ax2,
        name="mine",
        line_kw={"linewidth": 3},
        best_epoch_kw={"color": "red"},
    )
    assert display.ax_ is ax2 and display.figure_ is fig
    assert not ax1.get_lines()
    assert ax2.get_title() == "mine"
    assert display.line_["train_loss"].get_linewidth() == 3
    assert display.best_epoch_line_.get_color() == "red"


def test_plot_from_constructor():
    display = TrainingHistoryDisplay(
        epochs=[1, 2, 3], train_loss=[3.0, 2.0, 1.0], valid_loss=[3.5, 2.5, 2.8]
    ).plot()
    np.testing.assert_array_equal(
        display.line_["valid_loss"].get_ydata(), [3.5, 2.5, 2.8]
    )
    assert display.best_epoch_line_ is None


def test_errors(digits, early):
    X, y = digits
    with pytest.raises(NotFittedError):
        TrainingHistoryDisplay.from_estimator(MLPClassifier())
    with pytest.raises(TypeError, match="sknets network estimator"):
        TrainingHistoryDisplay.from_estimator(LogisticRegression(max_iter=50).fit(X, y))
    with pytest.raises(ValueError, match="subset"):
        TrainingHistoryDisplay.from_estimator(early, metrics=("accuracy",))
    with pytest.raises(ValueError, match="subset"):
        TrainingHistoryDisplay.from_estimator(early, metrics=())
    search = _fit_quiet(
        GridSearchCV(
            MLPClassifier(max_iter=2, **FAST), {"alpha": [1e-4]}, cv=2, refit=False
        ),
        X,
        y,
    )
    with pytest.raises(ValueError, match="refit=True"):
        TrainingHistoryDisplay.from_estimator(search)


def test_import_does_not_import_matplotlib():
    code = "import sys, sknets, sknets.inspection\nprint('matplotlib' in sys.modules)\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ summary()


def test_summary_table_content(digits):
    X, y = digits
    clf = _fit_quiet(
        MLPClassifier(
            hidden_layer_sizes=(16, 8),
            dropout=0.1,
            batch_norm=True,
            max_iter=2,
            random_state=0,
            device="cpu",
        ),
        X,
        y,
    )
    table = clf.summary()
    assert list(table.columns) == [
        "layer",
        "type",
        "output_shape",
        "params",
        "trainable",
    ]
    body = table.iloc[:-1]
    linear = body[body["type"].str.endswith("Linear")]  # SparseInputLinear first
    assert list(linear["output_shape"]) == [(16,), (8,), (10,)]
    assert list(linear["params"]) == [64 * 16 + 16, 16 * 8 + 8, 8 * 10 + 10]
    assert list(body[body["type"] == "BatchNorm1d"]["params"]) == [32, 16]
    n = sum(p.numel() for p in clf.module_.parameters())
    assert table.iloc[-1]["layer"] == "Total"
    assert table.iloc[-1]["params"] == n == body["params"].sum()
    assert table.iloc[-1]["trainable"] == n
    # derived frames are plain DataFrames
    assert type(body).__name__ == "DataFrame"


def test_summary_text_is_aligned_with_totals(digits):
    X, y = digits
    clf = _fit_quiet(
        MLPClassifier(
            hidden_layer_sizes=(64,),
            max_iter=2,
            **{k: v for k, v in FAST.items() if k != "hidden_layer_sizes"},
        ),
        X,
        y,
    )
    for param in clf.module_.parameters():
        param.requires_grad_(False)
        break  # freeze the first weight matrix: 64 * 64 values
    text = str(clf.summary())
    assert text == repr(clf.summary())
    lines = text.splitlines()
    assert lines[0].split() == [
        "Layer",
        "Type",
        "Output",
        "shape",
        "Params",
        "Trainable",
    ]
    assert set(lines[1]) == {"="} and set(lines[-2]) == {"="}
    n = 64 * 64 + 64 + 64 * 10 + 10
    assert lines[-1] == (
        f"Total params: {n:,}  (trainable: {n - 4096:,}, frozen: 4,096)"
    )
    layer_lines = lines[2:-2]
    assert len(layer_lines) == len(clf.summary()) - 1
    assert layer_lines[0].split() == [
        "layers.0",
        "SparseInputLinear",
        "(64,)",
        "4,160",
        "64",
    ]
    # right-aligned numbers: every layer line ends in the same column
    assert len({len(line) for line in layer_lines}) == 1
