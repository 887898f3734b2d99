"""`python -m deepobs grid SPEC`: problems x optimizers x learning rates x seeds, locally or through submitit.

SPEC is a TOML or JSON file:

    problems = ["mnist_logreg", "cifar10_3c3d"]
    seeds = [1, 2, 3]                      # default [42]
    num_epochs = 10                        # optional, any runner setting, for every run:
    batch_size = 128                       #   batch_size, num_epochs, weight_decay, data_dir, output_dir,
    output_dir = "results"                 #   train_log_interval, valid_split, device

    [[optimizers]]
    optimizer = "torch.optim.SGD"
    learning_rates = [0.1, 0.01]
    hyperparams = { momentum = 0.9 }       # optional; also lr_sched_epochs / lr_sched_factors

Every run is a RunSettings that writes into the runner's folder layout. A run whose result exists
is not run again, so an interrupted grid resumes where it stopped (a run cut off mid-way left no
file and is redone). Engines: `local` (default: one run after the other in this process) and
`submitit` (optional extra `pip install -e '.[grid]'`): `--executor slurm` submits a job array
to SLURM, `--executor local` runs each job in its own process on this machine (submitit's
LocalExecutor), `--executor debug` in this process (submitit's DebugExecutor).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from deepobs import results
from deepobs.optimizer_flags import OptimizerError, complete_hyperparams, import_optimizer
from deepobs.runner import RunError, RunSettings, run

COMMON_KEYS = {"batch_size", "num_epochs", "weight_decay", "data_dir", "output_dir", "train_log_interval",
               "valid_split", "device"}
OPTIMIZER_KEYS = {"optimizer", "learning_rates", "hyperparams", "lr_sched_epochs", "lr_sched_factors"}
EXECUTORS = ("local", "slurm", "debug")


class GridError(ValueError):
    """A spec or engine problem; the message is one line for the user."""


def read_spec(path: Path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise GridError(f"cannot read grid spec {path}: {error.strerror}") from None
    try:
        return tomllib.loads(text) if Path(path).suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise GridError(f"grid spec {path} is not valid {'TOML' if Path(path).suffix == '.toml' else 'JSON'}: "
                        f"{error}") from None


def expand(spec: dict) -> list[RunSettings]:
    """The grid's runs, in problem, optimizer, learning rate, seed order."""
    if unknown := sorted(set(spec) - COMMON_KEYS - {"problems", "seeds", "optimizers"}):
        raise GridError(f"unknown grid spec key(s) {', '.join(unknown)}; allowed: problems, seeds, optimizers, "
                        f"{', '.join(sorted(COMMON_KEYS))}")
    problems, seeds, optimizers = spec.get("problems"), spec.get("seeds", [42]), spec.get("optimizers")
    if not problems or not optimizers or not seeds:
        raise GridError("a grid spec needs non-empty 'problems' and 'optimizers' (and 'seeds', default [42])")
    common = {key: spec[key] for key in COMMON_KEYS if key in spec}
    for key in ("data_dir", "output_dir"):
        if key in common:
            common[key] = Path(common[key])
    runs = []
    for problem, entry in itertools.product(problems, optimizers):
        if unknown := sorted(set(entry) - OPTIMIZER_KEYS):
            raise GridError(f"unknown optimizer entry key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(OPTIMIZER_KEYS))}")
        if "optimizer" not in entry or not entry.get("learning_rates"):
            raise GridError("every optimizer entry needs 'optimizer' and non-empty 'learning_rates'")
        hyperparams = complete_hyperparams(import_optimizer(entry["optimizer"]), entry.get("hyperparams", {}))
        schedule = {key: tuple(entry[key]) if entry.get(key) is not None else None
                    for key in ("lr_sched_epochs", "lr_sched_factors")}
        for learning_rate, seed in itertools.product(entry["learning_rates"], seeds):
            runs.append(RunSettings(problem=problem, optimizer=entry["optimizer"], learning_rate=float(learning_rate),
                                    hyperparams=hyperparams, random_seed=int(seed), if_exists="skip",
                                    **schedule, **common).resolved())
    return runs


def is_done(settings: RunSettings) -> bool:
    return bool(results.existing_results(settings.setting_dir(), settings.random_seed))


def run_one(settings: RunSettings) -> str:
    """One grid job (a top-level function, so submitit can pickle it): the result file's path."""
    outcome = run(settings, log=lambda line: None)
    return str(outcome.path)


def describe(settings: RunSettings) -> str:
    return (f"{settings.problem} {settings.optimizer.rsplit('.', 1)[-1]} lr {settings.learning_rate:g} "
            f"seed {settings.random_seed}")


@dataclass
class GridReport:
    total: int
    skipped: int  # finished before this invocation
    finished: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)  # "run: error"


def run_local(todo: list[RunSettings], report: GridReport, log: Callable[[str], None]) -> None:
    for index, settings in enumerate(todo, 1):
        log(f"[{index}/{len(todo)}] {describe(settings)}")
        try:
            report.finished.append(run_one(settings))
        except (RunError, OptimizerError, OSError, ValueError) as error:
            report.failed.append(f"{describe(settings)}: {error}")


def make_executor(kind: str, log_dir: Path, timeout_min: float, parameters: dict[str, Any]):
    try:
        import submitit
    except ImportError:
        raise GridError("the submitit engine needs submitit: pip install -e '.[grid]'") from None
    if kind == "debug":
        executor = submitit.DebugExecutor(folder=log_dir)
    elif kind == "local":
        executor = submitit.LocalExecutor(folder=log_dir)
    else:
        executor = submitit.AutoExecutor(folder=log_dir, cluster="slurm")
    executor.update_parameters(timeout_min=timeout_min, **parameters)
    return executor


def run_submitit(todo: list[RunSettings], report: GridReport, log: Callable[[str], None], executor_kind: str,
                 log_dir: Path, max_parallel: int, timeout_min: float, parameters: dict[str, Any]) -> None:
    """SLURM: one job array, at most `max_parallel` running at once. Local and debug executors: waves of
    `max_parallel` jobs (submitit's LocalExecutor starts every submitted job at once)."""
    if executor_kind == "slurm":
        parameters = {"slurm_array_parallelism": max_parallel, **parameters}
        waves = [todo]
    else:
        waves = [todo[start:start + max_parallel] for start in range(0, len(todo), max_parallel)]
    executor = make_executor(executor_kind, log_dir, timeout_min, parameters)
    for wave in waves:
        jobs = executor.map_array(run_one, wave)
        log(f"submitted {len(jobs)} job(s) ({executor_kind}); logs in {log_dir}")
        for settings, job in zip(wave, jobs):
            try:
                report.finished.append(job.result())
                log(f"done {describe(settings)} (job {job.job_id})")
            except Exception as error:  # submitit re-raises the job's failure here; the grid goes on
                report.failed.append(f"{describe(settings)} (job {job.job_id}): {str(error).strip().splitlines()[-1]}")


def run_grid(spec_path: Path, engine: str = "local", executor_kind: str = "local", log_dir: Path = Path("grid-logs"),
             max_parallel: int = 1, timeout_min: float = 60 * 24, parameters: dict | None = None,
             log: Callable[[str], None] = print) -> GridReport:
    runs = expand(read_spec(spec_path))
    if engine == "submitit" and any(Path(log_dir).resolve().is_relative_to(Path(r.output_dir).resolve()) for r in runs):
        raise GridError(f"--log-dir {log_dir} is inside the results folder; the analyzer would read it as a problem")
    todo = [settings for settings in runs if not is_done(settings)]
    report = GridReport(total=len(runs), skipped=len(runs) - len(todo))
    log(f"grid: {len(runs)} run(s), {report.skipped} already finished, {len(todo)} to run ({engine})")
    start = time.perf_counter()
    if engine == "local":
        run_local(todo, report, log)
    elif engine == "submitit":
        if executor_kind not in EXECUTORS:
            raise GridError(f"unknown executor {executor_kind!r}; valid: {', '.join(EXECUTORS)}")
        run_submitit(todo, report, log, executor_kind, Path(log_dir), max_parallel, timeout_min, parameters or {})
    else:
        raise GridError(f"unknown engine {engine!r}; valid: local, submitit")
    log(f"grid: {len(report.finished)} finished, {report.skipped} skipped, {len(report.failed)} failed "
        f"({time.perf_counter() - start:.0f} s)")
    for failure in report.failed:
        log(f"  FAILED {failure}")
    return report
