"""Data pipelines: sizes, splits, drop-remainder, streams, errors, parity with the tf.data reference, CLI."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepobs.datasets import DATASETS, DataCorruptError, DataMissingError, EmptySplitError, get_dataset
from deepobs.datasets.image_ops import draw_cifar_augment
from parity import fixtures

REPO = Path(__file__).resolve().parents[1]
BATCH = 32
EXPECTED_NAMES = ["mnist", "fmnist", "cifar10", "cifar100", "svhn", "imagenet", "tolstoi", "quadratic", "two_d"]
IN_MEMORY_IMAGES = {  # name: (one example's shape NCHW without N, number of classes)
    "mnist": ((1, 28, 28), 10), "fmnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100), "svhn": ((3, 32, 32), 10),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name in EXPECTED_NAMES:
        fixtures.write_dataset(name, root)
    return root


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepobs", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_registry_lists_every_dataset_in_both_frameworks():
    from tf_reference.datasets import REFERENCE_DATASETS
    assert list(DATASETS) == EXPECTED_NAMES
    assert list(REFERENCE_DATASETS) == EXPECTED_NAMES


@pytest.mark.parametrize("name", list(IN_MEMORY_IMAGES))
def test_image_splits_drop_the_last_partial_batch(data_dir, name):
    shape, num_classes = IN_MEMORY_IMAGES[name]
    dataset = get_dataset(name, data_dir, BATCH)
    train_records, test_records = sum(fixtures.SIZES[name]["train"]), sum(fixtures.SIZES[name]["test"])
    expected = {"train": train_records // BATCH, "train_eval": train_records // BATCH, "test": test_records // BATCH}
    for split, num_batches in expected.items():
        batches = list(dataset.batches(split))
        assert dataset.num_batches(split) == len(batches) == num_batches
        assert dataset.split_size(split) == num_batches * BATCH < (train_records if split != "test" else test_records)
        inputs, labels = batches[0]
        assert inputs.shape == (BATCH, *shape) and str(inputs.dtype) == "torch.float32"
        assert labels.shape == (BATCH,) and str(labels.dtype) == "torch.int64"
        assert 0 <= int(labels.min()) and int(labels.max()) < num_classes


def test_train_eval_is_the_shuffled_augmented_train_stream(data_dir):
    dataset = get_dataset("cifar10", data_dir, BATCH)  # no seed: fresh shuffle and draws every pass
    first, second = (next(iter(dataset.batches("train_eval")))[0].numpy() for _ in range(2))
    assert not np.allclose(first, second)
    unaugmented = get_dataset("cifar10", data_dir, BATCH, data_augmentation=False, shuffle=False)
    eval_inputs = np.concatenate([x.numpy() for x, _ in unaugmented.batches("train_eval")])
    assert not any(np.allclose(first[0], image, atol=1e-3) for image in eval_inputs)


def _pass(dataset, split: str) -> np.ndarray:
    return np.concatenate([x.numpy() for x, _ in dataset.batches(split)])


@pytest.mark.parametrize("name", ["cifar100", "mnist", "quadratic"])
def test_seeded_single_file_passes_replay_and_train_eval_is_their_start(data_dir, name):
    dataset = get_dataset(name, data_dir, BATCH, seed=7)
    train_eval, train, train_eval_again, train_again = (_pass(dataset, split) for split in
                                                        ("train_eval", "train", "train_eval", "train"))
    np.testing.assert_array_equal(train_again, train)  # same permutation, same augmentation draws
    np.testing.assert_array_equal(train_eval_again, train_eval)
    np.testing.assert_array_equal(train_eval, train[:len(train_eval)])
    fresh = get_dataset(name, data_dir, BATCH, seed=7, replay_epochs=False)
    assert not np.array_equal(_pass(fresh, "train"), _pass(fresh, "train"))
    unseeded = get_dataset(name, data_dir, BATCH)
    assert not np.array_equal(_pass(unseeded, "train"), _pass(unseeded, "train"))


def test_seeded_multi_file_passes_keep_the_buffer_permutation_and_change_the_file_order(data_dir):
    dataset = get_dataset("cifar10", data_dir, BATCH, seed=7)
    plans = [dataset._epoch_plan("train") for _ in range(4)]
    for order, positions, _ in plans[1:]:
        np.testing.assert_array_equal(positions, plans[0][1])  # where each output comes from in the stream
    assert len({tuple(order[:20].tolist()) for order, _, _ in plans}) > 1  # the records differ: file order


def _raw_cifar100(path: Path) -> np.ndarray:
    return np.frombuffer(path.read_bytes(), np.uint8).reshape(-1, 3074)


@pytest.mark.parametrize("correct, first_byte", [(False, 1), (True, 2)])
def test_cifar100_image_bytes(data_dir, correct, first_byte):
    """Default: bytes 1..3072 of each record, as the original (the fine label is red of pixel (0, 0))."""
    records = _raw_cifar100(data_dir / "cifar-100" / "test.bin")
    dataset = get_dataset("cifar100", data_dir, BATCH, shuffle=False, correct_image_offset=correct)
    images, labels = next(iter(dataset.batches("test")))
    np.testing.assert_array_equal(labels.numpy(), records[:BATCH, 1])
    for image, record in zip(images.numpy(), records):
        raw_hwc = record[first_byte:first_byte + 3072].reshape(3, 32, 32).transpose(1, 2, 0).astype(np.float64)
        # per-image standardisation is affine in the raw values: the right bytes correlate perfectly
        assert np.corrcoef(image.transpose(1, 2, 0).ravel(), raw_hwc.ravel())[0, 1] > 1 - 1e-9
    if not correct:
        assert records[0, 1] == records[0, first_byte]  # the fine label is the image's first red value


def test_binary_files_are_found_by_the_original_glob(data_dir, tmp_path):
    root = _copy_dataset(data_dir, tmp_path, "cifar-10")
    extra = root / "cifar-10" / "data_batch_6.bin"
    extra.write_bytes((root / "cifar-10" / "data_batch_1.bin").read_bytes())
    dataset = get_dataset("cifar10", root, 1, shuffle=False, data_augmentation=False)
    train_records = fixtures.SIZES["cifar10"]["train"]
    assert dataset.num_batches("train") == sum(train_records) + train_records[0]  # data_batch_6 is read too
    extra.unlink()
    (root / "cifar-10" / "data_batch_3.bin").unlink()
    with pytest.raises(DataMissingError, match="data_batch_3.bin"):
        get_dataset("cifar10", root, 1).num_batches("train")


def test_tolstoi_batch_too_large_is_an_error_as_in_the_original(data_dir):
    dataset = get_dataset("tolstoi", data_dir, 500)  # 20011 train chars < 500 * 50
    with pytest.raises(EmptySplitError, match="no batch in the train split.*original raises ValueError"):
        dataset.num_batches("train")
    with pytest.raises(ValueError):
        dataset.batches("test")


def test_a_split_without_a_batch_is_an_error_for_every_data_set(data_dir):
    with pytest.raises(EmptySplitError, match="cifar10: batch size 400 leaves no batch in the test split"):
        get_dataset("cifar10", data_dir, 400).batches("test")


def test_train_eval_is_capped_at_train_eval_size(data_dir):
    dataset = get_dataset("mnist", data_dir, 8)
    dataset.train_eval_size = 100  # the original's take(train_eval_size // B)
    assert dataset.num_batches("train_eval") == len(list(dataset.batches("train_eval"))) == 100 // 8
    assert dataset.num_batches("train") == 310 // 8


def test_shuffle_visits_every_train_record_once(data_dir):
    dataset = get_dataset("cifar10", data_dir, 1, seed=3, data_augmentation=False)
    order = dataset._epoch_order("train")
    assert sorted(order.tolist()) == list(range(sum(fixtures.SIZES["cifar10"]["train"])))
    assert order.tolist() != sorted(order.tolist())


def test_svhn_draws_never_flip_and_cifar_draws_do():
    rng = np.random.default_rng(0)
    assert not draw_cifar_augment(rng, 1000, flip=False).flip.any()
    assert 400 < draw_cifar_augment(rng, 1000, flip=True).flip.sum() < 600


def test_mnist_valid_split_is_the_first_records_of_the_train_file(data_dir):
    dataset = get_dataset("mnist", data_dir, 10, valid_split=True, shuffle=False)
    dataset.valid_size = 100
    assert dataset.splits == ("train", "train_eval", "valid", "test")
    valid_labels = np.concatenate([y.numpy() for _, y in dataset.batches("valid")])
    train_labels = np.concatenate([y.numpy() for _, y in dataset.batches("train")])
    with gzip.open(data_dir / "mnist" / "train-labels-idx1-ubyte.gz") as stream:
        file_labels = np.frombuffer(stream.read()[8:], np.uint8)
    np.testing.assert_array_equal(valid_labels, file_labels[:100])
    np.testing.assert_array_equal(train_labels, file_labels[100:100 + len(train_labels)])


def test_valid_split_is_refused_where_the_original_defines_none(data_dir):
    with pytest.raises(ValueError, match="no valid split"):
        get_dataset("cifar10", data_dir, BATCH, valid_split=True)


def test_tolstoi_batches_are_parallel_character_streams(data_dir):
    batch_size, seq = 4, 50
    dataset = get_dataset("tolstoi", data_dir, batch_size)
    chars = np.load(data_dir / "tolstoi" / "train.npy")
    batches = [(x.numpy(), y.numpy()) for x, y in dataset.batches("train")]
    num_batches = (chars.size - 1) // (batch_size * seq)
    assert len(batches) == dataset.num_batches("train") == num_batches
    stream_length = num_batches * seq
    for row in range(batch_size):
        stream_x = np.concatenate([x[row] for x, _ in batches])
        stream_y = np.concatenate([y[row] for _, y in batches])
        np.testing.assert_array_equal(stream_x, chars[row * stream_length:(row + 1) * stream_length])
        np.testing.assert_array_equal(stream_y, chars[row * stream_length + 1:(row + 1) * stream_length + 1])
    # v1.1: train_eval = take(653237 // B) batches, i.e. the whole (small) train set, unshuffled
    np.testing.assert_array_equal(np.stack([x for x, _ in batches]),
                                  np.stack([x.numpy() for x, _ in dataset.batches("train_eval")]))


def test_tolstoi_v12_valid_split_is_the_first_test_sized_chunk(data_dir, monkeypatch):
    from deepobs.datasets import tolstoi
    monkeypatch.setattr(tolstoi, "TRAIN_EVAL_CHARS", 5000)
    dataset = get_dataset("tolstoi", data_dir, 4, valid_split=True)
    chars = np.load(data_dir / "tolstoi" / "train.npy")
    np.testing.assert_array_equal(dataset.split_chars("valid"), chars[:5000])
    np.testing.assert_array_equal(dataset.split_chars("train"), chars[5000:])
    assert dataset.num_batches("train_eval") == min(5000 // (4 * 50), dataset.num_batches("train"))


def test_generated_data_uses_the_original_seeds(data_dir):
    quadratic = get_dataset("quadratic", data_dir, 100, shuffle=False)
    x, labels = next(iter(quadratic.batches("test")))
    assert labels is None
    np.testing.assert_array_equal(x.numpy(), np.float32(np.random.RandomState(43).normal(0, 0.6, (1000, 100)))[:100])
    assert quadratic.num_batches("train_eval") == quadratic.num_batches("train") == 10  # take(-1)
    two_d = get_dataset("two_d", data_dir, 1000, shuffle=False, valid_split=True)
    rng = np.random.RandomState(42)
    expected_x, expected_y = np.float32(rng.normal(0, 1, 10000)), np.float32(rng.normal(0, 1, 10000))
    x, y = next(iter(two_d.batches("train")))
    np.testing.assert_array_equal(x.numpy(), expected_x[:1000])
    np.testing.assert_array_equal(y.numpy(), expected_y[:1000])
    assert all(float(x.abs().max()) == 0 == float(y.abs().max()) for x, y in two_d.batches("test"))
    assert two_d.num_batches("valid") == 10


def test_imagenet_reader_reads_tensorflow_written_records(data_dir):
    dataset = get_dataset("imagenet", data_dir, 4, shuffle=False)
    assert dataset.num_batches("train") == sum(fixtures.SIZES["imagenet"]["train"]) // 4
    inputs, labels = next(iter(dataset.batches("train")))
    assert inputs.shape == (4, 3, 224, 224) and str(labels.dtype) == "torch.int64"
    assert 1 <= int(labels.min()) and int(labels.max()) <= 1000
    means = inputs.numpy().mean(axis=(1, 2, 3))
    np.testing.assert_allclose(means, 0, atol=1e-5)  # per-image standardisation


def test_tfrecord_writer_is_read_by_tensorflow(tmp_path):
    from tf_reference._tf import tf

    from deepobs.datasets.tfrecord import encode_example, frame_record
    path = tmp_path / "records"
    path.write_bytes(b"".join(frame_record(encode_example({"image/encoded": [b"abc\x00" * n],
                                                           "image/class/label": [n, -n]})) for n in (1, 300)))
    parsed = [tf.io.parse_single_example(record, {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                                                  "image/class/label": tf.io.FixedLenFeature([2], tf.int64)})
              for record in tf.data.TFRecordDataset(str(path))]
    assert [p["image/encoded"].numpy() for p in parsed] == [b"abc\x00", b"abc\x00" * 300]
    assert [p["image/class/label"].numpy().tolist() for p in parsed] == [[1, -1], [300, -300]]


def test_crc32c_matches_the_published_check_value():
    from deepobs.datasets.tfrecord import _crc32c_python
    assert _crc32c_python(b"123456789") == 0xE3069283


# ---- bad input ----

def _copy_dataset(data_dir: Path, tmp_path: Path, folder: str) -> Path:
    import shutil
    shutil.copytree(data_dir / folder, tmp_path / folder)
    return tmp_path


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


CORRUPTIONS = {  # name: (folder, file to damage, bytes kept)
    "cifar10": ("cifar-10", "data_batch_3.bin", 5000),
    "mnist": ("mnist", "train-images-idx3-ubyte.gz", 300),
    "svhn": ("svhn", "test_batch.bin", 3073 * 2 + 17),
    "tolstoi": ("tolstoi", "train.npy", 100),
    "imagenet": ("imagenet", "train-00001-of-00002", 5000),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_truncated_file_raises_an_error_naming_it(data_dir, tmp_path, name):
    folder, filename, keep = CORRUPTIONS[name]
    root = _copy_dataset(data_dir, tmp_path, folder)
    _truncate(root / folder / filename, keep)
    dataset = get_dataset(name, root, 2)
    split = "test" if filename.startswith("test") else "train"
    with pytest.raises(DataCorruptError, match=filename):
        dataset.num_batches(split)
        for _ in dataset.batches(split):
            pass


def test_corrupt_jpeg_raises_an_error_naming_the_shard(tmp_path):
    from deepobs.datasets.tfrecord import encode_example, frame_record
    (tmp_path / "imagenet").mkdir()
    shard = tmp_path / "imagenet" / "validation-00000-of-00001"
    shard.write_bytes(frame_record(encode_example({"image/encoded": [b"not a jpeg"], "image/class/label": [3]})))
    dataset = get_dataset("imagenet", tmp_path, 1)
    with pytest.raises(DataCorruptError, match="validation-00000-of-00001"):
        next(iter(dataset.batches("test")))


@pytest.mark.parametrize("name", ["mnist", "cifar100", "svhn", "imagenet", "tolstoi"])
def test_missing_files_name_the_path_and_the_prepare_command(tmp_path, name):
    with pytest.raises(DataMissingError) as error:
        get_dataset(name, tmp_path, 8).num_batches("test")
    message = str(error.value)
    assert str(tmp_path) in message and f"python -m deepobs data prepare {name} --data-dir" in message
    assert list(tmp_path.iterdir()) == []  # nothing written


# ---- parity with the reference ----

@pytest.mark.slow
@pytest.mark.parity
def test_audit_pipelines_passes_for_every_dataset(tmp_path):
    from parity.pipeline import DATASETS as AUDITED, audit_pipelines
    results = audit_pipelines(None, tmp_path, original=False)  # the original's checks: test_original_pipelines.py
    assert set(AUDITED) == set(EXPECTED_NAMES)
    assert {r.problem for r in results} >= set(EXPECTED_NAMES)
    failures = [(r.problem, r.check, r.error, r.first_divergence) for r in results if not r.passed]
    assert not failures
    checks = {(r.problem, r.check) for r in results}
    for name in ("cifar10", "cifar100", "svhn", "imagenet"):
        assert {(name, "pipeline/augment"), (name, "pipeline/augment-distribution")} <= checks


@pytest.mark.parity
def test_the_other_cifar100_offset_fails_the_decode_check(data_dir):
    from parity.pipeline import check_splits_and_decode
    _, default = check_splits_and_decode("cifar100", data_dir)
    assert default.passed and "bytes 1..3072" in default.notes[0]
    _, planted = check_splits_and_decode("cifar100", data_dir, port_options={"correct_image_offset": True})
    assert not planted.passed and planted.first_divergence.item.endswith("/inputs")
    assert "bytes 2..3073" in planted.notes[0]


@pytest.mark.parity
@pytest.mark.parametrize("name", ["cifar100", "svhn"])
def test_fresh_port_epochs_fail_the_epoch_check(data_dir, name):
    """A port that reshuffles every pass (a plain DataLoader's default) against the seeded original's replay."""
    from parity.pipeline import check_epochs  # the default passing: test_audit_pipelines_passes_for_every_dataset
    planted = check_epochs(name, data_dir, port_options={"replay_epochs": False})
    assert not planted.passed and planted.first_divergence.item.startswith("port/")


@pytest.mark.parity
def test_reference_tolstoi_batch_too_large_raises_value_error(data_dir):
    from tf_reference.datasets import make_datasets
    with pytest.raises(ValueError, match="to small"):
        make_datasets("tolstoi", data_dir, 500)


@pytest.mark.parity
def test_a_wrong_contrast_range_fails_the_distribution_check():
    from parity.pipeline import NUM_DRAWS, ks_comparison, tf_cifar_draws
    reference = tf_cifar_draws(NUM_DRAWS, flip=True)["contrast"]
    wrong = np.random.default_rng(0).uniform(0.2, 1.6, NUM_DRAWS)  # a 12% narrower range
    assert not ks_comparison("contrast", wrong, reference).passed


@pytest.mark.parity
def test_tf1_resize_matches_tensorflow_on_odd_sizes():
    from tf_reference._tf import tf

    from deepobs.datasets.image_ops import aspect_preserving_size, resize_bilinear_tf1
    image = np.random.default_rng(0).uniform(0, 1, (181, 257, 3)).astype(np.float32)
    size = aspect_preserving_size(181, 257)
    assert size == (256, 363)
    reference = tf.compat.v1.image.resize_images(image, size).numpy()
    np.testing.assert_allclose(resize_bilinear_tf1(image, *size), reference, rtol=0, atol=2e-7)


# ---- command line ----

def test_cli_check_prints_sizes_shapes_and_label_range(data_dir):
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    result = run_cli("data", "check", "cifar10", "--data-dir", str(data_dir), "--batch-size", "32")
    assert result.returncode == 0, result.stderr
    assert "train: 288 examples in 9 batches" in result.stdout
    assert "test: 128 examples in 4 batches" in result.stdout
    assert "inputs (32, 3, 32, 32) float32, labels (32,) int64; labels 0..9" in result.stdout
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before


def test_cli_check_missing_folder_is_one_line_without_traceback(tmp_path):
    result = run_cli("data", "check", "svhn", "--data-dir", str(tmp_path / "nowhere"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(tmp_path / "nowhere" / "svhn" / "data_batch_0.bin") in lines[0]
    assert f"python -m deepobs data prepare svhn --data-dir {tmp_path / 'nowhere'}" in lines[0]
    assert not (tmp_path / "nowhere").exists()


def test_cli_check_corrupt_file_is_one_line_naming_it(data_dir, tmp_path):
    root = _copy_dataset(data_dir, tmp_path, "cifar-100")
    _truncate(root / "cifar-100" / "test.bin", 1000)
    result = run_cli("data", "check", "cifar100", "--data-dir", str(root))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(root / "cifar-100" / "test.bin") in lines[0]


def test_cli_check_tolstoi_batch_too_large_is_one_line(data_dir):
    result = run_cli("data", "check", "tolstoi", "--data-dir", str(data_dir), "--batch-size", "500")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "batch size 500 leaves no batch" in result.stderr


def test_cli_check_says_how_cifar100_is_read(data_dir):
    default = run_cli("data", "check", "cifar100", "--data-dir", str(data_dir), "--batch-size", "32")
    corrected = run_cli("data", "check", "cifar100", "--data-dir", str(data_dir), "--batch-size", "32",
                        "--correct-image-offset")
    assert "bytes 1..3072 of each record, as the original" in default.stdout
    assert "bytes 2..3073 of each record (corrected)" in corrected.stdout


def test_cli_rejects_unknown_dataset_names():
    result = run_cli("data", "check", "cifar11")
    assert result.returncode == 2 and "invalid choice" in result.stderr

