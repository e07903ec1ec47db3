"""
====================================================
A DataFrame as it is: tabular networks with defaults
====================================================

:class:`sknets.TabularRegressor` takes a pandas DataFrame with numeric and
categorical columns and missing values, without a ``ColumnTransformer``, and
trains an ensemble of networks as one (TabM). Here it meets scikit-learn's
:class:`~sklearn.neural_network.MLPRegressor` behind the usual preprocessing
pipeline and :class:`~sklearn.ensemble.HistGradientBoostingRegressor` with
native categorical support, all with their default parameters, on
scikit-learn's bundled diabetes data with a categorical column and missing
values added.
"""

# %%
# The table
# ---------
# ``sex`` becomes a categorical column; a tenth of ``bmi`` and ``bp`` goes
# missing.
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, cross_validate
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sknets import TabularRegressor

warnings.filterwarnings("ignore", category=ConvergenceWarning)

X, y = load_diabetes(return_X_y=True, as_frame=True, scaled=False)
X["sex"] = X["sex"].map({1.0: "female", 2.0: "male"}).astype("category")
rng = np.random.RandomState(0)
for column in ("bmi", "bp"):
    X.loc[rng.rand(len(X)) < 0.1, column] = np.nan
X.head()

# %%
# Three models, default parameters
# --------------------------------
preprocessing = ColumnTransformer(
    [
        (
            "num",
            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
            make_column_selector(dtype_include="number"),
        ),
        (
            "cat",
            OneHotEncoder(handle_unknown="ignore"),
            make_column_selector(dtype_include="category"),
        ),
    ]
)
models = {
    "TabularRegressor\n(the DataFrame as it is)": TabularRegressor(random_state=0),
    "MLPRegressor\n(behind a ColumnTransformer)": make_pipeline(
        preprocessing, MLPRegressor(random_state=0)
    ),
    "HistGradientBoosting\n(native categories)": HistGradientBoostingRegressor(
        categorical_features="from_dtype", random_state=0
    ),
}
cv = KFold(5, shuffle=True, random_state=0)
results = {name: cross_validate(model, X, y, cv=cv) for name, model in models.items()}
for name, result in results.items():
    print(
        f"{name.splitlines()[0]:22s} R2 {result['test_score'].mean():.3f} "
        f"+- {result['test_score'].std():.3f}, fit {result['fit_time'].mean():.2f} s"
    )

# %%
# Held-out R², fold by fold
# -------------------------
fig, ax = plt.subplots(figsize=(7, 3.5))
for row, result in enumerate(results.values()):
    scores = result["test_score"]
    ax.plot(scores, [row] * len(scores), "o", alpha=0.5, color="gray")
    ax.plot(scores.mean(), row, "D", color="black")
ax.set_yticks(range(len(results)), list(results))
ax.set_xlabel("held-out R² per fold (diamond: the mean)")
ax.set_title("Diabetes with a categorical column and missing values")
fig.tight_layout()
plt.show()

# %%
# The fitted network knows its columns: which were categorical, and how many
# members its ensemble has.
reg = TabularRegressor(random_state=0).fit(X, y)
print("categorical:", list(reg.feature_names_in_[reg.is_categorical_]))
print(reg.n_members, "members,", reg.n_iter_, "epochs (early stopping)")
