"""Original `_2c2d.py`: conv32-pool-conv64-pool-dense1024-dense; truncated_normal(0.05), bias 0.05."""
from tf_reference import initializers
from tf_reference._tf import tf


def cnn_2c2d(num_outputs: int):
    def init():
        return dict(kernel_initializer=initializers.truncated_normal(0.05),
                    bias_initializer=initializers.constant(0.05))

    def forward(g, x, training):
        x = g.conv2d(x, 32, 5, padding="same", activation=tf.nn.relu, **init())
        x = g.max_pooling2d(x, 2, 2, padding="same")
        x = g.conv2d(x, 64, 5, padding="same", activation=tf.nn.relu, **init())
        x = g.max_pooling2d(x, 2, 2, padding="same")
        x = tf.reshape(x, tf.stack([-1, 7 * 7 * 64]))
        x = g.dense(x, 1024, tf.nn.relu, **init())
        return g.dense(x, num_outputs, None, **init())
    return forward
