"""Image input: the one rule by which the image estimators read ``X``.

:class:`~sknets.ConvNetClassifier`, :class:`~sknets.PretrainedFeatureExtractor`
and :class:`~sknets.FineTunedClassifier` read ``X`` with the same function,
``_flatten_images``, by this rule:

1. 2-D ``X`` of shape (n_samples, n_features), sparse matrices and
   DataFrames are flat rows, each one sample in C order with channels first
   (``images.reshape(n_samples, -1)`` of (n, C, H, W) images); the
   estimator's ``input_shape`` says how to reshape them.
2. 3-D ``X`` of shape (n, H, W) holds one-channel images.
3. 4-D ``X`` holds channels-last images (n, H, W, C) when its last axis has
   1 or 3 entries and its second does not, else channels-first images
   (n, C, H, W). When the expected (channels, height, width) of a sample is
   known (from ``input_shape`` in ``fit``, from the images seen in ``fit``
   afterwards) and only the other reading gives it, the other reading is
   used.
4. Arrays of more than 4 dimensions are refused.

Images become flat rows in (C, H, W) order plus their (C, H, W) shape; when
a shape is expected, the images must have it, else a ``ValueError`` names
both shapes. Flat rows and images of the same pixels give the same results.

``input_shape`` is ``(height, width)`` or ``(channels, height, width)``;
:class:`~sknets.ConvNetClassifier` also takes ``(length,)`` for a
one-channel signal, and reads an image of height 1 as a signal. The
pretrained estimators map ``uint8`` pixels to ``[0, 1]`` and take float input
to be in ``[0, 1]`` already; :class:`~sknets.ConvNetClassifier` takes values
as they are.
"""

import os
from numbers import Integral

import numpy as np
import scipy.sparse as sp
from torch import nn

from sknets._compat import Interval, StrOptions


def _image_shape(input_shape):
    """(C, H, W) from ``input_shape`` for flat rows."""
    if input_shape is None:
        return None
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"input_shape must be (height, width) or (channels, height, width), "
            f"got {input_shape!r}."
        )
    return shape


def _flatten_images(X, expected=None, source=None):
    """Flat rows and the (C, H, W) sample shape of ``X``, by the module's rule.

    Parameters
    ----------
    X : array-like
        Flat rows (2-D, sparse or a DataFrame) or images (3-D or 4-D).
    expected : tuple of int or None, default=None
        The (C, H, W) shape each image must have; it also decides between
        the two readings of a 4-D array. None accepts any shape.
    source : str or None, default=None
        What ``expected`` comes from, for the error message, e.g.
        ``'input_shape=(8, 8)'``.

    Returns
    -------
    X : array-like
        ``X`` itself when it is not an N-D array, else an ndarray of shape
        (n_samples, C * H * W) in (C, H, W) order.
    shape : tuple of int or None
        (C, H, W) of the images; None when ``X`` was not an N-D array.
    """
    if sp.issparse(X) or hasattr(X, "columns"):
        return X, None
    ndim = getattr(X, "ndim", None)
    if ndim is None and isinstance(X, (list, tuple)):
        try:
            ndim = np.asarray(X).ndim
        except ValueError:  # ragged: let validate_data explain
            return X, None
    if ndim is None or ndim <= 2:
        return X, None
    X = np.asarray(X)
    if X.ndim > 4:
        raise ValueError(
            f"X has shape {X.shape}; expected flat rows (n_samples, n_features) "
            "or images (n_samples, H, W), (n_samples, H, W, C) or "
            "(n_samples, C, H, W)."
        )
    sample = tuple(X.shape[1:])
    if X.ndim == 3:
        readings = [X[:, None]]
    else:
        first, last = X, X.transpose(0, 3, 1, 2)
        channels_last = X.shape[-1] in (1, 3) and X.shape[1] not in (1, 3)
        readings = [last, first] if channels_last else [first, last]
    if expected is not None:
        expected = tuple(expected)
        readings = [r for r in readings if r.shape[1:] == expected]
        if not readings:
            raise ValueError(
                f"X has samples of shape {sample} but {source} expects images "
                f"of (channels, height, width) = {expected}: arrays "
                "(n, C, H, W), (n, H, W, C) or, with one channel, (n, H, W)."
            )
    X = readings[0]
    shape = tuple(X.shape[1:])
    return np.ascontiguousarray(X).reshape(X.shape[0], -1), shape


def _image_input(estimator, X, reset):
    """``(X, image_shape)`` for a pretrained estimator; checks the fitted shape.

    ``fit`` expects the shape of ``input_shape``; later calls expect the
    ``image_shape_`` seen in ``fit``.
    """
    shape = _image_shape(estimator.input_shape)
    if reset:
        expected, source = shape, f"input_shape={estimator.input_shape!r}"
    else:
        expected = estimator.image_shape_
        source = f"{type(estimator).__name__} (fitted on image_shape_={expected})"
    X, found = _flatten_images(X, expected, source)
    if found is not None:
        shape = found
    if not reset and shape is not None and shape != estimator.image_shape_:
        raise ValueError(
            f"X holds images of shape {shape}; this {type(estimator).__name__} "
            f"was fitted on {estimator.image_shape_}."
        )
    return X, shape


def _check_image_rows(n_features, image_shape, preprocessing, backbone):
    if image_shape is None:
        if preprocessing is not None:
            raise ValueError(
                f"Backbone {backbone!r} takes images: pass input_shape=(channels, "
                f"height, width) or (height, width) for flat rows of X, or X as "
                f"an array of shape (n, H, W), (n, H, W, C) or (n, C, H, W)."
            )
        return
    if int(np.prod(image_shape)) != n_features:
        raise ValueError(
            f"X has {n_features} features per row but input_shape "
            f"{image_shape} holds {int(np.prod(image_shape))} values."
        )


def _target_size(resize, preprocessing):
    if resize is None:
        return None
    if isinstance(resize, str):  # 'auto'
        if preprocessing is None:
            return None
        return tuple(preprocessing["input_size"][-2:])
    if isinstance(resize, Integral):
        return (int(resize), int(resize))
    return tuple(int(s) for s in resize)


def _fold_uint8(X):
    """uint8 pixels in [0, 255] -> float32 in [0, 1]."""
    if X.dtype == np.uint8:
        return X.astype(np.float32) / np.float32(255.0)
    return X


# parameter constraints of the pretrained-backbone estimators' image parameters
PRETRAINED_CONSTRAINTS = {
    "backbone": [str, nn.Module, callable],
    "layer": [None, str],
    "weights": [None, str, os.PathLike],
    "input_shape": [None, tuple, list],
    "resize": [
        None,
        StrOptions({"auto"}),
        Interval(Integral, 1, None, closed="left"),
        tuple,
        list,
    ],
    "normalize": ["boolean"],
}
