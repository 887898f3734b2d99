"""Epoch-to-epoch randomness of the seeded original, reproduced with eager tf.data (independent of `deepobs/`).

The original builds its datasets once in a graph seeded by the runner (`tf.set_random_seed`) and runs an
init op at every train / train_eval / test phase. Measured on the original (TF 2.21 graph mode, see
docs/datasets.md): each init restarts the dataset's seeded ops, so the shuffle buffer yields the same
permutation and the map's random ops the same draws in every pass; the file names are shuffled by the
stateful `tf.random_shuffle` op outside the dataset, which every init re-runs, so multi-file sets read their
files in a new order each pass (train and train_eval share that op). Without a graph seed everything is fresh.

Here one iteration of a returned dataset is one init of the original. How each behaviour is obtained
(the plumbing differs because an eager tensor is evaluated once, not per init):
- record shuffle: `shuffle(seed, reshuffle_each_iteration=False)` replays; True draws afresh;
- file order: the file names go through a dataset `shuffle` with `reshuffle_each_iteration=True`, whose seed
  generator is shared by the train dataset and its `take` (train_eval), as the original's one op;
- augmentation: the original's stateful random ops with fixed op seeds, which restart per iteration.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from tf_reference._tf import tf

RECORD_SHUFFLE, FILE_SHUFFLE, RECORD_SEEDS = 10, 11, 12


class EpochSeeds:
    """seed None: fresh randomness every pass (the original without a graph seed). With a seed: replay every
    pass (replay_epochs=True, the seeded original), or fresh but reproducible passes (replay_epochs=False)."""

    def __init__(self, seed: int | None, replay_epochs: bool = True):
        self.seed = seed
        self.replay = replay_epochs and seed is not None

    @property
    def fresh_stateless(self) -> bool:
        """Seeded fresh passes: the augmentation parameters come from per-record seeds of a dataset that
        re-randomises each iteration (stateful ops with fixed seeds would replay instead)."""
        return self.seed is not None and not self.replay

    def op_seed(self, index: int) -> int | None:
        if self.seed is None:
            return None
        return int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0] & 0x7FFFFFFF)

    def map_calls(self, parallel_calls: int) -> int:
        """The original maps on 8 (4) threads. Its stateful random ops are shared by those threads, so which
        record gets which draw depends on thread scheduling (measured on the seeded original: about 10% of
        the records get the same augmentation in two passes, though the draws are the same). One thread gives
        the k-th record of the stream the k-th draw in every pass: replayable, as the draws are."""
        return 1 if self.replay else parallel_calls

    def shuffle(self, data: tf.data.Dataset, buffer_size: int) -> tf.data.Dataset:
        return data.shuffle(buffer_size, seed=self.op_seed(RECORD_SHUFFLE), reshuffle_each_iteration=not self.replay)

    def shuffled_files(self, filenames: tf.Tensor, reader: Callable[[tf.Tensor], tf.data.Dataset]
                       ) -> tf.data.Dataset:
        """`tf.random_shuffle(filenames)` re-run at every pass, then the files read one after the other."""
        names = tf.data.Dataset.from_tensor_slices(filenames)
        names = names.shuffle(tf.cast(tf.size(filenames), tf.int64), seed=self.op_seed(FILE_SHUFFLE),
                              reshuffle_each_iteration=True)
        return names.flat_map(reader)

    def record_seeds(self) -> tf.data.Dataset:
        """An int64 seed pair per record, re-drawn at every pass (only for fresh seeded passes)."""
        return tf.data.Dataset.random(seed=self.op_seed(RECORD_SEEDS), rerandomize_each_iteration=True).batch(2)
