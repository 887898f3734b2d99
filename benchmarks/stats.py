"""Interleaved timing and the ratio's statistics: pure functions, shared by every benchmark here.

A machine's speed drifts (turbo, other tenants, page cache) on the scale of seconds to minutes. Timing
all of A and then all of B puts that drift into the ratio A/B; alternating them round by round
(A B, B A, A B, ...) gives every round of A a neighbour of B measured under the same conditions, so
the per-round ratio cancels the drift and its median over rounds is robust to the odd disturbed round.
"""
from __future__ import annotations

import math
import resource
import time
from typing import Callable, Mapping, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000


def plan(seconds_per_call: float, target_seconds: float, min_rounds: int = 5, max_rounds: int = 21,
         min_round_seconds: float = 0.02) -> tuple[int, int]:
    """(rounds, calls per round) that time about `target_seconds` of a step of this duration: as many rounds as
    fit, between min_rounds and max_rounds, each at least min_round_seconds long. Where max_rounds binds (fast
    steps), each round makes more calls rather than the timed work falling short of the target: a round of one
    28 ms call is at the mercy of one scheduler tick; a round of seven averages them out."""
    calls = max(math.ceil(min_round_seconds / seconds_per_call),
                math.ceil(target_seconds / (max_rounds * seconds_per_call)))
    rounds = math.ceil(target_seconds / (seconds_per_call * calls))
    return max(min_rounds, min(max_rounds, rounds)), calls


def interleaved_order(names: Sequence[str], rounds: int) -> list[list[str]]:
    """The order of each round: the names as given in even rounds, reversed in odd ones (A B, B A, ...),
    so that no variant always runs first (after the others' caches) or last."""
    return [list(names) if index % 2 == 0 else list(reversed(names)) for index in range(rounds)]


def time_interleaved(steps: Mapping[str, Callable[[], object]], rounds: int, iterations: int, lead_in: int = 0,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of every step, one value per round, the steps alternating within and across rounds.

    `lead_in` untimed calls open each round of a step: the step just before it may be another framework's,
    whose idle threads still spin for a few milliseconds on the cores it needs (torch's OpenMP workers after
    a port call: the reference's next 2c2d evaluation took 24.1 ms against 17.8 back to back), which the
    step would never meet in a run of its own."""
    seconds = {name: [] for name in steps}
    for order in interleaved_order(list(steps), rounds):
        for name in order:
            step = steps[name]
            for _ in range(lead_in):
                step()
            start = clock()
            for _ in range(iterations):
                step()
            seconds[name].append((clock() - start) / iterations)
    return seconds


SETTLED_FAULTS = 2560  # fresh pages a call may fault in (10 MiB) and still count as settled
SETTLE_ROUNDS = 6


def minor_faults() -> int:
    """Pages this process has faulted in so far (fresh memory the kernel mapped and zeroed for it)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def settle(steps: Mapping[str, Callable[[], object]], max_rounds: int = SETTLE_ROUNDS,
           settled: int = SETTLED_FAULTS, faults: Callable[[], int] = minor_faults) -> list[dict[str, int]]:
    """Untimed rounds, one call of each step in turn, until every call of a round faults in fewer than `settled`
    pages (at most `max_rounds`); returns each round's faults per step.

    The steps share one heap (glibc's, kept by the runner's setting), and each one's freed blocks are taken by
    the others' allocations, so the heap grows for a few alternations until it holds every step's working set.
    Until then a call pays for page faults a long run never sees: a cifar100_vgg19 training step at batch 16
    took 11.0, 6.6, 6.4 s and then 5.3 s, faulting 2.7, 0.8, 0.6 and 0 GB in; after the reference's calls,
    the port's next call faulted 2.1 GB again (AMD EPYC Zen 5, docs/benchmarks.md)."""
    history = []
    for _ in range(max_rounds):
        counts = {}
        for name, step in steps.items():
            before = faults()
            step()
            counts[name] = faults() - before
        history.append(counts)
        if max(counts.values()) < settled:
            break
    return history


def paired_ratios(numerator_seconds: Sequence[float], denominator_seconds: Sequence[float]) -> np.ndarray:
    """Per round, the speed of the numerator's step over the denominator's (examples/s on the same batch):
    the denominator's seconds over the numerator's."""
    numerator, denominator = np.asarray(numerator_seconds, float), np.asarray(denominator_seconds, float)
    if numerator.shape != denominator.shape or numerator.size == 0:
        raise ValueError("need the same, non-zero number of rounds for both")
    return denominator / numerator


def bootstrap_median(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                     seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median and its percentile-bootstrap interval (rounds resampled with replacement)."""
    values = np.asarray(values, float)
    if values.size == 0:
        raise ValueError("no values")
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(resamples, values.size), replace=True), axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    return float(np.median(values)), float(low), float(high)


def geometric_mean(values: Sequence[float]) -> float:
    values = np.asarray(values, float)
    return float(np.exp(np.mean(np.log(values))))
