"""The runner's allocator setting (`--keep-freed-memory`) against glibc's default, process against process.

    PYTHONPATH=. python -m benchmarks.allocator cifar10_3c3d mnist_vae --phases train --rounds 5

glibc's malloc settings are process-wide and a heap, once grown, serves later allocations whatever the
setting, so the two modes cannot alternate inside one process as `benchmarks.variants` does. Each round
starts one fresh process per mode (the order alternating round by round, benchmarks/stats.py); a process
builds the row's steps as `benchmarks/test_bench_models.py` does (the runner's eager step and the
reference's tf.function), sets its mode, warms up and times both steps, alternating, for ~`--seconds`.
Printed per row: each mode's median ms per step and kernel (system) ms per step for the port and the
reference, and each mode against glibc's default as speed ratios (median over rounds [bootstrap 95%]). The
reference runs in every mode to show what the setting does to a process that also holds TensorFlow (its
allocator keeps its own blocks).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.stats import bootstrap_median, interleaved_order, paired_ratios

# kept: the runner's --keep-freed-memory (deepobs.runner.keep_freed_memory); kept+thp: also THP_MEM_ALLOC_ENABLE=1
# (torch's blocks >= 2 MiB on huge pages); threshold: its first version, blocks above 32 MiB still mapped on their own.
MODES = ("kept", "default", "kept+thp", "threshold")
MMAP_MAX_DEFAULT = 65536  # glibc's M_MMAP_MAX


def child(problem_name: str, phase: str, mode: str, seconds: float) -> dict:
    """In a fresh process: the mode set, then port and reference steps timed alternately."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks.test_bench_models import batch_size, fixed_batch, tf_step, torch_step
    from deepobs import runner
    from deepobs.problems import PROBLEMS

    applied = runner.keep_freed_memory() if mode != "default" else None  # default: glibc as it starts
    if mode == "threshold":
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(runner.M_MMAP_MAX, MMAP_MAX_DEFAULT)
    problem = PROBLEMS[problem_name]
    batch = fixed_batch(problem, batch_size(problem))
    steps = {"port": torch_step(problem, phase, batch, compile=False),
             "reference": tf_step(problem, phase, batch)}
    for step in steps.values():
        step(), step()
    wall = {name: 0.0 for name in steps}
    system = dict(wall)
    calls = 0
    while calls < 3 or sum(wall.values()) < seconds:
        for name, step in steps.items():
            before, start = os.times(), time.perf_counter()
            step()
            wall[name] += time.perf_counter() - start
            system[name] += os.times().system - before.system
        calls += 1
    return {"applied": applied, "calls": calls, **{f"{name}_seconds": wall[name] / calls for name in steps},
            **{f"{name}_system_seconds": system[name] / calls for name in steps}}


def run_child(problem: str, phase: str, mode: str, seconds: float) -> dict:
    environment = {name: value for name, value in os.environ.items() if name != "THP_MEM_ALLOC_ENABLE"}
    if mode.endswith("+thp"):  # torch reads it at its first allocation: only a fresh process can have it
        environment["THP_MEM_ALLOC_ENABLE"] = "1"
    completed = subprocess.run([sys.executable, "-m", "benchmarks.allocator", "--child", problem, phase, mode,
                                str(seconds)], capture_output=True, text=True, check=True, env=environment)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problems", nargs="+")
    parser.add_argument("--phases", nargs="+", default=["train", "eval"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        problem, phase, mode, seconds = args.problems
        print(json.dumps(child(problem, phase, mode, float(seconds))))
        return
    print(f"load {os.getloadavg()[0]:.2f}")
    for problem in args.problems:
        for phase in args.phases:
            measured = {mode: [] for mode in MODES}
            for order in interleaved_order(MODES, args.rounds):
                for mode in order:
                    measured[mode].append(run_child(problem, phase, mode, args.seconds))
            print(f"{problem} {phase} ({args.rounds} rounds, load {os.getloadavg()[0]:.2f}):")
            for side in ("port", "reference"):
                seconds = {mode: [m[f"{side}_seconds"] for m in measured[mode]] for mode in MODES}
                system = {mode: sorted(m[f"{side}_system_seconds"] for m in measured[mode]) for mode in MODES}
                cells = "  ".join(f"{mode} {1e3 * sorted(seconds[mode])[args.rounds // 2]:8.2f} ms "
                                  f"(kernel {1e3 * system[mode][args.rounds // 2]:6.2f} ms)" for mode in MODES)
                ratios = "  ".join("{}/default x{:.2f} [{:.2f}, {:.2f}]".format(
                    mode, *bootstrap_median(paired_ratios(seconds[mode], seconds["default"])))
                    for mode in MODES if mode != "default")
                print(f"  {side:9s} {cells}  {ratios}")


if __name__ == "__main__":
    main()
