"""ImageNet TFRecords as the original's tf.data pipeline (independent of `deepobs/`)."""
from __future__ import annotations

import os

import numpy as np

from tf_reference._tf import tf
from tf_reference.datasets.epochs import EpochSeeds

NUM_CLASSES = 1001


def decode_and_resize(image_buffer):
    """decode_jpeg(channels=3) -> convert_image_dtype -> aspect-preserving TF1 bilinear resize (short side 256)."""
    image = tf.image.convert_image_dtype(tf.io.decode_jpeg(image_buffer, channels=3), tf.float32)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.divide(256, tf.cast(tf.reduce_min(shape[0:2]), tf.float32))
    new_size = tf.cast(tf.round(scale * height), tf.int32), tf.cast(tf.round(scale * width), tf.int32)
    return tf.compat.v1.image.resize_images(image, tf.stack(new_size))


def parse_example(serialized):
    # The original also parses image/class/text (default ''), which nothing uses: left out.
    features = tf.io.parse_single_example(serialized, {
        "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "image/class/label": tf.io.FixedLenFeature([1], tf.int64, default_value=-1),
    })
    return features["image/encoded"], tf.cast(tf.reshape(features["image/class/label"], []), tf.int32)


def preprocess(image, train: bool, params=None, seeds: EpochSeeds | None = None):
    seeds = seeds or EpochSeeds(None)
    if train:
        image = tf.image.resize_with_crop_or_pad(image, 256, 256)
        if params is None:
            image = tf.image.random_crop(image, [224, 224, 3], seed=seeds.op_seed(0))
            image = tf.image.random_flip_left_right(image, seed=seeds.op_seed(1))
        else:
            image = tf.slice(image, tf.concat([params["crop_offset"], [0]], 0), [224, 224, 3])
            image = tf.cond(params["flip"], lambda: tf.image.flip_left_right(image), lambda: image)
    else:
        image = tf.image.resize_with_crop_or_pad(image, 224, 224)
    return tf.image.per_image_standardization(image)


def fresh_params(seed_pair):
    return {"crop_offset": tf.random.stateless_uniform([2], seed_pair, 0, 33, dtype=tf.int32),
            "flip": tf.random.stateless_uniform([], seed_pair + 1) < 0.5}


def imagenet_datasets(data_dir: str, batch_size: int, data_augmentation: bool = True, shuffle: bool = True,
                      augment_params: dict[str, np.ndarray] | None = None, train_eval_size: int = 50000,
                      seed: int | None = None, replay_epochs: bool = True, **_) -> dict[str, tf.data.Dataset]:
    seeds = EpochSeeds(seed, replay_epochs)

    def make(pattern, augment, shuffled):
        filenames = tf.io.matching_files(os.path.join(data_dir, "imagenet", pattern))
        if shuffled and augment_params is None:
            data = seeds.shuffled_files(filenames, tf.data.TFRecordDataset)
        else:
            data = tf.data.TFRecordDataset(filenames)

        def parse(serialized, params=None):
            image_buffer, label = parse_example(serialized)
            image = preprocess(decode_and_resize(image_buffer), augment, params, seeds)
            return image, tf.one_hot(label, NUM_CLASSES)

        if augment and augment_params is not None:
            params = tf.data.Dataset.from_tensor_slices({k: tf.constant(v) for k, v in augment_params.items()})
            data = tf.data.Dataset.zip((data, params)).map(parse, num_parallel_calls=8)
        elif augment and seeds.fresh_stateless:
            data = tf.data.Dataset.zip((data, seeds.record_seeds())).map(
                lambda serialized, pair: parse(serialized, fresh_params(pair)), num_parallel_calls=8)
        else:
            # The original passes 8 or 4 by data_augmentation, whichever split this is.
            calls = 8 if data_augmentation else 4
            data = data.map(parse, num_parallel_calls=seeds.map_calls(calls) if augment else calls)
        if shuffled and augment_params is None:
            data = seeds.shuffle(data, 20000)
        return data.batch(batch_size, drop_remainder=True).prefetch(4)

    train = make("train-*", data_augmentation, shuffle)
    return {"train": train, "train_eval": train.take(train_eval_size // batch_size),
            "test": make("validation-*", False, False)}
