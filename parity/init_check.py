"""Initialisation parity: the port's initial values against the original's, as distributions.

Initial values are random, so the two sides cannot agree number for number; they must agree
in law. For every reference variable (trainable or not: the BN moving statistics are
constants too) the check draws the port's initial tensor under several `torch.manual_seed`s
and the reference's under as many `ReferenceProblem` seeds, and compares:

- a tensor the reference initialises to a constant (all reference draws equal): the port's
  values must be that constant exactly (float32 equality);
- a random tensor: scale (sample std), support (max |x|: a truncated normal never exceeds its
  2-sigma cut, a uniform fills its interval) and shape (two-sample Kolmogorov-Smirnov).

The expected initialiser is read from the reference's own samples, never from a table, so a
slip in the reference would show as a disagreement too. Elements of one tensor are iid under
every initialiser involved (constants, uniform, truncated normal), so a tensor is compared as
a flat sample; the ParamRow transform still maps it to the reference layout, which checks
that the shapes agree.

Seeds are fixed (`DEFAULT_SEEDS`), so the check is deterministic; each statistical criterion
is a test at significance `ALPHA` per tensor (see CRITERIA and the power table below it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import stats

from parity.frameworks import load_tensorflow
from parity.port import Port
from parity.porting import assemble, port_tensors
from parity.results import SCALE_FLOOR, CheckResult, Comparison

CHECK_NAME = "init"
DTYPE = "float32"


@dataclass(frozen=True)
class Criterion:
    alpha: float  # significance level per tensor (probability of failing a correct port)
    floor: float  # smallest tolerance on the statistic, whatever the sample size


# One test per criterion and random tensor. The 18 registered problems have 87 random tensors
# (all of bounded laws), so one run makes 261 tests and the 20-seed-set false-alarm experiment
# 5,220: at alpha 1e-5 per test the expected number of false alarms there is 0.05.
ALPHA = 1e-5
CRITERIA: dict[str, Criterion] = {
    # Relative std difference s_port/s_ref - 1. Its standard error for iid samples is
    # sqrt((kurtosis - 1)/4 * (1/n_port + 1/n_ref)); the tolerance is the two-sided z-quantile of
    # ALPHA times that. The 1% floor: with millions of elements the statistical bound falls to
    # ~0.1%, below any scale difference that matters for training.
    "std": Criterion(ALPHA, 0.01),
    # Relative difference of max |x|. For a bounded law with density f(b) at each end of [-b, b],
    # P(max|x| of n draws < b(1 - t)) = (1 - 2 f(b) b t)^n ~ exp(-c n t), c = 2 f(b) b: c = 1 for a
    # uniform, 0.2263 for a normal cut at 2 sigma. Both maxima sit within t of the bound with
    # probability 1 - ALPHA when t = ln(2/ALPHA) / (c min(n_port, n_ref)). Only for bounded laws.
    "support": Criterion(ALPHA, 0.005),
    # scipy.stats.ks_2samp on at most KS_MAX_SAMPLES elements per side; fails when p < ALPHA.
    "ks": Criterion(ALPHA, 0.0),
}
# Power (the probability of failing a port with the wrong initialiser) at the sample sizes the
# check draws, by simulation with the check's own criterion functions: 1,000 repetitions (200 at
# n = 100,000); `python tests/test_init.py` reprints the table, the slow tests assert its claims.
# Both sides share the std unless the row says otherwise; n is per side.
#   port law vs reference law                       n        std  support   KS     any
#   xavier_normal_ vs TF1 glorot_normal (cut 2σ)    800      0.00  1.00    0.00   1.00
#                                                   4,800    0.00  1.00    0.00   1.00
#                                                   100,000  0.00  1.00    1.00   1.00
#   glorot_uniform vs TF1 glorot_normal             800      0.00  1.00    0.00   1.00
#                                                   2,592    0.00  1.00    0.07   1.00
#                                                   100,000  0.00  1.00    1.00   1.00
#   xavier_normal_ vs glorot_uniform                864      0.00  1.00    0.02   1.00
#                                                   100,000  0.00  1.00    1.00   1.00
#   trunc_normal_(std=s), bounds ±2 (no cut),       800      0.57  1.00    0.00   1.00
#     vs truncated_normal(s): std +13.7%            100,000  1.00  1.00    1.00   1.00
#   torch default kaiming_uniform(a=√5) vs          2,560    1.00  1.00    1.00   1.00
#     glorot_uniform, 3c3d dense: std -51%
#   same law, std +10%                              800      0.20  1.00    0.00   1.00
#   same law, std +3%                               800      0.00  0.00    0.00   0.00
#                                                   100,000  1.00  1.00    0.13   1.00
#   same law (false alarms)                         800      0     0       0      0
#                                                   100,000  0     0       0      0
# So the support criterion is what sees a change of family (cut or no cut, uniform or normal)
# and of scale at small n; the KS statistic between these families at equal std is only
# 0.017 (normal vs 2σ-truncated normal) or 0.043 (uniform vs truncated normal), which KS
# resolves at the 100,000-element subsample (critical value 0.011 at alpha 1e-5) but not at
# n < 5,000. The smallest random tensors here (800 to 1,000 elements: 2c2d conv2d, MLP dense_3,
# WRN stem at 2 draws) see a scale error of ~7% or more; the large ones ~1%.

# Constants are compared exactly: passed means float32 equality. The tolerance on max_rel (see
# check_init) is a quarter of float32's relative spacing, so only equality fits under it.
CONSTANT_TOLERANCE = float(np.finfo(np.float32).eps) / 4
RANDOM_TOLERANCE = 1.0  # random tensors: max_rel is the worst criterion as a fraction of its limit

# How many samples each side draws.
MIN_RANDOM_SAMPLES = 800  # per random tensor and side: draws = ceil(800 / smallest random tensor)
MAX_DRAWS = 8  # each draw builds the whole model on both sides (0.05-1.5 s on 2 CPU cores)
KS_MAX_SAMPLES = 100_000  # KS subsample per side; std and support use every element
DEFAULT_SEEDS: tuple[int, ...] = tuple(range(MAX_DRAWS))

# Reference-sample ratio max|x| / std that tells the families apart (limits: uniform sqrt(3) =
# 1.73, normal cut at 2 sigma 2/0.8796 = 2.27, normal ~sqrt(2 ln n) >= 3 for n >= 432).
UNIFORM_MAX_RATIO = 2.0
TRUNCATED_MAX_RATIO = 2.5
TRUNCATED_NORMAL_STD_CORRECTION = float(stats.truncnorm(-2.0, 2.0).std())  # std of N(0, 1) cut at ±2: 0.8796
SUPPORT_GAP_CONSTANT = {  # c = 2 f(b) b of the family, see CRITERIA["support"]
    "uniform": 1.0,
    "truncated normal": 4 * stats.norm.pdf(2.0) / (stats.norm.cdf(2.0) - stats.norm.cdf(-2.0)),
}


@dataclass(frozen=True)
class Family:
    """An initialiser family as read from a sample: its name and its parameter."""

    kind: str  # "constant", "uniform", "truncated normal", "normal"
    value: float  # the constant, the uniform's half-width, the normal's std parameter (before the cut)
    center: float = 0.0  # every initialiser of the original is centred on 0; a port's may not be

    def describe(self) -> str:
        if self.kind == "constant":
            return f"constant {self.value:.6g}"
        at = f" around {self.center:.3g}" if self.center else ""
        if self.kind == "uniform":
            return f"uniform ±{self.value:.3g}{at}"
        if self.kind == "truncated normal":
            return f"truncated normal std={self.value:.3g} (cut 2σ){at}"
        return f"normal std={self.value:.3g} (no cut){at}"


@dataclass(frozen=True)
class Sample:
    """The flat initial values of one tensor over its draws, with the statistics every criterion uses."""

    values: np.ndarray  # float32, 1-D
    std: float
    max_abs: float
    family: Family

    @classmethod
    def of(cls, values: np.ndarray) -> "Sample":
        values = np.ascontiguousarray(values, dtype=np.float32).ravel()
        if values.size == 0:
            return cls(values, 0.0, float("nan"), Family("constant", float("nan")))
        # torch reduces on every core (VGG's dense kernel is a 103M-element sample); std accumulates in float64.
        flat = torch.from_numpy(values)
        low, high = (float(x) for x in torch.aminmax(flat))
        max_abs = max(abs(low), abs(high))
        if low == high:
            return cls(values, 0.0, max_abs, Family("constant", float(values[0])))
        std, mean = (float(x) for x in torch.std_mean(flat, correction=0))
        # Off-centre only when the mean is 6 standard errors from 0; the family is read around it.
        center = mean if abs(mean) > 6 * std / math.sqrt(values.size) else 0.0
        half_width = float((flat - np.float32(center)).abs().max()) if center else max_abs
        ratio = half_width / std
        if ratio < UNIFORM_MAX_RATIO:
            family = Family("uniform", half_width, center)
        elif ratio < TRUNCATED_MAX_RATIO:
            family = Family("truncated normal", half_width / 2.0, center)
        else:
            family = Family("normal", std, center)
        return cls(values, std, max_abs, family)

    @property
    def size(self) -> int:
        return self.values.size


# --- drawing ---------------------------------------------------------------------------------

def _reference_draw(problem: str, seed: int) -> dict[str, np.ndarray]:
    tf = load_tensorflow()
    from tf_reference import ReferenceProblem

    reference = ReferenceProblem(problem, tf.float32, seed)
    return {name: variable.numpy() for name, variable in reference.graph.variables.items()}


def _port_draw(port: Port, problem: str, seed: int) -> dict[str, np.ndarray]:
    with torch.random.fork_rng(devices=[]):  # leave the caller's torch RNG as it was
        torch.manual_seed(seed)
        model = port.build_model(problem).to(torch.float32)
    return {name: tensor.detach().cpu().numpy() for name, tensor in port_tensors(model).items()}


def draws_needed(reference_values: dict[str, np.ndarray], available: int) -> int:
    """Draws per side so that the smallest random tensor gives MIN_RANDOM_SAMPLES elements.

    A constant is tested exactly, so one draw suffices for it whatever its size.
    """
    random_sizes = [v.size for v in reference_values.values() if v.size and not np.all(v == v.flat[0])]
    return _draws_for(min(random_sizes), min(available, MAX_DRAWS)) if random_sizes else 1


def _draws_for(size: int, available: int) -> int:
    return max(1, min(available, math.ceil(MIN_RANDOM_SAMPLES / max(size, 1))))


# --- comparing -------------------------------------------------------------------------------

def compare_constant(item: str, port: Sample, reference: Sample) -> Comparison:
    """Exact: every port element equals the reference's constant (both float32)."""
    constant = np.float32(reference.family.value)
    max_abs = float(np.max(np.abs(port.values.astype(np.float64) - np.float64(constant))))
    max_rel = max_abs / max(abs(float(constant)), SCALE_FLOOR)
    passed = bool(np.all(port.values == constant))
    note = (f"expected {reference.family.describe()}; measured {port.family.describe()}; "
            f"{'ok' if passed else f'FAIL: max |port - {float(constant):.6g}| = {max_abs:.3g}'}")
    return Comparison(item, max_abs, max_rel, CONSTANT_TOLERANCE, passed, note)


def std_test(port: Sample, reference: Sample, kurtosis: float) -> tuple[float, float]:
    """(relative std difference, its tolerance) for CRITERIA['std']."""
    criterion = CRITERIA["std"]
    standard_error = math.sqrt(max(kurtosis - 1.0, 0.0) / 4 * (1 / port.size + 1 / reference.size))
    return port.std / reference.std - 1.0, max(stats.norm.isf(criterion.alpha / 2) * standard_error, criterion.floor)


def support_test(port: Sample, reference: Sample) -> tuple[float, float]:
    """(relative difference of max |x|, its tolerance) for CRITERIA['support'] (bounded families)."""
    criterion = CRITERIA["support"]
    n = min(port.size, reference.size)
    limit = math.log(2 / criterion.alpha) / (SUPPORT_GAP_CONSTANT[reference.family.kind] * n)
    return port.max_abs / reference.max_abs - 1.0, max(limit, criterion.floor)


def subsample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """At most KS_MAX_SAMPLES elements, drawn without replacement (elements are iid: any subset will do)."""
    return values if values.size <= KS_MAX_SAMPLES else values[rng.choice(values.size, KS_MAX_SAMPLES, replace=False)]


@dataclass(frozen=True)
class Outcome:
    """One criterion on one tensor: its statistic, its limit, and how far along the limit it is."""

    criterion: str  # key of CRITERIA
    value: float  # relative difference (std, support) or the KS statistic
    text: str  # value and limit, for the note
    ratio: float  # statistic as a fraction of its limit (> 1: failed)

    @property
    def passed(self) -> bool:
        return self.ratio <= 1.0


PVALUE_FLOOR = float(np.finfo(np.float64).tiny)  # scipy reports 0 below it: keeps max_rel finite (<= 62)


def random_outcomes(port: Sample, reference: Sample, rng: np.random.Generator) -> list[Outcome]:
    """The std, support (bounded reference laws only) and KS criteria for one random tensor."""
    outcomes = []
    port_subsample, reference_subsample = subsample(port.values, rng), subsample(reference.values, rng)
    kurtosis = float(stats.kurtosis(reference_subsample, fisher=False))
    difference, limit = std_test(port, reference, kurtosis)
    outcomes.append(Outcome("std", difference, f"std {difference:+.2%} (limit ±{limit:.2%})", abs(difference) / limit))
    if reference.family.kind in SUPPORT_GAP_CONSTANT:
        difference, limit = support_test(port, reference)
        outcomes.append(Outcome("support", difference, f"max|x| {difference:+.2%} (limit ±{limit:.2%})",
                                abs(difference) / limit))
    ks = stats.ks_2samp(port_subsample, reference_subsample)
    p_value, alpha = float(ks.pvalue), CRITERIA["ks"].alpha
    # log p / log alpha: 1 at the significance level, > 1 beyond it.
    ratio = -math.log(min(max(p_value, PVALUE_FLOOR), 1.0)) / -math.log(alpha)
    outcomes.append(Outcome("ks", float(ks.statistic), f"KS D={ks.statistic:.4f} p={p_value:.2g} (alpha {alpha:g}, "
                                  f"n={port_subsample.size})", ratio))
    return outcomes


def compare_random(item: str, port: Sample, reference: Sample, rng: np.random.Generator) -> Comparison:
    """Scale, support and shape of a random tensor. See `check_init` for what max_abs / max_rel hold."""
    outcomes = random_outcomes(port, reference, rng)
    failed = [o.criterion for o in outcomes if not o.passed]
    texts = [o.text for o in outcomes]
    if reference.family.kind not in SUPPORT_GAP_CONSTANT:
        texts.insert(1, "support not tested (unbounded law)")
    verdict = "ok" if not failed else f"FAIL: {', '.join(failed)}"
    note = (f"expected {reference.family.describe()}; measured {port.family.describe()}; {'; '.join(texts)}; "
            f"n={port.size}/{reference.size}; {verdict}")
    ks_statistic = next(o.value for o in outcomes if o.criterion == "ks")
    return Comparison(item, ks_statistic, max(o.ratio for o in outcomes), RANDOM_TOLERANCE, not failed, note)


def check_init(port: Port, problem: str, seeds: Sequence[int] = DEFAULT_SEEDS) -> CheckResult:
    """Initial values of every reference variable of `problem`, port against reference, in law.

    Comparison fields:
    - constant tensors: max_abs = max |port - constant|; max_rel = max_abs / |constant| (floored
      at SCALE_FLOOR, as in `compare`); passed only on float32 equality (CONSTANT_TOLERANCE).
    - random tensors: max_abs = the two-sample KS statistic, i.e. the largest absolute
      difference between the port's and the reference's empirical CDFs; max_rel = the worst
      criterion as a fraction of its limit (|std difference| / limit, |max|x| difference| /
      limit, log p / log alpha for KS); tolerance 1, so margin = 1 / max_rel. The note holds
      the expected and measured initialiser and every criterion's value and limit.
    - a tensor the port lacks, or of another shape: NaN, failed.

    The first max(1, ceil(MIN_RANDOM_SAMPLES / smallest random tensor)) `seeds` (at most
    MAX_DRAWS) seed both sides: `torch.manual_seed(s)` before `port.build_model`, and
    `ReferenceProblem(problem, float32, s)`. The KS subsample is drawn from seeds[0].
    """
    result = CheckResult(problem, CHECK_NAME, DTYPE)
    seeds = list(seeds)
    if not seeds:
        result.error = "no seeds given"
        return result
    try:
        problem_map = port.weight_maps[problem]
        reference_draws = [_reference_draw(problem, seeds[0])]
        count = draws_needed(reference_draws[0], len(seeds))
        reference_draws += [_reference_draw(problem, seed) for seed in seeds[1:count]]
        port_draws = [_port_draw(port, problem, seed) for seed in seeds[:count]]
    except Exception as error:  # noqa: BLE001 - a port that cannot be built is a failed check, reported
        result.error = f"{type(error).__name__}: {error}"
        return result
    result.notes.append(f"{count} draw(s) per side, seeds {seeds[:count]}")

    all_rows = problem_map.rows_for_reference()
    random_port_names: list[str] = []  # port tensors holding a variable the original initialises at random
    for index, (name, reference_value) in enumerate(reference_draws[0].items()):
        rows = all_rows.get(name)
        absent = [row.port for row in rows or [] if row.port not in port_draws[0]]
        if rows is None or absent:
            missing = "the weight map has no row for it" if rows is None else f"the port has no tensor {absent[0]!r}"
            result.comparisons.append(Comparison(name, float("nan"), float("nan"), RANDOM_TOLERANCE, False, missing))
            continue
        draws = _draws_for(reference_value.size, count)  # big tensors: one draw is plenty
        ports = ", ".join(row.port for row in rows)
        try:  # a variable split across port tensors (an LSTM kernel) is compared whole
            port_values = [assemble(rows, draw) for draw in port_draws[:draws]]
        except ValueError as error:
            port_values = [draw[rows[0].port] for draw in port_draws[:draws]]
            result.notes.append(f"{name}: transform {rows[0].transform!r} failed: {error}")
        if tuple(port_values[0].shape) != tuple(reference_value.shape):
            result.comparisons.append(Comparison(
                name, float("nan"), float("nan"), RANDOM_TOLERANCE, False,
                f"shape mismatch: port {ports} -> {tuple(port_values[0].shape)}, "
                f"reference {tuple(reference_value.shape)}"))
            continue
        port_sample = Sample.of(np.concatenate([v.ravel() for v in port_values]))
        reference_sample = Sample.of(np.concatenate([d[name].ravel() for d in reference_draws[:draws]]))
        if reference_sample.family.kind == "constant":
            result.comparisons.append(compare_constant(name, port_sample, reference_sample))
        else:
            rng = np.random.default_rng([seeds[0], index])
            result.comparisons.append(compare_random(name, port_sample, reference_sample, rng))
            random_port_names += [row.port for row in rows]
    try:
        result.comparisons.append(check_seeding(port, problem, seeds, port_draws, random_port_names))
    except Exception as error:  # noqa: BLE001 - a build that fails the second time is a failed row
        result.comparisons.append(Comparison(SEEDING_ITEM, float("nan"), float("nan"), 0.0, False,
                                             f"{type(error).__name__}: {error}"))
    return result


SEEDING_ITEM = "(initial weights follow the global seed)"


def check_seeding(port: Port, problem: str, seeds: Sequence[int], port_draws: list[dict],
                  random_names: Sequence[str]) -> Comparison:
    """The port's initial weights come from the global torch seed, as the original's from the graph seed.

    Two builds under one `torch.manual_seed` must be identical (a constructor drawing from another
    source, or reseeding itself with a varying seed, fails) and builds under two seeds must differ in
    every tensor of `random_names`, the port tensors of variables the original draws at random (a
    constructor that seeds its own RNG with a constant fails). Tensors fixed by design, such as
    quadratic_deep's Hessian from the original's own RandomState(42), are not among them. max_abs is
    the largest same-seed difference; the row passes at 0 with no identical random tensor across seeds.
    """
    other_seed = next(seed for seed in (*seeds, max(seeds) + 1) if seed != seeds[0])
    again = _port_draw(port, problem, seeds[0])
    other = port_draws[1] if len(port_draws) > 1 and seeds[1] == other_seed else _port_draw(port, problem, other_seed)
    first = port_draws[0]
    same_seed_difference = max((float(np.max(np.abs(first[name].astype(np.float64) - again[name])))
                                for name in first if first[name].size and not np.array_equal(first[name], again[name])),
                               default=0.0)
    random_names = [name for name in dict.fromkeys(random_names) if first[name].size > 1]
    unchanged = [name for name in random_names if np.array_equal(first[name], other[name])]
    passed = same_seed_difference == 0.0 and not unchanged
    note = (f"two builds under torch.manual_seed({seeds[0]}): max difference {same_seed_difference:.3g}; "
            + (f"seed {other_seed}: {len(random_names) - len(unchanged)} of {len(random_names)} random tensors differ"
               if random_names else "no random tensor (every initial value is a constant)"))
    if unchanged:
        note += f"; identical across seeds: {', '.join(unchanged[:5])}{' ...' if len(unchanged) > 5 else ''}"
    # max_rel: 0 when both hold, else the same-seed difference plus the count of unchanged tensors.
    return Comparison(SEEDING_ITEM, same_seed_difference, same_seed_difference + len(unchanged), 0.0, passed, note)


def audit_init(port: Port, problems: Sequence[str], seeds: Sequence[int] = DEFAULT_SEEDS) -> list[CheckResult]:
    """The init check of every problem, for the audit (float32 only: initialisers draw in float32)."""
    return [check_init(port, problem, seeds) for problem in problems]
