"""Examples/s of every registered problem: the port (torch eager) against the reference (TF, tf.function).

For each problem, framework and phase, on one fixed float32 batch drawn as the problem family declares
its inputs and targets (the audit's `make_batches`: the same numbers in both; NCHW for torch, NHWC for
TF, each framework's own layout):
- eval:  the inference forward pass (torch: model.eval() under no_grad; TF: training=False);
- train: forward in train mode, the problem's mean loss + L2, backward, and a momentum-SGD step
         (torch.optim.SGD(momentum=0.9) / tf.compat.v1.train.MomentumOptimizer).
Stateful models (the character LSTM) carry their state from one timed call to the next, as in training.
Conditions (see conftest.py): the same intra/inter-op threads for both frameworks; warm-up excluded
(two untimed calls, which trace the tf.function and create optimizer slots, then pytest-benchmark's
warm-up round); the batch is the problem's default (128 where it has none), capped by BATCH_CAPS.
A third column, torch.compile (inductor) of the model, runs with BENCH_TORCH_COMPILE=1.

Run: tox -e bench, or .venv/bin/python -m pytest benchmarks/test_bench_models.py --benchmark-json=out.json
then python benchmarks/table.py out.json.
"""
from __future__ import annotations

import math
import os
import time

import pytest
import torch

from deepobs.optim import OPTIMIZERS
from deepobs.problems import PROBLEMS
from parity.audit import make_batches
from parity.checks import reference_targets
from tf_reference import REFERENCE_PROBLEMS, ReferenceProblem
from tf_reference._tf import tf  # after conftest.py has pinned TF's threads
from tf_reference.optimizers import make_optimizer

pytestmark = pytest.mark.benchmark

DTYPE = "float32"
DEFAULT_BATCH_SIZE = 128  # where the original has no default
LEARNING_RATE = 1e-3  # small enough that 100 steps on one batch neither diverge nor reach denormals
# Batch caps for problems whose default batch would not fit `tox -e bench`'s 15 minutes on 2 cores with
# room for a busy machine (a default-batch training step here takes about, port / reference):
BATCH_CAPS = {
    "cifar100_allcnnc": 32,  # default 256: 3.9 s / 4.3 s per step
    "svhn_wrn164": 32,  # default 128: 2.6 s / 3.5 s per step
    "cifar100_wrn404": 32,  # no default (128 here): about 3x svhn_wrn164's work per example
    "imagenet_inception_v3": 8,  # no default (128 here; 32 in the paper): 299x299 inputs, 27M parameters
    # VGG at 224x224 (no default batch; 128 would be ~1 min per step here): about 31 GFLOP per example
    # and training step, forward and backward.
    **{f"{data}_vgg{variant}": 8 for data in ("cifar10", "cifar100", "imagenet") for variant in (16, 19)},
}
UNCAPPED = os.environ.get("BENCH_UNCAPPED") == "1"  # run every problem at its default batch

FRAMEWORKS = ("torch", "tf") + (("torch.compile",) if os.environ.get("BENCH_TORCH_COMPILE") == "1" else ())
PHASES = ("eval", "train")
UNTIMED_CALLS = 2
TARGET_SECONDS = 3.0  # timed time per benchmark, within the round limits below
MIN_ROUNDS, MAX_ROUNDS = 3, 100
MIN_ROUND_SECONDS = 0.01  # sub-millisecond steps are repeated within a round to be timed reliably


def batch_size(problem) -> int:
    default = problem.batch_size or DEFAULT_BATCH_SIZE
    return default if UNCAPPED else min(default, BATCH_CAPS.get(problem.name, default))


def fixed_batch(problem, size: int):
    """One audit-style batch (parity.checks.Batch): reference layouts, converted per framework below."""
    return make_batches(REFERENCE_PROBLEMS[problem.name], DTYPE, seed=0, batch_size=size, count=1)[0]


def torch_step(problem, phase: str, batch, compiled: bool):
    model = problem.model(torch.float32)
    forward = torch.compile(model) if compiled else model
    inputs, targets = batch.port_inputs(torch.float32), batch.port_targets(torch.float32)
    if phase == "eval":
        model.eval()

        def step():
            with torch.no_grad():
                return forward(*inputs)
        return step

    model.train()
    optimizer = OPTIMIZERS["momentum"]([p for p in model.parameters() if p.requires_grad], LEARNING_RATE)

    def step():
        optimizer.zero_grad(set_to_none=True)
        data_loss, l2 = problem.loss_terms(model, forward(*inputs), targets)
        (data_loss + l2).backward()
        optimizer.step()
    return step


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


def rounds_and_iterations(step) -> tuple[int, int]:
    for _ in range(UNTIMED_CALLS):
        step()
    start = time.perf_counter()
    step()
    seconds = max(time.perf_counter() - start, 1e-6)
    iterations = math.ceil(MIN_ROUND_SECONDS / seconds)
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(TARGET_SECONDS / (seconds * iterations))))
    return rounds, iterations


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("problem_name", list(PROBLEMS))
def test_throughput(benchmark, thread_settings, foreign_load, problem_name, framework, phase):
    problem = PROBLEMS[problem_name]
    size = batch_size(problem)
    batch = fixed_batch(problem, size)
    if framework == "tf":
        step = tf_step(problem, phase, batch)
    else:
        step = torch_step(problem, phase, batch, compiled=framework == "torch.compile")
    rounds, iterations = rounds_and_iterations(step)
    benchmark.group = f"{problem_name} {phase} batch {size}"
    with foreign_load(benchmark.extra_info):
        benchmark.pedantic(step, rounds=rounds, iterations=iterations, warmup_rounds=1)
    benchmark.extra_info.update(
        problem=problem_name, framework=framework, phase=phase, batch_size=size,
        default_batch_size=problem.batch_size or DEFAULT_BATCH_SIZE, dtype=DTYPE,
        threads=thread_settings["tf" if framework == "tf" else "torch"],
        examples_per_second=size / benchmark.stats.stats.mean,
    )
