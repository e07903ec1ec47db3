"""The image input rule shared by the image estimators (sknets/_images.py)."""

import numpy as np
import pytest
import scipy.sparse as sp

from sknets._images import _flatten_images, _fold_uint8, _image_shape


def _pixels(*shape):
    return np.arange(np.prod(shape), dtype=np.float64).reshape(shape)


def test_flat_rows_pass_through_unchanged():
    X = _pixels(4, 12)
    for flat in (X, sp.csr_matrix(X), X.tolist()):
        out, shape = _flatten_images(flat, expected=(3, 2, 2), source="s")
        assert out is flat
        assert shape is None


def test_3d_arrays_are_grayscale_images():
    X = _pixels(4, 5, 6)  # (n, H, W)
    rows, shape = _flatten_images(X)
    assert shape == (1, 5, 6)
    np.testing.assert_array_equal(rows, X.reshape(4, -1))
    rows, shape = _flatten_images(X.tolist())
    assert shape == (1, 5, 6)
    np.testing.assert_array_equal(rows, X.reshape(4, -1))


@pytest.mark.parametrize("channels", [1, 3])
def test_4d_arrays_with_1_or_3_last_entries_are_channels_last(channels):
    X = _pixels(4, 5, 6, channels)  # (n, H, W, C)
    rows, shape = _flatten_images(X)
    assert shape == (channels, 5, 6)
    chw = np.moveaxis(X, -1, 1)
    np.testing.assert_array_equal(rows, chw.reshape(4, -1))
    assert rows.flags.c_contiguous


@pytest.mark.parametrize("sample", [(3, 5, 6), (1, 5, 6), (2, 5, 6), (3, 5, 3)])
def test_other_4d_arrays_are_channels_first(sample):
    # (3, 5, 3): the second axis has 3 entries too, so it reads channels first
    X = _pixels(4, *sample)
    rows, shape = _flatten_images(X)
    assert shape == sample
    np.testing.assert_array_equal(rows, X.reshape(4, -1))


def test_the_expected_shape_decides_between_the_two_readings():
    X = _pixels(4, 8, 5, 3)  # channels last by the rule ...
    assert _flatten_images(X)[1] == (3, 8, 5)
    rows, shape = _flatten_images(X, expected=(8, 5, 3), source="s")
    assert shape == (8, 5, 3)  # ... channels first when that is expected
    np.testing.assert_array_equal(rows, X.reshape(4, -1))
    X = _pixels(4, 3, 5, 3)  # channels first by the rule ...
    rows, shape = _flatten_images(X, expected=(3, 3, 5), source="s")
    assert shape == (3, 3, 5)  # ... channels last when that is expected
    np.testing.assert_array_equal(rows, np.moveaxis(X, -1, 1).reshape(4, -1))


def test_a_shape_mismatch_names_both_shapes_and_the_source():
    X = _pixels(4, 5, 6, 3)
    msg = r"shape \(5, 6, 3\) but input_shape=\(2, 5, 6\) expects .*\(2, 5, 6\)"
    with pytest.raises(ValueError, match=msg):
        _flatten_images(X, expected=(2, 5, 6), source="input_shape=(2, 5, 6)")
    with pytest.raises(ValueError, match=r"shape \(5, 6\) but fit expects"):
        _flatten_images(_pixels(4, 5, 6), expected=(3, 5, 6), source="fit")
    with pytest.raises(ValueError, match="expected flat rows"):
        _flatten_images(_pixels(2, 1, 2, 2, 2))


def test_input_shape_is_height_width_or_channels_height_width():
    assert _image_shape(None) is None
    assert _image_shape((5, 6)) == (1, 5, 6)
    assert _image_shape([3, 5, 6]) == (3, 5, 6)
    for bad in [(30,), (1, 3, 5, 6), (0, 5)]:
        with pytest.raises(ValueError, match="input_shape must be"):
            _image_shape(bad)


def test_uint8_pixels_fold_to_the_unit_interval():
    X = np.array([[0, 51, 255]], dtype=np.uint8)
    out = _fold_uint8(X)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]])
    floats = np.array([[0.5]])
    assert _fold_uint8(floats) is floats
