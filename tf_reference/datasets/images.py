"""MNIST, F-MNIST, CIFAR-10/100 and SVHN as tf.data pipelines with the original's TF1 ops.

Independent of `deepobs/`. With `augment_params` (numpy arrays, one row per train record in file
order) the random ops are replaced by their deterministic counterparts fed those parameters, and the
record order is not shuffled, so another pipeline can be fed the same draws.

Epochs (`epochs.py`): the original runs eagerly-built datasets' init ops in a seeded graph; here each
iteration of a returned dataset is one init of the original, with the same epoch-to-epoch behaviour.
"""
from __future__ import annotations

import os
from functools import partial

import numpy as np

from tf_reference._tf import tf
from tf_reference.datasets.epochs import EpochSeeds

SHUFFLE_BUFFER = 20000
PREFETCH = 4


def _read_idx_gz(path: str, header_bytes: int) -> tf.Tensor:
    raw = tf.io.decode_compressed(tf.io.read_file(path), compression_type="GZIP")
    return tf.io.decode_raw(tf.strings.substr(raw, header_bytes, -1), tf.uint8)


def _mnist_arrays(folder: str, prefix: str) -> tuple[tf.Tensor, tf.Tensor]:
    pixels = _read_idx_gz(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), 16)
    labels = _read_idx_gz(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), 8)
    images = tf.reshape(tf.cast(pixels, tf.float32) / 255.0, [-1, 28, 28, 1])
    # The original reads the idx files with NumPy (gzip, np.frombuffer): the same bytes; its labels are int32 one-hot.
    return images, tf.one_hot(tf.cast(labels, tf.int32), 10, dtype=tf.int32)


def _batched(data: tf.data.Dataset, batch_size: int, shuffle: bool, seeds: EpochSeeds | None = None
             ) -> tf.data.Dataset:
    if shuffle:
        data = (seeds or EpochSeeds(None)).shuffle(data, SHUFFLE_BUFFER)
    return data.batch(batch_size, drop_remainder=True).prefetch(PREFETCH)


def mnist_datasets(data_dir: str, batch_size: int, folder: str = "mnist", shuffle: bool = True,
                   valid_split: bool = False, train_eval_size: int = 10000, seed: int | None = None,
                   replay_epochs: bool = True, **_) -> dict[str, tf.data.Dataset]:
    root = os.path.join(data_dir, folder)
    train = tf.data.Dataset.from_tensor_slices(_mnist_arrays(root, "train"))
    test = tf.data.Dataset.from_tensor_slices(_mnist_arrays(root, "t10k"))
    splits = {}
    if valid_split:  # v1.2
        splits["valid"] = _batched(train.take(train_eval_size), batch_size, shuffle=False)
        train = train.skip(train_eval_size)
    splits["train"] = _batched(train, batch_size, shuffle, EpochSeeds(seed, replay_epochs))
    splits["train_eval"] = splits["train"].take(train_eval_size // batch_size)
    splits["test"] = _batched(test, batch_size, shuffle=False)
    return splits


# ---- CIFAR-10, CIFAR-100, SVHN ----

BINARY_LAYOUTS = {
    # name: (folder, train pattern, test pattern, label_bytes, label_offset, CHW?, flip?, classes, train_eval size)
    # label_bytes/label_offset as the original's variables: the label is byte label_offset, the record is
    # label_bytes + label_offset + 3072 bytes (CIFAR-100: a coarse and the fine label byte first).
    "cifar10": ("cifar-10", "data_batch_*.bin", "test_batch.bin", 1, 0, True, True, 10, 10000),
    "cifar100": ("cifar-100", "train.bin", "test.bin", 1, 1, True, True, 100, 10000),
    "svhn": ("svhn", "data_batch_*.bin", "test_batch.bin", 1, 0, False, False, 10, 26032),
}


def _decode_record(raw_record, label_bytes, label_offset, channels_first, image_start):
    record = tf.reshape(tf.io.decode_raw(raw_record, tf.uint8), [label_bytes + label_offset + 3072])
    label = tf.cast(tf.slice(record, [label_offset], [label_bytes]), tf.int32)
    pixels = tf.slice(record, [image_start], [3072])
    if channels_first:
        image = tf.transpose(tf.reshape(pixels, [3, 32, 32]), [1, 2, 0])
    else:
        image = tf.reshape(pixels, [32, 32, 3])
    return tf.cast(image, tf.float32), label


def augment_random(image, flip: bool, seeds: EpochSeeds):
    """The original's random chain, its own random ops, in its order (op seeds: see EpochSeeds)."""
    image = tf.image.resize_with_crop_or_pad(image, 36, 36)
    image = tf.image.random_crop(image, [32, 32, 3], seed=seeds.op_seed(0))
    if flip:
        image = tf.image.random_flip_left_right(image, seed=seeds.op_seed(1))
    image = tf.image.random_brightness(image, max_delta=63.0 / 255.0, seed=seeds.op_seed(2))
    image = tf.image.random_saturation(image, lower=0.5, upper=1.5, seed=seeds.op_seed(3))
    return tf.image.random_contrast(image, lower=0.2, upper=1.8, seed=seeds.op_seed(4))


def augment_with_params(image, params):
    """The same chain with given parameters: crop offsets (row, col), flip, brightness/saturation/contrast."""
    image = tf.image.resize_with_crop_or_pad(image, 36, 36)
    image = tf.slice(image, tf.concat([params["crop_offsets"], [0]], 0), [32, 32, 3])
    image = tf.cond(params["flip"], lambda: tf.image.flip_left_right(image), lambda: image)
    image = tf.image.adjust_brightness(image, params["brightness"])
    image = tf.image.adjust_saturation(image, params["saturation"])
    return tf.image.adjust_contrast(image, params["contrast"])


def fresh_params(seed_pair, flip: bool):
    """One record's augmentation parameters from a per-record seed, with the original's distributions."""
    uniform = partial(tf.random.stateless_uniform, [])
    return {"crop_offsets": tf.random.stateless_uniform([2], seed_pair, 0, 5, dtype=tf.int32),
            "flip": (uniform(seed_pair + 1) < 0.5) if flip else tf.constant(False),
            "brightness": uniform(seed_pair + 2, -63.0 / 255.0, 63.0 / 255.0),
            "saturation": uniform(seed_pair + 3, 0.5, 1.5),
            "contrast": uniform(seed_pair + 4, 0.2, 1.8)}


def binary_datasets(name: str, data_dir: str, batch_size: int, data_augmentation: bool = True,
                    shuffle: bool = True, augment_params: dict[str, np.ndarray] | None = None,
                    seed: int | None = None, replay_epochs: bool = True, correct_image_offset: bool = False,
                    **_) -> dict[str, tf.data.Dataset]:
    folder, train_pattern, test_pattern, label_bytes, label_offset, channels_first, flip, classes, \
        train_eval_size = BINARY_LAYOUTS[name]
    record_bytes = label_bytes + label_offset + 3072
    # The original slices the image from byte label_bytes (CIFAR-100: byte 1, one byte early); the corrected
    # reading starts after the label offset too. CIFAR-10 and SVHN: both are byte 1.
    image_start = label_bytes + label_offset if correct_image_offset else label_bytes
    seeds = EpochSeeds(seed, replay_epochs)

    def make(pattern, augment, shuffled):
        filenames = tf.io.matching_files(os.path.join(data_dir, folder, pattern))
        if shuffled and augment_params is None:
            data = seeds.shuffled_files(filenames, lambda f: tf.data.FixedLengthRecordDataset(f, record_bytes))
        else:
            data = tf.data.FixedLengthRecordDataset(filenames, record_bytes)

        def parse(raw_record, params=None):
            image, label = _decode_record(raw_record, label_bytes, label_offset, channels_first, image_start)
            if augment:
                image = augment_random(image, flip, seeds) if params is None else augment_with_params(image, params)
            else:
                image = tf.image.resize_with_crop_or_pad(image, 32, 32)
            return tf.image.per_image_standardization(image), tf.squeeze(tf.one_hot(label, classes))

        if augment and augment_params is not None:
            params = tf.data.Dataset.from_tensor_slices({k: tf.constant(v) for k, v in augment_params.items()})
            data = tf.data.Dataset.zip((data, params)).map(parse, num_parallel_calls=8)
        elif augment and seeds.fresh_stateless:
            data = tf.data.Dataset.zip((data, seeds.record_seeds())).map(
                lambda raw, pair: parse(raw, fresh_params(pair, flip)), num_parallel_calls=8)
        else:
            data = data.map(parse, num_parallel_calls=seeds.map_calls(8) if augment else 4)
        return _batched(data, batch_size, shuffled and augment_params is None, seeds)

    train = make(train_pattern, data_augmentation, shuffle)
    return {"train": train, "train_eval": train.take(train_eval_size // batch_size),
            "test": make(test_pattern, False, False)}
