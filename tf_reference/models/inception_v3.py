"""Original `_inception_v3.py` and the losses of `imagenet_inception_v3.py`, transcribed op by op.

conv2d_BN: tf.layers.conv2d (no bias, default glorot_uniform kernel, L2) -> batch_normalization with
momentum 0.9997 and the default epsilon 1e-3, scale and center on -> ReLU. The output head's
`tf.layers.dropout(x, 0.8, training)` passes `training` as `noise_shape` and leaves the layer's own
`training` at False: it never drops, in any phase; transcribed as such.
"""
from tf_reference._tf import tf

NUM_CLASSES = 1001


def inception_v3(weight_decay: float):
    def conv2d_BN(g, inputs, filters, kernel_size, strides, padding, training):
        x = g.conv2d(inputs, filters, kernel_size, strides, padding, activation=None, use_bias=False,
                     weight_decay=weight_decay)
        x = g.batch_normalization(x, momentum=0.9997, training=training)
        return tf.nn.relu(x)

    def inception_block5(g, inputs, variant, training, name="inception_block5"):
        num_filters = {"a": 32, "b": 64}[variant]
        with g.variable_scope(name):
            with g.variable_scope("branch0"):
                branch0_1x1 = conv2d_BN(g, inputs, 64, 1, (1, 1), "SAME", training)
            with g.variable_scope("branch1"):
                branch1_pool = g.average_pooling2d(inputs, 3, (1, 1), "SAME")
                branch1_1x1 = conv2d_BN(g, branch1_pool, num_filters, 1, (1, 1), "SAME", training)
            with g.variable_scope("branch2"):
                branch2_1x1 = conv2d_BN(g, inputs, 48, 1, (1, 1), "SAME", training)
                branch2_5x5 = conv2d_BN(g, branch2_1x1, 64, 5, (1, 1), "SAME", training)
            with g.variable_scope("branch3"):
                branch3_1x1 = conv2d_BN(g, inputs, 64, 1, (1, 1), "SAME", training)
                branch3_3x3_0 = conv2d_BN(g, branch3_1x1, 96, 3, (1, 1), "SAME", training)
                branch3_3x3_1 = conv2d_BN(g, branch3_3x3_0, 96, 3, (1, 1), "SAME", training)
            output = tf.concat([branch0_1x1, branch1_1x1, branch2_5x5, branch3_3x3_1], 3)
        return g.tap(name, output)

    def inception_block10(g, inputs, training, name="inception_block10"):
        with g.variable_scope(name):
            with g.variable_scope("branch0"):
                branch0_pool = g.max_pooling2d(inputs, 3, (2, 2), "VALID")
            with g.variable_scope("branch1"):
                branch1_3x3 = conv2d_BN(g, inputs, 384, 3, (2, 2), "VALID", training)
            with g.variable_scope("branch2"):
                branch2_1x1 = conv2d_BN(g, inputs, 64, 1, (1, 1), "SAME", training)
                branch2_3x3_0 = conv2d_BN(g, branch2_1x1, 96, 3, (1, 1), "SAME", training)
                branch2_3x3_1 = conv2d_BN(g, branch2_3x3_0, 96, 3, (2, 2), "VALID", training)
            output = tf.concat([branch0_pool, branch1_3x3, branch2_3x3_1], 3)
        return g.tap(name, output)

    def inception_block6(g, inputs, variant, training, name="inception_block6"):
        num_filters = {"a": 128, "b": 160, "c": 192}[variant]
        with g.variable_scope(name):
            with g.variable_scope("branch0"):
                branch0_1x1 = conv2d_BN(g, inputs, 192, 1, (1, 1), "SAME", training)
            with g.variable_scope("branch1"):
                branch1_pool = g.average_pooling2d(inputs, 3, (1, 1), "SAME")
                branch1_1x1 = conv2d_BN(g, branch1_pool, 192, 1, (1, 1), "SAME", training)
            with g.variable_scope("branch2"):
                branch2_1x1 = conv2d_BN(g, inputs, num_filters, 1, (1, 1), "SAME", training)
                branch2_1x7 = conv2d_BN(g, branch2_1x1, num_filters, [1, 7], (1, 1), "SAME", training)
                branch2_7x1 = conv2d_BN(g, branch2_1x7, 192, [7, 1], (1, 1), "SAME", training)
            with g.variable_scope("branch3"):
                branch3_1x1 = conv2d_BN(g, inputs, num_filters, 1, (1, 1), "SAME", training)
                branch3_7x1_0 = conv2d_BN(g, branch3_1x1, num_filters, [7, 1], (1, 1), "SAME", training)
                branch3_1x7_0 = conv2d_BN(g, branch3_7x1_0, num_filters, [1, 7], (1, 1), "SAME", training)
                branch3_7x1_1 = conv2d_BN(g, branch3_1x7_0, num_filters, [7, 1], (1, 1), "SAME", training)
                branch3_1x7_1 = conv2d_BN(g, branch3_7x1_1, 192, [1, 7], (1, 1), "SAME", training)
            output = tf.concat([branch0_1x1, branch1_1x1, branch2_7x1, branch3_1x7_1], 3)
        return g.tap(name, output)

    def inception_blockD(g, inputs, training, name="inception_blockD"):
        with g.variable_scope(name):
            with g.variable_scope("branch0"):
                branch0_pool = g.max_pooling2d(inputs, 3, (2, 2), "VALID")
            with g.variable_scope("branch1"):
                branch1_1x1 = conv2d_BN(g, inputs, 192, 1, (1, 1), "SAME", training)
                branch1_1x7 = conv2d_BN(g, branch1_1x1, 192, [1, 7], (1, 1), "SAME", training)
                branch1_7x1 = conv2d_BN(g, branch1_1x7, 192, [7, 1], (1, 1), "SAME", training)
                branch1_3x3 = conv2d_BN(g, branch1_7x1, 192, 3, (2, 2), "VALID", training)
            with g.variable_scope("branch2"):
                branch2_1x1 = conv2d_BN(g, inputs, 192, 1, (1, 1), "SAME", training)
                branch2_3x3 = conv2d_BN(g, branch2_1x1, 320, 3, (2, 2), "VALID", training)
            output = tf.concat([branch0_pool, branch1_3x3, branch2_3x3], 3)
        return g.tap(name, output)

    def inception_block7(g, inputs, training, name="inception_block7"):
        with g.variable_scope(name):
            with g.variable_scope("branch0"):
                branch0_1x1 = conv2d_BN(g, inputs, 320, 1, (1, 1), "SAME", training)
            with g.variable_scope("branch1"):
                branch1_1x1 = conv2d_BN(g, inputs, 384, 1, (1, 1), "SAME", training)
                branch1_1x3 = conv2d_BN(g, branch1_1x1, 384, [1, 3], (1, 1), "SAME", training)
                branch1_3x1 = conv2d_BN(g, branch1_1x1, 384, [3, 1], (1, 1), "SAME", training)
                branch1_concat = tf.concat([branch1_1x3, branch1_3x1], 3)
            with g.variable_scope("branch2"):
                branch2_1x1 = conv2d_BN(g, inputs, 448, 1, (1, 1), "SAME", training)
                branch2_3x3 = conv2d_BN(g, branch2_1x1, 384, 3, (1, 1), "SAME", training)
                branch2_1x3 = conv2d_BN(g, branch2_3x3, 384, [1, 3], (1, 1), "SAME", training)
                branch2_3x1 = conv2d_BN(g, branch2_3x3, 384, [3, 1], (1, 1), "SAME", training)
                branch2_concat = tf.concat([branch2_1x3, branch2_3x1], 3)
            with g.variable_scope("branch3"):
                branch3_pool = g.average_pooling2d(inputs, 3, (1, 1), "SAME")
                branch3_1x1 = conv2d_BN(g, branch3_pool, 192, 1, (1, 1), "SAME", training)
            output = tf.concat([branch0_1x1, branch1_concat, branch2_concat, branch3_1x1], 3)
        return g.tap(name, output)

    def flatten(x):  # tf.contrib.layers.flatten
        return tf.reshape(x, [tf.shape(x)[0], -1])

    def forward(g, x, training):
        x = g.resize_images(x, [299, 299])
        with g.variable_scope("stem"):
            x = conv2d_BN(g, x, 32, 3, (2, 2), "VALID", training)
            x = conv2d_BN(g, x, 32, 3, (1, 1), "VALID", training)
            x = conv2d_BN(g, x, 64, 3, (1, 1), "SAME", training)
            x = g.max_pool(x, [1, 3, 3, 1], [1, 2, 2, 1], "VALID")
            x = conv2d_BN(g, x, 80, 1, (1, 1), "VALID", training)
            x = conv2d_BN(g, x, 192, 3, (1, 1), "VALID", training)
            x = g.max_pool(x, [1, 3, 3, 1], [1, 2, 2, 1], "VALID")

        x = inception_block5(g, x, "a", training, "inception_block5a")
        x = inception_block5(g, x, "b", training, "inception_block5b_0")
        x = inception_block5(g, x, "b", training, "inception_block5b_1")
        x = inception_block10(g, x, training)
        x = inception_block6(g, x, "a", training, "inception_block6a")
        x = inception_block6(g, x, "b", training, "inception_block6b_0")
        x = inception_block6(g, x, "b", training, "inception_block6b_1")
        x = inception_block6(g, x, "c", training, "inception_block6c")

        with g.variable_scope("aux_head"):
            x_aux = g.average_pooling2d(x, 5, (3, 3), "VALID")
            x_aux = conv2d_BN(g, x_aux, 128, 1, (1, 1), "SAME", training)
            x_aux = conv2d_BN(g, x_aux, 768, 5, (1, 1), "VALID", training)
            aux_logits = g.dense(flatten(x_aux), NUM_CLASSES)

        x = inception_blockD(g, x, training, "inception_blockD")
        x = inception_block7(g, x, training, "inception_block7_0")
        x = inception_block7(g, x, training, "inception_block7_1")

        with g.variable_scope("output"):
            x = g.average_pooling2d(x, 8, (1, 1), "VALID")
            x = g.dropout(x, 0.8, training=False)  # the original's call: tf.layers.dropout(x, 0.8, training)
            x = flatten(x)
            logits = g.dense(x, NUM_CLASSES)
        # Both heads run in every phase; only the train phase's losses read the aux head, so only the
        # train phase returns it (the family's outputs: logits, aux_logits).
        return (logits, aux_logits) if training else logits
    return forward


def softmax_cross_entropy(onehot_labels, logits, weights=1.0, label_smoothing=0.0):
    """tf.losses.softmax_cross_entropy(..., reduction=NONE).

    In float32 this is the original's own function. That function rounds the per-example losses
    to float32 (compute_weighted_loss casts them, and the weights, to float32 and back), a no-op in
    the original's float32 graph; in float64 its arithmetic is written out without the casts, so
    the float64 audit stays at round-off.
    """
    if logits.dtype == tf.float32:
        return tf.compat.v1.losses.softmax_cross_entropy(
            onehot_labels=onehot_labels, logits=logits, weights=weights, label_smoothing=label_smoothing,
            reduction=tf.compat.v1.losses.Reduction.NONE)
    if label_smoothing > 0:
        num_classes = tf.cast(tf.shape(onehot_labels)[-1], logits.dtype)
        onehot_labels = onehot_labels * (1.0 - label_smoothing) + label_smoothing / num_classes
    losses = tf.nn.softmax_cross_entropy_with_logits(labels=tf.stop_gradient(onehot_labels), logits=logits)
    return losses * tf.constant(weights, logits.dtype)


def inception_v3_losses(outputs, labels):
    """imagenet_inception_v3.set_up: label smoothing 0.1 on both heads, aux weight 0.4, aux in train only
    (`tf.cond(training, ...)`): the train phase's outputs carry the aux logits."""
    logits, aux_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
    one_hot = tf.one_hot(labels, NUM_CLASSES, dtype=logits.dtype)
    main_losses = softmax_cross_entropy(one_hot, logits, label_smoothing=0.1)
    if aux_logits is None:
        return tf.add(main_losses, 0.0)
    aux_losses = softmax_cross_entropy(one_hot, aux_logits, weights=0.4, label_smoothing=0.1)
    return tf.add(main_losses, aux_losses)


def main_logits_accuracy(outputs, labels):
    """The original's accuracy: on the main logits."""
    logits = outputs[0] if isinstance(outputs, tuple) else outputs
    correct = tf.equal(tf.argmax(logits, 1), tf.cast(labels, tf.int64))
    return tf.reduce_mean(tf.cast(correct, logits.dtype))
