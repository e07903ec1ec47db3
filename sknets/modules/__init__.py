"""Plain PyTorch modules used by the sknets estimators.

Nothing here imports scikit-learn: the modules can be used on their own.
"""

from sknets.modules._mlp import MLPModule, glorot_init_

__all__ = ["MLPModule", "glorot_init_"]
