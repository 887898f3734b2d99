"""Typed results of every comparison. Checks return these; the report only renders them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Denominator floor for relative errors, so an all-zero reference tensor does not divide by 0.
SCALE_FLOOR = 1e-30


@dataclass(frozen=True)
class Comparison:
    """One tensor (a layer's output, a parameter's gradient, a loss...) compared across frameworks.

    max_rel is the max abs error divided by the reference tensor's largest magnitude:
    an error relative to the tensor's scale, which stays meaningful where elements are ~0.
    """

    item: str  # reference-side name: layer, variable or quantity
    max_abs: float
    max_rel: float
    tolerance: float  # on max_rel
    passed: bool
    note: str = ""
    kind: str = ""  # "tap" (a layer's output), "output" (a model output), "" (anything else)
    exercised: str = ""  # a tap's reference range, e.g. "[-7.1, 23.4], 12% exact zeros" (see describe_range)

    @property
    def margin(self) -> float:
        """How many times below its tolerance the error is (inf if exact; < 1 if failed)."""
        return float("inf") if self.max_rel == 0 else self.tolerance / self.max_rel


@dataclass(frozen=True)
class Hint:
    """A diagnosis: what the measured pattern suggests the port does, and the measurement behind it."""

    where: str  # the layer, tensor or quantity it is about
    hypothesis: str
    evidence: str


@dataclass
class CheckResult:
    """All comparisons of one check (e.g. 'forward', 'step/adam') on one problem and dtype."""

    problem: str
    check: str
    dtype: str
    comparisons: list[Comparison] = field(default_factory=list)
    error: str = ""  # set when the check could not run to the end (the failure is in the report)
    notes: list[str] = field(default_factory=list)
    traceback: str = ""  # of the error, for the JSON report (the Markdown shows the one-line error)
    not_applicable: str = ""  # why the check does not apply to this problem (it then compares nothing)
    declared: str = ""  # the port's declared reason for this deviation (Port.deviations): reported, not counted
    # A diagnostic result (the teacher-forced 'isolated/...' checks) explains failures; it never decides the
    # verdict, so float32 round-off inside one layer cannot fail an audit that its real checks pass.
    diagnostic: bool = False
    hints: list[Hint] = field(default_factory=list)
    # Set when this check's error is explained by an upstream check that failed (a step whose error is within
    # what the failed gradients propagate): the check is then not judged, neither pass nor fail.
    not_judged: str = ""
    # Why the differing taps are an equivalent decomposition (see mark_equivalent); "" if they are not.
    equivalent: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and (bool(self.equivalent) or all(c.passed for c in self.comparisons))

    @property
    def counts_as_failure(self) -> bool:
        return not self.passed and not self.declared

    @property
    def verdict(self) -> str:
        if self.not_judged and self.passed:
            return f"not judged ({self.not_judged})"
        if self.equivalent and not self.error:
            return "equivalent"
        if self.not_applicable and self.passed:
            return "n/a"
        return "pass" if self.passed else ("declared" if self.declared else "FAIL")

    @property
    def first_divergence(self) -> Comparison | None:
        """The first failed comparison, in forward / creation order."""
        return next((c for c in self.comparisons if not c.passed), None)

    @property
    def worst(self) -> Comparison | None:
        def used_fraction(c: Comparison) -> float:
            if c.tolerance > 0:
                return c.max_rel / c.tolerance
            return float("inf") if c.max_rel else 0.0

        return max(self.comparisons, key=used_fraction, default=None)

    def to_dict(self) -> dict:
        first = self.first_divergence
        return {
            "problem": self.problem,
            "check": self.check,
            "dtype": self.dtype,
            "passed": self.passed,
            "declared": self.declared,
            "error": self.error,
            "traceback": self.traceback,
            "not_applicable": self.not_applicable,
            "not_judged": self.not_judged,
            "diagnostic": self.diagnostic,
            "verdict": self.verdict,
            "equivalent": self.equivalent,
            "notes": self.notes,
            "hints": [asdict(hint) for hint in self.hints],
            "first_divergence": first.item if first else None,
            "comparisons": [asdict(c) | {"margin": c.margin} for c in self.comparisons],
        }


def absorbed_taps(result: CheckResult) -> list[Comparison]:
    """The failed taps of a tap-comparing check if each is absorbed downstream, else [].

    Absorbed: every failed comparison is an intermediate tap (a value or shape difference, not a
    missing or non-finite one) whose next comparison is a tap or output that agrees, and every
    non-tap comparison (the outputs, statistics, losses) agrees. A difference that reaches a later
    tap, an output or anything else is a failure.
    """
    comparisons = result.comparisons
    failed = [index for index, c in enumerate(comparisons) if not c.passed]
    if result.error or not failed or not any(c.kind == "output" for c in comparisons):
        return []
    for index in failed:
        c = comparisons[index]
        if c.kind != "tap" or not (np.isfinite(c.max_abs) or c.note.startswith("shape mismatch")):
            return []
        following = comparisons[index + 1] if index + 1 < len(comparisons) else None
        if following is None or not following.passed or following.kind not in ("tap", "output"):
            return []
    return [comparisons[index] for index in failed]


def mark_equivalent(results: list[CheckResult]) -> None:
    """Call a tap check 'equivalent' where its differing taps are absorbed (absorbed_taps) and every other
    check of the same problem and dtype passed: the port computes the same function, decomposed or
    tapped at another point (a ReLU moved across a max pool). Anything downstream that differs, in this
    check or another, keeps it a failure."""
    candidates = {id(r): absorbed_taps(r) for r in results}
    for result in results:
        taps = candidates[id(result)]
        if not taps:
            continue
        same_pair = [r for r in results if (r.problem, r.dtype) == (result.problem, result.dtype) and r is not result]
        if any(not (r.passed or candidates[id(r)]) for r in same_pair):
            continue
        agreeing = sorted({r.check for r in same_pair})
        result.equivalent = (f"{', '.join(c.item for c in taps)} differ{'s' if len(taps) == 1 else ''} from the reference "
                             f"but the next tap, every later tap and the outputs agree"
                             + (f", and so do {', '.join(agreeing)}" if agreeing else "")
                             + ": an equivalent decomposition (or a tap at another point), not a divergence")
        result.notes.append(f"equivalent: {result.equivalent}")


# Elements per block when reducing an error: a large tensor's float64 error never exists whole
# (a VGG dense kernel has 103M elements) unless an explained-error bound needs it.
ERROR_BLOCK = 1 << 22


def _max_error_and_scale(port: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max |port - reference| in float64, max |reference|); NaN anywhere gives NaN."""
    port_flat, reference_flat = port.reshape(-1), reference.reshape(-1)
    errors, scales = [], []
    for start in range(0, port_flat.size, ERROR_BLOCK):
        block = slice(start, start + ERROR_BLOCK)
        errors.append(np.max(np.abs(np.subtract(port_flat[block], reference_flat[block], dtype=np.float64))))
        scales.append(np.max(np.abs(reference_flat[block])))
    return float(np.max(errors)), float(np.max(scales))


def compare(item: str, port_value, reference_value, tolerance: float, note: str = "",
            explained_error=None) -> Comparison:
    """Compare two arrays already in the same layout. Non-finite values or shape mismatches fail.

    Passes when max_rel <= tolerance, or, where `explained_error` (a function returning an
    elementwise bound on the error that an upstream, separately checked difference accounts
    for; called only when needed) is given, when every element's error is within
    tolerance * scale + explained_error().
    """
    port, reference = np.asarray(port_value), np.asarray(reference_value)
    if port.shape != reference.shape:
        return Comparison(item, float("nan"), float("nan"), tolerance, False,
                          f"shape mismatch: port {port.shape} vs reference {reference.shape}")
    if not port.size:
        return Comparison(item, 0.0, 0.0, tolerance, True, note)
    max_abs, scale = _max_error_and_scale(port, reference)
    if not (np.isfinite(max_abs) and np.isfinite(scale)):  # a NaN or Inf anywhere reaches these maxima
        bad = [side for side, a in (("port", port), ("reference", reference)) if not np.all(np.isfinite(a))]
        return Comparison(item, float("nan"), float("nan"), tolerance, False,
                          f"non-finite values (NaN/Inf) in {' and '.join(bad)}")
    max_rel = max_abs / max(scale, SCALE_FLOOR)
    passed = max_rel <= tolerance
    if not passed and explained_error is not None:
        error = np.abs(np.subtract(port, reference, dtype=np.float64))
        allowance = np.broadcast_to(tolerance * scale + np.asarray(explained_error(), dtype=np.float64), error.shape)
        passed = bool(np.all(error <= allowance))
        if passed:  # how much of the allowance the worst element uses: the margin a max_rel alone hides
            used = float(np.max(np.divide(error, allowance, out=np.zeros_like(error), where=allowance > 0)))
            note = ((note + "; " if note else "")
                    + f"error within the propagated gradient difference (up to {used:.0%} of the allowance)")
    return Comparison(item, max_abs, max_rel, tolerance, passed, note)
