"""python -m parity selftest: the audit's power and precision on the catalogue of parity.mutants.

Every planted bug must fail its check at its layer (the mutation score counts bugs the audit failed
at all, the localisation score those it failed at the named check and first diverging tensor); every
equivalent rewrite must pass (precision). Each row runs only its problem and checks, float64 unless
it says otherwise, on a fresh copy of the port.
"""
from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass

from parity.mutants import Mutant, catalogue
from parity.port import deepobs_port


@dataclass
class Outcome:
    mutant: Mutant
    caught: bool  # a bug: some check failed; an equivalent rewrite: some check failed (a false alarm)
    localised: bool  # a bug: the expected check failed at the expected tensor; an equivalent: every check passed
    found: str  # what the audit said (check and first divergence, or "passed")
    seconds: float

    @property
    def ok(self) -> bool:
        return self.localised


def _results(mutant: Mutant):
    from parity.audit import audit_problem
    from parity.init_check import check_init

    port = mutant.mutate(deepobs_port())
    results = []
    model_checks = [c for c in mutant.checks if c != "init"]
    if model_checks:
        results += audit_problem(port, mutant.problem, mutant.dtype, checks=model_checks)
    if "init" in mutant.checks:
        results.append(check_init(port, mutant.problem))
    return results


def _describe(result) -> str:
    if result.error:
        return f"{result.check}: error {result.error[:160]}"
    first = result.first_divergence
    return f"{result.check}: {first.item if first else '?'}{' (' + first.note[:120] + ')' if first and first.note else ''}"


def run_mutant(mutant: Mutant) -> Outcome:
    start = time.perf_counter()
    try:
        results = _results(mutant)
    except Exception as error:  # noqa: BLE001 - a crash of the harness on a mutant is reported, not raised
        return Outcome(mutant, True, False, f"the audit crashed: {type(error).__name__}: {error}\n"
                                            f"{traceback.format_exc()}", time.perf_counter() - start)
    failed = [r for r in results if not r.passed]
    seconds = time.perf_counter() - start
    if mutant.equivalent:
        verdicts = ", ".join(f"{r.check} {r.verdict}" for r in results)
        return Outcome(mutant, bool(failed), not failed, "; ".join(map(_describe, failed)) or verdicts, seconds)
    expected = next((r for r in failed if r.check == mutant.expect_check), None)
    if expected is None:
        localised = False
    elif mutant.expect_check == "setup":
        localised = mutant.expect_item in expected.error
    else:
        first = expected.first_divergence
        localised = not expected.error and first is not None and first.item == mutant.expect_item
    return Outcome(mutant, bool(failed), localised, "; ".join(map(_describe, failed)) or "every check passed",
                   seconds)


def select(fast: bool = False, deep: bool = False, names: list[str] | None = None) -> list[Mutant]:
    rows = [m for m in catalogue() if (deep or not m.deep) and (not fast or m.fast)]
    if names:
        rows = [m for m in rows if any(name.lower() in m.name.lower() for name in names)]
    return rows


@dataclass
class Scores:
    bugs: int
    caught: int
    localised: int
    equivalents: int
    passed_equivalents: int

    @property
    def mutation(self) -> float:
        return self.caught / self.bugs if self.bugs else 1.0

    @property
    def localisation(self) -> float:
        return self.localised / self.bugs if self.bugs else 1.0

    @property
    def precision(self) -> float:
        return self.passed_equivalents / self.equivalents if self.equivalents else 1.0

    @property
    def perfect(self) -> bool:
        return self.mutation == self.localisation == self.precision == 1.0


def scores(outcomes: list[Outcome]) -> Scores:
    bugs = [o for o in outcomes if not o.mutant.equivalent]
    equivalents = [o for o in outcomes if o.mutant.equivalent]
    return Scores(len(bugs), sum(o.caught for o in bugs), sum(o.localised for o in bugs), len(equivalents),
                  sum(o.localised for o in equivalents))


def main(fast: bool = False, deep: bool = False, names: list[str] | None = None, listing: bool = False) -> int:
    rows = select(fast, deep, names)
    if not rows:
        print(f"error: no catalogue row matches {' '.join(names or [])!r}", file=sys.stderr)
        return 2
    if listing:
        for m in rows:
            target = "must pass" if m.equivalent else f"{m.expect_check} at {m.expect_item}"
            print(f"{'equivalent' if m.equivalent else 'bug':<10} {m.problem:<18} {m.name}: {target}")
        return 0
    start = time.perf_counter()
    outcomes = []
    for index, mutant in enumerate(rows, 1):
        outcome = run_mutant(mutant)
        outcomes.append(outcome)
        mark = "ok  " if outcome.ok else "MISS"
        target = "passes" if mutant.equivalent else f"{mutant.expect_check} at {mutant.expect_item}"
        line = f"[{index:>3}/{len(rows)}] {mark} {mutant.problem:<17} {mutant.name} (expected: {target}; {outcome.seconds:.1f}s)"
        if not outcome.ok:
            line += f"\n           found: {outcome.found}"
        print(line, flush=True)
    s = scores(outcomes)
    print(f"mutation score {s.caught}/{s.bugs} ({100 * s.mutation:.0f}%), localisation score {s.localised}/{s.bugs} "
          f"({100 * s.localisation:.0f}%), equivalent-mutant precision {s.passed_equivalents}/{s.equivalents} "
          f"({100 * s.precision:.0f}%); {time.perf_counter() - start:.0f} s")
    return 0 if s.perfect else 1
