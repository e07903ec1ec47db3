"""The tabular networks: a DataFrame as it is, the ensemble, bad input."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import sknets
from sknets import TabularClassifier, TabularRegressor
from sknets._tabular_encoding import TabularEncoder, weighted_quantiles
from sknets.modules import TabularModule

SMALL = dict(
    n_members=2,
    hidden_layer_sizes=(32,),
    max_iter=60,
    learning_rate_init=0.01,
    random_state=0,
    device="cpu",
)


def _table(n=240, seed=0):
    """Mixed columns; the label is the color (categorical) and the sign of size."""
    rng = np.random.RandomState(seed)
    size = rng.normal(size=n)
    size[rng.rand(n) < 0.1] = np.nan
    color = rng.choice(["red", "green", "blue"], size=n)
    X = pd.DataFrame(
        {
            "size": size,
            "color": pd.Categorical(color),
            "shape": rng.choice(["round", "square"], size=n).astype(object),
            "count": rng.randint(0, 5, size=n),
            "name": pd.array(rng.choice(["a", "b"], size=n), dtype="string"),
        }
    )
    y = np.where(color == "red", "yes", "no")
    return X, y


def test_a_mixed_dataframe_as_it_is():
    X, y = _table()
    clf = TabularClassifier(**SMALL).fit(X, y)
    np.testing.assert_array_equal(clf.is_categorical_, [False, True, True, False, True])
    np.testing.assert_array_equal(clf.feature_names_in_, X.columns)
    proba = clf.predict_proba(X)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    assert clf.score(X, y) > 0.95  # the signal is in the categorical column
    assert set(clf.predict(X)) <= {"yes", "no"}


def test_random_state_reproduces_and_clone_and_pickle_are_safe():
    X, y = _table()
    a = TabularClassifier(**SMALL).fit(X, y)
    b = clone(a).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.predict_proba(X), c.predict_proba(X))
    other = TabularClassifier(**{**SMALL, "random_state": 1}).fit(X, y)
    assert not np.array_equal(a.predict_proba(X), other.predict_proba(X))


def test_the_prediction_is_the_mean_of_the_members_probabilities():
    torch.manual_seed(0)
    module = TabularModule(
        2, 1, [4], [8], 3, n_members=5, dropout=0.0, out_activation="softmax"
    ).double()
    X = torch.tensor([[0.5, -1.0, 1.0, 2.0], [0.0, 0.3, 0.0, 0.0]], dtype=torch.float64)
    members = module.train()(X)  # (rows, members, outputs)
    assert members.shape == (2, 5, 3)
    mean = torch.softmax(members, -1).mean(1)
    combined = torch.softmax(module.eval()(X), -1)
    torch.testing.assert_close(combined, mean)
    # logistic outputs: the sigmoid of the combined logit is the mean sigmoid
    module.out_activation = "logistic"
    module.train()
    members = module(X)
    combined = torch.sigmoid(module.eval()(X))
    torch.testing.assert_close(combined, torch.sigmoid(members).mean(1))


def test_one_member_is_a_plain_network():
    X, y = _table()
    clf = TabularClassifier(**{**SMALL, "n_members": 1}).fit(X, y)
    assert clf.module_.head_weight.shape[0] == 1
    assert clf.score(X, y) > 0.9


def test_unseen_and_rare_categories_share_the_missing_row():
    X, y = _table()
    clf = TabularClassifier(**{**SMALL, "max_categories": 2}).fit(X, y)
    rows = X.iloc[:5].copy()
    unseen, missing = rows.copy(), rows.copy()
    unseen["shape"] = "triangle"  # never seen in fit
    missing["shape"] = None
    np.testing.assert_array_equal(clf.predict_proba(unseen), clf.predict_proba(missing))
    # 'color' kept its 2 most frequent categories: the third is rare
    counts = X["color"].value_counts()
    rare = counts.index[-1]
    as_rare, as_missing = rows.copy(), rows.copy()
    as_rare["color"] = pd.Categorical([rare] * 5, categories=counts.index)
    as_missing["color"] = pd.Categorical([None] * 5, categories=counts.index)
    np.testing.assert_array_equal(
        clf.predict_proba(as_rare), clf.predict_proba(as_missing)
    )


def test_categories_are_matched_by_value_not_by_dtype():
    X, y = _table()
    clf = TabularClassifier(**SMALL).fit(X, y)
    as_object = X.astype({"color": object, "name": object})
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(as_object))


def test_a_column_that_changes_type_is_an_error():
    X, y = _table()
    clf = TabularClassifier(**SMALL).fit(X, y)
    text = X.copy()
    text["size"] = "big"
    with pytest.raises(ValueError, match="'size' was numeric in fit"):
        clf.predict(text)
    numbers = X.copy()
    numbers["shape"] = 3.0
    with pytest.raises(ValueError, match="'shape' held"):
        clf.predict(numbers)


def test_other_columns_or_order_are_errors():
    X, y = _table()
    clf = TabularClassifier(**SMALL).fit(X, y)
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(X[X.columns[::-1]])
    with pytest.raises(ValueError, match="feature"):
        clf.predict(X.assign(extra=1.0))
    with pytest.raises(ValueError, match="features"):
        clf.predict(X.drop(columns="count").to_numpy())


def test_infinite_values_are_refused():
    X, y = _table()
    bad = X.copy()
    bad.loc[3, "size"] = np.inf
    with pytest.raises(ValueError, match="infinity in column 'size'"):
        TabularClassifier(**SMALL).fit(bad, y)
    clf = TabularClassifier(**SMALL).fit(X, y)
    with pytest.raises(ValueError, match="infinity"):
        clf.predict(bad)


def test_an_all_missing_column_is_ignored():
    X, y = _table()
    X["empty"] = np.nan
    clf = TabularClassifier(**SMALL).fit(X, y)
    filled = X.assign(empty=123.0)
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(filled))


def test_missing_values_have_their_indicator():
    X, _ = _table()
    enc = TabularEncoder().fit(X)
    assert enc.n_indicators_ == 1  # 'size' only
    out = enc.transform(X)
    nan = X["size"].isna().to_numpy()
    np.testing.assert_array_equal(out[:, enc.n_numeric_], nan)
    assert np.all(out[nan, 0] == 0)  # the median, scaled
    assert np.all(np.abs(out[:, : enc.n_numeric_]) < 3)  # smoothly clipped


def test_weighted_quantiles_are_those_of_repeated_rows():
    rng = np.random.RandomState(0)
    values = rng.normal(size=30)
    weights = rng.randint(0, 4, size=30)
    qs = [0.0, 0.25, 0.5, 0.75, 1.0]
    repeated = np.repeat(values, weights)
    np.testing.assert_array_equal(
        weighted_quantiles(values, weights.astype(float), qs),
        np.quantile(repeated, qs, method="inverted_cdf"),
    )


@pytest.mark.parametrize(
    "spec", [[1, 2], np.array([False, True, True, False]), ["color", "shape"]]
)
def test_categorical_features_by_index_mask_or_name(spec):
    X, y = _table()
    X = X.drop(columns="name")
    clf = TabularClassifier(**{**SMALL, "categorical_features": spec}).fit(X, y)
    np.testing.assert_array_equal(clf.is_categorical_, [False, True, True, False])


def test_an_object_array_with_named_categorical_columns():
    X, y = _table()
    array = X[["size", "shape", "count"]].to_numpy(dtype=object)
    clf = TabularClassifier(**{**SMALL, "categorical_features": [1]}).fit(array, y)
    np.testing.assert_array_equal(clf.is_categorical_, [False, True, False])
    assert clf.predict(array).shape == (len(y),)
    with pytest.raises(ValueError, match="needs X as a DataFrame"):
        TabularClassifier(**{**SMALL, "categorical_features": ["shape"]}).fit(array, y)


def test_sparse_input_is_refused():
    sp = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="sparse"):
        TabularClassifier(**SMALL).fit(sp.random(10, 3, format="csr"), [0, 1] * 5)


def test_the_regressor_predicts_in_the_units_of_y():
    X, _ = _table(400)
    signal = np.nan_to_num(X["size"].to_numpy()) + (X["color"] == "red").to_numpy()
    y = 50_000 + 1_000 * signal
    reg = TabularRegressor(**{**SMALL, "max_iter": 100}).fit(X, y)
    assert reg.score(X, y) > 0.9
    assert abs(reg.predict(X).mean() - y.mean()) < 200


def test_validation_set_scoring_class_weight_and_early_stopping():
    X, y = _table()
    clf = TabularClassifier(
        **SMALL, class_weight="balanced", scoring="balanced_accuracy"
    ).fit(X[:200], y[:200], X_val=X[200:], y_val=y[200:])
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_in_searches_and_pipelines():
    X, y = _table()
    scores = cross_val_score(TabularClassifier(**SMALL), X, y, cv=3)
    assert scores.mean() > 0.9
    grid = GridSearchCV(
        TabularClassifier(**SMALL), {"n_members": [1, 2]}, cv=2, n_jobs=1
    ).fit(X, y)
    assert grid.best_score_ > 0.9
    pipe = make_pipeline(
        ColumnTransformer(
            [("keep", FunctionTransformer(), list(X.columns))],
            verbose_feature_names_out=False,
        ).set_output(transform="pandas"),
        TabularClassifier(**SMALL),
    ).fit(X, y)
    assert pipe.score(X, y) > 0.9


@pytest.mark.parametrize("cls", [TabularClassifier, TabularRegressor])
def test_save_and_load_give_the_same_predictions(cls, tmp_path):
    X, y = _table()
    target = y if cls is TabularClassifier else 100 * np.nan_to_num(X["size"]) + 5
    est = cls(**SMALL).fit(X, target)
    sknets.save(est, tmp_path / "est.sknets")
    back = sknets.load(tmp_path / "est.sknets")
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    np.testing.assert_array_equal(back.is_categorical_, est.is_categorical_)
    unseen = X.assign(shape="triangle")  # the unknown row survives the trip
    np.testing.assert_array_equal(back.predict(unseen), est.predict(unseen))


def test_a_pipeline_with_a_tabular_network_is_saved_whole(tmp_path):
    pytest.importorskip("skops")
    X, y = _table()
    # a FunctionTransformer passes the DataFrame on (scikit-learn 1.6's
    # ColumnTransformer holds a type that the skops of then does not trust)
    pipe = make_pipeline(FunctionTransformer(), TabularClassifier(**SMALL)).fit(X, y)
    sknets.save(pipe, tmp_path / "pipe.sknets")
    back = sknets.load(tmp_path / "pipe.sknets")
    np.testing.assert_array_equal(back.predict_proba(X), pipe.predict_proba(X))


def test_load_refuses_an_encoding_that_does_not_match(tmp_path):
    X, y = _table()
    clf = TabularClassifier(**SMALL).fit(X, y)
    clf._encoder.centers_ = clf._encoder.centers_[:1]  # one numeric column lost
    sknets.save(clf, tmp_path / "bad.sknets")
    with pytest.raises(ValueError, match="centers"):
        sknets.load(tmp_path / "bad.sknets")


def test_save_refuses_categories_it_cannot_store(tmp_path):
    X, y = _table()
    X["when"] = pd.Categorical(pd.to_datetime(["2024-01-01", "2025-01-01"] * 120))
    clf = TabularClassifier(**SMALL).fit(X, y)
    with pytest.raises(TypeError, match="joblib"):
        sknets.save(clf, tmp_path / "clf.sknets")
    assert not (tmp_path / "clf.sknets").exists()


def test_onnx_refuses_with_a_reason():
    X, y = _table()
    clf = TabularClassifier(**SMALL).fit(X, y)
    onnx = pytest.importorskip("sknets.onnx")
    pytest.importorskip("skl2onnx")
    with pytest.raises(TypeError, match="TabularClassifier: its table encoding"):
        onnx.to_onnx(clf, X.iloc[:1])


def test_the_regressor_scores_its_validation_set_in_the_units_of_y():
    from sklearn.metrics import mean_absolute_error

    X, _ = _table(300)
    y = 1_000 * np.nan_to_num(X["size"].to_numpy()) + 10_000
    reg = TabularRegressor(**SMALL, scoring="neg_mean_absolute_error").fit(
        X[:240], y[:240], X_val=X[240:], y_val=y[240:]
    )
    mae = mean_absolute_error(y[240:], reg.predict(X[240:]))
    np.testing.assert_allclose(reg.best_validation_score_, -mae, rtol=1e-5)


def test_partial_fit_and_warm_start_keep_the_encoding():
    X, y = _table()
    clf = TabularClassifier(**SMALL, early_stopping=False)
    clf.partial_fit(X[:120], y[:120], classes=np.unique(y))
    encoder = clf._encoder
    clf.partial_fit(X[120:], y[120:])  # a batch with other quantiles
    assert clf._encoder is encoder
    assert clf.n_iter_ == 1
    with pytest.raises(ValueError, match="early_stopping"):  # as scikit-learn's
        TabularClassifier(**SMALL).partial_fit(X, y, classes=np.unique(y))
    warm = TabularClassifier(**{**SMALL, "warm_start": True}).fit(X, y)
    encoder = warm._encoder
    warm.fit(X[:100], y[:100])
    assert warm._encoder is encoder  # the same columns, read the same way


def test_the_sknets_search_trains_each_candidate_on_its_own():
    from sknets.model_selection import GridSearchCV as StackedGridSearchCV

    X, y = _table()
    grid = {"alpha": [1e-4, 1e-2]}
    cv = 2
    ours = StackedGridSearchCV(TabularClassifier(**SMALL), grid, cv=cv).fit(X, y)
    theirs = GridSearchCV(TabularClassifier(**SMALL), grid, cv=cv).fit(X, y)
    np.testing.assert_allclose(
        ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"]
    )


def test_label_smoothing_is_torchs_and_makes_probabilities_less_sure():
    import torch.nn.functional as F

    from sknets._losses import sample_losses

    torch.manual_seed(0)
    raw, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(
        sample_losses(raw, y, "softmax", 0.2).mean(),
        F.cross_entropy(raw, y, label_smoothing=0.2),
    )
    logit, target = raw[:, :1], (y[:, None] % 2).double()
    torch.testing.assert_close(
        sample_losses(logit, target, "logistic", 0.2),
        F.binary_cross_entropy_with_logits(
            logit, target * 0.8 + 0.1, reduction="none"
        ).sum(1),
    )
    X, y = _table()
    sure = TabularClassifier(**{**SMALL, "label_smoothing": 0.0}).fit(X, y)
    smooth = TabularClassifier(**{**SMALL, "label_smoothing": 0.3}).fit(X, y)
    assert smooth.predict_proba(X).max(1).mean() < sure.predict_proba(X).max(1).mean()
    # early stopping watches minus the (smoothed) validation loss
    np.testing.assert_allclose(
        smooth.validation_scores_, -np.asarray(smooth.validation_loss_curve_)
    )


def test_piecewise_linear_encoding_is_that_of_the_paper():
    from sknets.modules import PiecewiseLinearEmbeddings

    # feature 0: bins [0, 1], [1, 2], [2, 4]; feature 1: the one bin [-1, 1]
    emb = PiecewiseLinearEmbeddings([[0.0, 1.0, 2.0, 4.0], [-1.0, 1.0]], dim=3)
    x = torch.tensor([[-0.5, 3.0], [1.5, -3.0], [5.0, 0.0]])
    enc = emb.encode(x)
    expected = torch.tensor(
        [
            # below the first edge: only the first bin, not clipped below
            [[-0.5, 0.0, 0.0], [2.0, 0.0, 0.0]],
            # inside the second bin: the first full, the second half
            [[1.0, 0.5, 0.0], [-1.0, 0.0, 0.0]],
            # beyond the last edge: the last bin not clipped above
            [[1.0, 1.0, 1.5], [0.5, 0.0, 0.0]],
        ]
    )
    torch.testing.assert_close(enc, expected)
    # training starts from linear embeddings: the bins' weights are zero
    affine = x.unsqueeze(-1) * emb.linear_weight + emb.linear_bias + emb.bias
    torch.testing.assert_close(emb(x), affine.flatten(1))
    with torch.no_grad():
        emb.weight.normal_()
    assert not torch.allclose(emb(x), affine.flatten(1))


def test_piecewise_linear_bins_are_quantiles_of_the_scaled_values():
    rng = np.random.RandomState(0)
    X = pd.DataFrame(
        {
            "wide": rng.exponential(size=500),
            "few": rng.randint(0, 3, size=500).astype(float),
            "constant": np.full(500, 7.0),
        }
    )
    enc = TabularEncoder(n_bins=8).fit(X)
    wide, few, constant = enc.bins_
    scaled = enc.transform(X, np.float64)
    assert len(wide) == 9  # 8 bins of equal weight
    np.testing.assert_allclose(
        wide, np.quantile(scaled[:, 0], np.linspace(0, 1, 9), method="inverted_cdf")
    )
    np.testing.assert_allclose(few, np.unique(scaled[:, 1]))  # no empty bins
    np.testing.assert_array_equal(constant, [-1.0, 1.0])  # one bin around it
    assert TabularEncoder().fit(X).bins_ is None  # only when asked


def test_piecewise_linear_embeddings_fit_save_and_load(tmp_path):
    X, y = _table()
    clf = TabularClassifier(numeric_embedding="piecewise_linear", **SMALL).fit(X, y)
    assert clf.score(X, y) > 0.95
    n_numeric = 2  # 'size' and 'count'
    assert clf.net_.module_.piecewise.weight.shape[0] == n_numeric
    sknets.save(clf, tmp_path / "clf.sknets")
    back = sknets.load(tmp_path / "clf.sknets")
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    back2 = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back2.predict_proba(X), clf.predict_proba(X))
    refit = clone(clf).fit(X, y)  # random_state reproduces
    np.testing.assert_array_equal(refit.predict_proba(X), clf.predict_proba(X))


def test_load_refuses_bins_that_do_not_increase(tmp_path):
    X, y = _table()
    clf = TabularClassifier(numeric_embedding="piecewise_linear", **SMALL).fit(X, y)
    clf._encoder.bins_[0] = clf._encoder.bins_[0][::-1]
    sknets.save(clf, tmp_path / "bad.sknets")
    with pytest.raises(ValueError, match="bin edges"):
        sknets.load(tmp_path / "bad.sknets")


def test_networks_pickled_before_numeric_bins_still_predict_and_save(tmp_path):
    X, y = _table()
    clf = TabularClassifier(numeric_embedding=None, **SMALL).fit(X, y)
    expected = clf.predict_proba(X)
    old = pickle.loads(pickle.dumps(clf))
    # what a network pickled before piecewise-linear embeddings holds
    del old.net_.module_.piecewise
    del old._encoder.bins_
    del old._encoder.n_bins
    np.testing.assert_array_equal(old.predict_proba(X), expected)
    sknets.save(old, tmp_path / "old.sknets")
    back = sknets.load(tmp_path / "old.sknets")
    np.testing.assert_array_equal(back.predict_proba(X), expected)


@pytest.mark.parametrize(
    "tamper, match",
    [
        (lambda bins: None, "needs the bins"),  # piecewise_linear without bins
        (lambda bins: [e[:2] for e in bins], "piecewise.weight"),  # other shapes
    ],
)
def test_load_refuses_bins_that_do_not_build_the_network(tmp_path, tamper, match):
    X, y = _table()
    clf = TabularClassifier(numeric_embedding="piecewise_linear", **SMALL).fit(X, y)
    clf._encoder.bins_ = tamper(clf._encoder.bins_)
    sknets.save(clf, tmp_path / "bad.sknets")
    with pytest.raises(ValueError, match=match):
        sknets.load(tmp_path / "bad.sknets")
