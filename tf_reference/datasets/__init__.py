"""The original DeepOBS tf.data pipelines (TF1 semantics): name -> builder of {split: tf.data.Dataset}.

Images NHWC float32, class labels one-hot, as in the original. Independent of `deepobs/`.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from tf_reference.datasets.imagenet import imagenet_datasets
from tf_reference.datasets.images import binary_datasets, mnist_datasets
from tf_reference.datasets.sequences import quadratic_datasets, tolstoi_datasets, two_d_datasets

REFERENCE_DATASETS: dict[str, Callable] = {
    "mnist": partial(mnist_datasets, folder="mnist"),
    "fmnist": partial(mnist_datasets, folder="fmnist"),
    "cifar10": partial(binary_datasets, "cifar10"),
    "cifar100": partial(binary_datasets, "cifar100"),
    "svhn": partial(binary_datasets, "svhn"),
    "imagenet": imagenet_datasets,
    "tolstoi": tolstoi_datasets,
    "quadratic": quadratic_datasets,
    "two_d": two_d_datasets,
}


def make_datasets(name: str, data_dir, batch_size: int, **options):
    return REFERENCE_DATASETS[name](str(data_dir), batch_size, **options)


__all__ = ["REFERENCE_DATASETS", "make_datasets"]
