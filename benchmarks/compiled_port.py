"""The port as the runner runs it by default, for the parity audit: every model compiled in place.

    PYTHONPATH=. python -m parity audit --port benchmarks.compiled_port:PORT --problem cifar10_3c3d --dtype float32

`deepobs.runner.build_model(compile=True)` calls `nn.Module.compile()`, so the module, its parameter
names, its weight map and its forward hooks are those of the eager model; TorchDynamo traces the audit's
tap hooks into the graph (or breaks the graph at them), so every check, per-layer taps included, runs
on inductor's code.
"""
from __future__ import annotations

import dataclasses

from parity.port import Port, deepobs_port


def compiled_port() -> Port:
    import torch

    from deepobs.problems import PROBLEMS
    from deepobs.runner import build_model as runner_model

    def build_model(problem: str):
        return runner_model(PROBLEMS[problem], torch.device("cpu"), compile=True)

    return dataclasses.replace(deepobs_port(), name="deepobs (torch.compile)", build_model=build_model)


PORT = compiled_port
