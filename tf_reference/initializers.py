"""The original's initialisers: TF1's own `tf.compat.v1` initialiser classes.

Names are those of the original code. `glorot_normal` is TF1's, i.e. a truncated normal.
"""
from __future__ import annotations

from tf_reference._tf import tf


def glorot_uniform():
    return tf.compat.v1.glorot_uniform_initializer()


def glorot_normal():
    return tf.compat.v1.glorot_normal_initializer()


def truncated_normal(stddev: float):
    return tf.compat.v1.truncated_normal_initializer(stddev=stddev)


def constant(value: float):
    return tf.compat.v1.constant_initializer(value)


def zeros():
    return tf.compat.v1.zeros_initializer()


def ones():
    return tf.compat.v1.ones_initializer()
