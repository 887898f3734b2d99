"""Small files in each data set's real on-disk format, shared by the tests and the pipeline audit.

Every writer takes a root data folder and a seed and writes the original's layout under it; sizes
are small (a few hundred records) and deliberately not multiples of common batch sizes, so
drop-remainder is exercised. ImageNet shards are written with TensorFlow's own TFRecordWriter and
tf.train.Example (the format's authority), so the port's hand-written reader is checked against it.
"""
from __future__ import annotations

import gzip
import pickle
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

# Records per file (train files) and in the test file, per data set.
SIZES = {
    "mnist": {"train": [310], "test": [130]},
    "fmnist": {"train": [310], "test": [130]},
    "cifar10": {"train": [61, 60, 60, 60, 60], "test": [130]},
    "cifar100": {"train": [301], "test": [130]},
    "svhn": {"train": [50, 50, 50, 50, 45], "test": [97]},
    "imagenet": {"train": [5, 4], "test": [4]},
}
IMAGENET_SHAPES = [(300, 400), (256, 256), (333, 500), (200, 180), (240, 320), (320, 240), (280, 300),
                   (256, 380), (181, 257), (300, 300), (260, 250), (270, 420), (230, 230)]
TOLSTOI_TRAIN_CHARS, TOLSTOI_TEST_CHARS = 20011, 5003


def natural_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Natural-ish RGB uint8 content: smooth colour gradients, low-frequency waves, soft blobs, fine noise,
    so JPEG round trips and saturation/contrast ops see realistic statistics (not flat or white noise)."""
    rows, cols = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    channels = []
    for _ in range(3):
        wave = np.sin(2 * np.pi * (rng.uniform(0.5, 3) * rows + rng.uniform(0.5, 3) * cols) + rng.uniform(0, 6))
        gradient = rng.uniform(-1, 1) * rows + rng.uniform(-1, 1) * cols
        channels.append(0.5 + 0.25 * wave + 0.2 * gradient)
    image = np.stack(channels, -1)
    for _ in range(4):
        centre, radius = rng.uniform(0, 1, 2), rng.uniform(0.05, 0.25)
        blob = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * radius ** 2))
        image += blob[..., None] * rng.uniform(-0.4, 0.4, 3)
    image += rng.normal(0, 0.03, image.shape)
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def small_images(rng: np.random.Generator, count: int, size: int = 32) -> np.ndarray:
    """uint8 NHWC images with natural-ish statistics (a natural image resampled to size x size)."""
    return np.stack([natural_image(rng, size, size) for _ in range(count)])


def _write_idx_gz(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def write_mnist(data_dir: Path, seed: int = 0, folder: str = "mnist") -> None:
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / folder
    root.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        count = sum(SIZES[folder][split])
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        _write_idx_gz(root / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        _write_idx_gz(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count), 2049)


def _binary_records(rng, count, label_columns: list[np.ndarray], channels_first: bool) -> bytes:
    images = small_images(rng, count)
    pixels = images.transpose(0, 3, 1, 2) if channels_first else images
    return np.concatenate([np.stack(label_columns, 1).astype(np.uint8), pixels.reshape(count, -1)], 1).tobytes()


def write_cifar10(data_dir: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "cifar-10"
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, count in zip(names, SIZES["cifar10"]["train"] + SIZES["cifar10"]["test"]):
        (root / name).write_bytes(_binary_records(rng, count, [rng.integers(0, 10, count)], True))


def write_cifar100(data_dir: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "cifar-100"
    root.mkdir(parents=True, exist_ok=True)
    for name, count in (("train.bin", SIZES["cifar100"]["train"][0]), ("test.bin", SIZES["cifar100"]["test"][0])):
        coarse, fine = rng.integers(0, 20, count), rng.integers(0, 100, count)
        (root / name).write_bytes(_binary_records(rng, count, [coarse, fine], True))


def write_svhn(data_dir: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "svhn"
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(5)] + ["test_batch.bin"]
    for name, count in zip(names, SIZES["svhn"]["train"] + SIZES["svhn"]["test"]):
        (root / name).write_bytes(_binary_records(rng, count, [rng.integers(0, 10, count)], False))


def jpeg_bytes(image_hwc: np.ndarray, quality: int = 90) -> bytes:
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(image_hwc).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def natural_jpegs(seed: int = 0, count: int = len(IMAGENET_SHAPES)) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [jpeg_bytes(natural_image(rng, *IMAGENET_SHAPES[i % len(IMAGENET_SHAPES)])) for i in range(count)]


def write_imagenet(data_dir: Path, seed: int = 0) -> None:
    from tf_reference._tf import tf

    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "imagenet"
    root.mkdir(parents=True, exist_ok=True)
    jpegs = iter(natural_jpegs(seed, sum(SIZES["imagenet"]["train"]) + sum(SIZES["imagenet"]["test"])))
    for prefix, split in (("train", "train"), ("validation", "test")):
        shards = SIZES["imagenet"][split]
        for index, count in enumerate(shards):
            with tf.io.TFRecordWriter(str(root / f"{prefix}-{index:05d}-of-{len(shards):05d}")) as writer:
                for _ in range(count):
                    feature = {
                        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[next(jpegs)])),
                        "image/class/label": tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[int(rng.integers(1, 1001))])),
                        "image/class/text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"synthetic"])),
                    }
                    writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def tolstoi_text(seed: int = 0, num_chars: int = TOLSTOI_TRAIN_CHARS + TOLSTOI_TEST_CHARS) -> str:
    """Text over a small alphabet with skewed character frequencies (like natural text)."""
    rng = np.random.default_rng(seed)
    alphabet = list("etaoinshrdlcumwfgypbvkjxqz ETAOIN.,;!?\n")
    weights = 1.0 / np.arange(1, len(alphabet) + 1)
    return "".join(rng.choice(alphabet, num_chars, p=weights / weights.sum()))


def write_tolstoi(data_dir: Path, seed: int = 0) -> None:
    root = Path(data_dir) / "tolstoi"
    root.mkdir(parents=True, exist_ok=True)
    text = tolstoi_text(seed)
    chars = [char for char, _ in sorted(Counter(text).items(), key=lambda item: -item[1])]
    lookup = {char: index for index, char in enumerate(chars)}
    char_ids = np.array([lookup[char] for char in text], dtype=np.int64)
    np.save(root / "train.npy", char_ids[:TOLSTOI_TRAIN_CHARS])
    np.save(root / "test.npy", char_ids[TOLSTOI_TRAIN_CHARS:])
    with open(root / "vocab.pkl", "wb") as stream:
        pickle.dump(tuple(chars), stream)


def write_nothing(data_dir: Path, seed: int = 0) -> None:
    """quadratic and two_d are generated in memory."""


WRITERS: dict[str, Callable[[Path, int], None]] = {
    "mnist": write_mnist,
    "fmnist": lambda data_dir, seed=0: write_mnist(data_dir, seed, folder="fmnist"),
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
    "imagenet": write_imagenet,
    "tolstoi": write_tolstoi,
    "quadratic": write_nothing,
    "two_d": write_nothing,
}


def write_dataset(name: str, data_dir: Path, seed: int = 0) -> Path:
    WRITERS[name](Path(data_dir), seed)
    return Path(data_dir)


# ---- raw downloads, for the conversion steps of `prepare` ----

def write_svhn_mat(raw_dir: Path, num_train: int, num_test: int, seed: int = 0) -> None:
    """train_32x32.mat / test_32x32.mat as published: X uint8 [32, 32, 3, N], y [N, 1] in 1..10 (10 = digit 0)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, count in (("train_32x32.mat", num_train), ("test_32x32.mat", num_test)):
        images = small_images(rng, count).transpose(1, 2, 3, 0)
        labels = rng.integers(1, 11, (count, 1)).astype(np.uint8)
        scipy.io.savemat(raw_dir / name, {"X": images, "y": labels})
