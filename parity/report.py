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
        "port": run.port,
        "problems": run.problems,
        "dtypes": run.dtypes,
        "seed": run.seed,
        "environment": environment,
        "seconds": run.seconds,
        "known_deviations": known_deviations(run),
        "results": [result.to_dict() for result in run.results],
    }, indent=2, allow_nan=True)


def _fmt(value: float) -> str:
    return f"{value:.2e}" if value == value else "nan"


def _row(result: CheckResult) -> str:
    worst = result.worst
    first = result.first_divergence
    verdict = "**FAIL**" if result.verdict == "FAIL" else result.verdict
    if result.not_applicable and result.passed:
        return (f"| {result.problem} | {result.dtype} | {result.check} | n/a | - | - | - | - | "
                f"does not apply: {result.not_applicable} |")
    if result.error:
        return f"| {result.problem} | {result.dtype} | {result.check} | {verdict} | - | - | - | - | {result.error} |"
    return (f"| {result.problem} | {result.dtype} | {result.check} | {verdict} | "
            f"{_fmt(worst.max_abs) if worst else '-'} | {_fmt(worst.max_rel) if worst else '-'} | "
            f"{_fmt(worst.tolerance) if worst else '-'} | {f'{worst.margin:.1f}x' if worst else '-'} | "
            f"{first.item + (' (' + first.note + ')' if first.note else '') if first else (worst.item if worst else '')} |")


def to_markdown(run: AuditRun, environment: dict) -> str:
    failed = [r for r in run.results if not r.passed]
    lines = [
        f"# Parity audit: {'PASSED' if run.passed else 'FAILED'}",
        "",
        f"Port `{run.port}` against `tf_reference` on {len(run.problems)} problem(s), dtypes {', '.join(run.dtypes)}, "
        f"seed {run.seed}. {len(run.results)} checks, {len(failed)} failed, "
        f"{sum(run.seconds.values()):.1f} s of audit time (summed over problems and worker processes).",
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
        lines += ["## Failures", "", "Every failing row of every failed check, in forward / creation order.", ""]
        for result in failed:
            first = result.first_divergence
            where = result.error or (f"first divergence at `{first.item}`: max abs {_fmt(first.max_abs)}, "
                                     f"rel {_fmt(first.max_rel)} > {_fmt(first.tolerance)} {first.note}")
            lines.append(f"- {result.problem} {result.dtype} {result.check}: {where}")
            lines += [f"  - `{c.item}`: max abs {_fmt(c.max_abs)}, rel {_fmt(c.max_rel)} > {_fmt(c.tolerance)}"
                      f"{' ' + c.note if c.note else ''}" for c in result.comparisons if not c.passed][1:]
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
    lines += [_row(result) for result in run.results]
    notes = [(r, note) for r in run.results for note in r.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {r.problem} {r.dtype} {r.check}: {note}" for r, note in notes]
    if deviations := known_deviations(run):
        lines += ["", "## Known deviations of the original or the port", ""] + [f"- {d}" for d in deviations]
    lines += exercised_ranges(run)
    return "\n".join(lines) + "\n"


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
    failed = [r for r in run.results if not r.passed]
    lines = []
    for result in failed:
        first = result.first_divergence
        where = result.error or f"first divergence at {first.item} (rel {_fmt(first.max_rel)} > {_fmt(first.tolerance)})"
        lines.append(f"FAIL {result.problem} {result.dtype} {result.check}: {where}")
    skipped = sum(1 for r in run.results if r.verdict == "n/a")
    lines.append(f"{'PASSED' if run.passed else 'FAILED'}: {len(run.results) - len(failed)}/{len(run.results)} checks "
                 f"passed ({skipped} of them n/a, each with its reason in the report) on {len(run.problems)} problem(s) x {len(run.dtypes)} dtype(s) "
                 f"({sum(run.seconds.values()):.1f} s of audit time summed over workers)")
    return lines
