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

from deepobs.datasets.base import DataSet, batch_slices, buffer_permutation, nhwc_to_nchw, stream_records
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

    def epoch_draws(self, count: int, rng: np.random.Generator) -> AugmentDraws | None:
        """The random parameters of one pass: one row per position of the record stream, in read order
        (the original's map, which draws, runs before its shuffle buffer). None: no augmentation."""
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
        return self._epoch_plan(split)[0]

    def _epoch_plan(self, split: str) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """(record indices in output order, their positions in the read stream, the augmentation rng)."""
        _, indices, file_lengths = self._split_records("train" if split == "train_eval" else split)
        if split not in ("train", "train_eval"):
            return indices, np.arange(len(indices)), self.rng
        shuffle_rng, augment_rng = self.epoch_rngs()
        if not self.shuffle:
            return indices, np.arange(len(indices)), augment_rng
        file_order = self.file_order(len(file_lengths)) if self.shuffle_files else None
        stream = stream_records(file_lengths, file_order)
        positions = buffer_permutation(len(stream), shuffle_rng)
        return indices[stream[positions]], positions, augment_rng

    def _batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches are preprocessed on `num_workers` threads, PREFETCH ahead (NumPy releases the GIL),
        as the original maps on parallel threads and prefetches 4 batches."""
        source, _, _ = self._split_records(split if split != "train_eval" else "train")
        images, labels, _ = self._source(source)
        order, positions, augment_rng = self._epoch_plan(split)
        augment = self.data_augmentation and split in ("train", "train_eval")
        if not augment:
            draws = None
        elif self.augment_draws is not None:
            draws = self.augment_draws.take(order)  # injected: one row per record in file order
        else:
            draws = self.epoch_draws(len(order), augment_rng)
            draws = draws.take(positions) if draws is not None else None

        def make_batch(batch: slice):
            records = order[batch]
            batch_draws = draws.take(batch) if draws is not None else None
            return (nhwc_to_nchw(self.preprocess(images[records], batch_draws)),
                    torch.from_numpy(labels[records]))

        with ThreadPoolExecutor(self.num_workers) as pool:
            pending: deque = deque()
            for batch in batch_slices(len(order), self.batch_size)[:self._num_batches(split)]:
                pending.append(pool.submit(make_batch, batch))
                if len(pending) > PREFETCH:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def label_range(self, split: str) -> tuple[int, int]:
        source, indices, _ = self._split_records("train" if split == "train_eval" else split)
        labels = self._source(source)[1][indices]
        return int(labels.min()), int(labels.max())
