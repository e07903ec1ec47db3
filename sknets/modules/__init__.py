"""Plain PyTorch modules used by the sknets estimators.

Nothing here imports scikit-learn: the modules can be used on their own.
"""

from sknets.modules._backbones import (
    CifarResNet,
    SqueezeNet11,
    resnet20_cifar,
    resnet56_cifar,
)
from sknets.modules._convnet import ConvNetModule, conv_output_size
from sknets.modules._images import FineTuneModule, ImageFeatures
from sknets.modules._members import StackedMLP
from sknets.modules._mlp import MLPModule, glorot_init_
from sknets.modules._tabular import (
    PeriodicEmbeddings,
    PiecewiseLinearEmbeddings,
    TabularModule,
)

__all__ = [
    "CifarResNet",
    "ConvNetModule",
    "FineTuneModule",
    "ImageFeatures",
    "MLPModule",
    "PeriodicEmbeddings",
    "PiecewiseLinearEmbeddings",
    "SqueezeNet11",
    "StackedMLP",
    "TabularModule",
    "conv_output_size",
    "glorot_init_",
    "resnet20_cifar",
    "resnet56_cifar",
]
