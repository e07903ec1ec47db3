"""Tabular networks: a DataFrame as it is, k members trained as one."""

import re
from dataclasses import replace
from numbers import Integral, Real

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_X_y, validate_data

from sknets import _catalog, _docs
from sknets._base import _BaseNet
from sknets._compat import Interval, StrOptions, check_sample_weight
from sknets._heads import CLASS_WEIGHT_CONSTRAINT, _ClassifierNet, _RegressorNet
from sknets._mlp import _init_params
from sknets._tabular_encoding import TabularEncoder, as_table
from sknets.modules._tabular import TabularModule

_TABULAR_CONSTRAINTS = {
    "categorical_features": [
        StrOptions({"from_dtype"}),
        "array-like",
        None,
    ],
    "n_members": [Interval(Integral, 1, None, closed="left")],
    "embedding_dim": [Interval(Integral, 1, None, closed="left")],
    "numeric_embedding": [StrOptions({"periodic", "piecewise_linear"}), None],
    "max_categories": [Interval(Integral, 1, None, closed="left")],
}


# bins per number of piecewise-linear embeddings (rtdl_num_embeddings' default
# is 48: on the small tables of benchmarks/bench_tabular.py 16 did better)
_N_BINS = 16


def _tabular_defaults(text):
    """The shared training docs with the tabular defaults (and no batch_norm)."""
    changes = {
        "``'auto'`` is ``min(200, n_samples)``": (
            "``'auto'`` is ``min(256, n_samples)``"
        ),
        "learning_rate_init : float, default=0.001": (
            "learning_rate_init : float, default=0.002"
        ),
        "early_stopping : bool, default=False": "early_stopping : bool, default=True",
        "n_iter_no_change : int, default=10": "n_iter_no_change : int, default=16",
        "dropout : float or array-like of float, default=0.0": (
            "dropout : float, default=0.1"
        ),
    }
    for old, new in changes.items():
        if old not in text:  # pragma: no cover - a changed shared docstring
            raise RuntimeError(f"shared docstring without {old!r}")
        text = text.replace(old, new)
    text = re.sub(r"    batch_norm : .*?\n\n", "", text, flags=re.S)
    text = re.sub(
        r"    dtype : .*?\n\n",
        "    dtype : {'float32', 'float64'} or None, default=None\n"
        "        Precision of the computation: None and 'float32' compute in\n"
        "        float32 (tables rarely hold more than float32 resolves; twice the\n"
        "        speed), 'float64' in float64. Predictions are float64.\n\n",
        text,
        flags=re.S,
    )
    return text


TABULAR = """\
    categorical_features : 'from_dtype', array-like of int, bool or str or \
None, default='from_dtype'
        Which columns are categorical, as in
        :class:`~sklearn.ensemble.HistGradientBoostingClassifier`:
        ``'from_dtype'`` takes a DataFrame's ``category``, object, string and
        boolean columns (an array's columns are all numeric); column indices,
        a boolean mask or column names name them; None: no categorical
        column. Categories are matched by value, so a column may be
        ``category`` in ``fit`` and object in ``predict``.

    n_members : int, default=8
        Networks of the ensemble, trained as one (TabM-mini: each member
        scales the input by its own vector, the hidden layers are shared,
        each member has its own output layer); predictions are the mean of
        the members' (probabilities for a classifier). 1: a plain network.

    hidden_layer_sizes : array-like of shape (n_layers - 2,), \
default=(256, 256, 256)
        Widths of the shared hidden layers.

    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Activation function of the hidden layers.

    embedding_dim : int, default=16
        Largest embedding of a categorical column (one with ``c`` kept
        categories gets ``min(embedding_dim, c + 1)`` values).

    numeric_embedding : {'piecewise_linear', 'periodic'} or None, \
default='piecewise_linear'
        How numbers enter the network, 8 values per number.
        'piecewise_linear': piecewise-linear embeddings (Gorishniy et al.,
        2022, in the form TabM uses): the scaled value cut into at most 16
        bins of equal weight, their edges learned in ``fit``, and embedded
        as a linear term plus a linear map of its bin encoding (which is 0
        at first). 'periodic': ``ReLU(Linear([cos(2 pi c x), sin(2 pi c
        x)]))`` with trainable frequencies ``c``. None: the scaled values as
        they are.

    max_categories : int, default=64
        Categories kept per column, the most frequent (by weight); the others
        share the embedding of missing and unseen values.
"""

_PREPROCESSING = """\
    The table is encoded in ``fit`` (no ``ColumnTransformer`` needed):

    - numeric columns are centered on their median and divided by their
      interquartile range (half their range when that is 0), then smoothly
      clipped to (-3, 3) by ``x / sqrt(1 + (x / 3)^2)`` (RealMLP-TD's robust
      scaling); missing values become the median, and each column with
      missing values in ``fit`` gets a 0/1 indicator; infinite values are
      refused. A column that is all missing in ``fit`` is ignored.
    - categorical columns become learned embeddings; missing values,
      categories unseen in ``fit`` and those beyond ``max_categories`` share
      one "unknown" embedding.
    - quantiles and frequencies are weighted by ``sample_weight``.

    Early stopping watches minus the validation loss (``validation_scores_``;
    the label-smoothed log loss of the ensemble's mean probabilities, or
    half squared error in standardized units), which a validation set of a
    few dozen rows gives smoothly where accuracy jumps by whole rows;
    ``scoring`` replaces it.

    The columns are checked as scikit-learn checks them: the same names in
    the same order (``feature_names_in_``), or the same number for arrays. A
    numeric column that holds text in ``predict``, or a categorical column
    whose values are all of another kind than in ``fit`` (numbers for
    text), raises a ``ValueError``.

    Defaults follow TabM (Gorishniy et al., 2025: an ensemble trained as one
    network, 3 hidden layers, dropout 0.1, learning rate 2e-3, batches of
    256 rows (``batch_size='auto'``: ``min(256, n_samples)``), early
    stopping with patience 16) with RealMLP-TD's numeric preprocessing and,
    for classifiers, its label smoothing of 0.1 (Holzmüller et al., 2024).
    Numbers enter through piecewise-linear embeddings, TabM's recommended
    variant. Departures, for the CPU: 8 members (TabM: 32) of width 256
    (TabM: 512); scikit-learn's L2 ``alpha`` instead of AdamW's weight
    decay; at most 16 bins per number (``rtdl_num_embeddings.compute_bins``:
    48), embedded in 8 values.
"""


class _TabularMixin:
    """What the tabular estimators share: the encoder and the module."""

    _auto_batch_size = 256  # TabM's batches; 'auto' is min(256, n_samples)
    _onnx_unsupported = (
        "its table encoding (columns of any dtype, categories looked up by "
        "value) and its ensemble have no ONNX converter yet; keep the fitted "
        "estimator with sknets.save or joblib."
    )

    def _encoding_dtype(self):
        return np.float64 if self.dtype == "float64" else np.float32

    def _fit_input(self, X, y, sample_weight):
        table = as_table(X, type(self).__name__)
        encoder = TabularEncoder(
            self.categorical_features,
            self.max_categories,
            _N_BINS if self.numeric_embedding == "piecewise_linear" else None,
        )
        self._encoder = encoder.fit(table, sample_weight)
        self.is_categorical_ = encoder.is_categorical_.copy()
        return table

    def _validate_X(self, X, reset):
        if isinstance(X, _Encoded):  # rows this estimator encoded itself
            return X.values
        table = as_table(X, type(self).__name__)
        validate_data(self, table, reset=reset, skip_check_array=True)
        return self._encoder.transform(table, self._encoding_dtype())

    def _validate_Xy(self, X, y, reset, **kwargs):
        y_numeric = kwargs.pop("y_numeric", False)
        if y is None:
            check_X_y(np.zeros((1, 1)), y)  # scikit-learn's "requires y" error
        Xe = self._validate_X(X, reset)
        Xe, y = check_X_y(
            Xe,
            y,
            dtype=None,
            multi_output=True,
            y_numeric=y_numeric,
            ensure_all_finite=False,
        )
        return Xe, y

    def _make_plan(self, n_samples, **kwargs):
        plan = super()._make_plan(n_samples, **kwargs)
        # early stopping on minus the validation loss (see the Notes)
        return replace(
            plan,
            stopping=replace(plan.stopping, score="loss"),
            label_smoothing=self._label_smoothing(),
        )

    def _label_smoothing(self):
        return 0.0

    def _set_model_attributes(self):
        self.n_layers_ = len(self._hidden_sizes()) + 2

    def _extra_state(self):
        return {**super()._extra_state(), "encoding": self._encoder.to_state()}

    def _load_extra_state(self, extra):
        super()._load_extra_state(extra)
        encoder = TabularEncoder.from_state(
            extra["encoding"], self.categorical_features, self.max_categories
        )
        if len(encoder.names_) != self.n_features_in_ or not np.array_equal(
            encoder.is_categorical_, self.is_categorical_
        ):
            raise ValueError(
                "the stored table encoding does not match n_features_in_ and "
                "is_categorical_."
            )
        self._encoder = encoder

    def _epoch_scorer(self, valid, plan, n_outputs):
        X_val, target_val, sw_val = valid  # encoded: scored without re-encoding
        return super()._epoch_scorer(
            (_Encoded(X_val), target_val, sw_val), plan, n_outputs
        )

    def _build_module(self, n_features, n_outputs, sparse_input=False):
        encoder = self._encoder
        return TabularModule(
            encoder.n_numeric_,
            encoder.n_indicators_,
            encoder.cardinalities_,
            self._hidden_sizes(),
            n_outputs,
            n_members=self.n_members,
            activation=self.activation,
            dropout=float(self.dropout),
            embedding_dim=self.embedding_dim,
            numeric_embedding=self.numeric_embedding,
            bins=encoder.bins_,
            out_activation=self._output_activation(),
        )

    def _forward(self, X):
        return super()._forward(X).astype(np.float64, copy=False)

    def _module_width(self):
        return self._encoder.n_columns_out_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        return tags


class _Encoded:
    """Rows already encoded by the estimator (the epoch scorer's validation set)."""

    def __init__(self, values):
        self.values = values

    def __len__(self):
        return len(self.values)

    @property
    def shape(self):
        return self.values.shape


_TABULAR_TRAINING = _tabular_defaults(_docs.TRAINING)


@_catalog.register("estimator")
class TabularClassifier(ClassifierMixin, _TabularMixin, _ClassifierNet):
    __doc__ = _docs.fill(
        """Neural network classifier for tables: a DataFrame as it is.

    Numeric, categorical and missing values without a preprocessing
    pipeline, and an ensemble of ``n_members`` networks trained as one
    (TabM), evaluated as the mean of their probabilities. Binary, multiclass
    and multilabel problems; pandas DataFrames and arrays.

    Parameters
    ----------
{tabular}
    label_smoothing : float, default=0.1
        Share of the targets spread uniformly over the classes in the loss
        (RealMLP-TD's 0.1; 0 for none): the training loss and the validation
        loss that early stopping watches; predictions are not changed.

{training}
{scoring}
{callbacks}
{class_weight}
    Attributes
    ----------
    classes_ : ndarray or list of ndarray of shape (n_classes,)
        Class labels for each output.

    is_categorical_ : ndarray of shape (n_features_in_,), dtype=bool
        Which input columns were taken as categorical.

{fitted}
    See Also
    --------
    TabularRegressor : The regressor with the same network.
    MLPClassifier : A plain network on numeric input.
    sklearn.ensemble.HistGradientBoostingClassifier : Gradient boosting with
        native categorical support.

    Notes
    -----
{preprocessing}
    Examples
    --------
    >>> import pandas as pd
    >>> from sknets import TabularClassifier
    >>> X = pd.DataFrame({{
    ...     "size": [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0, 8.0] * 10,
    ...     "color": pd.Categorical(["red", "blue"] * 40),
    ... }})
    >>> y = (X["color"] == "red").to_numpy()
    >>> clf = TabularClassifier(n_members=2, hidden_layer_sizes=(16,),
    ...                         random_state=0).fit(X, y)
    >>> clf.is_categorical_
    array([False,  True])
    >>> bool(clf.score(X, y) > 0.9)
    True
    """,
        tabular=TABULAR,
        training=_TABULAR_TRAINING,
        class_weight=_docs.CLASS_WEIGHT,
        scoring=_docs.SCORING,
        callbacks=_docs.CALLBACKS,
        fitted=_docs.FITTED,
        preprocessing=_PREPROCESSING,
    )

    _parameter_constraints: dict = {
        **_BaseNet._parameter_constraints,
        **CLASS_WEIGHT_CONSTRAINT,
        **_TABULAR_CONSTRAINTS,
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        categorical_features="from_dtype",
        n_members=8,
        hidden_layer_sizes=(256, 256, 256),
        activation="relu",
        *,
        embedding_dim=16,
        numeric_embedding="piecewise_linear",
        max_categories=64,
        label_smoothing=0.1,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.002,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=True,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=16,
        max_fun=15000,
        l1_ratio=0.0,
        dropout=0.1,
        device="auto",
        dtype=None,
        compile=False,
        autocast=False,
        class_weight=None,
        scoring=None,
        callbacks=None,
    ):
        _init_params(self, **{k: v for k, v in locals().items() if k != "self"})

    def _label_smoothing(self):
        return float(self.label_smoothing)

    def __sklearn_tags__(self):
        return self._multilabel_tags(super().__sklearn_tags__())


@_catalog.register("estimator")
class TabularRegressor(RegressorMixin, _TabularMixin, _RegressorNet):
    __doc__ = _docs.fill(
        """Neural network regressor for tables: a DataFrame as it is.

    Numeric, categorical and missing values without a preprocessing
    pipeline, and an ensemble of ``n_members`` networks trained as one
    (TabM), evaluated as the mean of their predictions. The targets are
    standardized for training (``loss_curve_`` is in standardized units);
    predictions are in the units of ``y``. Single- and multi-output.

    Parameters
    ----------
{tabular}
{training}
{scoring}
{callbacks}
    Attributes
    ----------
    is_categorical_ : ndarray of shape (n_features_in_,), dtype=bool
        Which input columns were taken as categorical.

{fitted}
    See Also
    --------
    TabularClassifier : The classifier with the same network.
    MLPRegressor : A plain network on numeric input.
    sklearn.ensemble.HistGradientBoostingRegressor : Gradient boosting with
        native categorical support.

    Notes
    -----
{preprocessing}
    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from sknets import TabularRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = pd.DataFrame({{"x": rng.uniform(-1, 1, 200),
    ...                    "group": pd.Categorical(rng.choice(["a", "b"], 200))}})
    >>> y = 3 * X["x"] + (X["group"] == "a") * 2.0
    >>> reg = TabularRegressor(n_members=2, hidden_layer_sizes=(32,),
    ...                        random_state=0).fit(X, y)
    >>> bool(reg.score(X, y) > 0.9)
    True
    """,
        tabular=TABULAR,
        training=_TABULAR_TRAINING,
        scoring=_docs.SCORING,
        callbacks=_docs.CALLBACKS,
        fitted=_docs.FITTED,
        preprocessing=_PREPROCESSING,
    )

    _parameter_constraints: dict = {
        **_BaseNet._parameter_constraints,
        **_TABULAR_CONSTRAINTS,
        "dropout": [Interval(Real, 0, 1, closed="left")],
    }

    loss = "squared_error"  # the only loss: read by the regression head

    def __init__(
        self,
        categorical_features="from_dtype",
        n_members=8,
        hidden_layer_sizes=(256, 256, 256),
        activation="relu",
        *,
        embedding_dim=16,
        numeric_embedding="piecewise_linear",
        max_categories=64,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.002,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=True,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=16,
        max_fun=15000,
        l1_ratio=0.0,
        dropout=0.1,
        device="auto",
        dtype=None,
        compile=False,
        autocast=False,
        scoring=None,
        callbacks=None,
    ):
        _init_params(self, **{k: v for k, v in locals().items() if k != "self"})

    def _fit_input(self, X, y, sample_weight):
        table = super()._fit_input(X, y, sample_weight)
        self._y_mean, self._y_scale = 0.0, 1.0
        try:
            Y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            return  # the validation of y says what is wrong
        if Y.ndim not in (1, 2) or Y.shape[0] != table.shape[0] or not Y.size:
            return
        Y = Y.reshape(Y.shape[0], -1)
        if not np.isfinite(Y).all():
            return
        w = check_sample_weight(sample_weight, Y, dtype=np.float64)
        if not (w > 0).any():
            return
        mean = np.average(Y, axis=0, weights=w)
        scale = np.sqrt(np.average((Y - mean) ** 2, axis=0, weights=w))
        self._y_mean, self._y_scale = mean, np.where(scale > 0, scale, 1.0)

    def _extra_state(self):
        return {
            **super()._extra_state(),
            "target": {
                "mean": np.ravel(self._y_mean).astype(float).tolist(),
                "scale": np.ravel(self._y_scale).astype(float).tolist(),
            },
        }

    def _load_extra_state(self, extra):
        super()._load_extra_state(extra)
        mean, scale = extra["target"]["mean"], extra["target"]["scale"]
        if len(mean) not in (1, self.n_outputs_):
            raise ValueError("the stored target scaling does not match n_outputs_.")
        self._y_mean, self._y_scale = np.asarray(mean), np.asarray(scale)

    def _validate_input(self, X, y, incremental, reset, validation=False):
        X, Y, n_outputs = super()._validate_input(X, y, incremental, reset, validation)
        return X, (Y - self._y_mean) / self._y_scale, n_outputs

    def _labels(self, target):
        return super()._labels(target * self._y_scale + self._y_mean)

    def _forward(self, X):
        return super()._forward(X) * self._y_scale + self._y_mean
