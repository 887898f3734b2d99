"""The original's optimizers: TF1's own `tf.compat.v1.train` classes, run eagerly."""
from __future__ import annotations

from tf_reference._tf import tf

MOMENTUM = 0.9
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8

# The slot variables each optimizer keeps per trainable variable (`get_slot(var, name)`).
SLOT_NAMES = {"sgd": (), "momentum": ("momentum",), "adam": ("m", "v")}


def make_optimizer(kind: str, learning_rate: float, dtype=tf.float32):
    # TF1 converts Python-float hyperparameters to float32 tensors before casting them to
    # the variable dtype; passing them in the variable dtype keeps float64 runs float64.
    def h(value):
        return tf.constant(value, dtype) if dtype == tf.float64 else value

    if kind == "sgd":
        return tf.compat.v1.train.GradientDescentOptimizer(h(learning_rate))
    if kind == "momentum":
        return tf.compat.v1.train.MomentumOptimizer(h(learning_rate), h(MOMENTUM))
    if kind == "adam":
        return tf.compat.v1.train.AdamOptimizer(h(learning_rate), h(ADAM_BETA1), h(ADAM_BETA2), h(ADAM_EPSILON))
    raise ValueError(f"unknown optimizer {kind!r}; valid: {', '.join(SLOT_NAMES)}")
