"""sknets: neural networks that behave like scikit-learn estimators.

PyTorch-trained networks (skorch is the training engine) with scikit-learn's
estimator contract: they work in ``Pipeline``, ``GridSearchCV``,
``cross_val_score`` and ``joblib``, and pass scikit-learn's estimator checks.
"""

from sknets._convnet import ConvNetClassifier
from sknets._mlp import MLPClassifier, MLPRegressor
from sknets._persistence import load, save
from sknets._pretrained import FineTunedClassifier, PretrainedFeatureExtractor

__version__ = "0.1.0"

__all__ = [
    "ConvNetClassifier",
    "FineTunedClassifier",
    "MLPClassifier",
    "MLPRegressor",
    "PretrainedFeatureExtractor",
    "load",
    "save",
    "__version__",
]
