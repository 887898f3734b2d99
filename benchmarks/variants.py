"""Which way of running the port's steps is fastest on this machine: the candidates of issue 14, interleaved.

    PYTHONPATH=. python benchmarks/variants.py cifar10_3c3d mnist_2c2d --rounds 7

For each problem, on one fixed float32 batch at the default batch size, times the runner's training
step (zero_grad, objective, backward, momentum-SGD step) and the evaluation forward under these
variants, all interleaved round by round (benchmarks/stats.py), and prints each one's median seconds
and its speed against the runner's eager step with a bootstrap interval:
- eager: the registry's model (the conv models keep activations channels_last);
- contiguous: eager with the channels_last conversions removed (weights and activations NCHW);
- loop / foreach / fused: eager with `torch.optim.SGD()` (its for-loop update) / `(foreach=True)` /
  `(fused=True)` instead of the runner's momentum optimizer (deepobs.optim: fused where the layouts allow);
- aten-only: eager with deepobs.native switched off (torch's own max pool, conv and ReLU one after the other,
  dense layers and dropout draws);
- onednn-dense: eager with every dense product on oneDNN (deepobs.native.MIN_INNER_PRODUCT_* at 0);
- direct-conv: eager with the 3x3 convolutions on oneDNN's direct convolution, not Winograd F(2x2, 3x3)
  (deepobs.native.winograd_applies saying no);
- torch-dense / torch-dropout / unfused: eager with only that part of deepobs.native off (dense layers on
  torch's own F.linear; dropout masks from torch's generator; activation and dropout as two layers);
- compiled: the model compiled in place (inductor, both phases), its compile time printed separately.
The results decide the runner's defaults (see docs/benchmarks.md, "What the runner does").
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import torch  # noqa: E402

from benchmarks.stats import bootstrap_median, paired_ratios, time_interleaved  # noqa: E402
from deepobs import native, runner  # noqa: E402
from deepobs.optim import OPTIMIZERS  # noqa: E402
from deepobs.problems import PROBLEMS  # noqa: E402
from parity.frameworks import THREADS  # noqa: E402,F401  (pins torch's threads as the benchmarks do)

LEARNING_RATE = 1e-3
MODEL_MODULES = ("cnn_2c2d", "cnn_3c3d", "allcnnc", "wrn", "vgg", "inception_v3")


@contextlib.contextmanager
def contiguous_models():
    """Builds models whose forward does not convert to channels_last (and whose weights stay NCHW)."""
    patched = []
    for name in MODEL_MODULES:
        module = importlib.import_module(f"deepobs.models.{name}")
        if hasattr(module, "channels_last"):
            patched.append((module, module.channels_last))
            module.channels_last = lambda x: x
    try:
        yield
    finally:
        for module, original in patched:
            module.channels_last = original


def make_batch(problem, size: int):
    from benchmarks.test_bench_models import fixed_batch
    batch = fixed_batch(problem, size)
    return batch.port_inputs(torch.float32), batch.port_targets(torch.float32)


def steps_for(problem, phase: str, inputs, targets, compile: bool = False, contiguous: bool = False,
              optimizer_flags: dict | None = None):
    torch.manual_seed(0)
    with contiguous_models() if contiguous else contextlib.nullcontext():
        model = problem.model()
        if contiguous:
            model.to(memory_format=torch.contiguous_format)
        if compile:  # whatever runner.COMPILED_PHASES says: this measures both phases compiled
            model.compile()
    if phase == "eval":
        model.eval()
        frozen = native.FrozenWeights()  # as in the runner's evaluation pass

        def step():
            with torch.no_grad(), frozen:
                return model(*inputs)
        return step
    model.train()
    if optimizer_flags is None:
        optimizer = OPTIMIZERS["momentum"](model.parameters(), LEARNING_RATE)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9, **optimizer_flags)
    batch = (*inputs, targets) if targets is not None else tuple(inputs)
    return lambda: runner.train_step(problem, model, optimizer, batch, None, needs_closure=False)


def without_native(step):
    def run():
        with native.enabled(False):
            return step()
    return run


def without(step, applies: str):
    """The step with one of deepobs.native's `*_applies` checks saying no."""
    return with_settings(step, **{applies: lambda *args: False})


def with_settings(step, **settings):
    """The step with some of deepobs.native's settings changed while it runs."""
    def run():
        saved = {name: getattr(native, name) for name in settings}
        for name, value in settings.items():
            setattr(native, name, value)
        try:
            return step()
        finally:
            for name, value in saved.items():
                setattr(native, name, value)
    return run


def variants(problem, phase, inputs, targets, with_compile: bool) -> tuple[dict, dict]:
    made = {"eager": steps_for(problem, phase, inputs, targets)}
    made["aten-only"] = without_native(steps_for(problem, phase, inputs, targets))
    made["direct-conv"] = without(steps_for(problem, phase, inputs, targets), "winograd_applies")
    made["torch-dense"] = without(steps_for(problem, phase, inputs, targets), "linear_applies")
    made["onednn-dense"] = with_settings(steps_for(problem, phase, inputs, targets),
                                         MIN_INNER_PRODUCT_INPUTS=0, MIN_INNER_PRODUCT_MACS=0)
    if phase == "train":
        made["torch-dropout"] = without(steps_for(problem, phase, inputs, targets), "dropout_applies")
        made["unfused"] = without(steps_for(problem, phase, inputs, targets), "activation_dropout_applies")
    if problem.family.inputs[0].kind == "image":
        made["contiguous"] = steps_for(problem, phase, inputs, targets, contiguous=True)
    if phase == "train":
        made["loop"] = steps_for(problem, phase, inputs, targets, optimizer_flags={})
        made["foreach"] = steps_for(problem, phase, inputs, targets, optimizer_flags={"foreach": True})
        made["fused"] = steps_for(problem, phase, inputs, targets, optimizer_flags={"fused": True})
    compile_seconds = {}
    if with_compile:
        step = steps_for(problem, phase, inputs, targets, compile=True)
        start = time.perf_counter()
        step()
        step()  # the second call compiles the backward's optimizer-free remainder, if any
        compile_seconds["compiled"] = time.perf_counter() - start
        made["compiled"] = step
    for step in made.values():
        step()
    return made, compile_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problems", nargs="+")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--phases", nargs="+", default=["train", "eval"])
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="time only these variants beside eager")
    args = parser.parse_args()
    if runner.RunSettings.keep_freed_memory:  # the process as the runner sets it up (all variants share it)
        runner.keep_freed_memory()
    print(f"threads {torch.get_num_threads()}, load {os.getloadavg()}")
    for name in args.problems:
        problem = PROBLEMS[name]
        size = args.batch_size or problem.batch_size or 128
        inputs, targets = make_batch(problem, size)
        for phase in args.phases:
            made, compile_seconds = variants(problem, phase, inputs, targets, not args.no_compile)
            if args.only:
                made = {variant: step for variant, step in made.items() if variant in {"eager", *args.only}}
            once = time.perf_counter()
            made["eager"]()
            iterations = max(1, int(0.05 / max(time.perf_counter() - once, 1e-6)))
            seconds = time_interleaved(made, args.rounds, iterations, lead_in=1)
            eager = seconds["eager"]
            print(f"{name} {phase} batch {size} (load {os.getloadavg()[0]:.2f}):")
            for variant, values in seconds.items():
                median, low, high = bootstrap_median(paired_ratios(values, eager))
                extra = ""
                if variant in compile_seconds:
                    saved = sorted(eager)[len(eager) // 2] - sorted(values)[len(values) // 2]
                    warm = compile_seconds[variant]
                    extra = f"  first two calls {warm:.1f} s" + (
                        f", break-even after {warm / saved:.0f} steps" if saved > 0 else ", never breaks even")
                print(f"  {variant:11s} {1e3 * sorted(values)[len(values) // 2]:9.2f} ms  "
                      f"x{median:.2f} [{low:.2f}, {high:.2f}] vs eager{extra}")


if __name__ == "__main__":
    main()
