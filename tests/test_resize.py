"""TF1 `resize_images` (bilinear, legacy pixel grid) in both frameworks, against TF's own kernel."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepobs.layers import ResizeBilinearTF1
from tf_reference._tf import tf
from tf_reference.layers import Graph

SIZES = [((32, 32), (224, 224)), ((224, 224), (299, 299)), ((5, 7), (11, 3))]


def _images_nhwc(in_hw, dtype, seed=0):
    return np.random.default_rng(seed).normal(size=(2, *in_hw, 3)).astype(dtype)


def _tf_kernel(images_nhwc, size):
    """The original's op: tf.image.resize_images of TF1 = ResizeBilinear without half-pixel centres."""
    return tf.raw_ops.ResizeBilinear(images=images_nhwc, size=size, align_corners=False,
                                     half_pixel_centers=False).numpy()


def _port(images_nhwc, size):
    x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    return ResizeBilinearTF1(size)(x).numpy().transpose(0, 2, 3, 1)


def _reference(images_nhwc, size):
    graph = Graph(tf.as_dtype(images_nhwc.dtype))
    return graph.run(lambda g, x, t: g.resize_images(x, size), images_nhwc, False).numpy()


@pytest.mark.parametrize("in_hw,size", SIZES)
def test_port_matches_tf_kernel_float32(in_hw, size):
    images = _images_nhwc(in_hw, np.float32)
    np.testing.assert_allclose(_port(images, size), _tf_kernel(images, size), rtol=0, atol=2e-6)


@pytest.mark.parametrize("in_hw,size", SIZES)
def test_reference_float64_arithmetic_matches_tf_kernel(in_hw, size):
    # The kernel computes in float32 whatever its input; the float64 reference writes the same
    # arithmetic out, so it agrees with the kernel to float32 round-off and with the port to float64's.
    images = _images_nhwc(in_hw, np.float64)
    reference = _reference(images, size)
    assert reference.dtype == np.float64
    np.testing.assert_allclose(reference, _tf_kernel(images.astype(np.float32), size), rtol=0, atol=2e-6)
    np.testing.assert_allclose(_port(images, size), reference, rtol=0, atol=1e-13)


def test_reference_float32_is_the_original_op():
    images = _images_nhwc((32, 32), np.float32)
    np.testing.assert_array_equal(_reference(images, (224, 224)), _tf_kernel(images, (224, 224)))


def test_last_seven_rows_of_32_to_224_repeat_the_edge():
    images = _images_nhwc((32, 32), np.float64)
    resized = _port(images, (224, 224))
    # Output row i samples source row i/7: rows 217..223 all land on (clamped) row 31.
    for row in range(217, 224):
        np.testing.assert_array_equal(resized[:, row], resized[:, 217])
    np.testing.assert_array_equal(resized[:, 217, 0], images[:, 31, 0])
    assert not np.allclose(resized[:, 216], resized[:, 217])


def test_same_size_passes_through():
    images = _images_nhwc((224, 224), np.float64)
    np.testing.assert_array_equal(_port(images, (224, 224)), images)
    np.testing.assert_array_equal(_reference(images, (224, 224)), images)


@pytest.mark.parametrize("align_corners", [False, True])
def test_interpolate_samples_other_points(align_corners):
    # The common port (F.interpolate / UpsamplingBilinear2d) is far from the original, either way.
    images = _images_nhwc((32, 32), np.float64)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    interpolated = F.interpolate(x, (224, 224), mode="bilinear", align_corners=align_corners).numpy()
    difference = np.abs(interpolated.transpose(0, 2, 3, 1) - _tf_kernel(images.astype(np.float32), (224, 224)))
    assert difference.max() > 0.5 * np.abs(images).max()
