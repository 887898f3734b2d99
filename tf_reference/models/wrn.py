"""Original `_wrn.py`: pre-activation Wide ResNet, BN momentum 0.9 (TF convention), epsilon 1e-5."""
from tf_reference import initializers
from tf_reference._tf import tf


def wrn(num_residual_units: int, widening_factor: int, num_outputs: int, weight_decay: float,
        bn_momentum: float = 0.9):
    def conv2d(g, x, filters, kernel_size, strides=1):
        return g.conv2d(x, filters, kernel_size, strides, padding="same", use_bias=False,
                        kernel_initializer=initializers.glorot_uniform(), weight_decay=weight_decay)

    def batch_normalization(g, x, training):
        return g.batch_normalization(x, momentum=bn_momentum, epsilon=1e-5, training=training)

    def forward(g, x, training):
        filters = [16, 16 * widening_factor, 32 * widening_factor, 64 * widening_factor]
        strides = [1, 2, 2]
        x = conv2d(g, x, 16, 3)
        for i in range(1, 4):
            with g.variable_scope(f"unit_{i}_0"):
                x = tf.nn.relu(batch_normalization(g, x, training))
                if filters[i - 1] == filters[i]:
                    if strides[i - 1] == 1:
                        shortcut = tf.identity(x)
                    else:
                        shortcut = g.max_pooling2d(x, strides[i - 1], strides[i - 1])
                else:
                    shortcut = conv2d(g, x, filters[i], 1, strides=strides[i - 1])
                x = conv2d(g, x, filters[i], 3, strides[i - 1])
                x = tf.nn.relu(batch_normalization(g, x, training))
                x = conv2d(g, x, filters[i], 3, 1)
                x = g.tap(f"unit_{i}_0", x + shortcut)
            for j in range(1, num_residual_units):
                with g.variable_scope(f"unit_{i}_{j}"):
                    shortcut = x
                    x = tf.nn.relu(batch_normalization(g, x, training))
                    x = conv2d(g, x, filters[i], 3, 1)
                    x = tf.nn.relu(batch_normalization(g, x, training))
                    x = conv2d(g, x, filters[i], 3, 1)
                    x = g.tap(f"unit_{i}_{j}", x + shortcut)
        with g.variable_scope("unit_last"):
            x = tf.nn.relu(batch_normalization(g, x, training))
            x = tf.reduce_mean(x, [1, 2])
        with g.variable_scope("fully-connected"):
            return g.dense(x, num_outputs, kernel_initializer=initializers.glorot_uniform(),
                           bias_initializer=initializers.constant(0.0), weight_decay=weight_decay)
    return forward
