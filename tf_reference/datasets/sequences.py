"""Tolstoi character streams and the generated quadratic / two_d data (independent of `deepobs/`)."""
from __future__ import annotations

import os

import numpy as np

from tf_reference._tf import tf
from tf_reference.datasets.epochs import EpochSeeds

TOLSTOI_TEST_CHARS = 653237


def _char_batches(arr: np.ndarray, batch_size: int, seq_length: int) -> tf.data.Dataset:
    num_batches = int(np.floor((np.size(arr) - 1) / (batch_size * seq_length)))
    chars = tf.constant(arr)
    used = num_batches * batch_size * seq_length
    if num_batches == 0:
        raise ValueError("This dataset is to small to use with this batch size and sequence length.")
    x = tf.reshape(chars[:used], [batch_size, -1])
    y = tf.reshape(chars[1:used + 1], [batch_size, -1])
    return tf.data.Dataset.from_tensor_slices((tf.stack(tf.split(x, num_batches, axis=1)),
                                               tf.stack(tf.split(y, num_batches, axis=1)))).prefetch(4)


def tolstoi_datasets(data_dir: str, batch_size: int, seq_length: int = 50, valid_split: bool = False,
                     **_) -> dict[str, tf.data.Dataset]:
    train_chars = np.load(os.path.join(data_dir, "tolstoi", "train.npy"))
    test_chars = np.load(os.path.join(data_dir, "tolstoi", "test.npy"))
    splits = {}
    if valid_split:  # v1.2
        splits["valid"] = _char_batches(train_chars[:TOLSTOI_TEST_CHARS], batch_size, seq_length)
        splits["train"] = _char_batches(train_chars[TOLSTOI_TEST_CHARS:], batch_size, seq_length)
        splits["train_eval"] = splits["train"].take(TOLSTOI_TEST_CHARS // (batch_size * seq_length))
    else:  # v1.1
        splits["train"] = _char_batches(train_chars, batch_size, seq_length)
        splits["train_eval"] = splits["train"].take(TOLSTOI_TEST_CHARS // batch_size)
    splits["test"] = _char_batches(test_chars, batch_size, seq_length)
    return splits


def _batched(data, batch_size, shuffle, seeds: EpochSeeds | None = None):
    if shuffle:
        data = (seeds or EpochSeeds(None)).shuffle(data, 20000)
    return data.batch(batch_size, drop_remainder=True).prefetch(4)


def quadratic_datasets(data_dir: str, batch_size: int, shuffle: bool = True, seed: int | None = None,
                       replay_epochs: bool = True, **_) -> dict[str, tf.data.Dataset]:
    def points(numpy_seed):
        return np.float32(np.random.RandomState(numpy_seed).normal(0.0, 0.6, (1000, 100)))

    train = _batched(tf.data.Dataset.from_tensor_slices(points(42)), batch_size, shuffle,
                     EpochSeeds(seed, replay_epochs))
    return {"train": train, "train_eval": train.take(-1),
            "test": _batched(tf.data.Dataset.from_tensor_slices(points(43)), batch_size, False)}


def two_d_datasets(data_dir: str, batch_size: int, shuffle: bool = True, valid_split: bool = False,
                   seed: int | None = None, replay_epochs: bool = True, **_) -> dict[str, tf.data.Dataset]:
    def points(numpy_seed):
        rng = np.random.RandomState(numpy_seed)
        x = rng.normal(0.0, 1.0, 10000)
        y = rng.normal(0.0, 1.0, 10000)
        return np.float32(x), np.float32(y)

    train = _batched(tf.data.Dataset.from_tensor_slices(points(42)), batch_size, shuffle,
                     EpochSeeds(seed, replay_epochs))
    zeros = np.zeros(10000, np.float32)
    splits = {"train": train, "train_eval": train.take(10000 // batch_size)}
    if valid_split:
        splits["valid"] = _batched(tf.data.Dataset.from_tensor_slices(points(44)), batch_size, False)
    splits["test"] = _batched(tf.data.Dataset.from_tensor_slices((zeros, zeros)), batch_size, False)
    return splits
