"""One table from a pytest-benchmark JSON of test_bench_models.py: port vs reference examples/s.

    python benchmarks/table.py RUN.json                  # the table, with the run's conditions
    python benchmarks/table.py RUN.json --spread RUN2.json  # run-to-run change of every benchmark

The --spread figures are what the `--benchmark-compare-fail` threshold in docs/benchmarks.md is
chosen from: the same suite, same machine, no code change.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

PORT, REFERENCE, COMPILED = "torch", "tf", "torch.compile"
# Other processes' average busy cores above which a row is marked: its ratio measured the machine.
CONTENDED_CORES = 0.25


def load(path: Path) -> tuple[dict, dict[tuple[str, str, str], dict]]:
    """(the run's JSON, {(problem, phase, framework): extra_info}) for the model benchmarks in it."""
    run = json.loads(path.read_text())
    results = {}
    for bench in run["benchmarks"]:
        info = bench.get("extra_info", {})
        if {"problem", "phase", "framework", "examples_per_second"} <= info.keys():
            results[info["problem"], info["phase"], info["framework"]] = info
    return run, results


def conditions(run: dict, results: dict) -> list[str]:
    cpu = run["machine_info"].get("cpu", {})
    infos = list(results.values())
    threads = {info["framework"]: info["threads"] for info in infos}
    capped = sorted({f"{i['problem']} {i['batch_size']} (default {i['default_batch_size']})"
                     for i in infos if i["batch_size"] != i["default_batch_size"]})
    return [
        f"run {run['datetime']}, commit {run.get('commit_info', {}).get('id', '?')[:10]}, "
        f"{cpu.get('brand_raw', '?')} x{cpu.get('count', '?')}, dtype {', '.join(sorted({i['dtype'] for i in infos}))}",
        "threads: " + ", ".join(f"{fw} intra {t['intra']} inter {t['inter']}" for fw, t in sorted(threads.items())),
        "capped batches: " + (", ".join(capped) or "none"),
    ]


def render(results: dict) -> list[str]:
    compiled = any(framework == COMPILED for _, _, framework in results)
    header = ["problem", "phase", "batch", "port ex/s", "reference ex/s", "port/reference"]
    if compiled:
        header += ["torch.compile ex/s", "compile/reference"]
    header.append("others' cores")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = list(dict.fromkeys((problem, phase) for problem, phase, _ in results))  # the run's (registry) order
    for problem, phase in keys:
        row = {fw: results.get((problem, phase, fw)) for fw in (PORT, REFERENCE, COMPILED)}
        some = next(info for info in row.values() if info)
        ref = row[REFERENCE]["examples_per_second"] if row[REFERENCE] else None
        cells = [problem, phase, str(some["batch_size"])]
        columns = (PORT, COMPILED) if compiled else (PORT,)
        for index, fw in enumerate(columns):
            value = row[fw]["examples_per_second"] if row[fw] else None
            cells.append(f"{value:,.0f}" if value else "-")
            if index == 0:
                cells.append(f"{ref:,.0f}" if ref else "-")
            cells.append(f"{value / ref:.2f}" if value and ref else "-")
        foreign = max((info.get("foreign_cores", 0.0) for info in row.values() if info), default=0.0)
        cells.append(f"{foreign:.2f}" + (" (contended)" if foreign > CONTENDED_CORES else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def spread(results: dict, other: dict) -> list[str]:
    """Run-to-run change of each benchmark's mean step time, the quantity --benchmark-compare-fail=mean:X% tests.

    Reported symmetrically (the slower over the faster, minus 1): either run may be the saved one.
    """
    changes = {}
    for key in sorted(results.keys() & other.keys()):
        ratio = other[key]["examples_per_second"] / results[key]["examples_per_second"]  # = time ratio
        changes[key] = 100.0 * (max(ratio, 1.0 / ratio) - 1.0) * (1 if ratio >= 1 else -1)
    if not changes:
        return ["no benchmark in common"]
    lines = ["| problem | phase | framework | mean time change |", "|---|---|---|---|"]
    lines += [f"| {p} | {ph} | {fw} | {c:+.1f}% |" for (p, ph, fw), c in changes.items()]
    magnitudes = sorted(abs(c) for c in changes.values())
    lines.append(f"\n{len(changes)} benchmarks, |slower/faster - 1|: median {statistics.median(magnitudes):.1f}%, "
                 f"90th percentile {magnitudes[int(0.9 * (len(magnitudes) - 1))]:.1f}%, max {magnitudes[-1]:.1f}%")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--spread", type=Path, help="a second run of the same suite to compare against")
    args = parser.parse_args(argv)
    if not args.json.exists():
        print(f"no benchmark results at {args.json}", file=sys.stderr)
        return 1
    run, results = load(args.json)
    if not results:
        print(f"{args.json} holds no model benchmarks", file=sys.stderr)
        return 1
    lines = conditions(run, results) + [""] + render(results)
    if args.spread:
        lines += ["", f"change against {args.spread}:"] + spread(results, load(args.spread)[1])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
