"""Images/s of the CIFAR-10 training pipeline: the port (vectorised NumPy) vs the tf.data reference.

Same generated files (the real binary format), batch size 128, augmentation on, shuffling on. Threads:
TF gets os.cpu_count() intra- and inter-op threads (the original's map asks for 8 parallel calls; on
this machine they share its cores); the port runs in the calling thread.
Run: .venv/bin/python -m pytest benchmarks/test_bench_data.py -q -p no:cacheprovider
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from deepobs.datasets import get_dataset

BATCH_SIZE = 128
RECORDS_PER_FILE = 1024
THREADS = os.cpu_count() or 1

pytestmark = pytest.mark.benchmark


def _configure_tf_threads():
    from tf_reference._tf import tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    except RuntimeError:  # TF already initialised in this process: it keeps its defaults
        pass
    return tf


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory) -> Path:
    """Five train files and a test file in the CIFAR-10 binary layout, random pixels and labels."""
    root = tmp_path_factory.mktemp("bench") / "cifar-10"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (RECORDS_PER_FILE, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        (root / name).write_bytes(records.tobytes())
    return root.parent


def port_epoch(data_dir: Path) -> int:
    dataset = get_dataset("cifar10", data_dir, BATCH_SIZE, seed=0)
    return sum(len(labels) for _, labels in dataset.batches("train"))


def reference_epoch(data_dir: Path) -> int:
    _configure_tf_threads()
    from tf_reference.datasets import make_datasets
    train = make_datasets("cifar10", data_dir, BATCH_SIZE)["train"]
    return sum(len(labels) for _, labels in train.as_numpy_iterator())


def images_per_second(epoch, data_dir: Path, repeats: int = 3) -> float:
    epoch(data_dir)  # warm-up: file cache, TF graph tracing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        images = epoch(data_dir)
        best = min(best, time.perf_counter() - start)
    return images / best


def test_bench_port_cifar10_train(benchmark, cifar10_dir):
    images = benchmark.pedantic(port_epoch, args=(cifar10_dir,), rounds=3, warmup_rounds=1)
    benchmark.extra_info["images_per_s"] = images / benchmark.stats.stats.mean
    benchmark.extra_info["threads"] = 1


def test_bench_reference_cifar10_train(benchmark, cifar10_dir):
    images = benchmark.pedantic(reference_epoch, args=(cifar10_dir,), rounds=3, warmup_rounds=1)
    benchmark.extra_info["images_per_s"] = images / benchmark.stats.stats.mean
    benchmark.extra_info["threads"] = THREADS


def test_port_delivers_at_least_the_reference_throughput(benchmark, cifar10_dir):
    port = images_per_second(port_epoch, cifar10_dir)
    reference = images_per_second(reference_epoch, cifar10_dir)
    benchmark.extra_info.update(port_images_per_s=port, reference_images_per_s=reference, ratio=port / reference)
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\nCIFAR-10 train pipeline: port {port:.0f} images/s, reference {reference:.0f} images/s, "
          f"ratio {port / reference:.2f}")
    assert port >= reference
