"""`python -m deepobs run PROBLEM --optimizer torch.optim.SGD --lr 0.01 --momentum 0.9 ...`

The original's runner flags (v1.1 and v1.2 spellings, with underscores, are accepted beside the
hyphenated ones), then the optimizer's constructor keyword arguments as typed flags.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepobs.datasets import DEFAULT_DATA_DIR, DataError
from deepobs.optimizer_flags import OptimizerError, add_flags, collect, hyperparameters, import_optimizer
from deepobs.problems import UnknownProblemError
from deepobs.results import ResultExistsError
from deepobs.runner import RunError, RunSettings, run


def add_runner_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("problem", help="a registered problem, e.g. cifar10_3c3d")
    parser.add_argument("--optimizer", required=True,
                        help="import path of a torch.optim.Optimizer subclass, e.g. torch.optim.SGD or "
                             "deepobs.optim.TF1Adam; its constructor's keyword arguments become flags (--help lists them)")
    parser.add_argument("--lr", "--learning-rate", "--learning_rate", dest="learning_rate", type=float, required=True,
                        help="base learning rate")
    parser.add_argument("--bs", "--batch-size", "--batch_size", dest="batch_size", type=int,
                        help="batch size (default: the original's for the problem)")
    parser.add_argument("-N", "--num-epochs", "--num_epochs", dest="num_epochs", type=int,
                        help="epochs (default: the original's for the problem)")
    parser.add_argument("--wd", "--weight_decay", dest="weight_decay", type=float,
                        help="the problem's L2 regularizer coefficient (default: the problem's own); an optimizer's "
                             "own weight_decay argument is --opt-weight-decay")
    parser.add_argument("--lr-sched-epochs", "--lr_sched_epochs", dest="lr_sched_epochs", type=int, nargs="+",
                        help="epochs at whose start the learning rate changes")
    parser.add_argument("--lr-sched-factors", "--lr_sched_factors", dest="lr_sched_factors", type=float, nargs="+",
                        help="factors of the base learning rate from those epochs on (not cumulative)")
    parser.add_argument("-r", "--random-seed", "--random_seed", dest="random_seed", type=int, default=42)
    parser.add_argument("--data-dir", "--data_dir", dest="data_dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--output-dir", "--output_dir", dest="output_dir", type=Path, default=Path("results"))
    parser.add_argument("--train-log-interval", "--train_log_interval", dest="train_log_interval", type=int,
                        default=10, help="log the mini-batch loss every this many steps (default 10)")
    parser.add_argument("--print-train-iter", "--print_train_iter", dest="print_train_iter", action="store_true",
                        help="print the mini-batch loss at every log interval")
    parser.add_argument("--no-logs", "--no_logs", dest="no_logs", action="store_true", help="write no result file")
    parser.add_argument("--valid-split", action="store_true",
                        help="v1.2: hold out the valid split from the train files and evaluate on it")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=RunSettings.compile,
                        help="run the model through torch.compile (inductor): a one-off compile of each mode's graph, "
                             "then faster steps (default: %(default)s; docs/benchmarks.md measures both)")
    parser.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction,
                        default=RunSettings.keep_freed_memory,
                        help="have glibc malloc keep freed blocks up to 32 MiB for the next step instead of returning "
                             "them to the OS (default: %(default)s; docs/benchmarks.md measures both)")
    parser.add_argument("--native-kernels", action=argparse.BooleanOptionalAction,
                        default=RunSettings.native_kernels,
                        help="run the training step's max pools on deepobs.native's C kernel, built with the system "
                             "compiler on first use; bit-identical to aten's, faster (default: %(default)s)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", dest="if_exists", action="store_const", const="skip", default="error",
                          help="if this setting and seed has a result, do nothing (exit 0)")
    existing.add_argument("--overwrite", dest="if_exists", action="store_const", const="overwrite",
                          help="replace an existing result of this setting and seed")


def build_parser(optimizer_path: str | None) -> tuple[argparse.ArgumentParser, list]:
    parser = argparse.ArgumentParser(prog="python -m deepobs run", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runner_flags(parser)
    specs = []
    if optimizer_path is not None:
        optimizer_class = import_optimizer(optimizer_path)
        specs = hyperparameters(optimizer_class)
        add_flags(parser, specs, optimizer_class.__name__)
    return parser, specs


def settings_from_args(args: argparse.Namespace, specs: list) -> RunSettings:
    return RunSettings(
        problem=args.problem, optimizer=args.optimizer, learning_rate=args.learning_rate,
        hyperparams=collect(args, specs), batch_size=args.batch_size, num_epochs=args.num_epochs,
        weight_decay=args.weight_decay,
        lr_sched_epochs=None if args.lr_sched_epochs is None else tuple(args.lr_sched_epochs),
        lr_sched_factors=None if args.lr_sched_factors is None else tuple(args.lr_sched_factors),
        random_seed=args.random_seed, data_dir=args.data_dir, output_dir=args.output_dir,
        train_log_interval=args.train_log_interval, print_train_iter=args.print_train_iter, no_logs=args.no_logs,
        valid_split=args.valid_split, device=args.device, compile=args.compile,
        keep_freed_memory=args.keep_freed_memory, native_kernels=args.native_kernels,
        if_exists=args.if_exists)


def main(argv: list[str]) -> int:
    finder = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    finder.add_argument("--optimizer")
    optimizer_path = finder.parse_known_args(argv)[0].optimizer
    try:
        parser, specs = build_parser(optimizer_path)
    except OptimizerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        outcome = run(settings_from_args(args, specs))
    except (RunError, OptimizerError, UnknownProblemError, ResultExistsError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: no result written", file=sys.stderr)
        return 130
    return 0 if outcome.output is not None or outcome.skipped else 1
