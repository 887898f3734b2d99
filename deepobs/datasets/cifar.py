"""CIFAR-10, CIFAR-100 and SVHN: fixed-length binary records, the original's augmentation.

Read with NumPy (torchvision's CIFAR classes read the pickled python version, not these binaries,
and its SVHN class reads the .mat files, not the original's converted binaries).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from deepobs.datasets.base import DataCorruptError, require_file
from deepobs.datasets.image_ops import (AugmentDraws, cifar_eval_preprocess, cifar_train_preprocess,
                                        draw_cifar_augment)
from deepobs.datasets.in_memory import InMemoryImageDataSet

IMAGE_BYTES = 32 * 32 * 3


def read_records(path: Path, label_bytes: int, label_index: int, channels_first: bool, num_classes: int,
                 image_offset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One .bin file -> (uint8 NHWC images, int64 labels). The image is the 3072 bytes from image_offset
    (default: right after the label bytes) of each record of label_bytes + 3072 bytes."""
    record_bytes = label_bytes + IMAGE_BYTES
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record_bytes:
        raise DataCorruptError(path, f"size {raw.size} is not a positive multiple of the record size {record_bytes}")
    records = raw.reshape(-1, record_bytes)
    labels = records[:, label_index].astype(np.int64)
    if labels.max() >= num_classes:
        raise DataCorruptError(path, f"label {labels.max()} out of range for {num_classes} classes")
    start = label_bytes if image_offset is None else image_offset
    pixels = records[:, start:start + IMAGE_BYTES]
    images = (pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) if channels_first
              else pixels.reshape(-1, 32, 32, 3))
    return np.ascontiguousarray(images), labels


class BinaryImageDataSet(InMemoryImageDataSet):
    folder: ClassVar[str]
    # The original finds its files with tf.matching_files(pattern) (sorted); the files `prepare` writes
    # must all be there (the original would silently train on fewer).
    train_pattern: ClassVar[str]
    test_pattern: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    label_bytes: ClassVar[int] = 1
    label_index: ClassVar[int] = 0
    channels_first: ClassVar[bool] = True  # CIFAR stores CHW; the SVHN conversion writes HWC
    flip: ClassVar[bool] = True
    shuffle_files = True
    has_valid_split = False  # the v1.2 valid split of these sets is not in the fact sheet: not ported

    image_offset: int | None = None  # byte where the image starts in a record; None: after the label bytes

    def source_files(self, source: str) -> list[Path]:
        folder = self.data_dir / self.folder
        for name in self.train_files if source == "train" else self.test_files:
            require_file(folder / name, self.name, self.data_dir)
        return sorted(folder.glob(self.train_pattern if source == "train" else self.test_pattern))

    def read_source(self, source: str):
        parts = [read_records(path, self.label_bytes, self.label_index, self.channels_first, self.num_classes,
                              self.image_offset)
                 for path in self.source_files(source)]
        return (np.concatenate([images for images, _ in parts]), np.concatenate([labels for _, labels in parts]),
                [len(labels) for _, labels in parts])

    def epoch_draws(self, count: int, rng: np.random.Generator) -> AugmentDraws:
        return draw_cifar_augment(rng, count, flip=self.flip)

    def preprocess(self, images_nhwc_uint8, draws):
        if draws is not None:
            return cifar_train_preprocess(images_nhwc_uint8, draws)
        return cifar_eval_preprocess(images_nhwc_uint8)


class CIFAR10(BinaryImageDataSet):
    name = "cifar10"
    folder = "cifar-10"
    num_classes = 10
    train_pattern, test_pattern = "data_batch_*.bin", "test_batch.bin"
    train_files = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
    test_files = ("test_batch.bin",)


class CIFAR100(BinaryImageDataSet):
    name = "cifar100"
    folder = "cifar-100"
    num_classes = 100
    train_pattern, test_pattern = "train.bin", "test.bin"
    train_files = ("train.bin",)
    test_files = ("test.bin",)
    label_bytes = 2
    label_index = 1  # coarse label byte, then the fine label byte (the one the original uses)

    def __init__(self, *args, correct_image_offset: bool = False, **kwargs):
        """The original (cifar100._make_dataset) slices the image from byte `label_bytes` = 1 of the 3074-byte
        record, not from byte 2: the fine label becomes the red value of pixel (0, 0), every colour plane
        shifts by one position and the last blue byte is dropped. Every CIFAR-100 result of the original was
        computed on these images, so that is the default; correct_image_offset=True reads bytes 2..3073."""
        super().__init__(*args, **kwargs)
        self.correct_image_offset = correct_image_offset
        self.image_offset = 2 if correct_image_offset else 1


class SVHN(BinaryImageDataSet):
    name = "svhn"
    folder = "svhn"
    num_classes = 10
    train_pattern, test_pattern = "data_batch_*.bin", "test_batch.bin"
    train_files = tuple(f"data_batch_{i}.bin" for i in range(5))
    test_files = ("test_batch.bin",)
    channels_first = False
    flip = False  # the original's SVHN pipeline has no random_flip_left_right
    train_eval_size = 26032  # the size of the test set
