"""The DeepOBS runner on the port: train one problem with one optimizer setting, log as the original does.

Semantics transcribed from the original (deepobs 1.1.2: tensorflow/runners/standard_runner.py,
runner_utils.py; v1.2: abstract_runner/abstract_runner.py, pytorch/runners/runner.py):
- evaluation before training and after every epoch (N+1 points) on train_eval, (valid,) test in
  inference mode; a value is the mean over batches of the batch objective (mean loss + L2
  regularizer), and the mean of the batch accuracies;
- every `train_log_interval`-th step of an epoch (the counter restarts each epoch) the mini-batch
  objective, computed before that step's update, goes to `minibatch_train_losses`;
- learning-rate schedule {0: lr, e_i: f_i * lr}: at the start of epoch e_i every parameter group's
  lr becomes f_i * lr (factors multiply the base rate, they do not compound);
- NaN/Inf as v1.2's PyTorch runner: if the last training step of an epoch gave a non-finite loss,
  warn, fill the remaining evaluation points (and one mini-batch loss per missing epoch) with the
  epoch-0 values and stop.
"""
from __future__ import annotations

import ctypes
import dataclasses
import math
import random
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from deepobs import mkl_paths, native, results
from deepobs.datasets import DEFAULT_DATA_DIR, DataError, get_dataset
from deepobs.optimizer_flags import import_optimizer, step_needs_closure
from deepobs.problems import Problem, get_problem

IF_EXISTS = ("error", "skip", "overwrite")


class RunError(ValueError):
    """Settings that cannot run; the message is one line for the user."""


@dataclass(frozen=True)
class RunSettings:
    """Everything that defines one run. Picklable, so a grid can ship it to another process or machine."""

    problem: str
    optimizer: str  # import path of a torch.optim.Optimizer subclass
    learning_rate: float
    hyperparams: dict[str, Any] = field(default_factory=dict)  # the constructor's other keyword arguments
    batch_size: int | None = None  # None: the original's default for the problem
    num_epochs: int | None = None  # likewise
    weight_decay: float | None = None  # None: the problem's own L2 coefficient
    lr_sched_epochs: tuple[int, ...] | None = None
    lr_sched_factors: tuple[float, ...] | None = None
    random_seed: int = 42
    data_dir: Path = DEFAULT_DATA_DIR
    output_dir: Path = Path("results")
    train_log_interval: int = 10
    print_train_iter: bool = False
    no_logs: bool = False
    valid_split: bool = False  # v1.2: carve the valid split out of the train files and evaluate it
    device: str = "auto"
    compile: bool = True  # torch.compile the model (inductor); see build_model
    keep_freed_memory: bool = True  # glibc malloc keeps freed blocks for reuse; see keep_freed_memory
    native_kernels: bool = True  # deepobs.native's C kernels where they apply (bit-identical to aten's)
    if_exists: str = "error"  # a finished result of this setting and seed: error | skip | overwrite

    def resolved(self) -> "RunSettings":
        """Defaults filled from the registry (the original's config.py), inputs checked."""
        problem = get_problem(self.problem)
        batch_size = self.batch_size if self.batch_size is not None else problem.batch_size
        num_epochs = self.num_epochs if self.num_epochs is not None else problem.num_epochs
        for name, value in (("batch size", batch_size), ("number of epochs", num_epochs)):
            if value is None:
                flag = "--bs" if name == "batch size" else "--num-epochs"
                raise RunError(f"the original has no default {name} for {self.problem}; pass {flag}")
        if batch_size < 1 or num_epochs < 0 or self.train_log_interval < 1:
            raise RunError("batch size and train log interval must be positive, epochs non-negative")
        if self.if_exists not in IF_EXISTS:
            raise RunError(f"if_exists must be one of {', '.join(IF_EXISTS)}")
        make_lr_schedule(self.learning_rate, self.lr_sched_epochs, self.lr_sched_factors)
        return dataclasses.replace(self, batch_size=batch_size, num_epochs=num_epochs)

    def setting_dir(self) -> Path:
        optimizer_name = import_optimizer(self.optimizer).__name__
        folder = results.setting_folder_name(self.num_epochs, self.batch_size, self.weight_decay, self.learning_rate,
                                             self.lr_sched_epochs, self.lr_sched_factors, self.hyperparams)
        return Path(self.output_dir) / self.problem / optimizer_name / folder


@dataclass
class History:
    train_losses: list[float] = field(default_factory=list)
    valid_losses: list[float] = field(default_factory=list)
    test_losses: list[float] = field(default_factory=list)
    train_accuracies: list[float] = field(default_factory=list)
    valid_accuracies: list[float] = field(default_factory=list)
    test_accuracies: list[float] = field(default_factory=list)
    minibatch_train_losses: list[float] = field(default_factory=list)
    aborted_after_epoch: int | None = None


@dataclass(frozen=True)
class RunOutcome:
    output: dict | None  # None when skipped
    path: Path | None  # the result file; None with --no-logs or when skipped
    skipped: bool = False


EVAL_SPLITS = {"train_eval": "train", "valid": "valid", "test": "test"}  # data split -> metric prefix


def make_lr_schedule(learning_rate: float, lr_sched_epochs, lr_sched_factors) -> dict[int, float]:
    """runner_utils.make_lr_schedule: {0: lr, e_i: f_i * lr}."""
    if lr_sched_epochs is None and lr_sched_factors is None:
        return {0: learning_rate}
    if lr_sched_epochs is None or lr_sched_factors is None:
        raise RunError("give both --lr-sched-epochs and --lr-sched-factors, or neither")
    if len(lr_sched_epochs) != len(lr_sched_factors):
        raise RunError("--lr-sched-epochs and --lr-sched-factors need the same number of values")
    if any(epoch < 1 for epoch in lr_sched_epochs):
        raise RunError("--lr-sched-epochs must be positive epoch numbers")
    schedule = {int(epoch): factor * learning_rate for epoch, factor in zip(lr_sched_epochs, lr_sched_factors)}
    schedule[0] = learning_rate
    return schedule


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise RunError(f"unknown device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


# The runner's steps that --compile compiles, chosen by measurement (docs/benchmarks.md, "What the runner
# does"): inductor's inference graph of a conv model beats eager oneDNN by 1.2-1.8x after a 10-20 s compile;
# its training graph (forward + AOT backward) ran 0.6x of eager on the same model, so training stays eager.
COMPILED_PHASES = frozenset({"eval"})


@dataclass(frozen=True)
class PhaseModels:
    """The module each step calls: the model itself, or its compiled wrapper (same parameters and state)."""

    model: torch.nn.Module
    train: torch.nn.Module
    eval: torch.nn.Module


def worth_compiling(model: torch.nn.Module) -> bool:
    """Convolutions and their pointwise neighbours are what inductor fuses; dense and recurrent models were
    as fast eager, so they are not made to wait for a compile; nor a model whose eager evaluation runs faster on
    oneDNN's blocked layout (`evaluates_blocked`, while deepobs.native is on)."""
    if getattr(model, "evaluates_blocked", False) and native.is_on():
        return False
    return any(isinstance(module, torch.nn.Conv2d) for module in model.modules())


# glibc's malloc hands every freed block above its mmap threshold back to the OS, so each training step
# faults its activations in again page by page: 70 ms of kernel time per cifar10_3c3d step at batch 128
# here, against 2 ms for the reference, whose allocator keeps its blocks. The threshold at its maximum
# (32 MiB on 64-bit) and trimming off keep them in the heap for the next step; blocks above 32 MiB
# (All-CNN-C's activations at batch 256, up to 100 MB) are kept only if no block is mapped on its own
# (M_MMAP_MAX 0): 1,007 ms of kernel time per All-CNN-C step -> 3 ms (docs/benchmarks.md). The process
# then holds its peak working set until it exits.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD_MAX = 32 << 20
TRIM_THRESHOLD = (1 << 31) - 1


def keep_freed_memory() -> bool:
    """Have glibc keep every freed block in its heap for reuse (process-wide); False where libc is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_MMAP_MAX, 0))
        return all([libc.mallopt(parameter, value) for parameter, value in settings])
    except (OSError, AttributeError):
        return False


def build_model(problem: Problem, device: torch.device, compile: bool) -> PhaseModels:
    """The problem's model on `device` and what the training and evaluation steps call: with `compile`, the
    phases in COMPILED_PHASES go through `torch.compile` (each mode's graph compiles on its first call)."""
    model = problem.model().to(device)
    compiled = torch.compile(model) if compile and worth_compiling(model) else model
    return PhaseModels(model, *(compiled if phase in COMPILED_PHASES else model for phase in ("train", "eval")))


def train_step(problem: Problem, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch,
               weight_decay: float | None, needs_closure: bool) -> torch.Tensor:
    """One optimizer step on `batch` (already on the model's device); returns the objective before the update."""
    def objective():
        optimizer.zero_grad(set_to_none=True)
        loss, _ = problem.batch_loss_and_accuracy(model, batch, weight_decay, with_accuracy=False)
        loss.backward()
        return loss

    if needs_closure:
        return optimizer.step(objective)
    loss = objective()
    optimizer.step()
    return loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_device(batch, device: torch.device):
    return tuple(part.to(device, non_blocking=True) if isinstance(part, torch.Tensor) else part for part in batch)


def reset_carried_state(problem: Problem, model: torch.nn.Module) -> None:
    """A stateful model (the character LSTM) starts every split from the zero state, as each of the
    original's init ops (train, train_eval, test) assigns it."""
    if problem.family.stateful:
        model.reset_state()


@torch.no_grad()
def evaluate(problem: Problem, model: torch.nn.Module, dataset, split: str, weight_decay: float | None,
             device: torch.device) -> tuple[float, float | None]:
    """Mean over the split's batches of the batch objective and of the batch accuracy, in inference mode."""
    model.eval()
    reset_carried_state(problem, model)
    loss_sum, accuracy_sum, count, has_accuracy = 0.0, 0.0, 0, True
    with native.FrozenWeights():  # the weights stay as they are for the whole pass
        for batch in dataset.batches(split):
            loss, accuracy = problem.batch_loss_and_accuracy(model, to_device(batch, device), weight_decay)
            loss_sum += float(loss)
            if accuracy is None:
                has_accuracy = False
            else:
                accuracy_sum += float(accuracy)
            count += 1
    if count == 0:
        raise RunError(f"the {split} split has no full batch of size {dataset.batch_size}")
    return loss_sum / count, (accuracy_sum / count if has_accuracy else None)


def train(settings: RunSettings, log: Callable[[str], None] = print) -> History:
    """The training loop of the original's runner for resolved `settings`; returns the logged metrics."""
    with native.enabled(settings.native_kernels):
        return _train(settings, log)


def _train(settings: RunSettings, log: Callable[[str], None]) -> History:
    problem = get_problem(settings.problem)
    optimizer_class = import_optimizer(settings.optimizer)
    device = pick_device(settings.device)
    seed_everything(settings.random_seed)
    try:
        dataset = get_dataset(problem.dataset, settings.data_dir, settings.batch_size,
                              valid_split=settings.valid_split, seed=settings.random_seed)
    except ValueError as error:  # DataError (missing or corrupt files) passes through with its own message
        if isinstance(error, DataError):
            raise
        raise RunError(str(error)) from None
    if settings.keep_freed_memory:
        keep_freed_memory()
    models = build_model(problem, device, settings.compile)
    model = models.model
    hyperparams = {name: tuple(value) if isinstance(value, list) else value
                   for name, value in settings.hyperparams.items()}
    try:
        optimizer = optimizer_class(model.parameters(), lr=settings.learning_rate, **hyperparams)
    except (TypeError, ValueError) as error:
        raise RunError(f"{optimizer_class.__name__} rejected its arguments: {error}") from None
    needs_closure = step_needs_closure(optimizer_class)
    schedule = make_lr_schedule(settings.learning_rate, settings.lr_sched_epochs, settings.lr_sched_factors)
    eval_splits = [split for split in EVAL_SPLITS if split in dataset.splits]
    history = History()

    for epoch in range(settings.num_epochs + 1):
        log(f"Evaluating after {epoch} of {settings.num_epochs} epochs...")
        for split in eval_splits:
            loss, accuracy = evaluate(problem, models.eval, dataset, split, settings.weight_decay, device)
            prefix = EVAL_SPLITS[split]
            getattr(history, f"{prefix}_losses").append(loss)
            if accuracy is not None:
                getattr(history, f"{prefix}_accuracies").append(accuracy)
            log(f"{prefix.upper()}: loss {loss:g}" + ("" if accuracy is None else f", acc {accuracy:f}"))
        if epoch == settings.num_epochs:
            break

        if epoch in schedule:
            for group in optimizer.param_groups:
                group["lr"] = schedule[epoch]
            if epoch > 0:
                log(f"Setting learning rate to {schedule[epoch]:f}")
        model.train()
        reset_carried_state(problem, model)
        batches = tqdm(dataset.batches("train"), total=dataset.num_batches("train"), disable=None, leave=False,
                       desc=f"epoch {epoch + 1}/{settings.num_epochs}", file=sys.stderr)
        last_loss = None
        for step, batch in enumerate(batches):
            last_loss = train_step(problem, models.train, optimizer, to_device(batch, device), settings.weight_decay,
                                   needs_closure)
            if step % settings.train_log_interval == 0:
                value = float(last_loss.detach())
                history.minibatch_train_losses.append(value)
                batches.set_postfix(loss=f"{value:.4g}", refresh=False)
                if settings.print_train_iter:
                    log(f"Epoch {epoch}, step {step}: loss {value:g}")
        if last_loss is not None and not math.isfinite(float(last_loss.detach())):
            abort(history, epoch, settings.num_epochs)
            break
    return history


def abort(history: History, epoch: int, num_epochs: int) -> None:
    """v1.2's _abort_routine: fill the remaining epochs with the initial values."""
    warnings.warn(f"Breaking from run after epoch {epoch} due to wrongly calibrated optimization (Loss is NaN or "
                  "Inf). The metrics for the remaining epochs will be filled with the initial performance values.",
                  RuntimeWarning, stacklevel=2)
    history.aborted_after_epoch = epoch
    for _ in range(epoch, num_epochs):
        for values in (history.train_losses, history.valid_losses, history.test_losses, history.train_accuracies,
                       history.valid_accuracies, history.test_accuracies, history.minibatch_train_losses):
            if values:
                values.append(values[0])


def build_output(settings: RunSettings, history: History) -> dict:
    """The result JSON: v1.2's keys, v1.1's keys, then the port's own record."""
    optimizer_class = import_optimizer(settings.optimizer)
    metrics = {name: values for name, values in dataclasses.asdict(history).items()
               if name != "aborted_after_epoch" and (values or name in ("minibatch_train_losses",))}
    training_params = {"lr_sched_epochs": _plain(settings.lr_sched_epochs),
                       "lr_sched_factors": _plain(settings.lr_sched_factors)}
    return {
        # v1.2 (abstract_runner._post_process_output)
        "testproblem": settings.problem,
        "batch_size": settings.batch_size,
        "num_epochs": settings.num_epochs,
        "random_seed": settings.random_seed,
        "weight_decay": settings.weight_decay,
        "optimizer_name": optimizer_class.__name__,
        "optimizer_hyperparams": {"lr": settings.learning_rate, **settings.hyperparams},
        "training_params": training_params,
        **metrics,
        # v1.1 (tensorflow/runners/standard_runner.py)
        "optimizer": optimizer_class.__name__,
        "learning_rate": settings.learning_rate,
        **training_params,
        "train_log_interval": settings.train_log_interval,
        "hyperparams": dict(settings.hyperparams),
        # the port
        "deepobs_torch": {
            "optimizer_class": f"{optimizer_class.__module__}.{optimizer_class.__qualname__}",
            "valid_split": settings.valid_split,
            "aborted_after_epoch": history.aborted_after_epoch,
            "torch_version": torch.__version__,
            "device": str(pick_device(settings.device)),
            "compiled": settings.compile,
            "keep_freed_memory": settings.keep_freed_memory,
            "native_kernels": native.status() if settings.native_kernels else "off",
            "mkl": mkl_paths.status(),
        },
    }


def _plain(values):
    return None if values is None else list(values)


def run(settings: RunSettings, log: Callable[[str], None] = print) -> RunOutcome:
    """Resolve defaults, refuse or skip an existing result before training, train, write the result."""
    settings = settings.resolved()
    setting_dir = settings.setting_dir()
    if not settings.no_logs:
        existing = results.existing_results(setting_dir, settings.random_seed)
        if existing and settings.if_exists == "skip":
            log(f"Found output file(s): {existing[0]}; skipping run.")
            return RunOutcome(None, existing[0], skipped=True)
        if existing and settings.if_exists == "error":
            raise results.ResultExistsError(
                f"a result for this setting and seed exists: {existing[0]} (--skip-existing skips, --overwrite replaces)")
    history = train(settings, log)
    output = build_output(settings, history)
    if settings.no_logs:
        return RunOutcome(output, None)
    path = results.write_result(setting_dir, settings.random_seed, output, overwrite=settings.if_exists == "overwrite")
    log(f"Wrote {path}")
    return RunOutcome(output, path)
