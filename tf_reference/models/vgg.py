"""Original `_vgg.py`: resize to 224, 3x3 'same' convs (TF1 glorot_normal, bias 0, L2), 2x2 'same' pools,
dense 4096-4096-out with the tf.layers defaults and no regularizer, dropout 0.5 after each hidden dense."""
from tf_reference import initializers
from tf_reference._tf import tf

# Filters of the convs between two max pools; VGG19 adds one conv to each of the last three blocks.
BLOCKS = {
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def vgg(variant: int, num_outputs: int, weight_decay: float):
    def conv2d(g, x, filters):
        return g.conv2d(x, filters, 3, 1, padding="same", activation=tf.nn.relu,
                        bias_initializer=initializers.constant(0.0),
                        kernel_initializer=initializers.glorot_normal(), weight_decay=weight_decay)

    def forward(g, x, training):
        x = g.resize_images(x, (224, 224))
        for block in BLOCKS[variant]:
            for filters in block:
                x = conv2d(g, x, filters)
            x = g.max_pooling2d(x, 2, 2, padding="same")
        x = tf.reshape(x, (-1, 7 * 7 * 512))  # tf.layers.flatten of the 7x7x512 NHWC features
        x = g.dense(x, 4096, activation=tf.nn.relu)
        x = g.dropout(x, rate=0.5, training=training)
        x = g.dense(x, 4096, activation=tf.nn.relu)
        x = g.dropout(x, rate=0.5, training=training)
        return g.dense(x, num_outputs)
    return forward
