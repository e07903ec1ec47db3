"""Export: fitted sknets estimators and pipelines as ONNX graphs or torch modules.

:func:`to_onnx` converts any fitted estimator or pipeline that holds sknets
networks (through skl2onnx, ``pip install 'sknets[onnx]'``); :func:`to_torch`
gives the network of one estimator as a plain torch module, with nothing but
torch needed. ``import sknets.onnx`` imports neither skl2onnx nor onnx.
"""

from sknets.onnx._convert import register_converters, to_onnx
from sknets.onnx._torch import ExportedNetwork, to_torch

__all__ = ["ExportedNetwork", "register_converters", "to_onnx", "to_torch"]
