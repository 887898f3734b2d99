"""Original `tolstoi_char_rnn.py`: embedding, two LSTMCell(128) in DropoutWrapper(0.8, 0.8), softmax head.

The cell is TF1's `LSTMCell` written out: one kernel [input + 128, 512] and one bias on concat([x, h]),
gates split i, j, f, o, forget_bias 1.0 added to f. `static_rnn` over MultiRNNCell runs both layers step
by step; running layer 1 over all steps, then layer 2, computes the same numbers. The DropoutWrapper
masks each step's input and output independently (not variational), so each site is one elementwise
dropout over the whole [B, T, 128] sequence. The state (c, h per layer) is carried to the next batch
through the graph's state store, without gradient, and zeroed by reset_state (the original's init ops).
"""
from tf_reference import initializers
from tf_reference._tf import tf

VOCAB_SIZE = 83  # hard-coded in the original (War and Peace)
SEQ_LENGTH = 50
RNN_SIZE = 128
NUM_LAYERS = 2
KEEP_PROB = 0.8
FORGET_BIAS = 1.0


def lstm_layer(g, inputs, training):
    """One DropoutWrapper(LSTMCell) over the sequence [B, T, in] -> outputs [B, T, 128]; carries (c, h)."""
    scope = "/".join(g._scopes)
    inputs = g.dropout(inputs, 1.0 - KEEP_PROB, training, name=f"{scope}/input_dropout")
    kernel = g.get_variable("lstm_cell/kernel", (inputs.shape[-1] + RNN_SIZE, 4 * RNN_SIZE))
    bias = g.get_variable("lstm_cell/bias", (4 * RNN_SIZE,), initializers.zeros())
    batch = inputs.shape[0]
    c = g.carried_state(f"{scope}/state_c", (batch, RNN_SIZE))
    h = g.carried_state(f"{scope}/state_h", (batch, RNN_SIZE))
    outputs = []
    for t in range(inputs.shape[1]):
        lstm_matrix = tf.nn.bias_add(tf.matmul(tf.concat([inputs[:, t], h], 1), kernel), bias)
        i, j, f, o = tf.split(lstm_matrix, 4, axis=1)
        c = tf.sigmoid(f + FORGET_BIAS) * c + tf.sigmoid(i) * tf.tanh(j)
        h = tf.sigmoid(o) * tf.tanh(c)
        outputs.append(h)
    outputs = g.tap(f"{scope}/lstm_cell", tf.stack(outputs, axis=1))
    g.carry(f"{scope}/state_c", c)
    g.carry(f"{scope}/state_h", h)
    g.tap(f"{scope}/state", tf.stack([c, h]))  # what the state variables hold after the batch
    return g.dropout(outputs, 1.0 - KEEP_PROB, training, name=f"{scope}/output_dropout")


def char_rnn():
    def forward(g, ids, training):
        embedding = g.get_variable("embedding", (VOCAB_SIZE, RNN_SIZE))
        x = g.tap("embedding", tf.nn.embedding_lookup(embedding, ids))
        for layer in range(NUM_LAYERS):
            with g.variable_scope("rnn"), g.variable_scope("multi_rnn_cell"), g.variable_scope(f"cell_{layer}"):
                x = lstm_layer(g, x, training)
        output = tf.reshape(x, [-1, RNN_SIZE])
        with g.variable_scope("rnnlm"):
            softmax_w = g.get_variable("softmax_w", (RNN_SIZE, VOCAB_SIZE))
            softmax_b = g.get_variable("softmax_b", (VOCAB_SIZE,))
        logits = tf.matmul(output, softmax_w) + softmax_b
        return tf.reshape(logits, [ids.shape[0], ids.shape[1], VOCAB_SIZE])
    return forward


def sequence_losses(logits, targets):
    """tf.contrib.seq2seq.sequence_loss(average_across_timesteps=True, average_across_batch=False), weights 1."""
    weights = tf.ones(targets.shape, dtype=logits.dtype)
    crossent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.reshape(targets, [-1]),
                                                              logits=tf.reshape(logits, [-1, VOCAB_SIZE]))
    crossent = tf.reshape(crossent * tf.reshape(weights, [-1]), targets.shape)
    total_size = tf.reduce_sum(weights, axis=[1]) + 1e-12  # the original's guard against all-0 weights
    return tf.reduce_sum(crossent, axis=[1]) / total_size


def sequence_accuracy(logits, targets):
    correct = tf.equal(tf.argmax(logits, 2), tf.cast(targets, tf.int64))
    return tf.reduce_mean(tf.cast(correct, logits.dtype))
