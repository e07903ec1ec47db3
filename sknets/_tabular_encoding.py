"""Tables as a network reads them: numeric values scaled, categories as codes.

:class:`TabularEncoder` is learned in ``fit`` of the tabular networks
(:mod:`sknets._tabular`) and turns a pandas DataFrame or an array, as it is,
into one float array: first the numeric columns (RealMLP-TD's robust scaling
with smooth clipping, missing values at the median), then one 0/1 indicator
per numeric column that had missing values in ``fit``, then one integer code
per categorical column (``0``: missing, unseen or rare; ``1..c``: its kept
categories, most frequent first), which the module embeds.
"""

from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_array

from sknets._compat import check_sample_weight

# RealMLP-TD's smooth clipping: x / sqrt(1 + (x / 3)^2), in (-3, 3)
_CLIP = 3.0


def is_dataframe(X):
    """Whether ``X`` is a pandas DataFrame (read column by column)."""
    return isinstance(X, pd.DataFrame)


def as_table(X, name):
    """``X`` as a DataFrame (kept as it is) or a 2-D array (object kept object).

    The checks scikit-learn makes of any ``X`` (2-D, not empty, not sparse,
    not complex), without converting a DataFrame's columns to one dtype.
    """
    if is_dataframe(X):
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(
                f"Found array with {X.shape[0]} sample(s) and {X.shape[1]} "
                f"feature(s) while a minimum of 1 is required by {name}."
            )
        complex_columns = [c for c, t in X.dtypes.items() if t.kind == "c"]
        if complex_columns:
            raise ValueError(f"Complex data not supported: columns {complex_columns}.")
        return X
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise TypeError(
            f"{name} does not accept sparse input (a sparse matrix was passed): "
            "tabular networks read dense columns; pass X.toarray() or a DataFrame."
        )
    return check_array(
        X, dtype=None, ensure_all_finite=False, estimator=name, accept_sparse=False
    )


def weighted_quantiles(values, weights, qs):
    """Quantiles ``qs`` of ``values`` with ``weights`` (NumPy's 'inverted_cdf').

    The smallest value whose cumulative weight reaches ``q`` of the total:
    integer weights give the quantiles of the data with rows repeated.
    """
    order = np.argsort(values, kind="stable")
    values, cum = values[order], np.cumsum(weights[order])
    total = cum[-1]
    at = np.searchsorted(cum, np.asarray(qs) * total, side="left")
    return values[np.minimum(at, len(values) - 1)]


def _scaled(values, center, scale):
    """Robust scaling, then RealMLP-TD's smooth clipping into ``(-3, 3)``."""
    x = (values - center) * scale
    return x / np.sqrt(1.0 + (x / _CLIP) ** 2)


def _edges(values, weights, n_bins):
    """At most ``n_bins`` bins of equal weight over ``values``: their edges.

    Quantile edges without repeats (Gorishniy et al., 2022); a column of one
    value gets the single bin ``[v - 1, v + 1]``.
    """
    qs = np.linspace(0.0, 1.0, n_bins + 1)
    edges = np.unique(weighted_quantiles(values, weights, qs))
    if len(edges) < 2:
        edges = np.array([edges[0] - 1.0, edges[0] + 1.0])
    return edges


def _numeric(column, name):
    """A column's values as float64 (NaN where missing); refuses text."""
    try:
        if isinstance(column, pd.Series):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"column {name!r} was numeric in fit, but holds values that are not "
            f"numbers now ({exc}); a column keeps its type between fit and predict."
        ) from None
    if np.isinf(values).any():
        raise ValueError(
            f"Input X contains infinity in column {name!r}: tabular networks "
            "take missing values (NaN) but not infinite ones."
        )
    return values


class TabularEncoder:
    """The fitted preprocessing of a tabular network (see the module).

    Parameters
    ----------
    categorical_features : 'from_dtype', array-like of int, bool or str, or None
        As in :class:`~sklearn.ensemble.HistGradientBoostingClassifier`:
        ``'from_dtype'`` takes a DataFrame's ``category``, object, string and
        boolean columns as categorical (an array's columns are numeric);
        indices, a boolean mask or column names name them; None: none.
    max_categories : int
        Categories kept per column (the most frequent); rarer ones share the
        code 0 with missing and unseen values.
    n_bins : int or None, default=None
        Bins per numeric column for piecewise-linear embeddings: the edges
        are quantiles of the scaled values seen in ``fit`` (``bins_``), at
        most ``n_bins`` bins, fewer where values repeat. None: no bins.
    """

    bins_ = None  # a class default: encoders pickled before bins have it too

    def __init__(
        self, categorical_features="from_dtype", max_categories=64, n_bins=None
    ):
        self.categorical_features = categorical_features
        self.max_categories = max_categories
        self.n_bins = n_bins

    # ------------------------------------------------------------------ columns

    def _categorical_mask(self, X):
        n = X.shape[1]
        names = list(X.columns) if is_dataframe(X) else None
        spec = self.categorical_features
        if spec is None:
            return np.zeros(n, dtype=bool)
        if isinstance(spec, str) and spec == "from_dtype":
            if names is None:
                return np.zeros(n, dtype=bool)
            return np.array(
                [
                    isinstance(t, pd.CategoricalDtype)
                    or pd.api.types.is_object_dtype(t)
                    or pd.api.types.is_string_dtype(t)
                    or pd.api.types.is_bool_dtype(t)
                    for t in X.dtypes
                ]
            )
        spec = np.asarray(spec)
        if spec.size == 0:
            return np.zeros(n, dtype=bool)
        if spec.dtype.kind == "b":
            if spec.shape != (n,):
                raise ValueError(
                    f"categorical_features as a boolean mask has shape {spec.shape}; "
                    f"X has {n} features."
                )
            return spec.astype(bool)
        mask = np.zeros(n, dtype=bool)
        if spec.dtype.kind in "iu":
            if spec.min() < 0 or spec.max() >= n:
                raise ValueError(
                    f"categorical_features indices must be in [0, {n - 1}]; got "
                    f"{spec.tolist()}."
                )
            mask[spec] = True
            return mask
        if spec.dtype.kind in "OU":
            if names is None:
                raise ValueError(
                    "categorical_features names columns, which needs X as a "
                    "DataFrame (with those column names)."
                )
            missing = [s for s in spec.tolist() if s not in names]
            if missing:
                raise ValueError(
                    f"categorical_features names {missing}, which are not columns "
                    f"of X ({names})."
                )
            mask[[names.index(s) for s in spec.tolist()]] = True
            return mask
        raise ValueError(
            "categorical_features must be 'from_dtype', None, column indices, a "
            f"boolean mask or column names; got {self.categorical_features!r}."
        )

    @staticmethod
    def _column(X, j):
        return X.iloc[:, j] if is_dataframe(X) else X[:, j]

    def _names(self, X):
        if is_dataframe(X):
            return [str(c) for c in X.columns]
        return [f"x{j}" for j in range(X.shape[1])]

    # ---------------------------------------------------------------------- fit

    def fit(self, X, sample_weight=None):
        """Learn medians, scales, indicator columns and category codes."""
        w = check_sample_weight(sample_weight, X, dtype=np.float64)
        self.is_categorical_ = self._categorical_mask(X)
        self.names_ = self._names(X)
        self.numeric_ = np.flatnonzero(~self.is_categorical_)
        self.categorical_ = np.flatnonzero(self.is_categorical_)
        centers, scales, missing, bins = [], [], [], []
        for j in self.numeric_:
            values = _numeric(self._column(X, j), self.names_[j])
            seen = ~np.isnan(values) & (w > 0)
            if not seen.any():  # all missing: the column is ignored (always 0)
                centers.append(0.0)
                scales.append(0.0)
                missing.append(False)
                if self.n_bins is not None:
                    bins.append(_edges(np.zeros(1), np.ones(1), self.n_bins))
                continue
            missing.append(bool(np.isnan(values[w > 0]).any()))
            v, vw = values[seen], w[seen]
            lo, q1, median, q3, hi = weighted_quantiles(
                v, vw, [0.0, 0.25, 0.5, 0.75, 1.0]
            )
            spread = q3 - q1 if q3 > q1 else 0.5 * (hi - lo)
            centers.append(float(median))
            scales.append(1.0 / spread if spread > 0 else 0.0)
            if self.n_bins is not None:  # edges of the values as transform scales them
                scaled = _scaled(v, centers[-1], scales[-1])
                bins.append(_edges(scaled, vw, self.n_bins))
        self.centers_ = np.asarray(centers, dtype=np.float64)
        self.scales_ = np.asarray(scales, dtype=np.float64)
        self.with_indicator_ = np.asarray(missing, dtype=bool)
        self.bins_ = None if self.n_bins is None else bins
        self.categories_ = []
        for j in self.categorical_:
            column = pd.Series(np.asarray(self._column(X, j), dtype=object))
            present = column.notna().to_numpy() & (w > 0)
            weight = (
                pd.Series(w[present])
                .groupby(column[present].to_numpy(), sort=False)
                .sum()
            )
            # most frequent first; ties in the order of their text (deterministic)
            ordered = sorted(weight.items(), key=lambda kv: (-kv[1], str(kv[0])))
            kept = [value for value, _ in ordered[: self.max_categories]]
            self.categories_.append(kept)
        return self._sizes()

    def _sizes(self):
        self.n_numeric_ = len(self.numeric_)
        self.n_indicators_ = int(self.with_indicator_.sum())
        self.cardinalities_ = [len(c) + 1 for c in self.categories_]
        width = self.n_numeric_ + self.n_indicators_ + len(self.categorical_)
        self.n_columns_out_ = width
        return self

    # -------------------------------------------------------------- stored form

    def to_state(self):
        """The fitted encoder as plain values (what ``sknets.save`` stores)."""
        state = {
            "names": list(self.names_),
            "categorical": [bool(c) for c in self.is_categorical_],
            "centers": [float(c) for c in self.centers_],
            "scales": [float(s) for s in self.scales_],
            "with_indicator": [bool(f) for f in self.with_indicator_],
            "categories": [[_plain(c) for c in kept] for kept in self.categories_],
        }
        if self.bins_ is not None:
            state["bins"] = [[float(e) for e in edges] for edges in self.bins_]
        return state

    @classmethod
    def from_state(cls, state, categorical_features, max_categories):
        """The fitted encoder of :meth:`to_state` (checked by ``sknets.load``)."""
        bins = state.get("bins")  # only with piecewise-linear embeddings
        encoder = cls(
            categorical_features,
            max_categories,
            None if bins is None else max((len(e) - 1 for e in bins), default=1),
        )
        encoder.bins_ = None if bins is None else [np.asarray(e) for e in bins]
        encoder.names_ = list(state["names"])
        encoder.is_categorical_ = np.asarray(state["categorical"], dtype=bool)
        encoder.numeric_ = np.flatnonzero(~encoder.is_categorical_)
        encoder.categorical_ = np.flatnonzero(encoder.is_categorical_)
        encoder.centers_ = np.asarray(state["centers"], dtype=np.float64)
        encoder.scales_ = np.asarray(state["scales"], dtype=np.float64)
        encoder.with_indicator_ = np.asarray(state["with_indicator"], dtype=bool)
        encoder.categories_ = [list(kept) for kept in state["categories"]]
        return encoder._sizes()

    # ---------------------------------------------------------------- transform

    def transform(self, X, dtype=np.float32):
        """The encoded float array, ``(n_samples, n_columns_out_)``."""
        out = np.empty((X.shape[0], self.n_columns_out_), dtype=dtype)
        at = self.n_numeric_
        indicators = []
        for i, j in enumerate(self.numeric_):
            values = _numeric(self._column(X, j), self.names_[j])
            nan = np.isnan(values)
            x = _scaled(values, self.centers_[i], self.scales_[i])
            x[nan] = 0.0  # the median
            out[:, i] = x
            if self.with_indicator_[i]:
                indicators.append(nan)
        for i, nan in enumerate(indicators):
            out[:, at + i] = nan
        at += len(indicators)
        for i, j in enumerate(self.categorical_):
            out[:, at + i] = self._codes(self._column(X, j), i, self.names_[j])
        return out

    def _codes(self, column, i, name):
        kept = self.categories_[i]
        values = pd.Series(np.asarray(column, dtype=object))
        codes = pd.Index(kept, dtype=object).get_indexer(values) + 1
        present = values.notna().to_numpy()
        if kept and present.any() and not (codes[present] > 0).any():
            fit_kinds = {_kind(v) for v in kept}
            now_kinds = {_kind(v) for v in values[present].head(1000)}
            if fit_kinds.isdisjoint(now_kinds):
                raise ValueError(
                    f"categorical column {name!r} held {sorted(fit_kinds)} values in "
                    f"fit but holds {sorted(now_kinds)} values now, none of them a "
                    "category seen in fit; a column keeps its type between fit and "
                    "predict."
                )
        return codes


def _plain(value):
    """A category as a plain Python value (NumPy scalars unwrapped)."""
    return value.item() if isinstance(value, np.generic) else value


def _kind(value):
    """'text', 'number' or 'other': what a category value is made of."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, (Integral, float, np.number, bool, np.bool_)):
        return "number"
    return "other"
