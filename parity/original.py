"""Run the ORIGINAL DeepOBS data pipelines (the released wheel deepobs==1.1.2, unpacked) in TF 2.21.

The original's files are loaded by path at run time, never copied into this repository, under a private
package name (`_original_deepobs_tf`), so they cannot collide with this repository's `deepobs` package.
Their `import tensorflow as tf` is bound to `tf.compat.v1`, and they run in graph mode, seeded as the
original runner seeds them: `tf.reset_default_graph(); tf.set_random_seed(seed)` before the data set is
built (runners/standard_runner.py), then `train_init_op` / `train_eval_init_op` / `test_init_op` are run
in one session, as the runner's loop runs them.

Where the wheel lives: $DEEPOBS_ORIGINAL (a folder holding the unpacked `deepobs/`), default `.original/`
in the repository (README: "Comparing with the original's own code"). `original_available()` says whether
it is there.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import types
from pathlib import Path
from typing import Iterator

import numpy as np

PACKAGE = "_original_deepobs_tf"
DEFAULT_LOCATION = Path(__file__).resolve().parents[1] / ".original"


def original_root() -> Path:
    return Path(os.environ.get("DEEPOBS_ORIGINAL", DEFAULT_LOCATION)) / "deepobs" / "tensorflow"


def original_available() -> bool:
    return (original_root() / "datasets" / "dataset.py").is_file()


@contextlib.contextmanager
def _tensorflow_as_compat_v1():
    from tf_reference._tf import tf
    saved = sys.modules.get("tensorflow")
    sys.modules["tensorflow"] = tf.compat.v1
    try:
        yield
    finally:
        sys.modules["tensorflow"] = saved


def _load(name: str, path: Path, is_package: bool = False) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if is_package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def original_datasets() -> types.ModuleType:
    """The original's `deepobs.tensorflow.datasets` package (its data set classes), loaded once."""
    if f"{PACKAGE}.datasets" in sys.modules:
        return sys.modules[f"{PACKAGE}.datasets"]
    root = original_root()
    if not original_available():
        raise FileNotFoundError(f"the original DeepOBS wheel is not unpacked at {root.parents[1]} "
                                f"(set DEEPOBS_ORIGINAL)")
    package = types.ModuleType(PACKAGE)  # without running deepobs/tensorflow/__init__.py (testproblems, runners)
    package.__path__ = [str(root)]
    sys.modules[PACKAGE] = package
    with _tensorflow_as_compat_v1():
        package.config = _load(f"{PACKAGE}.config", root / "config.py")
        package.datasets = _load(f"{PACKAGE}.datasets", root / "datasets" / "__init__.py", is_package=True)
    return package.datasets


class OriginalSession:
    """One original data set in its own graph and session, as the runner drives it.

    `epoch(split)` runs the split's init op and fetches `batch` until OutOfRangeError: one epoch, as the
    runner's evaluate() and training loop do. Call epochs in the runner's order to see what it saw.
    """

    def __init__(self, name: str, data_dir: Path | str, batch_size: int, seed: int | None = 42, **options):
        from tf_reference._tf import tf
        datasets = original_datasets()
        sys.modules[f"{PACKAGE}.config"].set_data_dir(str(data_dir))
        self.graph = tf.Graph()
        with self.graph.as_default(), contextlib.redirect_stdout(io.StringIO()):  # its "Extracting ..." lines
            if seed is not None:
                tf.compat.v1.set_random_seed(seed)
            self.dataset = getattr(datasets, name)(batch_size, **options)
            self.session = tf.compat.v1.Session(graph=self.graph)
            self.session.run(tf.compat.v1.global_variables_initializer())
        self.out_of_range = tf.errors.OutOfRangeError

    def init_op(self, split: str):
        return {"train": self.dataset.train_init_op, "train_eval": self.dataset.train_eval_init_op,
                "test": self.dataset.test_init_op, "valid": getattr(self.dataset, "valid_init_op", None)}[split]

    def batches(self, split: str) -> Iterator[tuple[np.ndarray, ...]]:
        self.session.run(self.init_op(split))
        while True:
            try:
                batch = self.session.run(self.dataset.batch)
            except self.out_of_range:
                return
            yield tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)

    def epoch(self, split: str) -> list[tuple[np.ndarray, ...]]:
        return list(self.batches(split))

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "OriginalSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
