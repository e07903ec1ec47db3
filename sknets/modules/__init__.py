"""Plain PyTorch modules used by the sknets estimators.

Nothing here imports scikit-learn: the modules can be used on their own.
"""

from sknets.modules._convnet import ConvNetModule, conv_output_size
from sknets.modules._mlp import MLPModule, glorot_init_

__all__ = ["ConvNetModule", "MLPModule", "conv_output_size", "glorot_init_"]
