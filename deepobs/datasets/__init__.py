"""The original DeepOBS data pipelines in PyTorch: one registry of data set name -> loader class."""
from __future__ import annotations

from pathlib import Path

from deepobs.datasets.base import (DataCorruptError, DataError, DataMissingError, DataSet, EmptySplitError)
from deepobs.datasets.cifar import CIFAR10, CIFAR100, SVHN
from deepobs.datasets.imagenet import ImageNet
from deepobs.datasets.mnist import MNIST, FashionMNIST
from deepobs.datasets.synthetic import Quadratic, TwoD
from deepobs.datasets.tolstoi import Tolstoi

DATASETS: dict[str, type[DataSet]] = {
    cls.name: cls for cls in (MNIST, FashionMNIST, CIFAR10, CIFAR100, SVHN, ImageNet, Tolstoi, Quadratic, TwoD)
}
DEFAULT_DATA_DIR = Path("data_deepobs")  # the original's default (relative) data folder


def get_dataset(name: str, data_dir: str | Path = DEFAULT_DATA_DIR, batch_size: int | None = None,
                **options) -> DataSet:
    try:
        cls = DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}") from None
    return cls(data_dir, batch_size or cls.default_batch_size, **options)


__all__ = ["DATASETS", "DEFAULT_DATA_DIR", "DataCorruptError", "DataError", "DataMissingError", "DataSet",
           "EmptySplitError", "get_dataset"]
