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
