"""Command line: `python -m deepobs run PROBLEM --optimizer PATH --lr LR ...`, `plot RESULTS --out DIR`,
`grid SPEC`, and `data check|prepare NAME --data-dir DIR`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepobs.datasets import DATASETS, DEFAULT_DATA_DIR, DataError, get_dataset


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a batch size, a count), else a usage error (exit 2)."""
    return _bounded_int(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a seed), else a usage error (exit 2)."""
    return _bounded_int(text, 0, "an integer >= 0")


def _bounded_int(text: str, minimum: int, wanted: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deepobs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train one problem with one optimizer setting, write a result file",
                              add_help=False)
    run.add_argument("arguments", nargs=argparse.REMAINDER, help="see: python -m deepobs run --help")
    plot = commands.add_parser("plot", help="curves, learning-rate sensitivity and a table from a results folder")
    plot.add_argument("results", type=Path, help="the runner's --output-dir")
    plot.add_argument("--out", type=Path, required=True, help="folder for the PNG/PDF figures and the tables")
    plot.add_argument("--mode", choices=("final", "best", "most"), default="final",
                      help="which setting of each optimizer to show: best final value, best value, most seeds")
    grid = commands.add_parser("grid", help="problems x optimizers x learning rates x seeds; resumes where it stopped")
    grid.add_argument("spec", type=Path, help="a TOML or JSON grid spec (see deepobs/grid.py or the README)")
    grid.add_argument("--engine", choices=("local", "submitit"), default="local",
                      help="local: one run after the other here (default); submitit: jobs through submitit")
    grid.add_argument("--executor", choices=("slurm", "local", "debug"), default="slurm",
                      help="submitit executor: a SLURM job array (default), local processes, or in-process debug")
    grid.add_argument("--log-dir", type=Path, default=Path("grid-logs"), help="submitit's job folder")
    grid.add_argument("--max-parallel", type=int, default=1, help="jobs running at once (submitit)")
    grid.add_argument("--timeout-min", type=float, default=24 * 60, help="per-job time limit (submitit)")
    grid.add_argument("--slurm", nargs="+", default=[], metavar="KEY=VALUE",
                      help="submitit parameters, e.g. slurm_partition=gpu gpus_per_node=1 cpus_per_task=8")
    data = commands.add_parser("data", help="data sets: check or prepare the data folder")
    actions = data.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="read every split once: sizes, one batch's shape, label range")
    prepare = actions.add_parser("prepare", help="download (or take --raw-dir) and convert into the layout")
    for action in (check, prepare):
        action.add_argument("name", choices=list(DATASETS))
        action.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    check.add_argument("--batch-size", type=positive_int, default=None, help="default: the data set's usual batch size")
    check.add_argument("--valid", action="store_true", help="also the v1.2 valid split")
    check.add_argument("--correct-image-offset", action="store_true",
                       help="cifar100 only: read the image from byte 2 of each record (the original reads from "
                            "byte 1: see docs/datasets.md)")
    prepare.add_argument("--raw-dir", type=Path, default=None,
                         help="folder with the already downloaded raw files (no network access)")
    return parser


def _describe(tensor) -> str:
    return "none" if tensor is None else f"{tuple(tensor.shape)} {str(tensor.dtype).replace('torch.', '')}"


def check_data(name: str, data_dir: Path, batch_size: int | None, valid: bool,
               correct_image_offset: bool = False) -> None:
    options = {"correct_image_offset": correct_image_offset} if name == "cifar100" else {}
    if correct_image_offset and name != "cifar100":
        raise ValueError("--correct-image-offset applies to cifar100 only")
    dataset = get_dataset(name, data_dir, batch_size, valid_split=valid, shuffle=False, **options)
    lines = [f"{name} in {data_dir} (batch size {dataset.batch_size})"]
    if name == "cifar100":
        lines.append("  image = bytes 2..3073 of each record (corrected)" if correct_image_offset else
                     "  image = bytes 1..3072 of each record, as the original reads it "
                     "(--correct-image-offset: 2..3073)")
    for split in dataset.splits:
        num_batches = dataset.num_batches(split)
        inputs, labels = next(iter(dataset.batches(split)), (None, None))
        line = f"  {split}: {dataset.split_size(split)} examples in {num_batches} batches"
        line += f"; inputs {_describe(inputs)}, labels {_describe(labels)}"
        label_range = dataset.label_range(split)
        if label_range is None and labels is not None and labels.dtype.is_floating_point is False:
            label_range = (int(labels.min()), int(labels.max()))
            line += f"; labels (first batch) {label_range[0]}..{label_range[1]}"
        elif label_range is not None:
            line += f"; labels {label_range[0]}..{label_range[1]}"
        lines.append(line)
    print("\n".join(lines))


def plot_command(results_dir: Path, out_dir: Path, mode: str) -> int:
    from deepobs.analysis import AnalysisError, read_results
    from deepobs.plot import PlotError, plot_results

    try:
        written = plot_results(read_results(results_dir), out_dir, mode)
    except (AnalysisError, PlotError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {out_dir}")
    return 0


def grid_command(args) -> int:
    from deepobs.grid import GridError, run_grid
    from deepobs.optimizer_flags import OptimizerError
    from deepobs.problems import UnknownProblemError
    from deepobs.runner import RunError

    parameters = {}
    for item in args.slurm:
        key, separator, value = item.partition("=")
        if not separator:
            print(f"error: --slurm wants KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        parameters[key] = int(value) if value.isdigit() else value
    if args.max_parallel < 1:
        print("error: --max-parallel must be positive", file=sys.stderr)
        return 2
    try:
        report = run_grid(args.spec, args.engine, args.executor, args.log_dir, args.max_parallel, args.timeout_min,
                          parameters)
    except (GridError, RunError, OptimizerError, UnknownProblemError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:
        from deepobs.run_cli import main as run_main
        return run_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "plot":
        return plot_command(args.results, args.out, args.mode)
    if args.command == "grid":
        return grid_command(args)
    try:
        if args.action == "check":
            check_data(args.name, args.data_dir, args.batch_size, args.valid, args.correct_image_offset)
        else:
            from deepobs.datasets.prepare import prepare
            prepare(args.name, args.data_dir, args.raw_dir)
            print(f"prepared {args.name} in {args.data_dir}")
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
