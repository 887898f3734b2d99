"""MNIST and Fashion-MNIST: gzipped idx files, images / 255 as [N, 28, 28, 1] (here NCHW), no augmentation.

Read with NumPy (torchvision's MNIST class insists on its own raw/processed folder layout).
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from deepobs.datasets.base import DataCorruptError, require_file
from deepobs.datasets.in_memory import InMemoryImageDataSet

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path, magic: int) -> np.ndarray:
    """A gzipped idx file -> uint8 array of its declared shape; bad magic or size -> DataCorruptError."""
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataCorruptError(path, f"gzip: {error}") from None
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != magic:
        raise DataCorruptError(path, f"expected idx magic number {magic}")
    num_dims = 3 if magic == IMAGES_MAGIC else 1
    header = 4 + 4 * num_dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(num_dims))
    if len(raw) != header + int(np.prod(shape)):
        raise DataCorruptError(path, f"expected {header + int(np.prod(shape))} bytes for shape {shape}, "
                                     f"found {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


class MNIST(InMemoryImageDataSet):
    name = "mnist"
    folder = "mnist"
    num_classes = 10

    def read_source(self, source: str):
        image_file, label_file = (require_file(self.data_dir / self.folder / name, self.name, self.data_dir)
                                  for name in FILES[source])
        images = read_idx(image_file, IMAGES_MAGIC)[..., None]
        labels = read_idx(label_file, LABELS_MAGIC).astype(np.int64)
        if len(images) != len(labels):
            raise DataCorruptError(label_file, f"{len(labels)} labels for {len(images)} images in {image_file}")
        return images, labels, [len(labels)]

    def preprocess(self, images_nhwc_uint8, draws):
        return images_nhwc_uint8.astype(np.float32) / np.float32(255.0)


class FashionMNIST(MNIST):
    name = "fmnist"
    folder = "fmnist"
