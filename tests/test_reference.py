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
