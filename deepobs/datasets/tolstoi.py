"""Tolstoi's War and Peace, character level: B parallel character streams for a stateful LSTM.

Read with NumPy (`train.npy`, `test.npy` hold int character ids; `vocab.pkl` the characters sorted by
frequency, which the loader does not need). No shuffling on any split, as in the original.
"""
from __future__ import annotations

import zipfile
from typing import Iterator

import numpy as np
import torch

from deepobs.datasets.base import DataCorruptError, DataSet, require_file

SEQ_LENGTH = 50
# Size of the original test set in characters: v1.1 train_eval = take(653237 // B) train batches (more
# batches than train has, so the whole train set); v1.2 carves valid = the first 653237 train chars.
TRAIN_EVAL_CHARS = 653237


def stream_batches(char_ids: np.ndarray, batch_size: int, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of shape [num_batches, B, T]: the text trimmed to whole batches, reshaped to [B, -1] and
    split along time, so row i of batch k+1 continues row i of batch k; y is x shifted by one char."""
    num_batches = (char_ids.size - 1) // (batch_size * seq_length)
    if num_batches == 0:
        return (np.zeros((0, batch_size, seq_length), np.int64),) * 2
    length = num_batches * batch_size * seq_length
    x = char_ids[:length].reshape(batch_size, num_batches, seq_length).transpose(1, 0, 2)
    y = char_ids[1:length + 1].reshape(batch_size, num_batches, seq_length).transpose(1, 0, 2)
    return x.astype(np.int64), y.astype(np.int64)


def load_char_ids(path) -> np.ndarray:
    try:
        char_ids = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise DataCorruptError(path, f"not a readable .npy array ({error})") from None
    if char_ids.ndim != 1 or not np.issubdtype(char_ids.dtype, np.integer):
        raise DataCorruptError(path, f"expected a 1-D integer array, found {char_ids.dtype} {char_ids.shape}")
    return char_ids


class Tolstoi(DataSet):
    name = "tolstoi"
    default_batch_size = 50

    def __init__(self, *args, seq_length: int = SEQ_LENGTH, **kwargs):
        super().__init__(*args, **kwargs)
        self.seq_length = seq_length
        self._arrays: dict[str, np.ndarray] = {}

    def _file_chars(self, source: str) -> np.ndarray:
        if source not in self._arrays:
            path = require_file(self.data_dir / "tolstoi" / f"{source}.npy", self.name, self.data_dir)
            self._arrays[source] = load_char_ids(path)
        return self._arrays[source]

    def split_chars(self, split: str) -> np.ndarray:
        if split == "test":
            return self._file_chars("test")
        train_chars = self._file_chars("train")
        if not self.valid_split:
            return train_chars
        return train_chars[:TRAIN_EVAL_CHARS] if split == "valid" else train_chars[TRAIN_EVAL_CHARS:]

    def _stream(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        source_split = "train" if split == "train_eval" else split
        x, y = stream_batches(self.split_chars(source_split), self.batch_size, self.seq_length)
        if split == "train_eval":
            per_batch = self.batch_size * self.seq_length if self.valid_split else self.batch_size
            take = TRAIN_EVAL_CHARS // per_batch
            x, y = x[:take], y[:take]
        return x, y

    def _num_batches(self, split: str) -> int:
        return len(self._stream(split)[0])

    def _empty_split_detail(self, split: str) -> str:
        source = "train" if split == "train_eval" else split
        return (f"{self.split_chars(source).size} characters, sequence length {self.seq_length}; the original "
                f"raises ValueError when it builds this data set")

    def _batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in zip(*self._stream(split)):
            yield torch.from_numpy(x), torch.from_numpy(y)

    def label_range(self, split: str) -> tuple[int, int]:
        chars = self.split_chars("train" if split == "train_eval" else split)
        return int(chars.min()), int(chars.max())
