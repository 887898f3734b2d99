"""Result files in the original's layout, readable by its analyzer (deepobs 1.1.2) as its own.

Layout (the v1.1 TF runner's `runner_utils.make_run_name`, which the 1.1.2 release writes):
    OUTPUT_DIR/PROBLEM/OPTIMIZER_CLASS/num_epochs__N__batch_size__B__[weight_decay__X__]{hp__value__}lr__X
    .../random_seed__S__YYYY-MM-DD-HH-MM-SS.json
with `lr_schedule__0_X_E1_Y...` (absolute learning rates) in place of `lr__X` under a schedule.
The JSON carries the v1.1 keys (`optimizer`, `learning_rate`, `hyperparams`, ...) and the v1.2 keys
(`optimizer_name`, `optimizer_hyperparams`, `training_params`, ...), so both analyzers read it.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from deepobs.files import _umask


class ResultExistsError(FileExistsError):
    def __str__(self) -> str:
        return self.args[0]


def float2str(x: float) -> str:
    """The original's float2str: 10-digit scientific notation, trailing mantissa zeros stripped (0.01 -> 1.e-02).
    inf and nan, on which the original's would fail, are written as such."""
    if not math.isfinite(x):
        return str(x)
    mantissa, exponent = f"{x:.10e}".split("e")
    return mantissa.rstrip("0") + "e" + exponent


def format_value(value: Any) -> str:
    """A hyperparameter as it appears in a folder name: floats as float2str, sequences joined by '_'
    (the original would write str(tuple), with spaces and parentheses), everything else as str()."""
    if isinstance(value, float):
        return float2str(value)
    if isinstance(value, (tuple, list)):
        return "_".join(format_value(item) for item in value)
    return str(value)


def setting_folder_name(num_epochs: int, batch_size: int, weight_decay: float | None, learning_rate: float,
                        lr_sched_epochs: Sequence[int] | None, lr_sched_factors: Sequence[float] | None,
                        hyperparams: dict[str, Any]) -> str:
    """make_run_name of the original's runner_utils.py; `hyperparams` excludes the learning rate."""
    name = f"num_epochs__{num_epochs}__batch_size__{batch_size}__"
    if weight_decay is not None:
        name += f"weight_decay__{float2str(weight_decay)}__"
    for hp_name, hp_value in sorted(hyperparams.items()):
        name += f"{hp_name}__{format_value(hp_value)}__"
    if lr_sched_epochs is None:
        return name + f"lr__{float2str(learning_rate)}"
    name += f"lr_schedule__0_{float2str(learning_rate)}"
    for epoch, factor in zip(lr_sched_epochs, lr_sched_factors):
        name += f"_{epoch}_{float2str(factor * learning_rate)}"
    return name


def seed_prefix(random_seed: int) -> str:
    return f"random_seed__{random_seed}__"


def result_file_name(random_seed: int, timestamp: float | None = None) -> str:
    return seed_prefix(random_seed) + time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(timestamp)) + ".json"


def existing_results(setting_dir: Path, random_seed: int) -> list[Path]:
    """Finished results of this setting and seed (the original's `run_exists` glob)."""
    return sorted(setting_dir.glob(seed_prefix(random_seed) + "*.json")) if setting_dir.is_dir() else []


def write_result(setting_dir: Path, random_seed: int, output: dict, overwrite: bool = False) -> Path:
    """Write the JSON atomically (a complete file or none) and never over a finished result of the same seed
    unless `overwrite`, in which case the older ones are removed once the new one is in place.

    The temporary file's name holds no "json": the v1.2 analyzer counts every name containing it as a run.
    """
    setting_dir.mkdir(parents=True, exist_ok=True)
    previous = existing_results(setting_dir, random_seed)
    if previous and not overwrite:
        raise ResultExistsError(f"a result for this setting and seed exists: {previous[0]}")
    text = json.dumps(output, indent=4, allow_nan=True)
    handle, temporary = tempfile.mkstemp(dir=setting_dir, prefix=".partial-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
        timestamp = time.time()
        while True:
            target = setting_dir / result_file_name(random_seed, timestamp)
            try:
                _publish(temporary, target)
                break
            except FileExistsError:
                if not overwrite:
                    raise ResultExistsError(f"a result for this setting and seed exists: {target}") from None
                timestamp += 1.0
    finally:
        os.unlink(temporary)
    for old in previous:
        if old != target:
            old.unlink(missing_ok=True)
    return target


def _publish(temporary: str, target: Path) -> None:
    """Give the complete file its final name, failing with FileExistsError if the name is taken (also
    between processes): a hard link; where the file system has none, an exclusive create reserves the
    name and a rename fills it in one step."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise
    except OSError:
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        shutil.copyfile(temporary, f"{temporary}.publish")
        os.replace(f"{temporary}.publish", target)


def load_result(path: Path) -> dict:
    with open(path) as stream:
        return json.load(stream)

