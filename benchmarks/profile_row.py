"""What bounds one benchmark row: torch.profiler over a few of the port's steps, FLOP rate against this CPU's.

    PYTHONPATH=. python -m benchmarks.profile_row cifar10_3c3d train --steps 5

Runs the row's port step (benchmarks/test_bench_models.py: the runner's default path) a few times under
torch.profiler, then prints the ops taking the most self time, the step's FLOPs (the convolutions and
matrix products of one eager forward, counted by the profiler; a training step does about three times a
forward's), the achieved GFLOP/s over the step, and a practical peak: the GFLOP/s of a 2048^3 float32
matrix product on the same threads, measured just after. The ratio of the two says whether the step is
bound by its arithmetic or by everything else (elementwise work, memory reorders, per-op overhead).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from parity.frameworks import THREADS  # noqa: E402,F401  (pins torch's threads as the benchmarks do)

MATMUL_SIZE = 2048


def matmul_peak_gflops(repeats: int = 5) -> float:
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIZE**3 / best / 1e9


def forward_flops(eval_step) -> float:
    """FLOPs of the convolutions and matrix products of one eager forward, as torch.profiler counts them."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        eval_step()
    return float(sum(event.flops for event in prof.key_averages() if event.flops))


def main() -> None:
    from benchmarks.test_bench_models import batch_size, fixed_batch, torch_step
    from deepobs import native, runner
    from deepobs.problems import PROBLEMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", choices=list(PROBLEMS))
    parser.add_argument("phase", choices=("eval", "train"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eager", action="store_true", help="profile the eager step, not the runner's default")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    problem = PROBLEMS[args.problem]
    if runner.RunSettings.keep_freed_memory:  # the process as the runner and the benchmark set it up
        runner.keep_freed_memory()
    size = batch_size(problem)
    step = torch_step(problem, args.phase, fixed_batch(problem, size),
                      compile=runner.RunSettings.compile and not args.eager)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = time.perf_counter() - start
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    with native.enabled(False):  # the profiler counts aten's conv and matmul ops, not the fused oneDNN ones
        flops = forward_flops(torch_step(problem, "eval", fixed_batch(problem, size), compile=False))
    flops *= 3 if args.phase == "train" else 1
    peak = matmul_peak_gflops()
    achieved = flops * args.steps / wall / 1e9
    print(f"{args.problem} {args.phase} batch {size}, {'eager' if args.eager else 'runner default'}: "
          f"{wall / args.steps * 1e3:.1f} ms/step ({size * args.steps / wall:,.0f} ex/s), load {os.getloadavg()[0]:.1f}")
    print(f"{flops / 1e9:.2f} GFLOP/step{' (3x forward)' if args.phase == 'train' else ''}: {achieved:.1f} GFLOP/s, "
          f"{achieved / peak:.0%} of the practical peak ({MATMUL_SIZE}^3 sgemm, {torch.get_num_threads()} threads: "
          f"{peak:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
