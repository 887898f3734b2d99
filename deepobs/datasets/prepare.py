"""`prepare`: download the original raw files and convert them into the data folder layout.

Every file lands atomically (written to a temporary file in the target folder, then os.replace), so
an interrupted prepare never leaves a half-written file under a name the loaders read.
"""
from __future__ import annotations

import collections
import gzip
import pickle
import random
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np

from deepobs.datasets.base import DataError
from deepobs.files import atomic_output
from deepobs.datasets.tfrecord import encode_example, frame_record

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# The original's URLs (deepobs_prepare_data.sh); yann.lecun.com no longer serves MNIST, so the
# mirror torchvision uses is listed first.
DOWNLOADS: dict[str, list[str]] = {
    "mnist": [f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}" for name in MNIST_FILES]
    + [f"http://yann.lecun.com/exdb/mnist/{name}" for name in MNIST_FILES],
    "fmnist": [f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}" for name in MNIST_FILES],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"],
    "svhn": ["http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
             "http://ufldl.stanford.edu/housenumbers/test_32x32.mat"],
    "tolstoi": ["https://github.com/AllenDowney/fluent-python-notebooks/raw/master/attic/sequences/war-and-peace.txt"],
}
SVHN_TRAIN_IMAGES, SVHN_IMAGES_PER_FILE = 64000, 12800
TOLSTOI_TEST_FRACTION = 0.2
# deepobs_prepare_data.sh runs these sed deletions, one after the other, on war-and-peace.txt.
TOLSTOI_SED_DELETIONS = ((1, 29), (5, 775), (63850, 64207))
IMAGENET_SHARDS = {"train": 1024, "validation": 128}

Progress = Callable[[str], None]


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def download(url: str, target: Path, progress: Progress) -> Path:
    with atomic_output(target) as temporary, urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done, last_reported = 0, -1
        with open(temporary, "wb") as stream:
            while chunk := response.read(1 << 20):
                stream.write(chunk)
                done += len(chunk)
                percent = 100 * done // total if total else -1
                if percent // 10 != last_reported // 10:
                    progress(f"  {target.name}: {done >> 20} MiB" + (f" ({percent}%)" if total else ""))
                    last_reported = percent
    return target


def fetch_raw(name: str, raw_dir: Path | None, progress: Progress) -> Path:
    """The raw files of `name`: from raw_dir if given (no network), else downloaded into a temp folder."""
    if raw_dir is not None:
        return raw_dir
    if name not in DOWNLOADS:
        raise DataError(f"{name} cannot be downloaded automatically; pass --raw-dir (see docs/datasets.md)")
    folder = Path(tempfile.mkdtemp(prefix=f"deepobs-{name}-raw-"))
    fetched: set[str] = set()
    for url in DOWNLOADS[name]:
        filename = url.rsplit("/", 1)[1]
        if filename in fetched:
            continue
        progress(f"downloading {url}")
        try:
            download(url, folder / filename, progress)
            fetched.add(filename)
        except OSError as error:
            progress(f"  failed ({error}); trying the next URL if there is one")
    return folder


def raw_file(raw_dir: Path, filename: str) -> Path:
    path = raw_dir / filename
    if not path.is_file():
        raise DataError(f"missing raw file {path}")
    return path


def copy_atomic(source: Path, target: Path) -> None:
    with atomic_output(target) as temporary:
        shutil.copyfile(source, temporary)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_output(target) as temporary:
        temporary.write_bytes(data)


# ---- per data set conversions ----

def prepare_mnist(raw_dir: Path, data_dir: Path, folder: str, progress: Progress) -> None:
    for filename in MNIST_FILES:
        source = raw_file(raw_dir, filename)
        try:
            with gzip.open(source) as stream:
                stream.read(16)
        except OSError as error:
            raise DataError(f"{source} is not a gzip file ({error})") from None
        copy_atomic(source, data_dir / folder / filename)
        progress(f"  wrote {data_dir / folder / filename}")


def prepare_cifar(raw_dir: Path, data_dir: Path, archive: str, folder: str, members: tuple[str, ...],
                  progress: Progress) -> None:
    """Extract the binary version's .bin files (the archive's top folder stripped, like tar --strip 1)."""
    source = raw_file(raw_dir, archive)
    try:
        with tarfile.open(source, "r:gz") as tar:
            by_name = {Path(member.name).name: member for member in tar.getmembers() if member.isfile()}
            for name in members:
                if name not in by_name:
                    raise DataError(f"{source} has no member {name}")
                with atomic_output(data_dir / folder / name) as temporary, tar.extractfile(by_name[name]) as stream:
                    temporary.write_bytes(stream.read())
                progress(f"  wrote {data_dir / folder / name}")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"{source} is not a readable .tar.gz ({error})") from None


def svhn_records(images_hwcn: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[32,32,3,N] uint8 + [N] labels 1..10 -> [N, 3073] records: label byte (10 -> 0), then HWC bytes."""
    labels = np.where(labels.reshape(-1) == 10, 0, labels.reshape(-1)).astype(np.uint8)
    pixels = np.ascontiguousarray(images_hwcn.transpose(3, 0, 1, 2)).reshape(len(labels), -1).astype(np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1)


def prepare_svhn(raw_dir: Path, data_dir: Path, progress: Progress) -> None:
    import scipy.io

    def load(filename):
        path = raw_file(raw_dir, filename)
        try:
            mat = scipy.io.loadmat(path)
            return svhn_records(mat["X"], mat["y"])
        except (ValueError, KeyError, OSError) as error:
            raise DataError(f"{path} is not an SVHN .mat file ({error})") from None

    progress("converting train_32x32.mat (first 64,000 images, as the original)")
    train = load("train_32x32.mat")[:SVHN_TRAIN_IMAGES]
    for index, start in enumerate(range(0, len(train), SVHN_IMAGES_PER_FILE)):
        target = data_dir / "svhn" / f"data_batch_{index}.bin"
        write_bytes_atomic(target, train[start:start + SVHN_IMAGES_PER_FILE].tobytes())
        progress(f"  wrote {target}")
    progress("converting test_32x32.mat")
    write_bytes_atomic(data_dir / "svhn" / "test_batch.bin", load("test_32x32.mat").tobytes())


def strip_gutenberg_lines(text: str) -> str:
    lines = text.splitlines(keepends=True)
    for first, last in TOLSTOI_SED_DELETIONS:
        del lines[first - 1:last]
    return "".join(lines)


def tolstoi_arrays(text: str, test_fraction: float = TOLSTOI_TEST_FRACTION
                   ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """_tolstoi_preprocess.py: vocabulary sorted by frequency (ties: first occurrence), ids, split by
    position with train = the first ceil(0.8 * N) characters."""
    counts = collections.Counter(text)
    chars = tuple(char for char, _ in sorted(counts.items(), key=lambda item: -item[1]))
    lookup = {char: index for index, char in enumerate(chars)}
    char_ids = np.array([lookup[char] for char in text], dtype=np.int64)
    train_size = int(np.ceil((1.0 - test_fraction) * char_ids.size))
    return char_ids[:train_size], char_ids[train_size:], chars


def prepare_tolstoi(raw_dir: Path, data_dir: Path, progress: Progress) -> None:
    """war-and-peace.txt (the original's download) has its header/footer lines removed first;
    an input.txt is taken as already cleaned."""
    if (raw_dir / "input.txt").is_file():
        text = (raw_dir / "input.txt").read_text(encoding="utf-8")
    else:
        text = strip_gutenberg_lines(raw_file(raw_dir, "war-and-peace.txt").read_text(encoding="utf-8"))
    train, test, chars = tolstoi_arrays(text)
    progress(f"  {len(text)} characters, vocabulary {len(chars)}, train {train.size}, test {test.size}")
    for name, array in (("train.npy", train), ("test.npy", test)):
        with atomic_output(data_dir / "tolstoi" / name) as temporary:
            with open(temporary, "wb") as stream:
                np.save(stream, array)
    write_bytes_atomic(data_dir / "tolstoi" / "vocab.pkl", pickle.dumps(chars))


def prepare_imagenet(raw_dir: Path, data_dir: Path, progress: Progress,
                     shards: dict[str, int] = IMAGENET_SHARDS) -> None:
    """RAW/train/<wnid>/*.JPEG and RAW/validation/<wnid>/*.JPEG -> imagenet/{train,validation}-NNNNN-of-MMMMM.
    Label = 1 + index of the wnid in the sorted train wnids (0 is the background class), as the
    inception build_imagenet_data.py convention the original's 1001 classes come from."""
    wnids = sorted(path.name for path in raw_file_dir(raw_dir / "train").iterdir() if path.is_dir())
    labels = {wnid: index + 1 for index, wnid in enumerate(wnids)}
    for split in ("train", "validation"):
        images = sorted((path, labels[path.parent.name]) for path in raw_file_dir(raw_dir / split).glob("*/*")
                        if path.parent.name in labels and path.suffix.lower() in (".jpeg", ".jpg"))
        random.Random(0).shuffle(images)  # mixes classes across shards, as build_imagenet_data.py
        num_shards = max(1, min(shards[split], len(images)))
        for shard in range(num_shards):
            target = data_dir / "imagenet" / f"{split}-{shard:05d}-of-{num_shards:05d}"
            with atomic_output(target) as temporary, open(temporary, "wb") as stream:
                for path, label in images[shard::num_shards]:
                    stream.write(frame_record(encode_example({
                        "image/encoded": [path.read_bytes()], "image/class/label": [label],
                        "image/class/synset": [path.parent.name.encode()]})))
            progress(f"  {split} shard {shard + 1}/{num_shards}")


def raw_file_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DataError(f"missing raw folder {path}")
    return path


def prepare(name: str, data_dir: Path, raw_dir: Path | None = None, progress: Progress = print_progress) -> None:
    data_dir, raw = Path(data_dir), fetch_raw(name, Path(raw_dir) if raw_dir else None, progress)
    progress(f"preparing {name} in {data_dir}")
    converters: dict[str, Callable[[], None]] = {
        "mnist": lambda: prepare_mnist(raw, data_dir, "mnist", progress),
        "fmnist": lambda: prepare_mnist(raw, data_dir, "fmnist", progress),
        "cifar10": lambda: prepare_cifar(raw, data_dir, "cifar-10-binary.tar.gz", "cifar-10",
                                         tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",),
                                         progress),
        "cifar100": lambda: prepare_cifar(raw, data_dir, "cifar-100-binary.tar.gz", "cifar-100",
                                          ("train.bin", "test.bin"), progress),
        "svhn": lambda: prepare_svhn(raw, data_dir, progress),
        "tolstoi": lambda: prepare_tolstoi(raw, data_dir, progress),
        "imagenet": lambda: prepare_imagenet(raw, data_dir, progress),
        "quadratic": lambda: progress("quadratic is generated in memory: nothing to prepare"),
        "two_d": lambda: progress("two_d is generated in memory: nothing to prepare"),
    }
    converters[name]()
