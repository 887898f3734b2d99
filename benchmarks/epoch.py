"""Training with the data pipeline in the loop: the runner's loop against the original-style tf.data loop.

    PYTHONPATH=. python -m benchmarks.epoch                      # cifar10_3c3d and svhn_wrn164
    PYTHONPATH=. python -m benchmarks.epoch svhn_wrn164 --steps 4 --rounds 3 --json out.json

Per problem, at its default batch size, on files in the real binary format (random pixels, written once
into a temporary folder): a fixed number of training steps from a fresh epoch (the pipeline's start-up —
reading, shuffle buffer — included), with augmentation and shuffling on, as each side trains:
- port: `deepobs.datasets.get_dataset(...).batches("train")` feeding `deepobs.runner.train_step` on the
  runner's default model (`runner.build_model`), torch.optim.SGD(momentum=0.9);
- reference: `tf_reference.datasets.make_datasets(...)["train"]` (the original's tf.data pipeline,
  transcribed) feeding forward, loss, gradients and tf.compat.v1.train.MomentumOptimizer in one tf.function.
A full epoch is 391 (CIFAR-10) or 573 (SVHN) steps, tens of minutes on 2 cores: a fixed number of steps
is timed instead. Port and reference rounds alternate (benchmarks/stats.py); the ratio is the median of
the paired per-round ratios with a bootstrap 95% interval.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.stats import bootstrap_median, paired_ratios, time_interleaved  # noqa: E402
from parity.frameworks import load_tensorflow  # noqa: E402  (pins both frameworks' threads)

tf = load_tensorflow()

from deepobs import runner  # noqa: E402
from deepobs.datasets import get_dataset  # noqa: E402
from deepobs.optim import OPTIMIZERS  # noqa: E402
from deepobs.problems import PROBLEMS  # noqa: E402
from tf_reference import ReferenceProblem  # noqa: E402
from tf_reference.datasets import make_datasets  # noqa: E402
from tf_reference.optimizers import make_optimizer  # noqa: E402

LEARNING_RATE = 1e-3
# data set -> (folder, train file names, test file name, pixel layout channels-first?) as the originals read them
LAYOUTS = {"cifar10": ("cifar-10", [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin", True),
           "svhn": ("svhn", [f"data_batch_{i}.bin" for i in range(5)], "test_batch.bin", False)}
DEFAULT_STEPS = {"cifar10_3c3d": 30, "svhn_wrn164": 5}


def write_binary_files(data_dir: Path, dataset: str, train_records: int, seed: int = 0) -> None:
    """One label byte then 3072 pixel bytes per record, spread over the data set's train files."""
    folder, train_names, test_name, _ = LAYOUTS[dataset]
    rng = np.random.default_rng(seed)
    root = data_dir / folder
    root.mkdir(parents=True, exist_ok=True)
    per_file = -(-train_records // len(train_names))
    for name in [*train_names, test_name]:
        records = rng.integers(0, 256, (per_file, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        (root / name).write_bytes(records.tobytes())


def port_loop(problem, data_dir: Path, steps: int):
    models = runner.build_model(problem, torch.device("cpu"), compile=runner.RunSettings.compile)
    optimizer = OPTIMIZERS["momentum"](models.model.parameters(), LEARNING_RATE)
    model = models.train.train()
    epochs = itertools.count()

    def run():
        dataset = get_dataset(problem.dataset, data_dir, problem.batch_size, seed=next(epochs))
        for batch in itertools.islice(dataset.batches("train"), steps):
            runner.train_step(problem, model, optimizer, batch, None, needs_closure=False)
    return run


def reference_loop(problem, data_dir: Path, steps: int):
    reference = ReferenceProblem(problem.name, tf.float32, seed=0)
    variables = list(reference.graph.trainable_variables.values())
    optimizer = make_optimizer("momentum", LEARNING_RATE, tf.float32)
    epochs = itertools.count()

    @tf.function
    def train_step(images, one_hot_labels):
        labels = tf.argmax(one_hot_labels, axis=1)  # the pipeline's one-hot; the reference's loss takes ids
        with tf.GradientTape() as tape:
            data_loss, l2 = reference.loss_terms(reference.forward((images,), training=True)[0], labels)
            loss = data_loss + l2
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def run():
        train = make_datasets(problem.dataset, data_dir, problem.batch_size, seed=next(epochs))["train"]
        for images, labels in train.take(steps):
            train_step(images, labels)
    return run


def measure(name: str, steps: int, rounds: int, data_root: Path) -> dict:
    problem = PROBLEMS[name]
    data_dir = data_root / name
    write_binary_files(data_dir, problem.dataset, train_records=(steps + 1) * problem.batch_size)
    loops = {"port": port_loop(problem, data_dir, steps), "reference": reference_loop(problem, data_dir, steps)}
    for loop in loops.values():  # warm-up: tracing, oneDNN primitives, page cache
        loop()
    load_before = os.getloadavg()[0]
    seconds = time_interleaved(loops, rounds, iterations=1)
    median, low, high = bootstrap_median(paired_ratios(seconds["port"], seconds["reference"]))
    examples = steps * problem.batch_size
    return {"problem": name, "batch_size": problem.batch_size, "steps": steps, "rounds": rounds,
            "seconds": seconds, "load_before": load_before, "load_after": os.getloadavg()[0],
            "examples_per_second": {side: examples / float(np.median(values)) for side, values in seconds.items()},
            "port_ratio": [median, low, high]}


def render(rows: list[dict]) -> list[str]:
    lines = ["| problem | batch | steps x rounds | port ex/s | reference ex/s | port/ref [95%] | load |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        speed, (median, low, high) = row["examples_per_second"], row["port_ratio"]
        lines.append(f"| {row['problem']} | {row['batch_size']} | {row['steps']}x{row['rounds']} | "
                     f"{speed['port']:,.0f} | {speed['reference']:,.0f} | {median:.2f} [{low:.2f}, {high:.2f}] | "
                     f"{row['load_before']:.1f}-{row['load_after']:.1f} |")
    return lines


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # no `choices`: Python 3.11's argparse checks an empty nargs="*" positional against them as one value
    parser.add_argument("problems", nargs="*", help=f"any of {', '.join(DEFAULT_STEPS)} (default: both)")
    parser.add_argument("--steps", type=int, help="training steps per round (default: 30 for 3c3d, 5 for WRN)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    unknown = [name for name in args.problems if name not in DEFAULT_STEPS]
    if unknown:
        parser.error(f"no epoch benchmark for {', '.join(unknown)}: choose from {', '.join(DEFAULT_STEPS)}")
    args.problems = args.problems or list(DEFAULT_STEPS)
    return args


def main() -> None:
    args = parse_arguments()
    with tempfile.TemporaryDirectory() as data_root:
        rows = [measure(name, args.steps or DEFAULT_STEPS[name], args.rounds, Path(data_root))
                for name in args.problems]
    if args.json:
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(json.dumps({"datetime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "rows": rows}, indent=1))
        partial.replace(args.json)
    print("\n".join(render(rows)))


if __name__ == "__main__":
    main()
