"""Image classification data sets that fit in memory (MNIST, F-MNIST, CIFAR-10/100, SVHN).

Sources ("train"/"test" files) are decoded once to uint8 NHWC arrays; every epoch re-orders record
indices the way the original's tf.data graph does and preprocesses one batch at a time, vectorised.
"""
from __future__ import annotations

import abc
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Iterator

import numpy as np
import torch

from deepobs.datasets.base import DataSet, batch_slices, nhwc_to_nchw, shuffled_order
from deepobs.datasets.image_ops import AugmentDraws


PREFETCH = 4


class InMemoryImageDataSet(DataSet):
    num_classes: ClassVar[int]
    train_eval_size: ClassVar[int] = 10000  # train_eval = take(train_eval_size // B) train batches
    valid_size: ClassVar[int] = 10000  # v1.2: valid = the first valid_size records of the train files
    shuffle_files: ClassVar[bool] = False  # CIFAR/SVHN shuffle the order of their .bin files
    num_workers: int = os.cpu_count() or 1

    def __init__(self, *args, augment_draws: AugmentDraws | None = None, **kwargs):
        """augment_draws: injected random parameters, one row per train record (index in file order)."""
        super().__init__(*args, **kwargs)
        self.augment_draws = augment_draws
        self._sources: dict[str, tuple[np.ndarray, np.ndarray, list[int]]] = {}

    @abc.abstractmethod
    def read_source(self, source: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """'train' | 'test' -> (images uint8 NHWC, labels int64, records per file)."""

    def batch_draws(self, record_indices: np.ndarray, augment: bool) -> AugmentDraws | None:
        """The random parameters of one batch, drawn in the calling thread (reproducible order)."""
        return None

    @abc.abstractmethod
    def preprocess(self, images_nhwc_uint8: np.ndarray, draws: AugmentDraws | None) -> np.ndarray:
        """uint8 NHWC batch -> float32 NHWC batch; draws is None in eval mode (no augmentation)."""

    def _source(self, source: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
        if source not in self._sources:
            self._sources[source] = self.read_source(source)
        return self._sources[source]

    def _split_records(self, split: str) -> tuple[str, np.ndarray, list[int]]:
        """(source, record indices of the split in file order, records per file within the split)."""
        source = "test" if split == "test" else "train"
        _, labels, file_lengths = self._source(source)
        indices = np.arange(len(labels))
        if source == "test" or not self.valid_split:
            return source, indices, file_lengths
        if split == "valid":
            return source, indices[:self.valid_size], [self.valid_size]
        return source, indices[self.valid_size:], [len(labels) - self.valid_size]

    def _num_batches(self, split: str) -> int:
        _, indices, _ = self._split_records("train" if split == "train_eval" else split)
        batches = len(indices) // self.batch_size
        if split == "train_eval":
            return min(self.train_eval_size // self.batch_size, batches)
        return batches

    def _epoch_order(self, split: str) -> np.ndarray:
        _, indices, file_lengths = self._split_records("train" if split == "train_eval" else split)
        if split in ("train", "train_eval") and self.shuffle:
            return indices[shuffled_order(file_lengths, self.rng, self.shuffle_files)]
        return indices

    def _batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches are preprocessed on `num_workers` threads, PREFETCH ahead (NumPy releases the GIL),
        as the original maps on parallel threads and prefetches 4 batches."""
        source, _, _ = self._split_records(split if split != "train_eval" else "train")
        images, labels, _ = self._source(source)
        order = self._epoch_order(split)
        augment = self.data_augmentation and split in ("train", "train_eval")

        def make_batch(records: np.ndarray, draws: AugmentDraws | None):
            return nhwc_to_nchw(self.preprocess(images[records], draws)), torch.from_numpy(labels[records])

        with ThreadPoolExecutor(self.num_workers) as pool:
            pending: deque = deque()
            for batch in batch_slices(len(order), self.batch_size)[:self._num_batches(split)]:
                records = order[batch]
                pending.append(pool.submit(make_batch, records, self.batch_draws(records, augment)))
                if len(pending) > PREFETCH:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def label_range(self, split: str) -> tuple[int, int]:
        source, indices, _ = self._split_records("train" if split == "train_eval" else split)
        labels = self._source(source)[1][indices]
        return int(labels.min()), int(labels.max())
