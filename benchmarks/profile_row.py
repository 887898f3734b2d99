"""What bounds one benchmark row: torch.profiler over a few of the port's steps, FLOP rate against this CPU's.

    PYTHONPATH=. python -m benchmarks.profile_row cifar10_3c3d train --steps 5

Runs the row's port step (benchmarks/test_bench_models.py: the runner's default path) a few times under
torch.profiler with FLOP counting, then prints the ops taking the most self time, the achieved GFLOP/s of
the convolutions and matrix products (the ops the profiler counts FLOPs for) and a practical peak: the
GFLOP/s of a 2048^3 float32 matrix product on the same threads. Time outside the counted ops is
elementwise work, memory reorders and per-op overhead.
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


def main() -> None:
    from benchmarks.test_bench_models import batch_size, fixed_batch, torch_step
    from deepobs import runner
    from deepobs.problems import PROBLEMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", choices=list(PROBLEMS))
    parser.add_argument("phase", choices=("eval", "train"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eager", action="store_true", help="profile the eager step, not the runner's default")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    problem = PROBLEMS[args.problem]
    size = batch_size(problem)
    step = torch_step(problem, args.phase, fixed_batch(problem, size),
                      compile=runner.RunSettings.compile and not args.eager)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    counted = [event for event in events if event.flops]
    flops = sum(event.flops for event in counted)
    counted_seconds = sum(event.cpu_time_total for event in counted) / 1e6  # inclusive time of the FLOP ops
    peak = matmul_peak_gflops()
    print(f"{args.problem} {args.phase} batch {size}, {'eager' if args.eager else 'runner default'}: "
          f"{wall / args.steps * 1e3:.1f} ms/step ({size * args.steps / wall:,.0f} ex/s), load {os.getloadavg()[0]:.1f}")
    print(f"FLOP-counted ops (conv, mm, addmm, bmm): {flops / args.steps / 1e9:.2f} GFLOP/step, "
          f"{counted_seconds / wall:.0%} of wall time, {flops / max(counted_seconds, 1e-9) / 1e9:.1f} GFLOP/s in them, "
          f"{flops / wall / 1e9:.1f} GFLOP/s over the step; practical peak ({MATMUL_SIZE}^3 sgemm, "
          f"{torch.get_num_threads()} threads): {peak:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
