"""Renders an AuditRun as JSON and Markdown (written atomically) and a terminal summary."""
from __future__ import annotations

import json
from pathlib import Path

from deepobs.files import atomic_write_text
from parity.audit import AuditRun
from parity.results import CheckResult

KNOWN_DEVIATIONS = [
    "torch.optim.Adam is not the original's Adam: it adds epsilon to sqrt(v_hat), TF1 to sqrt(v). "
    "The port uses deepobs.optim.TF1Adam; the planted-bug test measures the stock optimizer's difference.",
    "The original's fmnist_mlp builds the MNIST data set; the port's registry names Fashion-MNIST.",
    "tolstoi_char_rnn: torch's nn.LSTM keeps two biases per layer where TF's LSTMCell keeps one and adds "
    "forget_bias 1.0 as a constant; the port's bias_hh_l0 holds that constant, frozen, so the port holds "
    "285,523 numbers of which 284,499 are trainable, the original's count (parity.maps.char_rnn_map).",
    "quadratic_deep: the original draws its Hessian from a module-level RandomState(42), so a second instance "
    "in one process gets another one; both frameworks build the first instance's (deep_hessian(0)), the one a "
    "run of the original used.",
    "imagenet_inception_v3: the original's output dropout, tf.layers.dropout(x, 0.8, training), receives "
    "`training` as its noise_shape and keeps training=False, so it never runs in any phase; the port and the "
    "reference reproduce that (no output dropout). A port with slim's p = 0.2 (or p = 0.8) differs from what the "
    "original computed.",
    "imagenet_inception_v3: the original's tf.losses.softmax_cross_entropy rounds per-example losses to float32 "
    "(compute_weighted_loss casts to float32 and back), a no-op in its float32 graph; the float64 reference writes "
    "the same formula out without that cast, so the float64 audit measures round-off, not float32 rounding.",
    "In float64 the reference passes its optimizer hyperparameters as float64 tensors; the original's TF1 code "
    "would round Python floats to float32 first (lr 0.1 -> 0.10000000149).",
]


def known_deviations(run: AuditRun) -> list[str]:
    """Sentences about this repository's port, shown only when that port is the one audited."""
    return KNOWN_DEVIATIONS if run.port == "deepobs" else []


def to_json(run: AuditRun, environment: dict) -> str:
    return json.dumps({
        "passed": run.passed,
        "verdict": verdict_line(run),
        "port": run.port,
        "problems": run.problems,
        "dtypes": run.dtypes,
        "seed": run.seed,
        "environment": environment,
        "seconds": run.seconds,
        "known_deviations": known_deviations(run),
        "results": [result.to_dict() for result in run.results],
    }, indent=2, allow_nan=True)


def verdict_line(run: AuditRun) -> str:
    """PASSED, PASSED with N declared deviation(s), or FAILED."""
    if not run.passed:
        return "FAILED"
    declared = len(run.declared)
    return f"PASSED with {declared} declared deviation{'s' if declared != 1 else ''}" if declared else "PASSED"


def _fmt(value: float) -> str:
    return f"{value:.2e}" if value == value else "nan"


def _row(result: CheckResult) -> str:
    worst = result.worst
    first = result.first_divergence
    verdict = {"FAIL": "**FAIL**", "declared": "declared deviation"}.get(result.verdict, result.verdict)
    if result.not_judged and result.passed:
        return (f"| {result.problem} | {result.dtype} | {result.check} | {verdict} | {_fmt(worst.max_abs)} | "
                f"{_fmt(worst.max_rel)} | {_fmt(worst.tolerance)} | - | within what the failed gradients propagate "
                f"({worst.item}); the '(reference gradients)' variant judges the update formula |")
    if result.not_applicable and result.passed:
        return (f"| {result.problem} | {result.dtype} | {result.check} | n/a | - | - | - | - | "
                f"does not apply: {result.not_applicable} |")
    if result.error:
        return f"| {result.problem} | {result.dtype} | {result.check} | {verdict} | - | - | - | - | {result.error} |"
    return (f"| {result.problem} | {result.dtype} | {result.check} | {verdict} | "
            f"{_fmt(worst.max_abs) if worst else '-'} | {_fmt(worst.max_rel) if worst else '-'} | "
            f"{_fmt(worst.tolerance) if worst else '-'} | {f'{worst.margin:.1f}x' if worst else '-'} | "
            f"{first.item + (' (' + first.note + ')' if first.note else '') if first else (worst.item if worst else '')} |")


def row_group(check: str, item: str) -> str:
    """What a failing row is grouped under: its step for an optimizer check, its kind of quantity otherwise."""
    if check.startswith("step/"):
        return item.split(" ", 1)[0]
    if item.startswith(("regularizer", "data_loss", "total_loss", "accuracy", "train ")):
        return "loss terms"
    if item.endswith(("moving_mean", "moving_variance")):
        return "BN running statistics"
    if item.endswith("(gradient into its output)"):
        return "gradients into layer outputs"
    if check in ("gradients", "isolated/gradients") or check.startswith("carried_state"):
        return "parameter gradients"
    return "layers and outputs"


def _failing_rows(result: CheckResult) -> list[str]:
    """Every failing row of a check, grouped (row_group), in the check's order within a group."""
    groups: dict[str, list] = {}
    for comparison in result.comparisons:
        if not comparison.passed:
            groups.setdefault(row_group(result.check, comparison.item), []).append(comparison)
    lines = []
    for group, comparisons in groups.items():
        lines.append(f"  - {group} ({len(comparisons)} failing):")
        lines += [f"    - `{c.item}`: max abs {_fmt(c.max_abs)}, rel {_fmt(c.max_rel)} > {_fmt(c.tolerance)}"
                  f"{' (' + c.note + ')' if c.note else ''}" for c in comparisons]
    return lines


def _hint_lines(result: CheckResult) -> list[str]:
    return [f"  - **hint** at `{hint.where}`: {hint.hypothesis}. Evidence: {hint.evidence}." for hint in result.hints]


def to_markdown(run: AuditRun, environment: dict) -> str:
    failed = [r for r in run.results if r.counts_as_failure and not r.diagnostic]
    diagnostic = [r for r in run.results if r.diagnostic]
    lines = [
        f"# Parity audit: {verdict_line(run)}",
        "",
        f"Port `{run.port}` against `tf_reference` on {len(run.problems)} problem(s), dtypes {', '.join(run.dtypes)}, "
        f"seed {run.seed}. {len(run.results) - len(diagnostic)} checks, {len(failed)} failed, "
        + (f"{len(run.declared)} differ as the port declares, " if run.declared else "")
        + f"{sum(run.seconds.values()):.1f} s of audit time (summed over problems and worker processes).",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in environment.items()),
        "",
        "Errors are max |port - reference| (abs) and that divided by max |reference| (rel), per tensor; "
        "the row shows the worst tensor of the check; margin = tolerance / rel. "
        "The last column names the first diverging layer or parameter of a failed check "
        "(the worst tensor of a passed one).",
        "",
    ]
    if failed:
        lines += ["## Failures", "", "Every failing row of every failed check, grouped; within a group in forward / "
                  "creation order (gradients: backward order, the parameter closest to the loss first).", ""]
        for result in failed:
            first = result.first_divergence
            where = result.error or (f"first divergence at `{first.item}`: max abs {_fmt(first.max_abs)}, "
                                     f"rel {_fmt(first.max_rel)} > {_fmt(first.tolerance)} {first.note}")
            lines.append(f"- {result.problem} {result.dtype} {result.check}: {where}")
            lines += _failing_rows(result) + _hint_lines(result)
        lines.append("")
    if diagnostic:
        lines += ["## Every deviation, layer by layer (teacher forcing)", "",
                  "Each tapped layer run on the reference's own input (its output replaced by the reference's for "
                  "the next layer), its backward fed the reference's gradient at its output, the loss on the "
                  "reference's outputs and the regularizer per tensor group: every row listed here differs on "
                  "its own, not because something upstream did. These results explain; they do not decide the "
                  "verdict. Hints are hypotheses with the measurement behind them.", ""]
        for result in diagnostic:
            if result.passed and not result.hints:
                lines.append(f"- {result.problem} {result.dtype} {result.check}: every row agrees "
                             f"(worst rel {_fmt(result.worst.max_rel) if result.worst else '-'})")
                continue
            lines.append(f"- {result.problem} {result.dtype} {result.check}: "
                         + (result.error or f"{sum(not c.passed for c in result.comparisons)} row(s) differ"))
            lines += _failing_rows(result) + _hint_lines(result)
            lines += [f"  - note: {note}" for note in result.notes]
        lines.append("")
    if declared := run.declared:
        lines += ["## Declared deviations", "",
                  "Checks that differ where the port declares a deviation (Port.deviations): measured and shown, "
                  "not counted as failures.", ""]
        for result in declared:
            worst = result.worst
            measured = result.error or (f"worst `{worst.item}`: rel {_fmt(worst.max_rel)} (tolerance "
                                        f"{_fmt(worst.tolerance)})" if worst else "")
            lines.append(f"- {result.problem} {result.dtype} {result.check}: declared \"{result.declared}\"; {measured}")
        lines.append("")
    if counts := parameter_counts(run):
        lines += ["## Trainable parameters", "", "| problem | port | reference | equal |", "|---|---|---|---|"]
        lines += [f"| {problem} | {c.note.replace('port ', '').replace(', reference ', ' | ')} | "
                  f"{'yes' if c.passed else '**NO**'} |" for problem, c in counts.items()]
        lines.append("")
    init_results = [r for r in run.results if r.check == "init"]
    if init_results:
        lines += ["## Initialisation (port's own initial weights vs the reference's, per tensor)", "",
                  "| problem | tensor | verdict | expected vs measured |", "|---|---|---|---|"]
        lines += [f"| {r.problem} | {c.item} | {'pass' if c.passed else '**FAIL**'} | {c.note} |"
                  for r in init_results for c in r.comparisons]
        lines += [f"| {r.problem} | - | **FAIL** | {r.error} |" for r in init_results if r.error]
        lines.append("")
    lines += ["## Checks", "", "| problem | dtype | check | verdict | max abs | max rel | tolerance | margin | "
              "first divergence / worst tensor |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(result) for result in run.results if not result.diagnostic]
    notes = [(r, note) for r in run.results if not r.diagnostic for note in r.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {r.problem} {r.dtype} {r.check}: {note}" for r, note in notes]
    if deviations := known_deviations(run):
        lines += ["", "## Known deviations of the original or the port", ""] + [f"- {d}" for d in deviations]
    lines += exercised_ranges(run)
    return "\n".join(lines) + "\n"


def parameter_counts(run: AuditRun) -> dict:
    """problem -> the forward check's trainable-parameter comparison (its note holds both counts)."""
    counts = {}
    for result in run.results:
        if result.check == "forward":
            for comparison in result.comparisons:
                if comparison.item == "trainable parameters":
                    counts.setdefault(result.problem, comparison)
    return counts


def exercised_ranges(run: AuditRun) -> list[str]:
    """Per problem (first dtype), the range of values each tapped layer exercised in the forward check."""
    rows = [f"- {r.problem}: " + "; ".join(f"`{c.item}` {c.exercised}" for c in r.comparisons if c.exercised)
            for r in run.results if r.check == "forward" and r.dtype == run.dtypes[0]
            and any(c.exercised for c in r.comparisons)]
    if not rows:
        return []
    return ["", "## Ranges exercised", "", "Each tapped layer's reference output in the forward check (inference "
            "mode, batch 0): [min, max] and the share of exact zeros; train-mode ranges are in the JSON.", ""] + rows


def write_reports(run: AuditRun, environment: dict, directory: Path, stem: str = "parity-report") -> tuple[Path, Path]:
    """JSON, Markdown and a one-page HTML report (stem.html, with per-layer error charts), each atomically."""
    from parity.report_html import to_html

    json_path, markdown_path = directory / f"{stem}.json", directory / f"{stem}.md"
    atomic_write_text(json_path, to_json(run, environment))
    atomic_write_text(markdown_path, to_markdown(run, environment))
    atomic_write_text(directory / f"{stem}.html", to_html(run, environment, known_deviations(run)))
    return json_path, markdown_path


def summary(run: AuditRun) -> list[str]:
    checks = [r for r in run.results if not r.diagnostic]
    failed = [r for r in checks if r.counts_as_failure]
    lines = [f"declared {r.problem} {r.dtype} {r.check}: {r.declared}" for r in run.declared]
    for result in failed:
        first = result.first_divergence
        where = result.error or f"first divergence at {first.item} (rel {_fmt(first.max_rel)} > {_fmt(first.tolerance)})"
        lines.append(f"FAIL {result.problem} {result.dtype} {result.check}: {where}")
    for result in run.results:
        if result.diagnostic and not result.passed:
            differing = [c.item for c in result.comparisons if not c.passed]
            lines.append(f"ISOLATED {result.problem} {result.dtype} {result.check}: "
                         + (result.error or f"differ on their own input: {', '.join(differing)}"))
        lines += [f"HINT {result.problem} {result.dtype} {hint.where}: {hint.hypothesis}" for hint in result.hints]
    skipped = sum(1 for r in checks if r.verdict == "n/a")
    unjudged = sum(1 for r in checks if r.not_judged and r.passed)
    declared = f" and {len(run.declared)} declared deviation(s)" if run.declared else ""
    passed = sum(1 for r in checks if r.passed and not r.not_judged)
    lines.append(f"{verdict_line(run)}: {passed}/{len(checks)} checks passed{declared} ({skipped} of them n/a, each "
                 f"with its reason in the report"
                 f"{f'; {unjudged} more not judged: explained by failed gradients' if unjudged else ''}) on {len(run.problems)} problem(s) x {len(run.dtypes)} dtype(s) "
                 f"({sum(run.seconds.values()):.1f} s of audit time summed over workers)")
    return lines
