"""Original `_logreg.py`: reshape to 784, one dense layer, kernel and bias constant 0."""
from tf_reference import initializers
from tf_reference._tf import tf


def logreg(num_outputs: int):
    def forward(g, x, training):
        x = tf.reshape(x, [-1, 784])
        return g.dense(x, num_outputs, kernel_initializer=initializers.constant(0.0),
                       bias_initializer=initializers.constant(0.0))
    return forward
