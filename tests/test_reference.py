"""The reference's hand-written pieces against TensorFlow's own kernels."""
import numpy as np
import pytest

from tf_reference._tf import tf
from tf_reference.layers import Graph


def _graph_bn(x, training, momentum=0.9, epsilon=1e-5):
    graph = Graph(tf.float32)
    outputs = graph.run(lambda g, x, t: g.batch_normalization(x, momentum, epsilon, training=t), x, training)
    return graph, outputs


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_fused_batch_norm_v3(training):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(4, 5, 5, 3)).astype(np.float32)
    graph, outputs = _graph_bn(x, training)
    gamma, beta = (graph.variables[f"batch_normalization/{n}"] for n in ("gamma", "beta"))
    mean0 = np.zeros(3, np.float32)
    var0 = np.ones(3, np.float32)
    fused = tf.raw_ops.FusedBatchNormV3(x=x, scale=gamma, offset=beta, mean=mean0 if not training else [],
                                        variance=var0 if not training else [], epsilon=1e-5,
                                        is_training=training, exponential_avg_factor=1.0)
    np.testing.assert_allclose(outputs.numpy(), fused.y.numpy(), rtol=1e-5, atol=1e-5)
    if training:
        # One step from moving stats (0, 1) with momentum 0.9 moves 10% towards the batch
        # statistics, the variance towards the fused kernel's (unbiased) batch_variance.
        moving_mean = graph.variables["batch_normalization/moving_mean"].numpy()
        moving_variance = graph.variables["batch_normalization/moving_variance"].numpy()
        np.testing.assert_allclose(moving_mean, 0.1 * fused.batch_mean.numpy(), rtol=1e-5)
        np.testing.assert_allclose(moving_variance, 0.9 + 0.1 * fused.batch_variance.numpy(), rtol=1e-5)


def test_layer_names_are_unique_per_variable_scope():
    graph = Graph(tf.float32)

    def forward(g, x, training):
        x = g.conv2d(x, 2, 1)
        with g.variable_scope("unit_1_0"):
            x = g.conv2d(x, 2, 1)
            x = g.conv2d(x, 2, 1)
        return x

    graph.run(forward, np.zeros((1, 3, 3, 1)), False)
    assert list(graph.variables) == ["conv2d/kernel", "conv2d/bias", "unit_1_0/conv2d/kernel", "unit_1_0/conv2d/bias",
                                     "unit_1_0/conv2d_1/kernel", "unit_1_0/conv2d_1/bias"]


def test_conv2d_transpose_same_matches_the_port_layer():
    """The reference's tf.nn.conv2d_transpose 'SAME' and the port's ConvTranspose2dSame, through the named
    kernel transform: 7 -> 14 (k4 s2, crop 1/1) and 14 -> 14 (k4 s1, crop 1 before, 2 after)."""
    import torch

    from deepobs.layers import ConvTranspose2dSame
    from parity.transforms import TRANSFORMS

    rng = np.random.default_rng(0)
    for size, stride in ((7, 2), (14, 1)):
        x = rng.normal(size=(2, size, size, 3))
        graph = Graph(tf.float64)
        y_tf = graph.run(lambda g, x, t: g.conv2d_transpose(x, 4, 4, stride), x, False).numpy()
        kernel = graph.variables["conv2d_transpose/kernel"].numpy()
        layer = ConvTranspose2dSame(3, 4, 4, stride).double()
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(TRANSFORMS["conv_transpose"].to_port(kernel)))
            layer.bias.zero_()
            y_torch = layer(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
        assert y_tf.shape == y_torch.shape == (2, size * stride, size * stride, 4)
        np.testing.assert_allclose(y_torch, y_tf, rtol=1e-12, atol=1e-12)


def test_vae_lrelu_value_and_gradient_are_tfs_at_the_kink():
    """The original's lrelu, tf.maximum(x, 0.3 x), against the port's LeakyReLU: values, and TF's gradient (the
    whole gradient to x where x >= 0.3 x: slope 1 at 0) at 0, -0, +-1 and NaN."""
    import torch

    from deepobs.models.vae import LeakyReLU

    x = np.array([0.0, -0.0, 1.0, -1.0, np.nan, 5e-324, -5e-324])
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y_tf = tf.maximum(variable, tf.multiply(variable, 0.3))
        total = tf.reduce_sum(y_tf)
    gradient_tf = tape.gradient(total, variable).numpy()
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = LeakyReLU()(x_torch)
    y_torch.sum().backward()
    # TF's CPU kernels flush subnormals to zero (FTZ/DAZ), torch's do not: on the two subnormals TF computes
    # max(0, 0) = 0 with slope 1; the port takes x as it is (5e-324 with slope 1, -1.5e-324 with slope 0.3).
    normal = slice(0, 5)
    np.testing.assert_array_equal(y_torch.detach().numpy()[normal], y_tf.numpy()[normal])
    np.testing.assert_array_equal(np.signbit(y_torch.detach().numpy()[normal]), np.signbit(y_tf.numpy()[normal]))
    np.testing.assert_array_equal(x_torch.grad.numpy()[normal], gradient_tf[normal])
    np.testing.assert_array_equal(x_torch.grad.numpy()[5:], [1.0, 0.3])
    assert gradient_tf[0] == 1.0  # the tie: torch.maximum would give 0.65, F.leaky_relu 0.3


def test_quadratic_deep_hessian_is_the_originals_module_level_stream():
    """Instance n of the original's quadratic_deep draws the n-th Hessian of one RandomState(42) stream;
    the reference's transcription and the port's own code (written apart) agree bit for bit."""
    from deepobs.models.quadratic import deep_hessian as port_hessian
    from tf_reference.models.quadratic import _next_deep_hessian, deep_hessian

    stream = np.random.RandomState(42)  # the original's module-level `rng`
    first, second = _next_deep_hessian(stream), _next_deep_hessian(stream)
    np.testing.assert_array_equal(deep_hessian(0), first)
    np.testing.assert_array_equal(deep_hessian(1), second)
    assert not np.allclose(first, second)  # the original's quirk: a second instance gets another Q
    for instance in (0, 1):
        np.testing.assert_array_equal(port_hessian(instance), deep_hessian(instance))
    eigenvalues = np.sort(np.linalg.eigvalsh(first))
    assert np.all((eigenvalues[:90] > 0) & (eigenvalues[:90] < 1)) and np.all(eigenvalues[90:] > 30)


def test_average_pool_same_excludes_the_padding():
    graph = Graph(tf.float64)
    pooled = graph.run(lambda g, x, t: g.average_pooling2d(x, 3, (1, 1), "SAME"), np.ones((1, 5, 5, 1)), False)
    np.testing.assert_array_equal(pooled.numpy(), np.ones((1, 5, 5, 1)))


def test_inception_loss_written_out_in_float64_is_the_original_function():
    # The original's tf.losses.softmax_cross_entropy rounds its losses to float32 (even for float64
    # inputs); the float64 write-out must agree with it to float32 round-off, and be exact otherwise.
    from tf_reference.models.inception_v3 import softmax_cross_entropy

    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(3, 1001)) * 3)
    one_hot = tf.one_hot([0, 5, 1000], 1001, dtype=tf.float64)
    written_out = softmax_cross_entropy(one_hot, logits, weights=0.4, label_smoothing=0.1).numpy()
    original = tf.compat.v1.losses.softmax_cross_entropy(
        onehot_labels=one_hot, logits=logits, weights=0.4, label_smoothing=0.1,
        reduction=tf.compat.v1.losses.Reduction.NONE).numpy()
    assert original.dtype == np.float64
    np.testing.assert_allclose(written_out, original, rtol=2e-7)
    assert not np.array_equal(written_out, original)  # the original's float32 rounding is really there
    in_float32 = softmax_cross_entropy(tf.cast(one_hot, tf.float32), tf.cast(logits, tf.float32), 0.4, 0.1)
    np.testing.assert_allclose(in_float32.numpy(), written_out, rtol=2e-6)


def test_an_uninitialised_reference_has_the_same_variables_all_zero():
    # The audit builds its reference with initialize=False (it overwrites every variable with audit values).
    import numpy as np

    from tf_reference import ReferenceProblem
    from tf_reference._tf import tf

    drawn = ReferenceProblem("cifar10_3c3d", tf.float32, 0)
    zeros = ReferenceProblem("cifar10_3c3d", tf.float32, 0, initialize=False)
    assert {n: tuple(v.shape) for n, v in zeros.graph.variables.items()} == \
        {n: tuple(v.shape) for n, v in drawn.graph.variables.items()}
    assert {n: v.trainable for n, v in zeros.graph.variables.items()} == \
        {n: v.trainable for n, v in drawn.graph.variables.items()}
    assert all(not np.any(v.numpy()) for v in zeros.graph.variables.values())
    assert any(np.any(v.numpy()) for v in drawn.graph.variables.values())
