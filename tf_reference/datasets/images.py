"""MNIST, F-MNIST, CIFAR-10/100 and SVHN as tf.data pipelines with the original's TF1 ops.

Independent of `deepobs/`. With `augment_params` (numpy arrays, one row per train record in file
order) the random ops are replaced by their deterministic counterparts fed those parameters, and the
record order is not shuffled, so another pipeline can be fed the same draws.
"""
from __future__ import annotations

import os

import numpy as np

from tf_reference._tf import tf

SHUFFLE_BUFFER = 20000
PREFETCH = 4


def _read_idx_gz(path: str, header_bytes: int) -> tf.Tensor:
    raw = tf.io.decode_compressed(tf.io.read_file(path), compression_type="GZIP")
    return tf.io.decode_raw(tf.strings.substr(raw, header_bytes, -1), tf.uint8)


def _mnist_arrays(folder: str, prefix: str) -> tuple[tf.Tensor, tf.Tensor]:
    pixels = _read_idx_gz(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), 16)
    labels = _read_idx_gz(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), 8)
    images = tf.reshape(tf.cast(pixels, tf.float32) / 255.0, [-1, 28, 28, 1])
    return images, tf.one_hot(tf.cast(labels, tf.int32), 10)


def _batched(data: tf.data.Dataset, batch_size: int, shuffle: bool) -> tf.data.Dataset:
    if shuffle:
        data = data.shuffle(buffer_size=SHUFFLE_BUFFER)
    return data.batch(batch_size, drop_remainder=True).prefetch(PREFETCH)


def mnist_datasets(data_dir: str, batch_size: int, folder: str = "mnist", shuffle: bool = True,
                   valid_split: bool = False, train_eval_size: int = 10000, **_) -> dict[str, tf.data.Dataset]:
    root = os.path.join(data_dir, folder)
    train = tf.data.Dataset.from_tensor_slices(_mnist_arrays(root, "train"))
    test = tf.data.Dataset.from_tensor_slices(_mnist_arrays(root, "t10k"))
    splits = {}
    if valid_split:  # v1.2
        splits["valid"] = _batched(train.take(train_eval_size), batch_size, shuffle=False)
        train = train.skip(train_eval_size)
    splits["train"] = _batched(train, batch_size, shuffle)
    splits["train_eval"] = splits["train"].take(train_eval_size // batch_size)
    splits["test"] = _batched(test, batch_size, shuffle=False)
    return splits


# ---- CIFAR-10, CIFAR-100, SVHN ----

BINARY_LAYOUTS = {
    # name: (folder, train files, test files, label bytes, label offset, CHW?, flip?, classes, train_eval size)
    "cifar10": ("cifar-10", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1, 0, True, True, 10,
                10000),
    "cifar100": ("cifar-100", ["train.bin"], ["test.bin"], 2, 1, True, True, 100, 10000),
    "svhn": ("svhn", [f"data_batch_{i}.bin" for i in range(5)], ["test_batch.bin"], 1, 0, False, False, 10, 26032),
}


def _decode_record(raw_record, label_bytes, label_offset, channels_first):
    record = tf.io.decode_raw(raw_record, tf.uint8)
    label = tf.cast(record[label_offset], tf.int32)
    pixels = record[label_bytes:label_bytes + 3072]
    if channels_first:
        image = tf.transpose(tf.reshape(pixels, [3, 32, 32]), [1, 2, 0])
    else:
        image = tf.reshape(pixels, [32, 32, 3])
    return tf.cast(image, tf.float32), label


def augment_random(image, flip: bool):
    """The original's random chain, its own random ops, in its order."""
    image = tf.image.resize_with_crop_or_pad(image, 36, 36)
    image = tf.image.random_crop(image, [32, 32, 3])
    if flip:
        image = tf.image.random_flip_left_right(image)
    image = tf.image.random_brightness(image, max_delta=63.0 / 255.0)
    image = tf.image.random_saturation(image, lower=0.5, upper=1.5)
    return tf.image.random_contrast(image, lower=0.2, upper=1.8)


def augment_with_params(image, params):
    """The same chain with given parameters: crop offsets (row, col), flip, brightness/saturation/contrast."""
    image = tf.image.resize_with_crop_or_pad(image, 36, 36)
    image = tf.slice(image, tf.concat([params["crop_offsets"], [0]], 0), [32, 32, 3])
    image = tf.cond(params["flip"], lambda: tf.image.flip_left_right(image), lambda: image)
    image = tf.image.adjust_brightness(image, params["brightness"])
    image = tf.image.adjust_saturation(image, params["saturation"])
    return tf.image.adjust_contrast(image, params["contrast"])


def binary_datasets(name: str, data_dir: str, batch_size: int, data_augmentation: bool = True,
                    shuffle: bool = True, augment_params: dict[str, np.ndarray] | None = None,
                    **_) -> dict[str, tf.data.Dataset]:
    folder, train_files, test_files, label_bytes, label_offset, channels_first, flip, classes, train_eval_size = \
        BINARY_LAYOUTS[name]
    record_bytes = label_bytes + 3072

    def make(files, augment, shuffled):
        filenames = tf.constant([os.path.join(data_dir, folder, f) for f in files])
        if shuffled and augment_params is None:
            filenames = tf.random.shuffle(filenames)
        data = tf.data.FixedLengthRecordDataset(filenames, record_bytes)

        def parse(raw_record, params=None):
            image, label = _decode_record(raw_record, label_bytes, label_offset, channels_first)
            if augment:
                image = augment_random(image, flip) if params is None else augment_with_params(image, params)
            else:
                image = tf.image.resize_with_crop_or_pad(image, 32, 32)
            return tf.image.per_image_standardization(image), tf.one_hot(label, classes)

        if augment and augment_params is not None:
            params = tf.data.Dataset.from_tensor_slices({k: tf.constant(v) for k, v in augment_params.items()})
            data = tf.data.Dataset.zip((data, params)).map(parse, num_parallel_calls=8)
        else:
            data = data.map(parse, num_parallel_calls=8 if augment else 4)
        return _batched(data, batch_size, shuffled and augment_params is None)

    train = make(train_files, data_augmentation, shuffle)
    return {"train": train, "train_eval": train.take(train_eval_size // batch_size),
            "test": make(test_files, False, False)}
