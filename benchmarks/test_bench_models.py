"""Examples/s of every registered problem: the port as the runner runs it against the reference (TF, tf.function).

For each problem and phase, on one fixed float32 batch at the original's default batch size (128 where
it has none), drawn as the problem family declares its inputs and targets (the audit's `make_batches`:
the same numbers in both; NCHW for torch, NHWC for TF):
- eval:  the inference forward pass (torch: model.eval() under no_grad; TF: training=False);
- train: the runner's training step (`deepobs.runner.train_step`: zero_grad, mean loss + L2, backward,
         step) with torch.optim.SGD(momentum=0.9), against forward, loss, gradients and
         tf.compat.v1.train.MomentumOptimizer in one tf.function.
Three columns, timed interleaved round by round (benchmarks/stats.py) so the machine's drift cancels:
- port:      the step as the runner runs it by default (`deepobs.runner.build_model` with RunSettings.compile:
             compiled where runner.COMPILED_PHASES and runner.worth_compiling say so);
- eager:     the same with compile=False;
- reference: tf_reference in tf.function.
The verdict per row is the median over rounds of the paired ratio port/reference with a bootstrap 95%
interval. Stateful models (the character LSTM) carry their state from one call to the next, as in training.
Warm-up is excluded (the first calls trace, compile and create optimizer slots; then untimed rounds until no
call faults fresh memory in, benchmarks.stats.settle); the port's compile time and its break-even in steps
against eager are recorded. The deep problems (VGG at 224x224, Inception v3,
WRN-40-4) carry the `deep` marker: `tox -e bench` leaves them out, `tox -e bench-deep` runs them.

Run: tox -e bench (see docs/benchmarks.md), or
    python -m pytest benchmarks/test_bench_models.py -m "benchmark and not deep" --bench-json=out.json
    python -m benchmarks.table out.json
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from benchmarks.stats import bootstrap_median, paired_ratios, plan, settle, time_interleaved
from deepobs import native, runner
from deepobs.optim import OPTIMIZERS
from deepobs.problems import PROBLEMS
from parity.audit import DEEP_PROBLEMS, make_batches
from parity.checks import reference_targets
from tf_reference import REFERENCE_PROBLEMS, ReferenceProblem
from tf_reference._tf import tf  # after conftest.py has pinned TF's threads
from tf_reference.optimizers import make_optimizer

pytestmark = pytest.mark.benchmark

DTYPE = "float32"
DEFAULT_BATCH_SIZE = 128  # where the original has no default
LEARNING_RATE = 1e-3  # small enough that the timed steps on one batch neither diverge nor reach denormals
PHASES = ("eval", "train")
PORT, EAGER, REFERENCE = "port", "eager", "reference"
TARGET_SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))  # timed seconds per column and row
MIN_ROUNDS, MAX_ROUNDS = 5, 21  # five paired rounds are the fewest that give the median an interval
DEEP_ROUNDS = int(os.environ.get("BENCH_DEEP_ROUNDS", "3"))  # a deep default-batch step takes tens of seconds here
MIN_ROUND_SECONDS = 0.02  # sub-20 ms steps repeat within a round
# Below this, a round opens with an untimed call (benchmarks.stats.time_interleaved): the other framework's
# threads spin ~6 ms after its call, 1% of a 0.6 s All-CNN-C evaluation (not seen there) and less above.
LEAD_IN_BELOW_SECONDS = 1.0


# The deep rows' batch when BENCH_DEEP_BATCH is set (the table states it): at 128, a VGG step at 224x224
# takes about a minute per framework here and the run needs ~20 GB.
DEEP_BATCH_SIZE = int(os.environ.get("BENCH_DEEP_BATCH", "0")) or None


def batch_size(problem) -> int:
    if problem.name in DEEP_PROBLEMS and DEEP_BATCH_SIZE:
        return DEEP_BATCH_SIZE
    return problem.batch_size or DEFAULT_BATCH_SIZE


def fixed_batch(problem, size: int):
    """One audit-style batch (parity.checks.Batch): reference layouts, converted per framework below."""
    return make_batches(REFERENCE_PROBLEMS[problem.name], DTYPE, seed=0, batch_size=size, count=1)[0]


def runner_batch(problem, inputs: tuple, targets) -> tuple:
    """The batch as the port's data sets yield it (what `Family.split_batch` takes apart)."""
    if len(inputs) == 2:  # the 2-D functions: (x, y)
        return inputs
    if problem.family.targets in ("inputs", "none"):
        return inputs[0], None
    return inputs[0], targets


def torch_step(problem, phase: str, batch, compile: bool):
    torch.manual_seed(0)
    models = runner.build_model(problem, torch.device("cpu"), compile=compile)
    inputs, targets = batch.port_inputs(torch.float32), batch.port_targets(torch.float32)
    if phase == "eval":
        model = models.eval.eval()
        frozen = native.FrozenWeights()  # as in the runner's evaluation pass: dense weights reordered once

        def step():
            with torch.no_grad(), frozen:
                return model(*inputs)
        return step

    model = models.train.train()
    optimizer = OPTIMIZERS["momentum"](models.model.parameters(), LEARNING_RATE)
    data = runner_batch(problem, inputs, targets)
    return lambda: runner.train_step(problem, model, optimizer, data, None, needs_closure=False)


def tf_step(problem, phase: str, batch):
    reference = ReferenceProblem(problem.name, tf.float32, seed=0)
    inputs = tuple(tf.constant(x) for x in batch.inputs)
    targets = reference_targets(batch)
    targets = tf.constant(targets) if targets is not None else None
    if phase == "eval":
        forward = tf.function(lambda *x: reference.forward(x, training=False)[0])
        return lambda: forward(*inputs)

    variables = list(reference.graph.trainable_variables.values())
    optimizer = make_optimizer("momentum", LEARNING_RATE, tf.float32)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            data_loss, l2 = reference.loss_terms(reference.forward(x, training=True)[0], y)
            loss = data_loss + l2
        # The TF1 optimizer creates its momentum slots on the first trace, then reuses them.
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss
    return lambda: train_step(inputs, targets)


def warm_seconds(step, calls: int = 2) -> float:
    """Seconds of the first `calls` calls: tracing, compiling, optimizer state, oneDNN primitive caches."""
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return time.perf_counter() - start


def one_call_seconds(step) -> float:
    start = time.perf_counter()
    step()
    return max(time.perf_counter() - start, 1e-6)


def rounds_calls_lead_in(seconds_per_call: float, deep: bool) -> tuple[int, int, int]:
    """~TARGET_SECONDS of timed work per column (benchmarks.stats.plan), each round opened by one untimed call
    where the other framework's spinning threads (a few ms) would weigh; a deep step, DEEP_ROUNDS of one call."""
    if deep:
        return DEEP_ROUNDS, 1, 0
    rounds, calls = plan(seconds_per_call, TARGET_SECONDS, MIN_ROUNDS, MAX_ROUNDS, MIN_ROUND_SECONDS)
    return rounds, calls, int(seconds_per_call < LEAD_IN_BELOW_SECONDS)


def summarise(seconds: dict[str, list[float]], size: int) -> dict:
    """Per column: median seconds per step and examples/s; ratios against the reference with intervals."""
    median = {name: sorted(values)[len(values) // 2] for name, values in seconds.items()}
    summary = {"seconds": seconds, "examples_per_second": {name: size / value for name, value in median.items()}}
    for name in (PORT, EAGER):
        summary[f"{name}_ratio"] = bootstrap_median(paired_ratios(seconds[name], seconds[REFERENCE]))
    return summary


def break_even_steps(compile_seconds: float, eager_seconds: float, port_seconds: float) -> float | None:
    """Steps after which the compiled model has paid back its compile time; None if it never does."""
    saved = eager_seconds - port_seconds
    return compile_seconds / saved if saved > 0 else None


def _params(names):
    return [pytest.param(name, marks=pytest.mark.deep) if name in DEEP_PROBLEMS else name for name in names]


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("problem_name", _params(PROBLEMS))
def test_throughput(bench_results, foreign_load, thread_settings, problem_name, phase):
    problem = PROBLEMS[problem_name]
    size = batch_size(problem)
    batch = fixed_batch(problem, size)
    if runner.RunSettings.keep_freed_memory:  # as the runner sets its process up (both columns share the process)
        runner.keep_freed_memory()
    compiled = (runner.RunSettings.compile and phase in runner.COMPILED_PHASES
                and runner.worth_compiling(problem.model()))
    steps = {PORT: torch_step(problem, phase, batch, compile=compiled),
             EAGER: torch_step(problem, phase, batch, compile=False),
             REFERENCE: tf_step(problem, phase, batch)}
    warm = {name: warm_seconds(step) for name, step in steps.items()}
    settling = settle(steps)  # the shared heap grown to hold every column's step: no page faults timed
    rounds, iterations, lead_in = rounds_calls_lead_in(one_call_seconds(steps[EAGER]), problem_name in DEEP_PROBLEMS)
    record = {"problem": problem_name, "phase": phase, "batch_size": size, "dtype": DTYPE,
              "port_compiled": compiled, "rounds": rounds, "iterations": iterations, "lead_in": lead_in,
              "load_before": os.getloadavg()[0]}
    with foreign_load(record):
        seconds = time_interleaved(steps, rounds, iterations, lead_in)
    record["load_after"] = os.getloadavg()[0]
    record.update(summarise(seconds, size))
    eager_s, port_s = (sorted(seconds[name])[rounds // 2] for name in (EAGER, PORT))
    record["port_warm_seconds"] = warm[PORT]
    record["settle_faults"] = settling
    record["compile_seconds"] = max(warm[PORT] - 2 * eager_s, 0.0) if compiled else 0.0
    record["break_even_steps"] = break_even_steps(record["compile_seconds"], eager_s, port_s) if compiled else None
    bench_results.append(record)
