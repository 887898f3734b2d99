"""Original `_3c3d.py`: three convs (5x5 valid, 3x3 valid, 3x3 same) with 3x3/s2 SAME pools, dense 512-256-out."""
from tf_reference import initializers
from tf_reference._tf import tf


def cnn_3c3d(num_outputs: int, weight_decay: float):
    def conv2d(g, x, filters, kernel_size, padding):
        return g.conv2d(x, filters, kernel_size, padding=padding, activation=tf.nn.relu,
                        kernel_initializer=initializers.glorot_normal(),
                        bias_initializer=initializers.constant(0.0), weight_decay=weight_decay)

    def dense(g, x, units, activation):
        return g.dense(x, units, activation, kernel_initializer=initializers.glorot_uniform(),
                       bias_initializer=initializers.constant(0.0), weight_decay=weight_decay)

    def forward(g, x, training):
        x = conv2d(g, x, 64, 5, "valid")
        x = g.max_pooling2d(x, 3, 2, padding="same")
        x = conv2d(g, x, 96, 3, "valid")
        x = g.max_pooling2d(x, 3, 2, padding="same")
        x = conv2d(g, x, 128, 3, "same")
        x = g.max_pooling2d(x, 3, 2, padding="same")
        x = tf.reshape(x, tf.stack([-1, 3 * 3 * 128]))
        x = dense(g, x, 512, tf.nn.relu)
        x = dense(g, x, 256, tf.nn.relu)
        return dense(g, x, num_outputs, None)
    return forward
