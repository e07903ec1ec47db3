"""sknets: neural networks that behave like scikit-learn estimators.

PyTorch-trained networks (skorch is the training engine) with scikit-learn's
estimator contract: they work in ``Pipeline``, ``GridSearchCV``,
``cross_val_score`` and ``joblib``, and pass scikit-learn's estimator checks.
"""

from sknets import (
    _skops,  # noqa: F401  (registers the skops states)
    model_selection,  # noqa: F401  (registers the searches)
)
from sknets._convnet import ConvNetClassifier
from sknets._mlp import MLPClassifier, MLPRegressor
from sknets._persistence import load, save
from sknets._pretrained import FineTunedClassifier, PretrainedFeatureExtractor
from sknets._tabular import TabularClassifier, TabularRegressor
from sknets._version import __version__

__all__ = [
    "ConvNetClassifier",
    "FineTunedClassifier",
    "MLPClassifier",
    "MLPRegressor",
    "PretrainedFeatureExtractor",
    "TabularClassifier",
    "TabularRegressor",
    "load",
    "save",
    "__version__",
]
