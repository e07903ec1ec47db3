"""Image input of the pretrained estimators: N-D arrays, ``input_shape``, uint8."""

from numbers import Integral

import numpy as np


def _image_shape(shape, input_shape):
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


def _flatten_images(X, input_shape):
    """Return ``(X_2d, image_shape)``; N-D image arrays become flat CHW rows.

    3-D arrays are (n, H, W) grayscale; 4-D arrays are (n, H, W, C) when the
    last axis has 1 or 3 entries and the second does not, else (n, C, H, W).
    """
    ndim = getattr(X, "ndim", None)
    if ndim is None or ndim <= 2:
        return X, _image_shape(None, input_shape)
    X = np.asarray(X)
    if X.ndim == 3:
        X = X[:, None]
    elif X.ndim == 4:
        if X.shape[-1] in (1, 3) and X.shape[1] not in (1, 3):
            X = X.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"Expected 2-D, 3-D or 4-D X, got {X.ndim}-D.")
    shape = X.shape[1:]
    if input_shape is not None and _image_shape(None, input_shape) != shape:
        raise ValueError(
            f"input_shape={input_shape!r} does not match the images' shape "
            f"(channels, height, width) = {shape}."
        )
    return np.ascontiguousarray(X).reshape(X.shape[0], -1), shape


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
