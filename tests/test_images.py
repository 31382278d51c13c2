"""The one PNG codec (scenetools.images), checked against imageio's own decoder."""
import io

import imageio.v3 as iio
import numpy as np
import pytest

from scenetools import images


@pytest.mark.parametrize("array", [
    np.arange(48, dtype=np.uint8).reshape(4, 4, 3),
    np.arange(16, dtype=np.uint8).reshape(4, 4) * 16,
    np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000,
    np.arange(64, dtype=np.uint8).reshape(4, 4, 4),
])
def test_png_round_trip_as_stored_and_as_imageio_reads_it(array):
    data = images.encode_png(array)
    np.testing.assert_array_equal(iio.imread(io.BytesIO(data.tobytes()), extension=".png"), array)
    decoded = images.decode(data)
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_float_images_travel_bit_exactly_as_rgba():
    depth = np.array([[0.5, np.inf], [1e-7, 123.456]], np.float32)
    rgba = images.rgba_from_float32(depth)
    assert rgba.shape == (2, 2, 4) and rgba[0, 0].tobytes() == np.float32(0.5).tobytes()
    assert np.array_equal(images.float32_from_rgba(images.decode(images.encode_png(rgba))), depth)


def test_text_chunks_and_corrupt_bytes():
    data = images.encode_png(np.zeros((2, 3, 3), np.uint8), text={"scenetools": "{}"})
    assert images.decode_with_text(data)[1] == {"scenetools": "{}"}
    assert images.png_problem(data) is None
    broken = data.copy()
    broken[40] ^= 0xFF  # inside the image data: its CRC no longer matches
    assert "corrupt PNG" in images.png_problem(broken)
    with pytest.raises(images.DECODE_ERRORS):
        images.decode(data[: len(data) // 2])


def test_to_rgb_drops_or_composites_alpha():
    rgba = np.array([[[200, 100, 0, 0], [200, 100, 0, 255]]], np.uint8)
    np.testing.assert_array_equal(images.to_rgb(rgba), [[[200, 100, 0], [200, 100, 0]]])
    np.testing.assert_array_equal(images.to_rgb(rgba, background=255), [[[255, 255, 255], [200, 100, 0]]])
    np.testing.assert_array_equal(images.to_rgb(np.array([[7]], np.uint8)), [[[7, 7, 7]]])
