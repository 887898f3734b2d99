"""Original `_mlp.py`: 784-1000-500-100-out, kernels truncated_normal(0.03), biases 0."""
from tf_reference import initializers
from tf_reference._tf import tf


def mlp(num_outputs: int):
    def dense(g, x, units, activation):
        return g.dense(x, units, activation, kernel_initializer=initializers.truncated_normal(3e-2),
                       bias_initializer=initializers.constant(0.0))

    def forward(g, x, training):
        x = tf.reshape(x, [-1, 784])
        x = dense(g, x, 1000, tf.nn.relu)
        x = dense(g, x, 500, tf.nn.relu)
        x = dense(g, x, 100, tf.nn.relu)
        return dense(g, x, num_outputs, None)
    return forward
