"""One markdown table from a run of test_bench_models.py (--bench-json): port vs reference examples/s.

    python -m benchmarks.table RUN.json          # the machine's heading, conditions, table and summary
    python -m benchmarks.table A.json B.json     # several runs (e.g. light + deep) of one machine, one table

docs/benchmarks.md keeps one such table per machine kind (the heading: CPU model, widest vector
extensions, cores); a new machine gets its own section, it never replaces another's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from benchmarks.stats import geometric_mean

# Other processes' average busy cores above which a row is marked: its ratio measured the machine.
CONTENDED_CORES = 0.25


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU model and the vector/matrix extensions that decide oneDNN's and inductor's kernels."""
    model, flags, fields = platform.processor() or platform.machine(), set(), {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    model = fields.get("model name", model)
    if "cpu family" in fields and "model" in fields:
        # Two generations share a model name and vector flags' headline (Zen 4 and Zen 5: "AMD EPYC" with
        # AVX-512 bf16/VNNI) and run oneDNN's kernels at different speeds, so the family keeps their tables apart.
        model += f" (family {fields['cpu family']} model {fields['model']})"
    wanted = sorted(flag for flag in flags if flag.startswith(("avx", "amx")) or flag in ("fma", "f16c"))
    return {"model": model, "flags": wanted, "cores": os.cpu_count()}


def machine_kind(cpu: dict) -> str:
    """The key of a machine's table in docs/benchmarks.md: CPU model, widest vector extensions, cores."""
    widest = [flag for flag in ("amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2") if flag in cpu["flags"]]
    return f"{cpu['model']}, {'/'.join(widest[:2]) or 'no AVX2'}, {cpu['cores']} cores"


def load(path: Path) -> dict:
    run = json.loads(path.read_text())
    if not run.get("results"):
        raise ValueError(f"{path} holds no model benchmarks")
    return run


def conditions(run: dict) -> list[str]:
    libraries, threads = run["libraries"], run["threads"]
    return [
        f"### {run['machine_kind']}",
        "",
        f"- run {run['datetime']}; CPU flags: {' '.join(run['cpu']['flags'])}",
        f"- torch {libraries['torch']} ({'; '.join(libraries['torch_build'])}; mkldnn "
        f"{'on' if libraries['mkldnn_enabled'] else 'off'}; MKL {libraries.get('mkl_paths', 'paths not recorded')}), "
        f"tensorflow {libraries['tensorflow']} "
        f"({libraries.get('tf_onednn_build', 'oneDNN version not recorded')}; oneDNN opts: {libraries['tf_onednn']})",
        "- threads: " + ", ".join(f"{fw} intra {t['intra']} inter {t['inter']}" for fw, t in sorted(threads.items())),
    ]


def _interval(ratio: list[float]) -> str:
    median, low, high = ratio
    return f"{median:.2f} [{low:.2f}, {high:.2f}]"


def render(results: list[dict]) -> list[str]:
    header = ["problem", "phase", "batch", "port ex/s", "eager ex/s", "reference ex/s", "port/ref [95%]",
              "eager/ref [95%]", "compile s", "break-even steps", "rounds", "load", "others' cores"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results:
        speed = row["examples_per_second"]
        foreign = row.get("foreign_cores", 0.0)
        break_even = row.get("break_even_steps")
        cells = [row["problem"], row["phase"], str(row["batch_size"]),
                 *(f"{speed[name]:,.0f}" for name in ("port", "eager", "reference")),
                 _interval(row["port_ratio"]), _interval(row["eager_ratio"]),
                 f"{row['compile_seconds']:.0f}" if row["port_compiled"] else "-",
                 ("never" if break_even is None else f"{break_even:,.0f}") if row["port_compiled"] else "-",
                 f"{row['rounds']}x{row['iterations']}" + (f"+{row['lead_in']}" if row.get("lead_in") else ""),
                 f"{row['load_before']:.1f}-{row['load_after']:.1f}",
                 f"{foreign:.2f}" + (" (contended)" if foreign > CONTENDED_CORES else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary(results: list[dict]) -> list[str]:
    ratios = {f"{row['problem']} {row['phase']}": row["port_ratio"][0] for row in results}
    below = sorted((name for name, ratio in ratios.items() if ratio < 1.0), key=ratios.get)
    eager = geometric_mean([row["eager_ratio"][0] for row in results])
    return [f"{len(ratios)} rows; port/reference geometric mean {geometric_mean(list(ratios.values())):.2f} "
            f"(eager {eager:.2f}); min {min(ratios.values()):.2f}; below 1.0: "
            + (", ".join(f"{name} {ratios[name]:.2f}" for name in below) or "none"), *noise_floor(results)]


def noise_floor(results: list[dict]) -> list[str]:
    """Where the runner does not compile, the port and eager columns time the same step (two builds of one
    model): how far apart their ratios land is what one row's ratio can move by chance in this run."""
    spreads = {f"{row['problem']} {row['phase']}": abs(row["port_ratio"][0] / row["eager_ratio"][0] - 1)
               for row in results if not row["port_compiled"]}
    if not spreads:
        return []
    widest = max(spreads, key=spreads.get)
    middle = sorted(spreads.values())[len(spreads) // 2]
    return [f"noise floor: on the {len(spreads)} rows where port and eager run the same step, their ratios "
            f"differ by {100 * middle:.0f}% (median), at most {100 * spreads[widest]:.0f}% ({widest})"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+", help="--bench-json outputs of one machine")
    args = parser.parse_args(argv)
    try:
        runs = [load(path) for path in args.json]
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results = [row for run in runs for row in run["results"]]
    print("\n".join(conditions(runs[0]) + [""] + render(results) + [""] + summary(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
