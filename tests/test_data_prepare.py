"""`prepare`'s conversion steps on small raw files of the real formats (no network)."""
from __future__ import annotations

import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from deepobs.datasets import get_dataset
from deepobs.datasets import prepare as prepare_module
from deepobs.datasets.prepare import prepare, strip_gutenberg_lines, tolstoi_arrays
from parity import fixtures

REPO = Path(__file__).resolve().parents[1]


def quiet(_message: str) -> None:
    pass


def no_partial_files(root: Path) -> bool:
    return not any(path.name.endswith(".part") for path in root.rglob("*"))


def test_svhn_mat_to_binaries_keeps_the_first_train_images_and_maps_label_10_to_0(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "SVHN_TRAIN_IMAGES", 30)
    monkeypatch.setattr(prepare_module, "SVHN_IMAGES_PER_FILE", 6)
    raw = tmp_path / "raw"
    fixtures.write_svhn_mat(raw, num_train=37, num_test=11)
    prepare("svhn", tmp_path / "data", raw, progress=quiet)
    sizes = [(tmp_path / "data" / "svhn" / f"data_batch_{i}.bin").stat().st_size // 3073 for i in range(5)]
    assert sizes == [6] * 5 and not (tmp_path / "data" / "svhn" / "data_batch_5.bin").exists()  # 37 -> first 30
    mat = scipy.io.loadmat(raw / "train_32x32.mat")
    records = np.fromfile(tmp_path / "data" / "svhn" / "data_batch_1.bin", np.uint8).reshape(-1, 3073)
    expected_labels = mat["y"][6:12, 0] % 10
    np.testing.assert_array_equal(records[:, 0], expected_labels)
    np.testing.assert_array_equal(records[:, 1:].reshape(-1, 32, 32, 3), mat["X"][..., 6:12].transpose(3, 0, 1, 2))
    dataset = get_dataset("svhn", tmp_path / "data", 5, shuffle=False, data_augmentation=False)
    assert dataset.num_batches("train") == 6 and dataset.num_batches("test") == 2
    assert no_partial_files(tmp_path)


def test_tolstoi_text_to_arrays_vocab_by_frequency_and_80_20_by_position():
    text = "aab ba\ncab" * 7 + "z"
    train, test, chars = tolstoi_arrays(text)
    assert chars[:2] == ("a", "b") and chars[-1] == "z"  # most frequent first; ties by first occurrence
    assert train.size == int(np.ceil(0.8 * len(text))) and train.size + test.size == len(text)
    decoded = "".join(chars[i] for i in np.concatenate([train, test]))
    assert decoded == text


def test_gutenberg_header_and_footer_lines_are_removed_like_the_sed_calls():
    lines = [f"line {i}\n" for i in range(1, 65000)]
    kept = strip_gutenberg_lines("".join(lines)).splitlines(keepends=True)
    after_first = lines[29:]
    after_second = after_first[:4] + after_first[775:]
    expected = after_second[:63849] + after_second[64207:]
    assert kept == expected


def test_prepare_tolstoi_from_raw_text_writes_the_loader_layout(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "input.txt").write_text(fixtures.tolstoi_text(0, 6000), encoding="utf-8")
    prepare("tolstoi", tmp_path / "data", raw, progress=quiet)
    folder = tmp_path / "data" / "tolstoi"
    train, test = np.load(folder / "train.npy"), np.load(folder / "test.npy")
    assert (train.size, test.size) == (4800, 1200)
    chars = pickle.loads((folder / "vocab.pkl").read_bytes())
    assert "".join(chars[i] for i in train[:50]) == fixtures.tolstoi_text(0, 6000)[:50]
    assert get_dataset("tolstoi", tmp_path / "data", 4).num_batches("train") == (4800 - 1) // 200


def test_prepare_cifar10_extracts_the_binary_archive(tmp_path):
    fixtures.write_cifar10(tmp_path / "source")
    raw = tmp_path / "raw"
    raw.mkdir()
    with tarfile.open(raw / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for path in sorted((tmp_path / "source" / "cifar-10").iterdir()):
            tar.add(path, arcname=f"cifar-10-batches-bin/{path.name}")
    prepare("cifar10", tmp_path / "data", raw, progress=quiet)
    for path in (tmp_path / "source" / "cifar-10").iterdir():
        assert (tmp_path / "data" / "cifar-10" / path.name).read_bytes() == path.read_bytes()


def test_prepare_mnist_rejects_a_non_gzip_raw_file_without_writing_it(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_mnist(raw.parent / "src")
    raw.mkdir()
    for path in (raw.parent / "src" / "mnist").iterdir():
        (raw / path.name).write_bytes(path.read_bytes())
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"html error page")
    result = subprocess.run([sys.executable, "-m", "deepobs", "data", "prepare", "mnist", "--data-dir",
                             str(tmp_path / "data"), "--raw-dir", str(raw)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert str(raw / "t10k-images-idx3-ubyte.gz") in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "data" / "mnist" / "t10k-images-idx3-ubyte.gz").exists()
    assert no_partial_files(tmp_path)


def test_prepare_imagenet_from_class_folders_is_read_by_both_pipelines(tmp_path):
    from tf_reference.datasets import make_datasets
    raw = tmp_path / "raw"
    jpegs = fixtures.natural_jpegs(1, 6)
    for index, jpeg in enumerate(jpegs):
        split = "train" if index < 4 else "validation"
        folder = raw / split / ("n01" if index % 2 else "n02")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index}.JPEG").write_bytes(jpeg)
    prepare("imagenet", tmp_path / "data", raw, progress=quiet)
    port = get_dataset("imagenet", tmp_path / "data", 2, shuffle=False)
    labels = sorted(int(label) for _, y in port.batches("train") for label in y)
    assert labels == [1, 1, 2, 2]  # sorted wnids, 0 is the background class
    reference = make_datasets("imagenet", tmp_path / "data", 2, shuffle=False)
    assert sum(1 for _ in reference["test"]) == port.num_batches("test") == 1


@pytest.mark.slow
def test_cli_prepare_with_raw_dir_then_check(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    # 13000 chars: test = 2600 > one batch of 50 x 50 (+1); with fewer the original raises ValueError, as the port
    (raw / "input.txt").write_text(fixtures.tolstoi_text(2, 13000), encoding="utf-8")
    data = tmp_path / "data"
    prepared = subprocess.run([sys.executable, "-m", "deepobs", "data", "prepare", "tolstoi", "--data-dir", str(data),
                               "--raw-dir", str(raw)], cwd=REPO, capture_output=True, text=True)
    assert prepared.returncode == 0, prepared.stderr
    assert "vocabulary" in prepared.stderr  # progress output
    checked = subprocess.run([sys.executable, "-m", "deepobs", "data", "check", "tolstoi", "--data-dir", str(data)],
                             cwd=REPO, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "train: 200 examples in 4 batches; inputs (50, 50) int64" in checked.stdout
    assert "test: 50 examples in 1 batches" in checked.stdout
