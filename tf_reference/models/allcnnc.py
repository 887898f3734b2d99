"""Original `cifar100_allcnnc.py`: All-CNN-C, every conv ReLU (the last too), bias 0.1, TF1 glorot_normal."""
from tf_reference import initializers
from tf_reference._tf import tf


def allcnnc(num_outputs: int, weight_decay: float):
    def conv2d(g, x, filters, kernel_size=3, strides=1, padding="same"):
        return g.conv2d(x, filters, kernel_size, strides, padding, activation=tf.nn.relu,
                        bias_initializer=initializers.constant(0.1),
                        kernel_initializer=initializers.glorot_normal(), weight_decay=weight_decay)

    def forward(g, x, training):
        x = g.dropout(x, rate=0.2, training=training)
        x = conv2d(g, x, 96, 3)
        x = conv2d(g, x, 96, 3)
        x = conv2d(g, x, 96, 3, strides=2)
        x = g.dropout(x, rate=0.5, training=training)
        x = conv2d(g, x, 192, 3)
        x = conv2d(g, x, 192, 3)
        x = conv2d(g, x, 192, 3, strides=2)
        x = g.dropout(x, rate=0.5, training=training)
        x = conv2d(g, x, 192, 3, padding="valid")
        x = conv2d(g, x, 192, 1)
        x = conv2d(g, x, num_outputs, 1)
        return tf.reduce_mean(x, axis=[1, 2])
    return forward
