"""One benchmark row's oneDNN primitives, port against reference: is the gap in the kernels or around them?

    PYTHONPATH=. python -m benchmarks.primitives cifar10_3c3d train --steps 3

Both frameworks run their convolutions (and TF its pools and matrix products) as oneDNN primitives.
Each framework's step (benchmarks/test_bench_models.py; the port eager, since a compiled graph calls the
same primitives) runs in a child process with `ONEDNN_VERBOSE=1`, which logs the execution time of every
primitive; after warm-up steps, the timed steps' lines are summed per primitive (kind, propagation,
shape) and set side by side with the implementation each framework's oneDNN picked. The reference runs
with one inter-op thread by default, so that its ops run one after the other as torch's do and their
times add up (`--reference-inter-op 2` is the benchmark's setting: independent ops then overlap and the
sum exceeds the step). "outside oneDNN" is the step's wall time less its primitives: everything else
(aten's own kernels, elementwise ops, the optimizer, per-op overhead).

The two children run one after the other, not interleaved: the machine's drift between them moves all of
one framework's primitives together (a VGG19 step's primitives were 5-24% slower in the port in one run
and equal in the next). Compare implementations and the split inside each framework here; take the
port/reference ratio from the benchmark (benchmarks/test_bench_models.py), which interleaves rounds.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]  # the children import benchmarks, deepobs, tf_reference
MARK = "=== timed steps ==="
STEP_PREFIX = "step ms "


@dataclass(frozen=True)
class Primitive:
    kind: str  # convolution, pooling, ...
    propagation: str  # forward_training, backward_data, ...
    shape: str  # oneDNN's problem descriptor, e.g. mb128_ic64oc96_ih14oh12kh3...


@dataclass
class Timing:
    implementation: str
    ms: float = 0.0
    calls: int = 0


def parse_verbose(lines, steps: int) -> dict[Primitive, Timing]:
    """Per-step milliseconds of each primitive executed after MARK in a ONEDNN_VERBOSE=1 log.

    An execution line: onednn_verbose,[v1,]primitive,exec,cpu,KIND,IMPLEMENTATION,PROPAGATION,...,SHAPE,MS
    """
    timings: dict[Primitive, Timing] = {}
    timed = False
    for line in lines:
        if line.startswith(MARK):
            timed = True
            continue
        if not (timed and line.startswith("onednn_verbose") and ",exec," in line):
            continue
        fields = line.rstrip("\n").split(",")
        start = fields.index("exec") + 2  # after exec,cpu
        kind, implementation, propagation = fields[start:start + 3]
        primitive = Primitive(kind, propagation, fields[-2])
        timing = timings.setdefault(primitive, Timing(implementation))
        timing.ms += float(fields[-1].split()[0]) / steps
        timing.calls += 1
    for timing in timings.values():
        timing.calls //= steps
    return timings


def step_ms(lines) -> float:
    return next(float(line[len(STEP_PREFIX):]) for line in lines if line.startswith(STEP_PREFIX))


def comparison_rows(port: dict[Primitive, Timing], reference: dict[Primitive, Timing], top: int):
    """(primitive, port timing or None, reference timing or None), the longest first."""
    keys = sorted(set(port) | set(reference),
                  key=lambda key: -max(getattr(port.get(key), "ms", 0.0), getattr(reference.get(key), "ms", 0.0)))
    return [(key, port.get(key), reference.get(key)) for key in keys[:top]]


def format_report(problem: str, phase: str, port_lines, reference_lines, steps: int, inter_op: int,
                  top: int) -> str:
    port, reference = parse_verbose(port_lines, steps), parse_verbose(reference_lines, steps)
    port_step, reference_step = step_ms(port_lines), step_ms(reference_lines)
    cell = lambda timing: ("-", "-") if timing is None else (  # noqa: E731
        f"{timing.implementation} x{timing.calls}", f"{timing.ms:.2f}")
    out = [f"{problem} {phase}: oneDNN primitives per step (reference with {inter_op} inter-op thread(s))", "",
           "| primitive | propagation | shape | port implementation | port ms | reference implementation | "
           "reference ms |", "|---|---|---|---|---|---|---|"]
    for key, port_timing, reference_timing in comparison_rows(port, reference, top):
        (port_impl, port_ms), (ref_impl, ref_ms) = cell(port_timing), cell(reference_timing)
        out.append(f"| {key.kind} | {key.propagation} | {key.shape} | {port_impl} | {port_ms} | {ref_impl} | {ref_ms} |")
    port_sum, reference_sum = (sum(t.ms for t in timings.values()) for timings in (port, reference))
    out += ["", "| | port | reference |", "|---|---|---|",
            f"| step (wall) | {port_step:.1f} ms | {reference_step:.1f} ms |",
            f"| oneDNN primitives | {port_sum:.1f} ms | {reference_sum:.1f} ms |"]
    for kind in sorted({key.kind for key in (*port, *reference)}):
        port_kind, reference_kind = (sum(t.ms for key, t in timings.items() if key.kind == kind)
                                     for timings in (port, reference))
        out.append(f"| - {kind} | {port_kind:.1f} ms | {reference_kind:.1f} ms |")
    out.append(f"| outside oneDNN | {port_step - port_sum:.1f} ms | {reference_step - reference_sum:.1f} ms |")
    if len(port) + len(reference) == 0:
        out.append("\nNo oneDNN primitive ran in either framework: this row's ops are not oneDNN's.")
    return "\n".join(out)


def run_child(framework: str, problem: str, phase: str, steps: int, warmup: int, inter_op: int) -> list[str]:
    env = dict(os.environ, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "benchmarks.primitives", problem, phase, "--child", framework,
               "--steps", str(steps), "--warmup", str(warmup), "--reference-inter-op", str(inter_op)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPOSITORY)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: the {framework} step failed ({problem} {phase}): {tail}")
    return done.stdout.splitlines()


def child(framework: str, problem_name: str, phase: str, steps: int, warmup: int, inter_op: int) -> None:
    """The step under ONEDNN_VERBOSE (set by the parent): warm-up, MARK, timed steps, their wall time."""
    from parity.frameworks import load_tensorflow

    load_tensorflow(inter_op_threads=inter_op)  # before the benchmark module pins the default
    from benchmarks.test_bench_models import batch_size, fixed_batch, tf_step, torch_step
    from deepobs import runner
    from deepobs.problems import PROBLEMS

    runner.keep_freed_memory()
    problem = PROBLEMS[problem_name]
    batch = fixed_batch(problem, batch_size(problem))
    step = (torch_step(problem, phase, batch, compile=False) if framework == "torch"
            else tf_step(problem, phase, batch))
    for _ in range(warmup):
        step()
    print(MARK, flush=True)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(f"{STEP_PREFIX}{(time.perf_counter() - start) / steps * 1e3:.3f}", flush=True)


def main(argv=None) -> None:
    from deepobs.problems import PROBLEMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", choices=sorted(PROBLEMS))
    parser.add_argument("phase", choices=("eval", "train"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per framework (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--reference-inter-op", type=int, default=1,
                        help="the reference's inter-op threads (default 1: its op times add up)")
    parser.add_argument("--top", type=int, default=20, help="primitives listed (default 20)")
    parser.add_argument("--child", choices=("torch", "tf"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.reference_inter_op < 1:
        parser.error("--steps and --reference-inter-op take >= 1, --warmup >= 0")
    if args.child:
        child(args.child, args.problem, args.phase, args.steps, args.warmup, args.reference_inter_op)
        return
    lines = {framework: run_child(framework, args.problem, args.phase, args.steps, args.warmup,
                                  args.reference_inter_op) for framework in ("torch", "tf")}
    print(format_report(args.problem, args.phase, lines["torch"], lines["tf"], args.steps,
                        args.reference_inter_op, args.top))


if __name__ == "__main__":
    main()
