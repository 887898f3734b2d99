"""python -m parity: the cross-framework audit."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from deepobs.cli import non_negative_int, positive_int
from parity.audit import CHECK_NAMES
from parity.frameworks import DTYPES

EXIT_FAILED, EXIT_USAGE = 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m parity",
                                     description="Audit a PyTorch port of DeepOBS against the TF1-semantics reference.")
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit", help="run the layer-by-layer audit and write a report")
    audit.add_argument("--problem", nargs="+", metavar="NAME", help="problems to audit (default: all registered)")
    audit.add_argument("--set", dest="problem_set", choices=("all", "light", "deep"), default="all",
                       help="with no --problem: every problem (default), all but the deep ones (light), or only "
                            "the deep ones (VGG, WRN-40-4, Inception v3; see parity.audit.DEEP_PROBLEMS)")
    audit.add_argument("--dtype", choices=[*DTYPES, "both"], default="both",
                       help="float32, float64 or both (default)")
    audit.add_argument("--report", type=Path, default=Path("parity-report"), metavar="DIR",
                       help="directory for parity-report.json and parity-report.md (default: ./parity-report)")
    audit.add_argument("--port", metavar="MODULE:ATTR", help="the port to audit (default: this repository's deepobs)")
    audit.add_argument("--seed", type=non_negative_int, default=0,
                       help="seed of audit weights, batches and dropout draws")
    audit.add_argument("--isolate", action="store_true",
                       help="also run every layer on the reference's own input (teacher forcing), so every layer, "
                            "loss term and backward that differs is listed, with diagnosis hints (done anyway "
                            "when a check fails)")
    audit.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                       help="1: one process; default: one worker process per dtype when there are 2+ cores")
    audit.add_argument("--checks", nargs="+", metavar="CHECK",
                       help=f"run only these checks (default: all): {', '.join(CHECK_NAMES)}")
    suggest = commands.add_parser("suggest-map", help="print the weight and activation map the audit would infer "
                                                      "for a port's problem, as Python source")
    suggest.add_argument("--port", metavar="MODULE:ATTR", help="the port (default: this repository's deepobs)")
    suggest.add_argument("--problem", required=True, metavar="NAME")
    describe = commands.add_parser("describe", help="list a reference problem's variables and layer outputs (taps)")
    describe.add_argument("problem", metavar="PROBLEM")
    pipelines = commands.add_parser("pipelines", help="audit the data pipelines (port vs tf.data reference)")
    pipelines.add_argument("--dataset", nargs="+", metavar="NAME", help="data sets (default: all)")
    pipelines.add_argument("--report", type=Path, default=Path("parity-report"), metavar="DIR",
                           help="directory for pipeline-report.json and pipeline-report.md")
    trajectory = commands.add_parser("trajectory", help="N training steps of port and reference on the same batches, "
                                                        "judged against a float32/float64 round-off envelope")
    trajectory.add_argument("--problem", nargs="+", metavar="NAME", required=True)
    trajectory.add_argument("--optimizer", nargs="+", choices=("sgd", "momentum", "adam"),
                            default=["sgd", "momentum", "adam"])
    trajectory.add_argument("--steps", type=int, default=200)
    trajectory.add_argument("--batch-size", type=int, default=16)
    trajectory.add_argument("--lr", type=float, default=None,
                            help="learning rate (default: sgd 0.01, momentum 0.01 with 0.9, adam 1e-3)")
    trajectory.add_argument("--data-dir", type=Path, default=None,
                            help="real data in the original's layout (default: small files in that layout, "
                                 "written to a temporary folder)")
    trajectory.add_argument("--report", type=Path, default=Path("trajectory-report"), metavar="DIR")
    trajectory.add_argument("--port", metavar="MODULE:ATTR", help="the port to audit (default: deepobs)")
    trajectory.add_argument("--seed", type=int, default=0)
    trajectory.add_argument("--port-lr-factor", type=float, default=1.0,
                            help="multiply the port's learning rate (plant a slow drift to see the check catch it)")
    selftest = commands.add_parser("selftest", help="the audit's power and precision: planted bugs it must catch at "
                                                    "their layer, equivalent rewrites it must pass (parity.mutants)")
    selftest.add_argument("--fast", action="store_true", help="only the subset the test suite runs")
    selftest.add_argument("--deep", action="store_true", help="include rows on the deep problems (slow, GBs)")
    selftest.add_argument("--only", nargs="+", metavar="WORD", help="rows whose name contains one of these")
    selftest.add_argument("--list", action="store_true", help="list the selected rows and what each expects")
    listing = commands.add_parser("list", help="list the problems the audit knows")
    listing.add_argument("--port", metavar="MODULE:ATTR")
    return parser


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "audit" and args.checks and (unknown := [c for c in args.checks if c not in CHECK_NAMES]):
        return fail(f"unknown check {', '.join(map(repr, unknown))}; valid names: {', '.join(CHECK_NAMES)}")
    try:
        from parity.audit import (UnknownProblemError, environment, resolve_problems, run_audit, run_audit_parallel,
                                  select_problem_set)
        from parity.port import PortError, load_port
        from parity.report import summary, write_reports
        from parity.frameworks import require_tensorflow

        require_tensorflow()
    except ImportError as error:  # TensorFlow missing: say which extra
        return fail(str(error))
    if args.command == "pipelines":
        return audit_pipelines_command(args.dataset, args.report)
    if args.command == "trajectory":
        return trajectory_command(args)
    if args.command == "describe":
        return describe_command(args.problem)
    if args.command == "suggest-map":
        return suggest_map_command(args.port, args.problem)
    if args.command == "selftest":
        from parity.selftest import main as selftest_main
        return selftest_main(args.fast, args.deep, args.only, args.list)
    try:
        port = load_port(args.port)
        problems = resolve_problems(port, args.problem if args.command == "audit" else None)
        if args.command == "audit" and not args.problem:
            problems = select_problem_set(problems, args.problem_set)
    except (PortError, UnknownProblemError) as error:
        return fail(str(error))
    if args.command == "list":
        print("\n".join(f"{own} ({problem})" if (own := port.port_problem_name(problem)) != problem else problem
                        for problem in problems))
        return 0
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    start = time.perf_counter()
    if (code := print_inferred_maps(port, problems)) is not None:
        return code
    print(f"auditing port {port.name!r}: {len(problems)} problem(s), {', '.join(dtypes)}"
          + (f"; checks {', '.join(args.checks)}" if args.checks else ""), flush=True)
    jobs = args.jobs if args.jobs is not None else (len(dtypes) if (os.cpu_count() or 1) >= 2 else 1)
    if jobs > 1 and len(dtypes) > 1:
        run = run_audit_parallel(args.port, problems, dtypes, args.seed, args.checks, isolate=args.isolate or None)
    else:
        run = run_audit(port, problems, dtypes, args.seed, progress=lambda line: print(line, flush=True),
                        checks=args.checks, isolate=args.isolate or None)
    try:
        json_path, markdown_path = write_reports(run, environment(), args.report)
    except OSError as error:
        return fail(f"cannot write the report to {args.report}: {error}")
    print("\n".join(summary(run)))
    print(f"report: {markdown_path} and {json_path} ({time.perf_counter() - start:.1f} s wall)")
    return 0 if run.passed else EXIT_FAILED


def print_inferred_maps(port, problems: list[str]) -> int | None:
    """Print the map the audit infers for each problem the port brings none for; an ambiguity stops the
    audit with one line per problem (exit 1). None when the audit can go on."""
    is_inferred = getattr(port.weight_maps, "is_inferred", lambda problem: False)
    inferred = [p for p in problems if is_inferred(p)]
    if not inferred:  # nothing to import: parity.automap loads TensorFlow (1.2 GB the parent would keep)
        return None
    from parity.automap import AmbiguousMapError, to_source
    from parity.port import inferred_map

    errors = []
    for problem in inferred:
        try:
            print(to_source(inferred_map(port, problem), variable=f"{problem.upper()}_MAP") + "\n", flush=True)
        except AmbiguousMapError as error:
            errors.append(f"cannot infer a weight map for {port.port_problem_name(problem)}: {error}")
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_FAILED if errors else None


def describe_command(problem: str) -> int:
    from parity.describe import describe, format_description

    try:
        description = describe(problem)
    except KeyError as error:
        return fail(error.args[0])
    print("\n".join(format_description(description)))
    return 0


def suggest_map_command(port_spec: str | None, problem: str) -> int:
    from parity.audit import UnknownProblemError, resolve_problems
    from parity.automap import AmbiguousMapError, to_source
    from parity.port import PortError, inferred_map, load_port

    try:
        port = load_port(port_spec)
        (original,) = resolve_problems(port, [problem])
        print(to_source(inferred_map(port, original)))
    except (PortError, UnknownProblemError) as error:
        return fail(str(error))
    except AmbiguousMapError as error:
        return fail(f"cannot infer a weight map for {problem}: {error}", EXIT_FAILED)
    return 0


def audit_pipelines_command(datasets: list[str] | None, report_dir: Path) -> int:
    from parity.audit import AuditRun, environment
    from parity.pipeline import DATASETS, audit_pipelines
    from parity.report import summary, write_reports

    names = datasets or list(DATASETS)
    if unknown := [name for name in names if name not in DATASETS]:
        return fail(f"unknown data set {', '.join(map(repr, unknown))}; valid names: {', '.join(DATASETS)}")
    start = time.perf_counter()
    run = AuditRun("deepobs data pipelines", ["float32"], names, seed=0)
    run.results = audit_pipelines(names)
    run.seconds["pipelines"] = time.perf_counter() - start
    try:
        _, markdown_path = write_reports(run, environment(), report_dir, stem="pipeline-report")
    except OSError as error:
        return fail(f"cannot write the report to {report_dir}: {error}")
    print("\n".join(summary(run)))
    print(f"report: {markdown_path}")
    return 0 if run.passed else EXIT_FAILED


def trajectory_command(args) -> int:
    import tempfile

    from parity.port import PortError, load_port

    try:
        port = load_port(args.port)
    except PortError as error:
        return fail(str(error))
    args.problem = [port.problem_names.get(name, name) for name in args.problem]
    if unknown := [name for name in args.problem if name not in port.problems]:
        return fail(f"unknown problem {', '.join(map(repr, unknown))}; valid names: {', '.join(port.problems)}")
    from tf_reference.problems import REFERENCE_PROBLEMS
    if other := [name for name in args.problem if REFERENCE_PROBLEMS[name].family.name != "classification"]:
        return fail(f"trajectory parity covers the classification problems so far; not {', '.join(other)}")
    if args.steps < 1 or args.batch_size < 1:
        return fail("--steps and --batch-size must be positive")
    from deepobs.datasets import DataError
    from parity.trajectory import run_trajectory, write_report

    with tempfile.TemporaryDirectory(prefix="trajectory-data-") as scratch:
        data_dir = args.data_dir
        if data_dir is None:
            from deepobs.problems import get_problem
            from parity.fixtures import write_dataset

            data_dir = Path(scratch)
            for name in args.problem:
                write_dataset(get_problem(name).dataset, data_dir, seed=args.seed)
            print(f"data: small files in the original's layout ({data_dir}); --data-dir for real data", flush=True)
        results = []
        try:
            for problem in args.problem:
                for kind in args.optimizer:
                    result = run_trajectory(problem, kind, args.steps, data_dir, port, args.lr, args.batch_size,
                                            args.seed, args.port_lr_factor, progress=lambda line: print(line, flush=True))
                    print(result.summary(), flush=True)
                    results.append(result)
        except DataError as error:
            return fail(str(error), EXIT_FAILED)
    try:
        written = write_report(results, args.report)
    except OSError as error:
        return fail(f"cannot write the report to {args.report}: {error}")
    print(f"report: {written[-2]}")
    return 0 if all(result.passed for result in results) else EXIT_FAILED
