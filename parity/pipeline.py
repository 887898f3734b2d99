"""Pipeline parity: the port's data loaders (`deepobs.datasets`) against the tf.data reference.

`audit_pipelines(datasets, work_dir)` writes small files in each real format (parity/fixtures.py),
runs both pipelines and returns typed results:
  pipeline/splits                 batches per split, equal (both drop the last partial batch)
  pipeline/decode                 every eval-mode batch (decode, scaling, standardisation, labels)
  pipeline/augment                train batches with the same injected draws (crop, flip, colour factors)
  pipeline/jpeg-decode            PIL vs TF decode_jpeg on natural-ish JPEGs (a measurement, see note)
  pipeline/augment-distribution   port draws vs draws recovered from the original's own tf.image.random_*
  pipeline/shuffle-distribution   the port's shuffle buffer vs tf.data shuffle
  pipeline/epochs                 epoch-to-epoch behaviour of the seeded original, in each framework: single-file
                                  sets replay every pass and train_eval is the first batches of a train pass;
                                  multi-file sets keep the buffer permutation and change only the file order;
                                  replay_epochs=False gives fresh passes

CIFAR-100 is read as the original reads it (image bytes 1..3072 of each record) unless the audit is asked for
the corrected reading (`port_options` / `reference_options` {"correct_image_offset": True}); the result notes say
which ran.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import stats

from deepobs.datasets import DATASETS as PORT_DATASETS
from deepobs.datasets import get_dataset
from deepobs.datasets.base import shuffled_order, stream_records
from deepobs.datasets.image_ops import AugmentDraws, ImagenetDraws, draw_cifar_augment, draw_imagenet_augment
from parity import fixtures
from parity.results import CheckResult, Comparison, compare

DATASETS: list[str] = list(PORT_DATASETS)

# Tolerances on max_rel (max abs error / max |reference|), with the floor measured on this machine
# (TF 2.21 CPU, NumPy 2.4) beside each. Float32 round-off from different reduction orders in the
# per-image mean/std and the HSV round trip; integer data (labels, char ids, counts) must be exact.
TOLERANCES = {
    # check:               (tolerance, measured floor)
    "exact":               (0.0, 0.0),       # labels, char ids, batch counts, MNIST /255, generated data
    "standardised":        (2e-6, 5.8e-7),   # CIFAR/SVHN eval: decode -> per_image_standardization
    "augmented":           (2e-6, 5.4e-7),   # CIFAR/SVHN train chain with injected draws (HSV kernel emulated)
    "imagenet":            (2e-6, 4.0e-7),   # same decoded pixels -> resize -> crop -> standardise
    # PIL (libjpeg ISLOW) vs TF decode_jpeg's default dct_method (INTEGER_FAST), uint8 values: up to 4
    # levels (max_rel 4/255) on the audit's natural-ish JPEGs, 65% of values differ. A measurement of a
    # documented deviation (the port decodes with ISLOW on purpose), not round-off.
    "jpeg-ifast":          (4 / 255, 4 / 255),
    "jpeg-islow":          (0.0, 0.0),       # PIL vs TF decode_jpeg(dct_method="INTEGER_ACCURATE")
}

# Statistical tests: significance level per test. With n = 2000 draws per side, the two-sample KS
# critical value is 1.95 * sqrt(2 / 2000) = 0.062, so a sup-CDF gap >= 0.09 (e.g. contrast U[0.2, 1.6)
# instead of U[0.2, 1.8): gap 0.11) is detected with power >= 0.9; the flip 2x2 chi-square detects
# |p - 0.5| >= 0.07 with power >= 0.9; the crop chi-square (5 or 33 cells per axis) detects a missing or
# extra offset value (a 20% / 3% mass shift) with power ~1. Seeds are fixed, so results are reproducible.
ALPHA = 1e-3
NUM_DRAWS = 2000
NUM_IMAGENET_DRAWS = 1000
SHUFFLE_ITEMS, SHUFFLE_BUFFER, SHUFFLE_EPOCHS = 600, 200, 300

AUDIT_BATCH_SIZE = {"imagenet": 4, "tolstoi": 8, "two_d": 128, "quadratic": 32}
DEFAULT_AUDIT_BATCH_SIZE = 32
AUGMENTED = ("cifar10", "cifar100", "svhn")


def _tolerance(kind: str) -> float:
    return TOLERANCES[kind][0]


def _port_arrays(batch) -> list[np.ndarray]:
    """A port batch -> NumPy in the reference's layout (NHWC images), None entries dropped."""
    arrays = []
    for tensor in batch:
        if tensor is None:
            continue
        array = tensor.numpy()
        arrays.append(array.transpose(0, 2, 3, 1) if array.ndim == 4 else array)
    return arrays


def _reference_arrays(batch, one_hot_labels: bool) -> list[np.ndarray]:
    arrays = list(batch) if isinstance(batch, tuple) else [batch]
    if one_hot_labels:
        arrays[1] = arrays[1].argmax(axis=1)
    return arrays


def _compare_epochs(port_batches, reference_batches, one_hot_labels: bool, input_tolerance: float,
                    split: str) -> list[Comparison]:
    port_batches, reference_batches = list(port_batches), list(reference_batches)
    comparisons = [compare(f"{split}/num_batches", len(port_batches), len(reference_batches), 0.0)]
    if not port_batches or len(port_batches) != len(reference_batches):
        return comparisons
    port = [_port_arrays(b) for b in port_batches]
    reference = [_reference_arrays(b, one_hot_labels) for b in reference_batches]
    names = ["inputs", "labels"]
    for position in range(len(port[0])):
        tolerance = input_tolerance if position == 0 else 0.0
        comparisons.append(compare(f"{split}/{names[position]}", np.stack([b[position] for b in port]),
                                   np.stack([b[position] for b in reference]), tolerance))
    return comparisons


def _is_classification(name: str) -> bool:
    return name not in ("tolstoi", "quadratic", "two_d")


def cifar100_reading_note(options: dict) -> str:
    return ("image = bytes 2..3073 of each record (correct_image_offset=True)" if options.get("correct_image_offset")
            else "image = bytes 1..3072 of each record, as the original reads CIFAR-100 (default)")


def _reading_notes(name: str, port_options: dict, reference_options: dict) -> list[str]:
    if name != "cifar100":
        return []
    return [f"port: {cifar100_reading_note(port_options)}; reference: {cifar100_reading_note(reference_options)}"]


def check_splits_and_decode(name: str, data_dir: Path, port_options: dict | None = None,
                            reference_options: dict | None = None) -> list[CheckResult]:
    from tf_reference.datasets import make_datasets

    port_options, reference_options = port_options or {}, reference_options or {}
    batch_size = AUDIT_BATCH_SIZE.get(name, DEFAULT_AUDIT_BATCH_SIZE)
    options = {"shuffle": False, "data_augmentation": False}
    port = get_dataset(name, data_dir, batch_size, **options, **port_options)
    if name == "imagenet":
        port.decode = tf_decode_jpeg  # the decoder difference is its own check (pipeline/jpeg-decode)
    reference = make_datasets(name, data_dir, batch_size, **options, **reference_options)
    splits = CheckResult(name, "pipeline/splits", "int64")
    decode = CheckResult(name, "pipeline/decode", "float32", notes=_reading_notes(name, port_options,
                                                                                    reference_options))
    input_kind = {"imagenet": "imagenet"}.get(name, "standardised" if name in AUGMENTED else "exact")
    for split in port.splits:
        reference_count = sum(1 for _ in reference[split])
        splits.comparisons.append(compare(f"{split}/num_batches", port.num_batches(split), reference_count, 0.0))
        decode.comparisons += _compare_epochs(port.batches(split), reference[split].as_numpy_iterator(),
                                              _is_classification(name), _tolerance(input_kind), split)
    return [splits, decode]


def check_augment(name: str, data_dir: Path, seed: int = 0, port_options: dict | None = None,
                  reference_options: dict | None = None) -> CheckResult:
    """Train batches of both pipelines, unshuffled, fed the same per-record draws."""
    from tf_reference.datasets import make_datasets

    port_options, reference_options = port_options or {}, reference_options or {}
    batch_size = AUDIT_BATCH_SIZE.get(name, DEFAULT_AUDIT_BATCH_SIZE)
    rng = np.random.default_rng(seed)
    result = CheckResult(name, "pipeline/augment", "float32", notes=_reading_notes(name, port_options,
                                                                                    reference_options))
    if name == "imagenet":
        count = sum(fixtures.SIZES["imagenet"]["train"])
        draws = [draw_imagenet_augment(rng) for _ in range(count)]
        queue = iter(draws)
        port = get_dataset(name, data_dir, batch_size, shuffle=False, draw_augment=lambda _rng: next(queue))
        port.decode = tf_decode_jpeg
        params = {"crop_offset": np.array([d.crop_offset for d in draws], np.int32),
                  "flip": np.array([d.flip for d in draws])}
        tolerance = _tolerance("imagenet")
    else:
        draws = draw_cifar_augment(rng, sum(fixtures.SIZES[name]["train"]), flip=name != "svhn")
        port = get_dataset(name, data_dir, batch_size, shuffle=False, augment_draws=draws, **port_options)
        params = {"crop_offsets": draws.crop_offsets.astype(np.int32), "flip": draws.flip,
                  "brightness": draws.brightness, "saturation": draws.saturation, "contrast": draws.contrast}
        tolerance = _tolerance("augmented")
    reference = make_datasets(name, data_dir, batch_size, shuffle=False, augment_params=params, **reference_options)
    result.comparisons = _compare_epochs(port.batches("train"), reference["train"].as_numpy_iterator(),
                                         True, tolerance, "train")
    return result


def tf_decode_jpeg(jpeg: bytes) -> np.ndarray:
    """The original's decoder (decode_jpeg, channels=3, default dct_method) for the port's ImageNet loader."""
    from tf_reference._tf import tf
    return tf.io.decode_jpeg(jpeg, channels=3).numpy()


def check_jpeg_decode(seed: int = 0) -> CheckResult:
    """PIL (the port's decoder) vs TF decode_jpeg, on JPEGs of natural-ish content."""
    from tf_reference._tf import tf

    from deepobs.datasets.imagenet import decode_jpeg
    jpegs = fixtures.natural_jpegs(seed)
    port = np.concatenate([decode_jpeg(j).ravel() for j in jpegs])
    default = np.concatenate([tf.io.decode_jpeg(j, channels=3).numpy().ravel() for j in jpegs])
    accurate = np.concatenate([tf.io.decode_jpeg(j, channels=3, dct_method="INTEGER_ACCURATE").numpy().ravel()
                               for j in jpegs])
    differing = float(np.mean(port != default))
    result = CheckResult("imagenet", "pipeline/jpeg-decode", "uint8")
    result.comparisons = [
        compare("pil_vs_tf_default_dct", port, default, _tolerance("jpeg-ifast"),
                note=f"TF's default dct_method is INTEGER_FAST (JDCT_IFAST), PIL decodes with JDCT_ISLOW: "
                     f"{differing:.0%} of values differ; the port keeps ISLOW (the more accurate DCT)"),
        compare("pil_vs_tf_integer_accurate", port, accurate, _tolerance("jpeg-islow"),
                note="same libjpeg-turbo ISLOW decode: bit-identical"),
    ]
    return result


# ---- distributions of the random draws ----

def _statistic_comparison(item: str, statistic: float, critical: float, p_value: float, note: str = ""
                          ) -> Comparison:
    """A test as a Comparison: max_abs = statistic, max_rel = statistic / critical value, tolerance 1."""
    return Comparison(item, float(statistic), float(statistic / critical), 1.0, bool(p_value >= ALPHA),
                      f"p = {p_value:.3g}, alpha = {ALPHA}" + (f"; {note}" if note else ""))


def ks_comparison(item: str, port_sample: np.ndarray, reference_sample: np.ndarray) -> Comparison:
    result = stats.ks_2samp(port_sample, reference_sample)
    n, m = len(port_sample), len(reference_sample)
    critical = np.sqrt(-np.log(ALPHA / 2) / 2) * np.sqrt((n + m) / (n * m))
    return _statistic_comparison(f"{item} (two-sample KS)", result.statistic, critical, result.pvalue)


def chi2_comparison(item: str, port_sample: np.ndarray, reference_sample: np.ndarray) -> Comparison:
    categories = np.union1d(port_sample, reference_sample)
    table = np.array([[np.sum(sample == c) for c in categories] for sample in (port_sample, reference_sample)])
    if table.shape[1] == 1:  # both constant and equal: identical distributions
        return _statistic_comparison(f"{item} (chi-square)", 0.0, 1.0, 1.0, "one category on both sides")
    statistic, p_value, dof, _ = stats.chi2_contingency(table, correction=False)
    return _statistic_comparison(f"{item} (chi-square)", statistic, stats.chi2.ppf(1 - ALPHA, dof), p_value)


def _recover_tf_draws(probe_fn: Callable, count: int, seed: int) -> dict[str, np.ndarray]:
    """Run the original's random ops `count` times in a tf.data map (seeded) and read back the draws."""
    from tf_reference._tf import tf
    tf.random.set_seed(seed)
    data = tf.data.Dataset.range(count).map(probe_fn).batch(count)
    return {key: value for key, value in next(iter(data.as_numpy_iterator())).items()}


def tf_cifar_draws(count: int, flip: bool, seed: int = 1) -> dict[str, np.ndarray]:
    """Draws of tf.image.random_crop/flip/brightness/saturation/contrast, recovered from probe images:
    a 36x36 image whose value encodes the position (crop offsets, flip), zeros (brightness delta), a
    pixel of saturation 0.5 (factor = new saturation / 0.5) and a two-level image (contrast factor)."""
    from tf_reference._tf import tf
    position = tf.cast(tf.reshape(tf.range(36 * 36), [36, 36, 1]), tf.float32) * tf.ones([1, 1, 3])

    def probe(_):
        window = tf.image.random_crop(position, [32, 32, 3])
        if flip:
            window = tf.image.random_flip_left_right(window)
        first, last = window[0, 0, 0], window[0, 31, 0]
        top_left = tf.cast(tf.minimum(first, last), tf.int32)
        delta = tf.image.random_brightness(tf.zeros([1, 1, 3]), 63.0 / 255.0)[0, 0, 0]
        saturated = tf.image.random_saturation(tf.constant([[[200.0, 100.0, 100.0]]]), 0.5, 1.5)[0, 0]
        two_level = tf.constant([[[0.0] * 3], [[100.0] * 3]])
        contrasted = tf.image.random_contrast(two_level, 0.2, 1.8)
        return {"row": top_left // 36, "col": top_left % 36, "flip": first > last, "brightness": delta,
                "saturation": (1.0 - saturated[1] / saturated[0]) / 0.5,
                "contrast": (contrasted[1, 0, 0] - contrasted[0, 0, 0]) / 100.0}

    return _recover_tf_draws(probe, count, seed)


def tf_imagenet_draws(count: int, seed: int = 2) -> dict[str, np.ndarray]:
    from tf_reference._tf import tf
    position = tf.cast(tf.reshape(tf.range(256 * 256), [256, 256, 1]), tf.float32) * tf.ones([1, 1, 3])

    def probe(_):
        window = tf.image.random_flip_left_right(tf.image.random_crop(position, [224, 224, 3]))
        first, last = window[0, 0, 0], window[0, 223, 0]
        top_left = tf.cast(tf.minimum(first, last), tf.int32)
        return {"row": top_left // 256, "col": top_left % 256, "flip": first > last}

    return _recover_tf_draws(probe, count, seed)


def check_augment_distribution(name: str, seed: int = 0) -> CheckResult:
    result = CheckResult(name, "pipeline/augment-distribution", "float32")
    rng = np.random.default_rng(seed)
    if name == "imagenet":
        port_draws: list[ImagenetDraws] = [draw_imagenet_augment(rng) for _ in range(NUM_IMAGENET_DRAWS)]
        tf_draws = tf_imagenet_draws(NUM_IMAGENET_DRAWS)
        port = {"row": np.array([d.crop_offset[0] for d in port_draws]),
                "col": np.array([d.crop_offset[1] for d in port_draws]),
                "flip": np.array([d.flip for d in port_draws])}
        result.comparisons = [chi2_comparison(key, port[key], tf_draws[key]) for key in ("row", "col", "flip")]
        return result
    flip = name != "svhn"
    draws: AugmentDraws = draw_cifar_augment(rng, NUM_DRAWS, flip=flip)
    tf_draws = tf_cifar_draws(NUM_DRAWS, flip)
    port = {"row": draws.crop_offsets[:, 0], "col": draws.crop_offsets[:, 1], "flip": draws.flip,
            "brightness": draws.brightness, "saturation": draws.saturation, "contrast": draws.contrast}
    result.comparisons = [chi2_comparison(key, port[key], tf_draws[key]) for key in ("row", "col", "flip")]
    result.comparisons += [ks_comparison(key, port[key], tf_draws[key])
                           for key in ("brightness", "saturation", "contrast")]
    return result


def check_shuffle_distribution(seed: int = 0) -> CheckResult:
    """Where items land after the shuffle buffer (items > buffer, as CIFAR's 50k through 20k), per
    tracked item: port vs tf.data `shuffle` (reshuffled each epoch)."""
    from tf_reference._tf import tf
    tf.random.set_seed(seed)
    data = tf.data.Dataset.range(SHUFFLE_ITEMS).shuffle(SHUFFLE_BUFFER).batch(SHUFFLE_ITEMS).repeat(SHUFFLE_EPOCHS)
    tf_orders = np.stack(list(data.as_numpy_iterator()))
    rng = np.random.default_rng(seed)
    port_orders = np.stack([shuffled_order([SHUFFLE_ITEMS], rng, False, SHUFFLE_BUFFER)
                            for _ in range(SHUFFLE_EPOCHS)])
    result = CheckResult("all", "pipeline/shuffle-distribution", "int64")
    for item in (0, SHUFFLE_BUFFER - 1, SHUFFLE_BUFFER, SHUFFLE_ITEMS - 1):
        result.comparisons.append(ks_comparison(f"output position of item {item}",
                                                np.argmax(port_orders == item, axis=1),
                                                np.argmax(tf_orders == item, axis=1)))
    return result


# ---- epoch-to-epoch behaviour ----

MULTI_FILE = ("cifar10", "svhn", "imagenet")  # train files read in a shuffled order; the rest: one file
EPOCH_SEED = 0
# The runner's order: evaluate (train_eval) before every training epoch, then once more at the end.
RUNNER_PASSES = ("train_eval", "train", "train_eval", "train", "train_eval", "train", "train_eval")


def _concatenate_batches(batches: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.concatenate([b[i] for b in batches]) for i in range(len(batches[0]))] if batches else []


class _PortFramework:
    """The port's loader for the epoch checks: a pass is one `batches(split)`, in call order."""

    label = "port"

    def __init__(self, name: str, data_dir: Path, batch_size: int, options: dict):
        self.name, self.port = name, get_dataset(name, data_dir, batch_size, **options)
        if name == "imagenet":
            self.port.decode = tf_decode_jpeg  # records are identified against TF-decoded values

    def run_pass(self, split: str) -> list[np.ndarray]:
        return _concatenate_batches([_port_arrays(b) for b in self.port.batches(split)])


class _ReferenceFramework:
    """The reference for the epoch checks: a pass is one iteration of the split's dataset."""

    label = "reference"

    def __init__(self, name: str, data_dir: Path, batch_size: int, options: dict):
        from tf_reference.datasets import make_datasets
        self.name, self.reference = name, make_datasets(name, data_dir, batch_size, **options)

    def run_pass(self, split: str) -> list[np.ndarray]:
        return _concatenate_batches([_reference_arrays(b, _is_classification(self.name))
                                     for b in self.reference[split].as_numpy_iterator()])


def _same(item: str, value: list[np.ndarray], expected: list[np.ndarray], note: str = "") -> Comparison:
    if len(value) != len(expected) or any(v.shape != e.shape for v, e in zip(value, expected)):
        return Comparison(item, float("inf"), float("inf"), 0.0, False, note or "different sizes")
    return compare(item, np.concatenate([v.reshape(len(v), -1).astype(np.float64) for v in value], 1),
                   np.concatenate([e.reshape(len(e), -1).astype(np.float64) for e in expected], 1), 0.0, note=note)


def _differ(item: str, value: list[np.ndarray], other: list[np.ndarray], note: str = "") -> Comparison:
    """Passes when the two passes differ somewhere (a fresh pass)."""
    difference = max(float(np.abs(v.astype(np.float64) - o.astype(np.float64)).max())
                     for v, o in zip(value, other)) if len(value) == len(other) else float("inf")
    return Comparison(item, difference, difference, 0.0, difference > 0, note or "must differ")


def _single_file_comparisons(framework, fresh) -> list[Comparison]:
    label = framework.label
    passes = [(split, framework.run_pass(split)) for split in RUNNER_PASSES]
    train = [arrays for split, arrays in passes if split == "train"]
    train_eval = [arrays for split, arrays in passes if split == "train_eval"]
    comparisons = [_same(f"{label}/train pass {k + 1} vs pass 1", train[k], train[0]) for k in range(1, len(train))]
    comparisons += [_same(f"{label}/train_eval {k + 1} vs train_eval 1", train_eval[k], train_eval[0])
                    for k in range(1, len(train_eval))]
    size = len(train_eval[0][0])
    comparisons.append(_same(f"{label}/train_eval vs the first {size} examples of a train pass", train_eval[0],
                             [array[:size] for array in train[0]]))
    if framework.name != "tolstoi":  # never shuffled: nothing to draw afresh
        comparisons.append(_differ(f"{label}/replay_epochs=False: train pass 2 differs from pass 1",
                                   fresh.run_pass("train"), fresh.run_pass("train")))
    return comparisons


IDENTIFY_TOLERANCE = 1e-3  # a record matches a catalogue entry within this max abs (standardised values)


def _nearest(examples: np.ndarray, catalogue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest catalogue row, its max abs distance) for each row of examples ([N, D] float32):
    exact matches by value first, the rest nearest on up to 256 evenly spread columns, the distance then taken
    over all columns (a wrong pick shows as a large distance, never as a pass)."""
    exact = {row.tobytes(): index for index, row in enumerate(np.ascontiguousarray(catalogue))}
    indices = np.array([exact.get(row.tobytes(), -1) for row in np.ascontiguousarray(examples)], np.int64)
    distances = np.zeros(len(examples), np.float32)
    pending = np.flatnonzero(indices < 0)
    columns = np.unique(np.linspace(0, catalogue.shape[1] - 1, min(catalogue.shape[1], 256)).astype(np.int64))
    features = catalogue[:, columns]
    chunk = max(1, 50_000_000 // features.size)
    for start in range(0, len(pending), chunk):
        rows = pending[start:start + chunk]
        indices[rows] = np.abs(examples[rows][:, None, columns] - features[None]).max(axis=2).argmin(axis=1)
        distances[rows] = np.abs(examples[rows] - catalogue[indices[rows]]).max(axis=1)
    return indices, distances


def _record_ids(inputs: np.ndarray, catalogue: np.ndarray) -> np.ndarray:
    """Each input's record index in the catalogue (unshuffled, unaugmented records), -1 where none matches."""
    indices, distances = _nearest(inputs.reshape(len(inputs), -1).astype(np.float32), catalogue)
    return np.where(distances <= IDENTIFY_TOLERANCE, indices, -1)


def _stream_positions(record_ids: np.ndarray, file_lengths: list[int], file_order: tuple[int, ...]) -> tuple:
    """Where each record sits in the read stream when the files are read in file_order."""
    stream = stream_records(file_lengths, np.array(file_order))
    position_of = np.empty(len(stream), np.int64)
    position_of[stream] = np.arange(len(stream))
    return tuple(position_of[record_ids].tolist())


def _layouts(passes: list[np.ndarray], file_lengths: list[int]) -> list[dict[tuple, tuple]]:
    """Per pass: {stream positions of its records under a file order: that file order}, over all file orders."""
    import itertools
    orders = list(itertools.permutations(range(len(file_lengths))))
    return [{_stream_positions(ids, file_lengths, order): order for order in orders} for ids in passes]


def _multi_file_comparisons(framework, fresh, catalogue: np.ndarray, file_lengths: list[int]) -> list[Comparison]:
    """Records identified by their (unaugmented) values; the passes are explained by file orders if, placed in
    the stream each pass's file order gives, their records come from the same stream positions in every pass
    (a train_eval pass: the first positions)."""
    label = framework.label
    passes = [_record_ids(framework.run_pass(split)[0], catalogue) for split in RUNNER_PASSES]
    layouts = _layouts(passes, file_lengths)
    full_length = max(len(ids) for ids in passes)
    common = set.intersection(*(set(layout) for ids, layout in zip(passes, layouts) if len(ids) == full_length))
    # Relabelling the files consistently fits too: keep the stream layouts every pass (train_eval included) fits.
    common = {c for c in common if all(c[:len(ids)] in layout for ids, layout in zip(passes, layouts))}
    one_layout = next(iter(common), ())
    file_orders = {layout[one_layout[:len(ids)]] for ids, layout in zip(passes, layouts) if one_layout}
    identified = min(ids.min() for ids in passes) >= 0
    unexplained = 0.0 if common and identified else 1.0
    comparisons = [Comparison(f"{label}/the same buffer permutation in all {len(passes)} passes "
                              f"(train and train_eval), only the file order changes", unexplained, unexplained, 0.0,
                              unexplained == 0, f"{len(file_orders)} different file orders in {len(passes)} passes"
                              + ("" if identified else "; some records not identified"))]
    fresh_passes = [_record_ids(fresh.run_pass("train")[0], catalogue) for _ in range(2)]
    fresh_common = set.intersection(*(set(layout) for layout in _layouts(fresh_passes, file_lengths)))
    fresh_label = "no graph seed" if label == "original" else "replay_epochs=False"
    comparisons.append(Comparison(f"{label}/{fresh_label}: the buffer permutation changes", float(bool(
        fresh_common)), float(bool(fresh_common)), 0.0, not fresh_common, "no file order explains both passes"))
    return comparisons


GENERATED_TRAIN_SIZES = {"quadratic": 1000, "two_d": 10000}


def all_train_records(name: str, data_dir: Path, **options) -> list[np.ndarray]:
    """The port's unshuffled, unaugmented train split as one batch of every record (NHWC, labels as ints)."""
    count = GENERATED_TRAIN_SIZES.get(name) or sum(fixtures.SIZES[name]["train"])
    port = get_dataset(name, data_dir, count, shuffle=False, data_augmentation=False, **options)
    if name == "imagenet":
        port.decode = tf_decode_jpeg
    return _port_arrays(next(iter(port.batches("train"))))


def record_catalogue(name: str, data_dir: Path) -> np.ndarray:
    """The port's unshuffled, unaugmented train records, [N, D] float32 (to identify records by value)."""
    inputs = all_train_records(name, data_dir)[0]
    return inputs.reshape(len(inputs), -1).astype(np.float32)


def check_epochs(name: str, data_dir: Path, port_options: dict | None = None,
                 reference_options: dict | None = None) -> CheckResult:
    """Epoch-to-epoch behaviour of each framework, seeded, in the runner's order of passes (see module doc)."""
    batch_size = AUDIT_BATCH_SIZE.get(name, DEFAULT_AUDIT_BATCH_SIZE)
    result = CheckResult(name, "pipeline/epochs", "float32")
    for framework_class, extra in ((_PortFramework, port_options or {}),
                                   (_ReferenceFramework, reference_options or {})):
        options = {"seed": EPOCH_SEED} | extra
        if name in MULTI_FILE:
            options["data_augmentation"] = False  # records are identified by their values
        framework = framework_class(name, data_dir, batch_size, options)
        fresh = framework_class(name, data_dir, batch_size, options | {"replay_epochs": False})
        if name in MULTI_FILE:
            result.comparisons += _multi_file_comparisons(framework, fresh, record_catalogue(name, data_dir),
                                                          fixtures.SIZES[name]["train"])
        else:
            result.comparisons += _single_file_comparisons(framework, fresh)
    if name in MULTI_FILE:
        result.notes.append("multi-file: checked without augmentation (records identified by value); the draws "
                            "replay as for single-file sets (same code path)")
    return result


# ---- the original's own pipelines (the unpacked wheel, run by parity/original.py) ----

ORIGINAL_SEED = 42  # the original runner's default random_seed


class _OriginalFramework:
    """The original's data set in a graph seeded as its runner seeds it (seed None: no graph seed)."""

    label = "original"

    def __init__(self, name: str, data_dir: Path, batch_size: int, seed: int | None, augment: bool = False):
        from parity.original import OriginalSession
        options = {"data_augmentation": augment} if name in AUGMENTED + ("imagenet",) else {}
        self.name = name
        self.session = OriginalSession(name, data_dir, batch_size, seed=seed, **options)

    def run_pass(self, split: str) -> list[np.ndarray]:
        return _concatenate_batches([_reference_arrays(batch, _is_classification(self.name))
                                     for batch in self.session.batches(split)])


def _examples(arrays: list[np.ndarray]) -> np.ndarray:
    """One row per example: every array of the batch flattened and concatenated (inputs, then labels)."""
    return np.concatenate([a.reshape(len(a), -1).astype(np.float32) for a in arrays], axis=1)


def check_original_values(name: str, data_dir: Path, port_options: dict | None = None) -> CheckResult:
    """The original's split values (no augmentation, seeded) against the port's: unshuffled splits batch by
    batch, shuffled ones record by record (each original example matched to the nearest port record)."""
    port_options = port_options or {}
    batch_size = AUDIT_BATCH_SIZE.get(name, DEFAULT_AUDIT_BATCH_SIZE)
    input_kind = {"imagenet": "imagenet"}.get(name, "standardised" if name in AUGMENTED else "exact")
    input_tolerance = _tolerance(input_kind)
    result = CheckResult(name, "pipeline/original-values", "float32")
    if name == "cifar100":
        result.notes.append(f"port: {cifar100_reading_note(port_options)}; the original: its own reading")
    original = _OriginalFramework(name, data_dir, batch_size, ORIGINAL_SEED)
    port = get_dataset(name, data_dir, batch_size, shuffle=False, data_augmentation=False, **port_options)
    if name == "imagenet":
        port.decode = tf_decode_jpeg
    shuffled_in_original = name != "tolstoi"
    for split in ("train_eval", "test", "train"):
        original_arrays = original.run_pass(split)
        if split == "test" or not shuffled_in_original:
            port_arrays = [np.concatenate(parts) for parts in zip(*(_port_arrays(b) for b in port.batches(split)))]
            how = "batch by batch"
        else:
            records = all_train_records(name, data_dir, **port_options)
            match, _ = _nearest(_examples(original_arrays), _examples(records))
            port_arrays = [array[match] for array in records]
            how = "each example against the nearest port record"
            result.comparisons.append(compare(f"{split}/records matched more than once",
                                              len(match) - len(np.unique(match)), 0, 0.0))
        result.comparisons.append(compare(f"{split}/num_examples", port.split_size(split), len(original_arrays[0]),
                                          0.0))
        for position, (port_array, original_array) in enumerate(zip(port_arrays, original_arrays)):
            kind = "inputs" if position == 0 else "labels"
            result.comparisons.append(compare(f"{split}/{kind}", port_array, original_array,
                                              input_tolerance if position == 0 else 0.0, note=how))
    original.session.close()
    return result


def check_original_epochs(name: str, data_dir: Path) -> CheckResult:
    """The same epoch checks as pipeline/epochs, on the original itself (no augmentation: the original maps
    on 8 threads sharing its random ops, so which record gets which draw varies; see docs/datasets.md)."""
    batch_size = AUDIT_BATCH_SIZE.get(name, DEFAULT_AUDIT_BATCH_SIZE)
    result = CheckResult(name, "pipeline/original-epochs", "float32")
    original = _OriginalFramework(name, data_dir, batch_size, ORIGINAL_SEED)
    unseeded = _OriginalFramework(name, data_dir, batch_size, None)
    if name in MULTI_FILE:
        result.comparisons = _multi_file_comparisons(original, unseeded, record_catalogue(name, data_dir),
                                                     fixtures.SIZES[name]["train"])
    else:
        result.comparisons = [
            c if "replay_epochs=False" not in c.item else
            Comparison(c.item.replace("replay_epochs=False", "no graph seed"), c.max_abs, c.max_rel, c.tolerance,
                       c.passed, c.note)
            for c in _single_file_comparisons(original, unseeded)]
    original.session.close()
    unseeded.session.close()
    return result


def _guarded(name: str, check: str, run: Callable[[], list[CheckResult] | CheckResult]) -> list[CheckResult]:
    try:
        outcome = run()
    except Exception as error:  # noqa: BLE001  (a check that cannot run is a failed result, not a crash)
        return [CheckResult(name, check, "", error=f"{type(error).__name__}: {error}")]
    return outcome if isinstance(outcome, list) else [outcome]


def audit_pipelines(datasets: list[str] | None = None, work_dir: Path | None = None,
                    original: bool | None = None) -> list[CheckResult]:
    """All pipeline checks for `datasets` (default: all), on fixture files written under work_dir. original: also
    run the original's own pipelines (default: when its wheel is unpacked, see parity/original.py)."""
    from parity.original import original_available
    if original is None:
        original = original_available()
    names = list(datasets) if datasets is not None else DATASETS
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise KeyError(f"unknown data sets {unknown}; valid names: {', '.join(DATASETS)}")
    if work_dir is None:
        work_dir = Path(tempfile.mkdtemp(prefix="deepobs-pipeline-audit-"))
    data_dir = Path(work_dir) / "data"
    results: list[CheckResult] = []
    for name in names:
        fixtures.write_dataset(name, data_dir)
        results += _guarded(name, "pipeline/decode", lambda: check_splits_and_decode(name, data_dir))
        results += _guarded(name, "pipeline/epochs", lambda: check_epochs(name, data_dir))
        if name in AUGMENTED or name == "imagenet":
            results += _guarded(name, "pipeline/augment", lambda: check_augment(name, data_dir))
            results += _guarded(name, "pipeline/augment-distribution", lambda: check_augment_distribution(name))
        if name == "imagenet":
            results += _guarded(name, "pipeline/jpeg-decode", check_jpeg_decode)
        if original:
            results += _guarded(name, "pipeline/original-values", lambda: check_original_values(name, data_dir))
            results += _guarded(name, "pipeline/original-epochs", lambda: check_original_epochs(name, data_dir))
    results += _guarded("all", "pipeline/shuffle-distribution", check_shuffle_distribution)
    return results
