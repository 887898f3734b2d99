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
    "conv_transpose": ((3, 8, 4, 5), ()),
    "lstm_input_kernel": ((4 * 6, 5), (5,)),
    "lstm_recurrent_kernel": ((4 * 6, 6), (5,)),
    "lstm_bias": ((4 * 6,), ()),
}
# The partial transforms' other part, to assemble a whole reference variable.
OTHER_PART = {"lstm_input_kernel": "lstm_recurrent_kernel", "lstm_recurrent_kernel": "lstm_input_kernel"}


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
    if transform.partial:  # the parts of one variable add up to it, and each reads back its own part
        other = TRANSFORMS[OTHER_PART[name]]
        whole = np.random.default_rng(1).normal(size=reference_value.shape)
        parts = transform.to_reference(transform.to_port(whole, *args), *args) + \
            other.to_reference(other.to_port(whole, *args), *args)
        np.testing.assert_array_equal(parts, whole)


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


def test_lstm_transforms_map_tf_cell_onto_torch_lstm():
    """One step of TF1's LSTMCell (kernel i,j,f,o on concat([x, h]), forget_bias 1.0) equals torch's LSTMCell
    with the transformed weights, bias_ih = the TF bias and bias_hh = the forget bias on torch's f gate."""
    import torch

    rng = np.random.default_rng(3)
    inputs, hidden, batch = 5, 6, 3
    kernel = rng.normal(size=(inputs + hidden, 4 * hidden))
    bias = rng.normal(size=4 * hidden)
    x, h, c = rng.normal(size=(batch, inputs)), rng.normal(size=(batch, hidden)), rng.normal(size=(batch, hidden))

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))
    i, j, f, o = np.split(np.concatenate([x, h], 1) @ kernel + bias, 4, axis=1)
    c_tf = sigmoid(f + 1.0) * c + sigmoid(i) * np.tanh(j)
    h_tf = sigmoid(o) * np.tanh(c_tf)

    cell = torch.nn.LSTMCell(inputs, hidden).double()
    forget_bias = np.zeros(4 * hidden)
    forget_bias[hidden:2 * hidden] = 1.0  # torch's gate blocks: i, f, g, o
    with torch.no_grad():
        cell.weight_ih.copy_(torch.from_numpy(TRANSFORMS["lstm_input_kernel"].to_port(kernel, inputs)))
        cell.weight_hh.copy_(torch.from_numpy(TRANSFORMS["lstm_recurrent_kernel"].to_port(kernel, inputs)))
        cell.bias_ih.copy_(torch.from_numpy(TRANSFORMS["lstm_bias"].to_port(bias)))
        cell.bias_hh.copy_(torch.from_numpy(forget_bias))
        h_torch, c_torch = cell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
    np.testing.assert_allclose(h_torch.numpy(), h_tf, rtol=1e-12)
    np.testing.assert_allclose(c_torch.numpy(), c_tf, rtol=1e-12)


def test_conv_transpose_layout_is_hwoi():
    weight_iohw = np.zeros((3, 8, 4, 5))
    weight_iohw[2, 7, 3, 1] = 1.0
    kernel = TRANSFORMS["conv_transpose"].to_reference(weight_iohw)
    assert kernel.shape == (4, 5, 8, 3) and kernel[3, 1, 7, 2] == 1.0


@pytest.mark.parametrize("axes", [(2, 3, 1, 0), (3, 2, 0, 1), (1, 0)])
def test_threaded_permute_equals_numpy_transpose(axes):
    # Large tensors are permuted by torch (parity.transforms.permuted); the result must be numpy's, bit for bit.
    from parity.transforms import THREADED_PERMUTE_ELEMENTS, permuted

    shape = (4, 4, 256, 257) if len(axes) == 4 else (1024, 1031)
    value = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    value.flags.writeable = False  # as a TF tensor's numpy() comes
    assert value.size >= THREADED_PERMUTE_ELEMENTS
    result = permuted(value, axes)
    assert result.flags.c_contiguous and not np.shares_memory(result, value)
    np.testing.assert_array_equal(result, value.transpose(axes))
