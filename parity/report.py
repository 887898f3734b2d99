"""Renders an AuditRun as JSON and Markdown (written atomically) and a terminal summary."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from parity.audit import AuditRun
from parity.results import CheckResult

KNOWN_DEVIATIONS = [
    "torch.optim.Adam is not the original's Adam: it adds epsilon to sqrt(v_hat), TF1 to sqrt(v). "
    "The port uses deepobs.optim.TF1Adam; the planted-bug test measures the stock optimizer's difference.",
    "The original's fmnist_mlp builds the MNIST data set; the port's registry names Fashion-MNIST.",
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


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def to_json(run: AuditRun, environment: dict) -> str:
    return json.dumps({
        "passed": run.passed,
        "port": run.port,
        "problems": run.problems,
        "dtypes": run.dtypes,
        "seed": run.seed,
        "environment": environment,
        "seconds": run.seconds,
        "known_deviations": KNOWN_DEVIATIONS,
        "results": [result.to_dict() for result in run.results],
    }, indent=2, allow_nan=True)


def _fmt(value: float) -> str:
    return f"{value:.2e}" if value == value else "nan"


def _row(result: CheckResult) -> str:
    worst = result.worst
    first = result.first_divergence
    verdict = "pass" if result.passed else "**FAIL**"
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
        lines += ["## Failures", ""]
        for result in failed:
            first = result.first_divergence
            where = result.error or (f"first divergence at `{first.item}`: max abs {_fmt(first.max_abs)}, "
                                     f"rel {_fmt(first.max_rel)} > {_fmt(first.tolerance)} {first.note}")
            lines.append(f"- {result.problem} {result.dtype} {result.check}: {where}")
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
    lines += ["", "## Known deviations of the original or the port", ""] + [f"- {d}" for d in KNOWN_DEVIATIONS]
    return "\n".join(lines) + "\n"


def write_reports(run: AuditRun, environment: dict, directory: Path, stem: str = "parity-report") -> tuple[Path, Path]:
    json_path, markdown_path = directory / f"{stem}.json", directory / f"{stem}.md"
    atomic_write(json_path, to_json(run, environment))
    atomic_write(markdown_path, to_markdown(run, environment))
    return json_path, markdown_path


def summary(run: AuditRun) -> list[str]:
    failed = [r for r in run.results if not r.passed]
    lines = []
    for result in failed:
        first = result.first_divergence
        where = result.error or f"first divergence at {first.item} (rel {_fmt(first.max_rel)} > {_fmt(first.tolerance)})"
        lines.append(f"FAIL {result.problem} {result.dtype} {result.check}: {where}")
    lines.append(f"{'PASSED' if run.passed else 'FAILED'}: {len(run.results) - len(failed)}/{len(run.results)} checks "
                 f"passed on {len(run.problems)} problem(s) x {len(run.dtypes)} dtype(s) "
                 f"({sum(run.seconds.values()):.1f} s of audit time summed over workers)")
    return lines
