"""ImageNet from the original's TFRecord shards (`imagenet/train-*`, `imagenet/validation-*`).

Records are read with the hand-written reader in `tfrecord.py` (see there why), JPEGs are decoded
with PIL (libjpeg-turbo, ISLOW DCT, fancy upsampling: the same decoder settings as TF's
decode_jpeg; the parity audit measures the remaining difference) and preprocessed one image at a
time with the original's ops (`image_ops.imagenet_preprocess`). 1001 classes, 0 = background.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from deepobs.datasets.base import DataCorruptError, DataMissingError, DataSet, buffer_shuffle
from deepobs.datasets.image_ops import ImagenetDraws, draw_imagenet_augment, imagenet_preprocess
from deepobs.datasets.tfrecord import count_records, parse_example, read_records

NUM_CLASSES = 1001
FILE_PATTERNS = {"train": "train-*", "test": "validation-*"}  # the original's tf.matching_files patterns
TRAIN_EVAL_SIZE = 50000
VALID_SIZE = 50000


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    """JPEG bytes -> RGB uint8 HWC (grayscale and CMYK converted to RGB, as decode_jpeg(channels=3))."""
    with Image.open(io.BytesIO(jpeg)) as image:
        return np.asarray(image.convert("RGB"))


def parse_record(record: bytes, path: Path) -> tuple[bytes, int]:
    try:
        features = parse_example(record)
        return features["image/encoded"][0], int(features["image/class/label"][0])
    except (ValueError, KeyError, IndexError) as error:
        raise DataCorruptError(path, f"not a tf.train.Example with image/encoded and image/class/label ({error})") \
            from None


class ImageNet(DataSet):
    name = "imagenet"
    default_batch_size = 128

    def __init__(self, *args, draw_augment: Callable[[np.random.Generator], ImagenetDraws] = draw_imagenet_augment,
                 decode: Callable[[bytes], np.ndarray] = decode_jpeg, **kwargs):
        super().__init__(*args, **kwargs)
        self.draw_augment = draw_augment
        self.decode = decode
        self._counts: dict[Path, int] = {}

    def files(self, source: str) -> list[Path]:
        paths = sorted((self.data_dir / "imagenet").glob(FILE_PATTERNS[source]))
        if not paths:
            raise DataMissingError(self.data_dir / "imagenet" / FILE_PATTERNS[source], self.name, self.data_dir)
        return paths

    def _count(self, path: Path) -> int:
        if path not in self._counts:
            self._counts[path] = count_records(path)
        return self._counts[path]

    def _records_in_split(self, split: str) -> int:
        total = sum(self._count(path) for path in self.files("test" if split == "test" else "train"))
        if not self.valid_split or split == "test":
            return total
        return min(VALID_SIZE, total) if split == "valid" else max(total - VALID_SIZE, 0)

    def _num_batches(self, split: str) -> int:
        if split == "train_eval":
            return min(TRAIN_EVAL_SIZE // self.batch_size, self._records_in_split("train") // self.batch_size)
        return self._records_in_split(split) // self.batch_size

    def _records(self, split: str, augment: bool) -> Iterator[tuple[bytes, int, Path, ImagenetDraws | None]]:
        """Records in output order, each with its augmentation draws. The draws are made in read order,
        before the shuffle buffer, as the original's map (which draws) runs before its shuffle."""
        paths = self.files("test" if split == "test" else "train")
        train_like = split in ("train", "train_eval")
        shuffle_rng, augment_rng = self.epoch_rngs() if train_like else (self.rng, self.rng)
        if train_like and self.shuffle:
            paths = [paths[i] for i in self.file_order(len(paths))]  # tf.random_shuffle(filenames)
        records = ((record, path) for path in paths for record in read_records(path))
        if self.valid_split and split != "test":
            # v1.2 valid = the first 50k train records; here in sorted file order (see docs/datasets.md).
            records = (item for index, item in enumerate(records) if (index < VALID_SIZE) == (split == "valid"))
        with_draws = ((record, path, self.draw_augment(augment_rng) if augment else None)
                      for record, path in records)
        if train_like and self.shuffle:
            with_draws = buffer_shuffle(with_draws, 20000, shuffle_rng)
        for record, path, draws in with_draws:
            yield *parse_record(record, path), path, draws

    def _batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        augment = self.data_augmentation and split in ("train", "train_eval")
        num_batches = self._num_batches(split)
        records = self._records(split, augment)
        for _ in range(num_batches):
            images, labels = [], []
            for _, (jpeg, label, path, draws) in zip(range(self.batch_size), records):
                try:
                    image = self.decode(jpeg)
                except (UnidentifiedImageError, OSError, ValueError) as error:
                    raise DataCorruptError(path, f"undecodable JPEG ({error})") from None
                images.append(imagenet_preprocess(image, draws))
                labels.append(label)
            yield (torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))),
                   torch.tensor(labels, dtype=torch.int64))
