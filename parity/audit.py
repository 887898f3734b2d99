"""Runs the checks of every requested problem and dtype: the flow from problem name to results."""
from __future__ import annotations

import contextlib
import gc
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from parity.frameworks import THREADS, TORCH_DTYPES, tf_onednn_ops
from parity.port import Port, load_port, resolve
from parity.porting import WeightMapError, check_coverage
from parity.results import CheckResult, mark_equivalent

# TensorFlow (parity.checks, tf_reference) is imported only where a check runs, so a parallel
# audit's parent process stays light and its workers import it side by side; the parent imports it
# once the workers are done, for the report's environment line (which path TF ran: `tf_onednn_ops`).

AUDIT_BATCH_SIZE = 2  # small: the audit compares semantics, not throughput; >1 for BN statistics
AUDIT_BATCHES = 3  # the steps and carried_state take 3 consecutive ones; the gradients check, batch 0
# A problem whose model has more parameters holds several GB in its audit (weights, gradients and
# optimizer slots in both frameworks, in float64): it is audited alone, with every thread.
HEAVY_PARAMETERS = 20_000_000


class UnknownProblemError(Exception):
    pass


# Every check `--checks` can select: parity.checks.CHECKS in its order, then the initialisers (a test keeps
# the two lists equal; this one is importable without TensorFlow).
CHECK_NAMES = ("forward", "loss", "gradients", "train_mode", "step/sgd", "step/momentum", "step/adam",
               "carried_state", "init")


@dataclass
class AuditRun:
    port: str
    dtypes: list[str]
    problems: list[str]
    seed: int
    results: list[CheckResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # "problem dtype" -> wall time

    @property
    def passed(self) -> bool:
        return bool(self.results) and not any(r.counts_as_failure for r in self.results if not r.diagnostic)

    @property
    def declared(self) -> list[CheckResult]:
        """Results that differ where the port declared a deviation."""
        return [r for r in self.results if not r.passed and r.declared]


def resolve_problems(port: Port, requested: list[str] | None) -> list[str]:
    """The port's problems, under the original's names (a problem the reference lacks fails its audit's
    set-up, with a message); `requested` may use the port's own names (Port.problem_names)."""
    available = list(port.problems)
    if not requested:
        return available
    requested = [port.problem_names.get(name, name) for name in requested]
    unknown = [name for name in requested if name not in available]
    if unknown:
        valid = [port.port_problem_name(name) for name in available]
        raise UnknownProblemError(f"unknown problem {', '.join(map(repr, unknown))}; valid names: {', '.join(valid)}")
    return list(requested)


def mark_declared(port: Port, results: list[CheckResult]) -> list[CheckResult]:
    """Attach the port's declared deviations to their results (a passing one gets a note instead)."""
    for result in results:
        reason = port.declared_deviation(result.problem, result.check)
        if reason and not result.passed:
            result.declared = reason
        elif reason:
            result.notes.append(f"declared deviation not observed (the check passes): {reason}")
    return results


# Example i of a batch is scaled by EXAMPLE_SCALES[i % 2]: the large one drives pre-activations far past
# the kinks and clips common slips differ at (ReLU6 at 6, hardtanh at 1, saturating sigmoid/tanh), and to
# strongly negative values (leaky slopes), while the unit one keeps the usual regime.
EXAMPLE_SCALES = (1.0, 8.0)
ZERO_FRACTION = 0.1  # elements set to exactly 0 (images, vectors and pixels: x == 0 and x > 0 slips)
ONE_FRACTION = 0.05  # pixels set to exactly 1 (the top of their range)


def draw_input(rng: np.random.Generator, spec, batch_size: int, dtype: str) -> np.ndarray:
    """Audit data for one declared input: normal values at two scales, pixels in [0, 1] (exact 0s and 1s
    included), or ids below the vocabulary. Inputs with more than one element per example get ZERO_FRACTION
    exact zeros."""
    shape = (batch_size, *spec.shape)
    if spec.kind == "ids":
        return rng.integers(0, spec.vocab, size=shape)
    if spec.kind == "pixels":
        values = rng.uniform(size=shape)
        values[rng.uniform(size=shape) < ONE_FRACTION] = 1.0
    else:
        scales = np.resize(np.asarray(EXAMPLE_SCALES), batch_size).reshape(-1, *[1] * len(spec.shape))
        values = rng.normal(size=shape) * scales
    if int(np.prod(spec.shape)) > 1:
        values[rng.uniform(size=shape) < ZERO_FRACTION] = 0.0
    return values.astype(dtype)


def make_batches(reference_spec, dtype: str, seed: int, batch_size: int = AUDIT_BATCH_SIZE,
                 count: int = AUDIT_BATCHES) -> list:
    """Audit batches as the reference problem's family declares its inputs and targets."""
    from parity.checks import Batch

    family = reference_spec.family
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        inputs = tuple(draw_input(rng, spec, batch_size, dtype) for spec in family.inputs)
        if family.targets == "labels":
            targets = rng.integers(0, reference_spec.num_outputs, size=batch_size)
        elif family.targets == "ids":  # a character stream's next characters: same shape as its ids
            targets = rng.integers(0, family.inputs[0].vocab, size=inputs[0].shape)
        else:
            targets = None
        batches.append(Batch(inputs, tuple(spec.kind for spec in family.inputs), targets, family.targets))
    return batches


def build_pair(port: Port, problem: str, dtype: str, seed: int, models: dict | None = None):
    """The audit pair of `problem` in `dtype`. `models` (problem -> port model), if given, keeps each model
    for the next dtype: a worker auditing one large model in float32, then float64, builds it once (the
    second pair converts the same module, and sync() overwrites every mapped tensor)."""
    from parity.checks import AuditPair, audit_values
    from parity.frameworks import load_tensorflow
    from tf_reference import ReferenceProblem

    tf = load_tensorflow()
    reference = ReferenceProblem(problem, getattr(tf, dtype), seed, initialize=False)  # audit values replace all
    model = models.get(problem) if models is not None else None
    model = (model if model is not None else port.build_model(problem)).to(TORCH_DTYPES[dtype])
    if models is not None:
        models[problem] = model
    problem_map = port.weight_maps[problem]
    check_coverage(problem_map, list(reference.graph.variables), model)
    values = audit_values(reference.graph.variables, seed, dtype)
    batches = make_batches(reference.spec, dtype, seed)
    pair = AuditPair(problem, dtype, port, model, reference, problem_map, values, batches, seed,
                     fixed_step_gradients=sum(p.numel() for p in model.parameters()) > HEAVY_PARAMETERS)
    pair.sync()
    return pair


def audit_problem(port: Port, problem: str, dtype: str, seed: int = 0,
                  checks: list[str] | None = None, isolate: bool | None = None,
                  models: dict | None = None) -> list[CheckResult]:
    """All checks of one problem in one dtype. A check that raises becomes a failed result.

    `isolate`: also run every layer on the reference's own input (parity.isolate) and attach diagnosis hints;
    None (default) does so when a check of a full run (no `checks` subset) failed.
    """
    from parity.checks import CHECKS

    port = resolve(port)
    try:
        pair = build_pair(port, problem, dtype, seed, models)
    except (WeightMapError, KeyError, ValueError, RuntimeError) as error:
        return [CheckResult(problem, "setup", dtype, error=f"{type(error).__name__}: {error}",
                            traceback=traceback.format_exc())]
    results = []
    for name in [name for name in checks or CHECKS if name in CHECKS]:
        try:
            results += CHECKS[name](pair)
        except Exception as error:  # noqa: BLE001 - a crash inside a check is a failed check, reported
            results.append(CheckResult(problem, name, dtype, error=f"{type(error).__name__}: {error}",
                                       traceback=traceback.format_exc()))
    mark_unjudged_steps(results)
    mark_equivalent(results)
    if (own := port.port_problem_name(problem)) != problem and results:
        results[0].notes.append(f"the port's problem {own!r}, audited as the original's {problem!r}")
    results = mark_declared(port, results)
    # Automatic on a failing full run, except for a large model (its teacher-forced passes hold another copy of
    # every activation and gradient): there it takes --isolate.
    automatic = checks is None and not pair.fixed_step_gradients and any(r.counts_as_failure for r in results)
    if isolate or (isolate is None and automatic):
        results += diagnostics(pair, results)
    return results


def mark_unjudged_steps(results: list[CheckResult]) -> None:
    """A step with the port's own gradients that passes only within what failed gradients propagate says
    nothing about the optimizer: it is not judged (its '(reference gradients)' variant judges the formula)."""
    if all(r.passed for r in results if r.check == "gradients"):
        return
    for result in results:
        explained = any("propagated gradient difference" in c.note for c in result.comparisons)
        if result.check.startswith("step/") and "(" not in result.check and result.passed and explained:
            result.not_judged = "gradients differ"


def diagnostics(pair, results: list[CheckResult]) -> list[CheckResult]:
    """The teacher-forced checks (parity.isolate) with their diagnosis hints (parity.hints)."""
    from parity.hints import diagnose
    from parity.isolate import isolate

    try:
        isolated, evidence = isolate(pair)
        diagnose(pair, results, isolated, evidence)
    except Exception as error:  # noqa: BLE001 - a diagnosis that breaks must not hide the checks' results
        return [CheckResult(pair.problem, "isolated", pair.dtype, error=f"{type(error).__name__}: {error}",
                            traceback=traceback.format_exc(), diagnostic=True)]
    return isolated


def parameter_count(port: Port, problem: str) -> int:
    """The port model's parameter count, from a model built on the meta device (no memory, no init)."""
    import torch

    try:
        with torch.device("meta"):
            model = port.build_model(problem)
    except Exception:  # noqa: BLE001 - a port that cannot build on meta is audited as light; its audit reports errors
        return 0
    return sum(p.numel() for p in model.parameters())


# The 8 deep problems (VGG16/19 at 224x224, WRN-40-4, Inception v3): `--set deep` selects them (`tox -e
# parity-deep`), `--set light` the others; `tox -e parity` audits all (README, "The deep problems").
DEEP_PROBLEMS = ("cifar10_vgg16", "cifar10_vgg19", "cifar100_vgg16", "cifar100_vgg19", "imagenet_vgg16",
                 "imagenet_vgg19", "cifar100_wrn404", "imagenet_inception_v3")
PROBLEM_SETS = ("all", "light", "deep")


def select_problem_set(problems: list[str], which: str) -> list[str]:
    """'all', 'light' (DEEP_PROBLEMS aside) or 'deep' (only those) of `problems`, order kept."""
    if which == "all":
        return list(problems)
    return [p for p in problems if (p in DEEP_PROBLEMS) == (which == "deep")]


def split_heavy(port: Port, problems: list[str]) -> tuple[list[str], list[str]]:
    heavy = [p for p in problems if parameter_count(port, p) > HEAVY_PARAMETERS]
    return [p for p in problems if p not in heavy], heavy


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc malloc_trim): without it a worker auditing one large
    model after another keeps the fragments of each, and its resident size grows from problem to problem."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def run_audit(port: Port, problems: list[str], dtypes: list[str], seed: int = 0,
              progress: Callable[[str], None] | None = None, checks: list[str] | None = None,
              init: bool = True, isolate: bool | None = None,
              dtypes_done: Callable[[], None] | None = None) -> AuditRun:
    """Every check of every problem in every dtype, then (once per problem) the initialisers.
    `dtypes_done` is called in between (a heavy worker then holds far less memory)."""
    from parity.init_check import audit_init

    port = resolve(port)
    init = init and (checks is None or "init" in checks)
    run = AuditRun(port.name, list(dtypes), list(problems), seed)
    models = {} if len(problems) == 1 else None  # one problem in several dtypes: its model is built once
    for dtype in dtypes:
        for problem in problems:
            start = time.perf_counter()
            results = audit_problem(port, problem, dtype, seed, checks, isolate, models)
            gc.collect()  # the problem's models, gradients and slots, before the next one is built
            release_freed_memory()
            run.results += results
            run.seconds[f"{problem} {dtype}"] = time.perf_counter() - start
            if progress:
                failed = [r.check for r in results if r.counts_as_failure and not r.diagnostic]
                declared = [r.check for r in results if not r.passed and r.declared]
                verdict = "ok" if not failed else f"FAILED: {', '.join(failed)}"
                verdict += f" (declared: {', '.join(declared)})" if declared else ""
                progress(f"{problem:<18} {dtype:<8} {run.seconds[f'{problem} {dtype}']:6.1f}s  {verdict}")
    if models:  # the kept model and audit draws (2.3 GB for imagenet_vgg19), before the initialisers
        from parity.checks import forget_audit_draws

        models.clear()
        forget_audit_draws()
        gc.collect()
        release_freed_memory()
    if dtypes_done:
        dtypes_done()
    if init:
        start = time.perf_counter()
        init_results = mark_declared(port, audit_init(port, problems))
        run.results += init_results
        run.seconds["init"] = time.perf_counter() - start
        if progress:
            failed = [r.problem for r in init_results if r.counts_as_failure]
            progress(f"{'initialisers':<27} {run.seconds['init']:6.1f}s  "
                     f"{'ok' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return run


_DTYPES_DONE = None  # in a heavy worker: the event its audit sets when only the initialisers remain


def _audit_worker(port_spec: str | None, problems: list[str], dtypes: list[str], seed: int, init: bool,
                  checks: list[str] | None = None, isolate: bool | None = None) -> AuditRun:
    return run_audit(load_port(port_spec), problems, dtypes, seed, progress=lambda line: print(line, flush=True),
                     checks=checks, init=init, isolate=isolate,
                     dtypes_done=_DTYPES_DONE.set if _DTYPES_DONE is not None else None)


def _start_heavy_worker(dtypes_done) -> None:
    """A heavy worker's initializer: both frameworks imported (~15 s here) before its job arrives."""
    global _DTYPES_DONE
    _DTYPES_DONE = dtypes_done
    import scipy.stats  # noqa: F401

    import parity.checks  # noqa: F401  (torch, TensorFlow and the reference)
    import parity.init_check  # noqa: F401


@contextlib.contextmanager
def _worker_environment(threads: int):
    """The environment of the worker processes spawned inside (they inherit it): PARITY_THREADS, and torch's
    allocations of 2 MiB and more on transparent huge pages (THP_MEM_ALLOC_ENABLE, read when torch first
    allocates): a large model's audit faults in gigabytes, and a huge page is one fault where 4 KiB pages are 512.
    Measured on cifar10_vgg16, both dtypes and initialisers: 80.5 s -> 75.5 s, kernel time 27.8 s -> 25.3 s."""
    import os

    settings = {"PARITY_THREADS": str(threads), "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "1")}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def _in_workers(jobs: list[tuple], threads: int) -> list[AuditRun]:
    """Each job's _audit_worker arguments in its own spawned process, all at once, `threads` threads each."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with _worker_environment(threads), ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
        futures = [pool.submit(_audit_worker, *job) for job in jobs]
        return [future.result() for future in futures]


class _HeavyWorker:
    """One spawned process for one large problem, started ahead: it imports the frameworks while the
    previous large problem's initialisers run (its audits done, that worker holds a few GB, not ~11)."""

    def __init__(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        self.dtypes_done = context.Event()
        with _worker_environment(THREADS):
            self.pool = ProcessPoolExecutor(1, mp_context=context, initializer=_start_heavy_worker,
                                            initargs=(self.dtypes_done,))
            self.pool.submit(int)  # spawns the process now

    def audit(self, *job):
        return self.pool.submit(_audit_worker, *job)

    def wait_until_only_initialisers_remain(self, future) -> None:
        while not self.dtypes_done.wait(1.0) and not future.done():
            pass


def _audit_heavy(port_spec: str | None, heavy: list[str], dtypes: list[str], seed: int, checks, isolate,
                 first: _HeavyWorker) -> list[AuditRun]:
    """Each large problem in its own fresh worker, one after the other (a worker that audited one large model
    after another kept growing: 13.3 GB after 7 of them, against 11.4 GB for the largest alone), each worker
    started while the previous one runs its initialisers."""
    def job(problem: str) -> tuple:
        return port_spec, [problem], dtypes, seed, True, checks, isolate

    runs, worker, following = [], first, None
    try:
        future = worker.audit(*job(heavy[0]))
        for index in range(len(heavy)):
            if index + 1 < len(heavy):
                worker.wait_until_only_initialisers_remain(future)
                following = _HeavyWorker()
            runs.append(future.result())
            if following is not None:  # the next problem starts before the finished worker has exited
                future = following.audit(*job(heavy[index + 1]))
            worker.pool.shutdown()
            worker, following = following, None
    finally:
        for leftover in (worker, following):
            if leftover is not None:
                leftover.pool.shutdown(cancel_futures=True)
    return runs


def run_audit_parallel(port_spec: str | None, problems: list[str], dtypes: list[str], seed: int = 0,
                       checks: list[str] | None = None, isolate: bool | None = None) -> AuditRun:
    """Light problems: one worker process per dtype, splitting the threads between them (the first
    also audits init). Heavy problems (split_heavy) then: one worker per problem, one after the other, with
    every thread, so that only one heavy model pair is in memory and each starts from a fresh heap.

    Much of a light audit is single-threaded Python and numpy, so two workers with one thread each
    finish both dtypes sooner than one process with two threads; a heavy audit is mostly
    convolutions, which use every thread. Workers are spawned (never forked) and load the port
    from its spec, since a Port holds functions.
    """
    light, heavy = split_heavy(load_port(port_spec), problems)
    first_heavy = _HeavyWorker() if heavy else None  # starts beside the light workers
    runs = []
    try:
        if light:
            runs += _in_workers([(port_spec, light, [dtype], seed, index == 0, checks, isolate)
                                 for index, dtype in enumerate(dtypes)], max(1, THREADS // len(dtypes)))
    except BaseException:
        if first_heavy is not None:
            first_heavy.pool.shutdown(cancel_futures=True)
        raise
    if heavy:
        runs += _audit_heavy(port_spec, heavy, dtypes, seed, checks, isolate, first_heavy)
    merged = AuditRun(runs[0].port, list(dtypes), list(problems), seed)
    for run in runs:
        merged.results += run.results
        init_seconds = merged.seconds.get("init", 0.0) + run.seconds.get("init", 0.0)
        merged.seconds |= run.seconds
        if init_seconds:
            merged.seconds["init"] = init_seconds
    return merged


def environment() -> dict:
    import platform

    from importlib.metadata import version

    import torch

    return {"torch": torch.__version__, "tensorflow": version("tensorflow-cpu"), "numpy": np.__version__,
            "tf_onednn_ops": tf_onednn_ops(), "python": platform.python_version(), "threads": THREADS,
            "audit_batch_size": AUDIT_BATCH_SIZE}
