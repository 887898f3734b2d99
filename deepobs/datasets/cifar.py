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


def read_records(path: Path, label_bytes: int, label_index: int, channels_first: bool, num_classes: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One .bin file -> (uint8 NHWC images, int64 labels)."""
    record_bytes = label_bytes + IMAGE_BYTES
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record_bytes:
        raise DataCorruptError(path, f"size {raw.size} is not a positive multiple of the record size {record_bytes}")
    records = raw.reshape(-1, record_bytes)
    labels = records[:, label_index].astype(np.int64)
    if labels.max() >= num_classes:
        raise DataCorruptError(path, f"label {labels.max()} out of range for {num_classes} classes")
    pixels = records[:, label_bytes:]
    images = (pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) if channels_first
              else pixels.reshape(-1, 32, 32, 3))
    return np.ascontiguousarray(images), labels


class BinaryImageDataSet(InMemoryImageDataSet):
    folder: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    label_bytes: ClassVar[int] = 1
    label_index: ClassVar[int] = 0
    channels_first: ClassVar[bool] = True  # CIFAR stores CHW; the SVHN conversion writes HWC
    flip: ClassVar[bool] = True
    shuffle_files = True
    has_valid_split = False  # the v1.2 valid split of these sets is not in the fact sheet: not ported

    def read_source(self, source: str):
        names = self.train_files if source == "train" else self.test_files
        paths = [self.data_dir / self.folder / name for name in names]
        for path in paths:
            require_file(path, self.name, self.data_dir)
        parts = [read_records(path, self.label_bytes, self.label_index, self.channels_first, self.num_classes)
                 for path in paths]
        return (np.concatenate([images for images, _ in parts]), np.concatenate([labels for _, labels in parts]),
                [len(labels) for _, labels in parts])

    def batch_draws(self, record_indices: np.ndarray, augment: bool) -> AugmentDraws | None:
        if not augment:
            return None
        if self.augment_draws is not None:
            return self.augment_draws.take(record_indices)
        return draw_cifar_augment(self.rng, len(record_indices), flip=self.flip)

    def preprocess(self, images_nhwc_uint8, draws):
        if draws is not None:
            return cifar_train_preprocess(images_nhwc_uint8, draws)
        return cifar_eval_preprocess(images_nhwc_uint8)


class CIFAR10(BinaryImageDataSet):
    name = "cifar10"
    folder = "cifar-10"
    num_classes = 10
    train_files = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
    test_files = ("test_batch.bin",)


class CIFAR100(BinaryImageDataSet):
    name = "cifar100"
    folder = "cifar-100"
    num_classes = 100
    train_files = ("train.bin",)
    test_files = ("test.bin",)
    label_bytes = 2
    label_index = 1  # coarse label byte, then the fine label byte (the one the original uses)


class SVHN(BinaryImageDataSet):
    name = "svhn"
    folder = "svhn"
    num_classes = 10
    train_files = tuple(f"data_batch_{i}.bin" for i in range(5))
    test_files = ("test_batch.bin",)
    channels_first = False
    flip = False  # the original's SVHN pipeline has no random_flip_left_right
    train_eval_size = 26032  # the size of the test set
