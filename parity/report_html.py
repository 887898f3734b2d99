"""The audit report as one self-contained HTML page: verdicts, failing rows, and per-layer error charts.

Each problem gets an inline SVG chart (no scripts, no external files, readable offline): the
relative error of every tapped layer in forward order, on a log axis, one line per dtype and
check, with each dtype's tolerance as a dashed line; a point above its line is a divergence.
"""
from __future__ import annotations

import html
import math
from collections import defaultdict

from parity.audit import AuditRun
from parity.results import CheckResult

LAYER_CHECKS = ("forward", "train_mode")  # checks whose comparisons are layers in forward order
COLOURS = {("float64", "forward"): "#1f77b4", ("float64", "train_mode"): "#17becf",
           ("float32", "forward"): "#d62728", ("float32", "train_mode"): "#ff7f0e"}
WIDTH, HEIGHT, MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 760, 260, 60, 30, 12
LOG_FLOOR = 1e-18  # exact agreement is drawn at the floor of the axis


def _log(value: float) -> float:
    return math.log10(max(value, LOG_FLOOR)) if value == value else math.log10(LOG_FLOOR)


def layer_chart(results: list[CheckResult]) -> str:
    """SVG: relative error by layer depth (log axis) for the layer checks of one problem."""
    series = [r for r in results if r.check in LAYER_CHECKS and r.comparisons]
    if not series:
        return ""
    values = [_log(c.max_rel) for r in series for c in r.comparisons] + [_log(c.tolerance) for r in series
                                                                         for c in r.comparisons[:1]]
    low, high = math.floor(min(values)), math.ceil(max(values)) + 1
    depth = max(len(r.comparisons) for r in series)
    plot_width, plot_height = WIDTH - MARGIN_LEFT - 10, HEIGHT - MARGIN_BOTTOM - MARGIN_TOP

    def x(index: int) -> float:
        return MARGIN_LEFT + plot_width * (index / max(depth - 1, 1))

    def y(value: float) -> float:
        return MARGIN_TOP + plot_height * (high - _log(value)) / (high - low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">',
             f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_width}" height="{plot_height}" '
             'fill="none" stroke="#999"/>']
    for exponent in range(low, high + 1):
        level = MARGIN_TOP + plot_height * (high - exponent) / (high - low)
        parts.append(f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_width}" y1="{level:.1f}" y2="{level:.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{level + 4:.1f}" font-size="10" text-anchor="end">1e{exponent}'
                     '</text>')
    for tolerance, dtype in {(r.comparisons[0].tolerance, r.dtype) for r in series}:
        parts.append(f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_width}" y1="{y(tolerance):.1f}" '
                     f'y2="{y(tolerance):.1f}" stroke="{COLOURS[(dtype, "forward")]}" stroke-dasharray="5,4">'
                     f'<title>{dtype} tolerance {tolerance:.1e}</title></line>')
    legend = []
    for result in series:
        colour = COLOURS.get((result.dtype, result.check), "#555")
        points = " ".join(f"{x(i):.1f},{y(c.max_rel):.1f}" for i, c in enumerate(result.comparisons))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for i, comparison in enumerate(result.comparisons):
            radius = 2.5 if comparison.passed else 4.5
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(comparison.max_rel):.1f}" r="{radius}" fill="{colour}">'
                         f'<title>{html.escape(comparison.item)} ({result.dtype} {result.check}): rel '
                         f'{comparison.max_rel:.2e}, tolerance {comparison.tolerance:.1e}'
                         f'{"" if comparison.passed else " FAIL"}</title></circle>')
        legend.append(f'<span style="color:{colour}">&#9632; {result.dtype} {result.check}</span>')
    parts.append(f'<text x="{MARGIN_LEFT + plot_width / 2:.0f}" y="{HEIGHT - 8}" font-size="11" '
                 'text-anchor="middle">layer (forward order); dashed: tolerance; large dot: failed</text></svg>')
    return "\n".join(parts) + f'<div class="legend">{" ".join(legend)}</div>'


def _failing_rows(result: CheckResult) -> str:
    if result.error:
        return f"<pre>{html.escape(result.error)}</pre>"
    rows = "".join(f"<tr><td>{html.escape(c.item)}</td><td>{c.max_abs:.2e}</td><td>{c.max_rel:.2e}</td>"
                   f"<td>{c.tolerance:.1e}</td><td>{html.escape(c.note)}</td></tr>"
                   for c in result.comparisons if not c.passed)
    return ("<table><tr><th>item</th><th>max abs</th><th>max rel</th><th>tolerance</th><th>note</th></tr>"
            f"{rows}</table>")


def to_html(run: AuditRun, environment: dict, known_deviations: list[str]) -> str:
    by_problem: dict[str, list[CheckResult]] = defaultdict(list)
    for result in run.results:
        by_problem[result.problem].append(result)
    from parity.report import verdict_line

    verdict = verdict_line(run)
    failed = [r for r in run.results if r.counts_as_failure and not r.diagnostic]
    body = [f"<h1>Parity audit: <span class=\"{'passed' if run.passed else 'failed'}\">{verdict}</span></h1>",
            f"<p>Port <code>{html.escape(run.port)}</code> against <code>tf_reference</code>: "
            f"{len(run.problems)} problem(s), dtypes {', '.join(run.dtypes)}, seed {run.seed}; "
            f"{len(run.results)} checks, {len(failed)} failed.</p>",
            "<p class=\"env\">" + html.escape(", ".join(f"{k} {v}" for k, v in environment.items())) + "</p>"]
    for problem, results in by_problem.items():
        problem_failed = [r for r in results if r.counts_as_failure and not r.diagnostic]
        body.append(f"<h2>{html.escape(problem)} <span class=\"{'failed' if problem_failed else 'passed'}\">"
                    f"{'FAILED' if problem_failed else 'passed'}</span></h2>")
        body.append(layer_chart(results))
        cells = "".join(f"<tr><td>{r.dtype}</td><td>{html.escape(r.check)}</td>"
                        f"<td class=\"{'passed' if not r.counts_as_failure else 'failed'}\">{html.escape(r.verdict)}</td>"
                        f"<td>{(r.worst.max_rel if r.worst else float('nan')):.2e}</td></tr>" for r in results)
        body.append(f"<table><tr><th>dtype</th><th>check</th><th>verdict</th><th>worst rel</th></tr>{cells}</table>")
        for result in [r for r in results if not r.passed]:  # the isolated (teacher-forced) rows too
            body.append(f"<h3>{result.dtype} {html.escape(result.check)}: failing rows</h3>{_failing_rows(result)}")
        notes = [f"{r.dtype} {r.check}: {note}" for r in results for note in r.notes]
        notes += [f"{r.dtype} hint at {h.where}: {h.hypothesis}. Evidence: {h.evidence}." for r in results
                  for h in r.hints]
        if notes:
            body.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if known_deviations:
        body.append("<h2>Known deviations</h2><ul>" + "".join(f"<li>{html.escape(d)}</li>"
                                                               for d in known_deviations) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:900px;margin:auto}table{border-collapse:collapse;margin:6px 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}.passed{color:#2a7}.failed{color:#c22}"
             ".legend{font-size:12px}.env{font-size:11px;color:#666}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Parity audit: {verdict}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
