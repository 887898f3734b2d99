"""Round trip of every named transform, and the flatten permutation's meaning."""
import numpy as np
import pytest

from parity.transforms import TRANSFORMS

SHAPES = {  # port-layout shape and extra args per transform
    "identity": ((7,), ()),
    "bn_statistic": ((5,), ()),
    "conv": ((8, 3, 5, 4), ()),
    "dense": ((10, 6), ()),
    "dense_after_flatten": ((12, 4 * 3 * 2), ((4, 3, 2),)),
}


def test_every_transform_has_a_round_trip_case():
    assert set(SHAPES) == set(TRANSFORMS)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_round_trip(name):
    shape, args = SHAPES[name]
    port_value = np.random.default_rng(0).normal(size=shape)
    transform = TRANSFORMS[name]
    reference_value = transform.to_reference(port_value, *args)
    np.testing.assert_array_equal(transform.to_port(reference_value, *args), port_value)
    back = transform.to_reference(transform.to_port(reference_value, *args), *args)
    np.testing.assert_array_equal(back, reference_value)


def test_conv_layout_is_hwio():
    weight_oihw = np.zeros((8, 3, 5, 4))
    weight_oihw[7, 2, 4, 1] = 1.0
    kernel_hwio = TRANSFORMS["conv"].to_reference(weight_oihw)
    assert kernel_hwio.shape == (5, 4, 3, 8) and kernel_hwio[4, 1, 2, 7] == 1.0


def test_dense_after_flatten_maps_nchw_flatten_onto_nhwc_flatten():
    rng = np.random.default_rng(1)
    chw = (4, 3, 2)
    activation_nchw = rng.normal(size=(5, *chw))
    weight_oi = rng.normal(size=(6, int(np.prod(chw))))
    port_out = activation_nchw.reshape(5, -1) @ weight_oi.T
    kernel_io = TRANSFORMS["dense_after_flatten"].to_reference(weight_oi, chw)
    reference_out = activation_nchw.transpose(0, 2, 3, 1).reshape(5, -1) @ kernel_io
    np.testing.assert_allclose(port_out, reference_out, rtol=1e-12)
    # A plain transpose would not do: the NCHW-flatten order bug this transform prevents.
    assert not np.allclose(port_out, activation_nchw.transpose(0, 2, 3, 1).reshape(5, -1) @ weight_oi.T)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_return_new_arrays(name):
    # Callers keep results of tensor.numpy() (which shares memory with the tensor) across syncs.
    shape, args = SHAPES[name]
    value = np.random.default_rng(2).normal(size=shape)
    assert not np.shares_memory(TRANSFORMS[name].to_reference(value, *args), value)
    reference_value = TRANSFORMS[name].to_reference(value, *args)
    assert not np.shares_memory(TRANSFORMS[name].to_port(reference_value, *args), reference_value)
