"""Trajectory parity: N training steps of the port against the reference, judged against a round-off envelope.

Three runs start from the same weights (the reference's own initialisation, float32) and take the
same steps on the same batch sequence (real batches from the port's data pipeline, which the
pipeline audit matches to the original's), with the same dropout draws at each step:
    reference float32, reference float64   (two correct runs that differ only in round-off)
    port float32                           (under audit)
After every step t the divergence of the port from the reference float32 run, in the loss (before the
update, relative) and in the trainable parameters (relative L2 over all of them), is compared with
the envelope: the largest divergence of the two correct runs up to step t. Training amplifies
round-off (ReLU kinks, BN statistics, Adam's 1/sqrt(v)), so the envelope grows with t; a port
that computes something else leaves it, and the report names the step where it left.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from parity.dropout import NoiseRecorder, injected_noise
from parity.frameworks import TORCH_DTYPES, assign, load_tensorflow
from parity.porting import port_tensors, port_to_reference, to_port_values, load_port_values

tf = load_tensorflow()

OPTIMIZER_KINDS = ("sgd", "momentum", "adam")
LEARNING_RATES = {"sgd": 0.01, "momentum": 0.01, "adam": 1e-3}
BATCH_SIZE = 16
# The port may diverge ENVELOPE_FACTOR times as far as round-off alone does, and never less than the
# floor (float32 resolution, for the first steps where the two correct runs happen to agree exactly).
ENVELOPE_FACTOR = 10.0
FLOORS = {"loss": 1e-6, "params": 1e-7}
QUANTITIES = ("loss", "params")


@dataclass
class TrajectoryResult:
    problem: str
    optimizer: str
    learning_rate: float
    steps: int
    batch_size: int
    port_lr_factor: float
    reference_losses: list[float] = field(default_factory=list)  # reference float32, before each update
    port_losses: list[float] = field(default_factory=list)
    divergence: dict[str, list[float]] = field(default_factory=lambda: {q: [] for q in QUANTITIES})
    envelope: dict[str, list[float]] = field(default_factory=lambda: {q: [] for q in QUANTITIES})  # running max
    left_envelope: dict[str, int | None] = field(default_factory=dict)  # first step outside, per quantity
    seconds: float = 0.0

    def allowed(self, quantity: str) -> np.ndarray:
        return ENVELOPE_FACTOR * np.maximum(np.array(self.envelope[quantity]), FLOORS[quantity])

    def judge(self) -> None:
        for quantity in QUANTITIES:
            outside = np.nonzero(np.array(self.divergence[quantity]) > self.allowed(quantity))[0]
            self.left_envelope[quantity] = int(outside[0]) + 1 if outside.size else None

    @property
    def passed(self) -> bool:
        return all(step is None for step in self.left_envelope.values())

    @property
    def first_exit(self) -> tuple[int, str] | None:
        exits = [(step, quantity) for quantity, step in self.left_envelope.items() if step is not None]
        return min(exits) if exits else None

    def margin(self) -> float:
        """The smallest allowed/divergence ratio over all steps and quantities (>1 passes)."""
        ratios = [np.min(self.allowed(q) / np.maximum(np.array(self.divergence[q]), 1e-300)) for q in QUANTITIES]
        return float(min(ratios))

    def summary(self) -> str:
        head = f"{self.problem} {self.optimizer} (lr {self.learning_rate:g}, {self.steps} steps, batch {self.batch_size})"
        if self.passed:
            return f"PASS {head}: inside {ENVELOPE_FACTOR:g}x the round-off envelope, margin {self.margin():.1f}x"
        step, quantity = self.first_exit
        index = step - 1
        return (f"FAIL {head}: {quantity} left the envelope at step {step} (divergence "
                f"{self.divergence[quantity][index]:.2e} > allowed {self.allowed(quantity)[index]:.2e})")


def batch_stream(problem: str, data_dir: Path, batch_size: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Training batches from the port's pipeline, epoch after epoch: (images NHWC float32, int labels)."""
    from deepobs.datasets import get_dataset
    from deepobs.problems import get_problem

    dataset = get_dataset(get_problem(problem).dataset, data_dir, batch_size, seed=seed)
    while True:
        for images, labels in dataset.batches("train"):
            images = images.numpy()
            yield (images.transpose(0, 2, 3, 1) if images.ndim == 4 else images), labels.numpy()


class ReferenceRun:
    def __init__(self, problem: str, dtype: str, initial: dict[str, np.ndarray], kind: str, learning_rate: float):
        from tf_reference import ReferenceProblem
        from tf_reference.optimizers import make_optimizer

        self.reference = ReferenceProblem(problem, getattr(tf, dtype))
        for name, variable in self.reference.graph.variables.items():
            assign(variable, initial[name])  # cast to the run's dtype on the way
        self.dtype = dtype
        self.optimizer = make_optimizer(kind, learning_rate, self.reference.dtype)

    def step(self, images_nhwc: np.ndarray, labels: np.ndarray, noise_seed: int) -> tuple[float, list]:
        variables = self.reference.graph.trainable_variables
        noise = NoiseRecorder(noise_seed)
        with tf.GradientTape() as tape:
            logits, _ = self.reference.forward((images_nhwc.astype(self.dtype),), True, noise)
            data_loss, l2 = self.reference.loss_terms(logits, labels)
            total = data_loss + l2
        gradients = tape.gradient(total, list(variables.values()))
        self.optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables.values()) if g is not None])
        return float(total.numpy()), noise.draws

    def params(self) -> dict[str, np.ndarray]:
        return {name: v.numpy().astype(np.float64) for name, v in self.reference.graph.trainable_variables.items()}


class PortRun:
    def __init__(self, port, problem: str, initial: dict[str, np.ndarray], kind: str, learning_rate: float,
                 reference_shapes: dict[str, tuple], trainable: list[str]):
        self.port, self.problem = port, problem
        self.model = port.build_model(problem).to(TORCH_DTYPES["float32"])
        self.map = port.weight_maps[problem]
        load_port_values(self.model, to_port_values(initial, self.model, self.map))
        rows = self.map.rows_for_reference()
        tensors = port_tensors(self.model)
        self.optimizer = port.optimizers[kind]([tensors[row.port] for name in trainable for row in rows[name]],
                                               learning_rate)
        self.reference_shapes, self.trainable = reference_shapes, trainable

    def step(self, images_nhwc: np.ndarray, labels: np.ndarray, draws: list) -> float:
        images = images_nhwc.transpose(0, 3, 1, 2) if images_nhwc.ndim == 4 else images_nhwc
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with injected_noise(draws):
            logits = self.model(torch.from_numpy(images).float().clone(memory_format=torch.contiguous_format))
        data_loss, l2 = self.port.loss_terms(self.problem, self.model, logits, torch.from_numpy(labels).long())
        total = data_loss + l2
        total.backward()
        self.optimizer.step()
        return float(total.detach())

    def params(self) -> dict[str, np.ndarray]:
        values = port_to_reference(self.model, self.reference_shapes, self.map)
        return {name: values[name].astype(np.float64) for name in self.trainable}


def relative_distance(values: dict[str, np.ndarray], baseline: dict[str, np.ndarray]) -> float:
    difference = sum(float(np.sum((values[name] - baseline[name]) ** 2)) for name in baseline)
    scale = sum(float(np.sum(baseline[name] ** 2)) for name in baseline)
    return float(np.sqrt(difference / scale))


def relative_gap(value: float, baseline: float) -> float:
    return abs(value - baseline) / max(abs(baseline), 1e-30)


def run_trajectory(problem: str, kind: str, steps: int, data_dir: Path, port=None, learning_rate: float | None = None,
                   batch_size: int = BATCH_SIZE, seed: int = 0, port_lr_factor: float = 1.0,
                   progress=None) -> TrajectoryResult:
    """`port_lr_factor` scales the port's learning rate: a planted drift, to see the check catch one."""
    from parity.port import deepobs_port
    from tf_reference import ReferenceProblem

    port = port or deepobs_port()
    learning_rate = LEARNING_RATES[kind] if learning_rate is None else learning_rate
    start = time.perf_counter()
    initial_problem = ReferenceProblem(problem, tf.float32, seed)
    initial = {name: v.numpy() for name, v in initial_problem.graph.variables.items()}
    shapes = {name: tuple(v.shape) for name, v in initial_problem.graph.variables.items()}
    trainable = list(initial_problem.graph.trainable_variables)
    reference32 = ReferenceRun(problem, "float32", initial, kind, learning_rate)
    reference64 = ReferenceRun(problem, "float64", initial, kind, learning_rate)
    port_run = PortRun(port, problem, initial, kind, learning_rate * port_lr_factor, shapes, trainable)
    result = TrajectoryResult(problem, kind, learning_rate, steps, batch_size, port_lr_factor)
    batches = batch_stream(problem, data_dir, batch_size, seed)
    for step in range(1, steps + 1):
        images, labels = next(batches)
        loss32, draws = reference32.step(images, labels, seed * 100003 + step)
        loss64, _ = reference64.step(images, labels, seed * 100003 + step)
        port_loss = port_run.step(images, labels, draws)
        params32 = reference32.params()
        result.reference_losses.append(loss32)
        result.port_losses.append(port_loss)
        result.divergence["loss"].append(relative_gap(port_loss, loss32))
        result.divergence["params"].append(relative_distance(port_run.params(), params32))
        for quantity, value in (("loss", relative_gap(loss32, loss64)),
                                ("params", relative_distance(params32, reference64.params()))):
            previous = result.envelope[quantity][-1] if result.envelope[quantity] else 0.0
            result.envelope[quantity].append(max(previous, value))
        if progress and step % 50 == 0:
            progress(f"  {problem} {kind}: step {step}/{steps}")
    result.seconds = time.perf_counter() - start
    result.judge()
    return result


def plot(result: TrajectoryResult, path: Path) -> Path | None:
    """Loss curves and divergence against the allowed envelope; None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, result.steps + 1)
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.6), layout="constrained")
    axes[0].plot(steps, result.reference_losses, label="reference float32")
    axes[0].plot(steps, result.port_losses, "--", label="port float32")
    axes[0].set_title("training loss (before each update)")
    axes[0].legend(fontsize="small")
    for axis, quantity in zip(axes[1:], QUANTITIES):
        axis.fill_between(steps, 1e-16, result.allowed(quantity), alpha=0.2, color="tab:green",
                          label=f"allowed ({ENVELOPE_FACTOR:g}x envelope)")
        axis.plot(steps, np.maximum(result.envelope[quantity], 1e-16), color="tab:green",
                  label="envelope (float32 vs float64)")
        axis.plot(steps, np.maximum(result.divergence[quantity], 1e-16), color="tab:red", label="port vs reference")
        if result.left_envelope.get(quantity):
            axis.axvline(result.left_envelope[quantity], color="black", linestyle=":", label="left the envelope")
        axis.set_yscale("log")
        axis.set_title(f"relative divergence: {quantity}")
        axis.set_xlabel("step")
        axis.legend(fontsize="small")
    figure.suptitle(result.summary(), fontsize="small")
    from deepobs.files import atomic_output

    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
    return path


def write_report(results: list[TrajectoryResult], report_dir: Path) -> list[Path]:
    from deepobs.files import atomic_write_text

    report_dir.mkdir(parents=True, exist_ok=True)
    written = []
    lines = ["# Trajectory parity: " + ("PASSED" if all(r.passed for r in results) else "FAILED"), "",
             f"Port float32 against reference float32; envelope: reference float32 against float64 (running max); "
             f"allowed: {ENVELOPE_FACTOR:g}x the envelope, floors {FLOORS}.", "",
             "| problem | optimizer | lr | steps | verdict | margin | left at step | seconds | plot |",
             "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        stem = f"trajectory-{result.problem}-{result.optimizer}"
        figure = plot(result, report_dir / f"{stem}.png")
        if figure:
            written.append(figure)
        exit_ = result.first_exit
        lines.append(f"| {result.problem} | {result.optimizer} | {result.learning_rate:g} | {result.steps} | "
                     f"{'pass' if result.passed else 'FAIL'} | {result.margin():.2f}x | "
                     f"{'' if exit_ is None else f'{exit_[0]} ({exit_[1]})'} | {result.seconds:.0f} | "
                     f"{f'![]({figure.name})' if figure else 'matplotlib missing'} |")
    atomic_write_text(report_dir / "trajectory-report.md", "\n".join(lines) + "\n")
    atomic_write_text(report_dir / "trajectory-report.json",
                 json.dumps([asdict(r) | {"passed": r.passed} for r in results], indent=1))
    return written + [report_dir / "trajectory-report.md", report_dir / "trajectory-report.json"]
