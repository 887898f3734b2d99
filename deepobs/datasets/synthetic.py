"""The generated data sets: `quadratic` (x ~ N(0, 0.6^2 I_100)) and `two_d` (x, y ~ N(0, 1)).

Drawn from NumPy RandomState with the original's seeds, in the original's draw order, as float32.
Batches are (x, None) for quadratic (no labels) and (x, y) scalars for two_d.
"""
from __future__ import annotations

from typing import ClassVar, Iterator

import numpy as np
import torch

from deepobs.datasets.base import DataSet, batch_slices, buffer_permutation


def quadratic_points(seed: int, size: int = 1000, dim: int = 100, noise_level: float = 0.6) -> np.ndarray:
    return np.float32(np.random.RandomState(seed).normal(0.0, noise_level, (size, dim)))


def two_d_points(seed: int, size: int = 10000, noise_level: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    x = rng.normal(0.0, noise_level, size)  # x is drawn before y
    y = rng.normal(0.0, noise_level, size)
    return np.float32(x), np.float32(y)


class GeneratedDataSet(DataSet):
    train_size: ClassVar[int]

    def split_arrays(self, split: str) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def _train_eval_batches(self) -> int:
        raise NotImplementedError

    def _num_batches(self, split: str) -> int:
        source = "train" if split == "train_eval" else split
        batches = len(self.split_arrays(source)[0]) // self.batch_size
        return min(batches, self._train_eval_batches()) if split == "train_eval" else batches

    def _batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        source = "train" if split == "train_eval" else split
        arrays = self.split_arrays(source)
        order = np.arange(len(arrays[0]))
        if source == "train" and self.shuffle:
            order = buffer_permutation(len(order), self.epoch_rngs()[0])
        for batch in batch_slices(len(order), self.batch_size)[:self._num_batches(split)]:
            records = order[batch]
            tensors = tuple(torch.from_numpy(array[records]) for array in arrays)
            yield tensors if len(tensors) == 2 else (tensors[0], None)


class Quadratic(GeneratedDataSet):
    name = "quadratic"
    train_size = 1000
    has_valid_split = False  # not in the fact sheet for v1.2: not ported

    def split_arrays(self, split):
        return (quadratic_points(42 if split == "train" else 43, self.train_size),)

    def _train_eval_batches(self):
        return self.train_size  # take(-1): all train batches


class TwoD(GeneratedDataSet):
    name = "two_d"
    train_size = 10000

    def split_arrays(self, split):
        if split == "test":  # all zeros: recovers the deterministic 2-D function
            return np.zeros(self.train_size, np.float32), np.zeros(self.train_size, np.float32)
        return two_d_points(44 if split == "valid" else 42, self.train_size)

    def _train_eval_batches(self):
        return self.train_size // self.batch_size
