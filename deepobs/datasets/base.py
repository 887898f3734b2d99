"""What every DeepOBS data set shares: splits, the original's batching and shuffling, and data errors.

A data set is built from a data folder and a batch size; `batches(split)` yields one epoch of
(inputs, labels) torch tensors. Splits (v1.1): "train", "train_eval", "test"; with
`valid_split=True` also "valid" (the v1.2 split, carved out of the train files as documented per
data set in docs/datasets.md).
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, TypeVar

import numpy as np
import torch

T = TypeVar("T")

# tf.data's `shuffle(buffer_size=20000)` in every original data set file.
SHUFFLE_BUFFER = 20000
SPLITS = ("train", "train_eval", "test")
SPLITS_WITH_VALID = ("train", "train_eval", "valid", "test")
# Independent random streams under one seed: [seed, stream] seeds a NumPy Generator.
SHUFFLE_STREAM, AUGMENT_STREAM, FILE_ORDER_STREAM = 1, 2, 3


class DataError(Exception):
    """A problem with the files in the data folder; its message is one line for the user."""


class DataMissingError(DataError, FileNotFoundError):
    def __init__(self, path: Path, dataset: str, data_dir: Path):
        super().__init__(
            f"missing {path}; create it with: python -m deepobs data prepare {dataset} --data-dir {data_dir}"
        )


class DataCorruptError(DataError, ValueError):
    def __init__(self, path: Path, why: str):
        super().__init__(f"corrupt or truncated data file {path}: {why}")


class EmptySplitError(DataError, ValueError):
    """A split that yields no batch. The original raises ValueError for tolstoi when the data set is built;
    elsewhere its runner would divide by zero batches at the first evaluation."""

    def __init__(self, dataset: str, split: str, batch_size: int, detail: str):
        super().__init__(f"{dataset}: batch size {batch_size} leaves no batch in the {split} split ({detail}); "
                         f"use a smaller batch size")


def _uniforms(rng: np.random.Generator, chunk: int = 4096) -> Iterator[float]:
    while True:
        yield from rng.random(chunk).tolist()


def buffer_shuffle(items: Iterable[T], buffer_size: int, rng: np.random.Generator) -> Iterator[T]:
    """tf.data `shuffle(buffer_size)`: fill a buffer, emit a uniformly chosen slot, refill it.

    With fewer items than the buffer this is a uniform permutation; with more (MNIST, CIFAR, SVHN
    train: 50-64k items vs 20k) early items tend to come out early, as in the original.
    """
    uniforms = _uniforms(rng)
    buffer: list[T] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = int(next(uniforms) * buffer_size)
        yield buffer[slot]
        buffer[slot] = item
    while buffer:
        slot = int(next(uniforms) * len(buffer))
        yield buffer[slot]
        buffer[slot] = buffer[-1]
        buffer.pop()


def stream_records(file_lengths: list[int], file_order: np.ndarray | None = None) -> np.ndarray:
    """Record indices (files concatenated in file order) in the order the files are read."""
    starts = np.cumsum([0] + list(file_lengths))
    file_order = np.arange(len(file_lengths)) if file_order is None else file_order
    if not len(file_lengths):
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(starts[f], starts[f + 1]) for f in file_order]).astype(np.int64)


def buffer_permutation(num_items: int, rng: np.random.Generator, buffer_size: int = SHUFFLE_BUFFER) -> np.ndarray:
    """Output position -> stream position of `shuffle(buffer_size)` over num_items items."""
    return np.fromiter(buffer_shuffle(range(num_items), buffer_size, rng), dtype=np.int64, count=num_items)


def shuffled_order(file_lengths: list[int], rng: np.random.Generator, shuffle_files: bool,
                   buffer_size: int = SHUFFLE_BUFFER) -> np.ndarray:
    """Record indices of one shuffled epoch: file order shuffled (`tf.random_shuffle(filenames)`),
    then records through the shuffle buffer."""
    file_order = rng.permutation(len(file_lengths)) if shuffle_files else None
    records = stream_records(file_lengths, file_order)
    return records[buffer_permutation(len(records), rng, buffer_size)]


def batch_slices(num_items: int, batch_size: int) -> list[slice]:
    """`batch(B, drop_remainder=True)`: full batches only, on every split."""
    return [slice(start, start + batch_size) for start in range(0, num_items - batch_size + 1, batch_size)]


def nhwc_to_nchw(images_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))


def require_file(path: Path, dataset: str, data_dir: Path) -> Path:
    if not path.is_file():
        raise DataMissingError(path, dataset, data_dir)
    return path


class DataSet(abc.ABC):
    """One DeepOBS data set for one batch size. Subclasses say how to read and preprocess."""

    name: ClassVar[str]
    default_batch_size: ClassVar[int] = 128
    has_valid_split: ClassVar[bool] = True

    def __init__(self, data_dir: str | Path, batch_size: int, *, valid_split: bool = False,
                 data_augmentation: bool = True, shuffle: bool = True, seed: int | None = None,
                 replay_epochs: bool = True):
        """seed: None draws fresh randomness every epoch (the original without a graph seed). With a seed and
        replay_epochs=True (default), every pass over the train files replays the same shuffle-buffer
        permutation and the same augmentation draws, and only the file order of multi-file data sets changes,
        as the seeded original (its runner calls tf.set_random_seed; each train/train_eval init op restarts
        the dataset's seeded random ops, but re-runs the stateful tf.random_shuffle of the file names).
        replay_epochs=False: fresh draws every epoch, reproducible from the seed."""
        self.data_dir = Path(data_dir)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if valid_split and not self.has_valid_split:
            raise ValueError(f"{self.name}: the original (v1.2) defines no valid split for this data set")
        self.valid_split = valid_split
        self.data_augmentation = data_augmentation
        self.shuffle = shuffle
        self.seed = seed
        self.replay_epochs = replay_epochs and seed is not None
        self.rng = np.random.default_rng(seed)
        self._file_order_rng = np.random.default_rng(None if seed is None else [seed, FILE_ORDER_STREAM])

    def epoch_rngs(self) -> tuple[np.random.Generator, np.random.Generator]:
        """(shuffle-buffer rng, augmentation rng) for one pass over the train files: restarted from the seed
        for every pass when replaying, else the one advancing stream."""
        if self.replay_epochs:
            return (np.random.default_rng([self.seed, SHUFFLE_STREAM]),
                    np.random.default_rng([self.seed, AUGMENT_STREAM]))
        return self.rng, self.rng

    def file_order(self, num_files: int) -> np.ndarray:
        """tf.random_shuffle(filenames): a stateful op that every train and train_eval init re-runs, so the
        file order changes at every pass, seeded or not."""
        return (self._file_order_rng if self.replay_epochs else self.rng).permutation(num_files)

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS_WITH_VALID if self.valid_split else SPLITS

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; splits: {', '.join(self.splits)}")

    def num_batches(self, split: str) -> int:
        """Batches in one epoch of `split` (the last partial batch is always dropped); EmptySplitError if none."""
        self._check_split(split)
        num_batches = self._num_batches(split)
        if num_batches == 0:
            raise EmptySplitError(self.name, split, self.batch_size, self._empty_split_detail(split))
        return num_batches

    def _empty_split_detail(self, split: str) -> str:
        return "fewer examples than one batch"

    def split_size(self, split: str) -> int:
        """Examples the split yields per epoch: num_batches * batch_size."""
        return self.num_batches(split) * self.batch_size

    def batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of `split`. train_eval reuses the train stream (shuffled, augmented), truncated."""
        self.num_batches(split)  # a split without a batch is an error, as in the original
        return self._batches(split)

    @abc.abstractmethod
    def _num_batches(self, split: str) -> int: ...

    @abc.abstractmethod
    def _batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def label_range(self, split: str) -> tuple[int, int] | None:
        """(min, max) class label of the split's source files, None where labels are not classes."""
        return None


