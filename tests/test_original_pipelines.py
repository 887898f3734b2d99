"""The original DeepOBS pipelines themselves (the released wheel, run from its unpacked files in TF 2.21 graph
mode, seeded as its runner seeds them) against the port: the values of every split and the epoch behaviour.

Skipped when the wheel is not unpacked (set DEEPOBS_ORIGINAL to the folder holding its `deepobs/`).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from parity import fixtures
from parity.original import original_available, original_root

pytestmark = [pytest.mark.parity, pytest.mark.slow, pytest.mark.skipif(
    not original_available(), reason=f"the original DeepOBS wheel is not unpacked at {original_root().parents[1]} "
                                     f"(set DEEPOBS_ORIGINAL)")]

NAMES = ["mnist", "fmnist", "cifar10", "cifar100", "svhn", "imagenet", "tolstoi", "quadratic", "two_d"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("original-data")
    for name in NAMES:
        fixtures.write_dataset(name, root)
    return root


def _failures(result) -> list:
    return [(c.item, c.max_abs, c.note) for c in result.comparisons if not c.passed] + (
        [result.error] if result.error else [])


@pytest.mark.parametrize("name", NAMES)
def test_every_split_of_the_original_agrees_with_the_port(data_dir, name):
    from parity.pipeline import check_original_values
    result = check_original_values(name, data_dir)
    assert result.comparisons and not _failures(result)


@pytest.mark.parametrize("name", NAMES)
def test_the_seeded_original_replays_its_epochs_as_the_port_models(data_dir, name):
    from parity.pipeline import check_original_epochs
    result = check_original_epochs(name, data_dir)
    assert result.comparisons and not _failures(result)


def test_the_corrected_cifar100_reading_disagrees_with_the_original(data_dir):
    from parity.pipeline import check_original_values
    result = check_original_values("cifar100", data_dir, port_options={"correct_image_offset": True})
    failed = {c.item for c in result.comparisons if not c.passed}
    assert {"test/inputs", "train/inputs", "train_eval/inputs"} <= failed


def test_the_original_raises_value_error_for_tolstoi_with_a_batch_too_large(data_dir):
    from parity.original import OriginalSession
    with pytest.raises(ValueError, match="to small to use with this batch size"):
        OriginalSession("tolstoi", data_dir, 500)
