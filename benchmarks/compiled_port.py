"""The port with every model compiled, for the parity audit of the runner's compiled path.

    PYTHONPATH=. python -m parity audit --port benchmarks.compiled_port:PORT --problem cifar10_3c3d --dtype float32

The runner compiles the evaluation forward (`deepobs.runner.COMPILED_PHASES`) through `torch.compile`;
this port compiles the whole model in place (`nn.Module.compile()`: the same module, parameter names,
weight map and hooks), so every check the audit runs, train mode and gradients included, goes through
inductor's code. The audit's per-layer taps are forward hooks registered before each call: TorchDynamo
traces them into the graph (or breaks the graph at them), so the taps still read the compiled model.
"""
from __future__ import annotations

import dataclasses

from parity.port import Port, deepobs_port


def compiled_port() -> Port:
    from deepobs.problems import PROBLEMS

    def build_model(problem: str):
        model = PROBLEMS[problem].build_model()
        model.compile()
        return model

    return dataclasses.replace(deepobs_port(), name="deepobs (torch.compile)", build_model=build_model)


PORT = compiled_port
