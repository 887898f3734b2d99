"""The port under audit, as a parameter: this repository's `deepobs/` by default, or yours.

To audit your own PyTorch port, build a `Port` (see README, "Audit your own port") and pass
`--port yourmodule:PORT` to `python -m parity audit`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from parity.maps import MAPS, ProblemMap

LossTerms = Callable[[str, nn.Module, torch.Tensor, torch.Tensor], tuple]
OptimizerFactory = Callable[[list, float], torch.optim.Optimizer]

# reference slot name -> torch optimizer state key, per optimizer kind
DEFAULT_OPTIMIZER_STATE = {"sgd": {}, "momentum": {"momentum": "momentum_buffer"},
                           "adam": {"m": "exp_avg", "v": "exp_avg_sq"}}


class PortError(Exception):
    """The port cannot be loaded or does not provide what the audit needs."""


@dataclass(frozen=True)
class Port:
    name: str
    problems: Sequence[str]
    build_model: Callable[[str], nn.Module]  # problem name -> model; the audit casts it to the dtype
    loss_terms: LossTerms  # (problem, model, logits, labels) -> (mean data loss, regularizer)
    weight_maps: Mapping[str, ProblemMap]
    optimizers: Mapping[str, OptimizerFactory]  # 'sgd', 'momentum', 'adam' -> factory(params, lr)
    optimizer_state: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: DEFAULT_OPTIMIZER_STATE)


def deepobs_port() -> Port:
    """This repository's port, `deepobs/`, with the maps of `parity.maps`."""
    from deepobs import optim
    from deepobs.problems import PROBLEMS

    def loss_terms(problem, model, logits, labels):
        return PROBLEMS[problem].loss_terms(model, logits, labels)

    return Port(
        name="deepobs",
        problems=tuple(PROBLEMS),
        build_model=lambda problem: PROBLEMS[problem].build_model(),
        loss_terms=loss_terms,
        weight_maps=MAPS,
        optimizers=dict(optim.OPTIMIZERS),
    )


def load_port(spec: str | None) -> Port:
    """'module:attribute' naming a Port or a zero-argument callable returning one; None -> deepobs."""
    if not spec:
        return deepobs_port()
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise PortError(f"--port must look like 'module:attribute', got {spec!r}")
    try:
        port = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise PortError(f"cannot load port {spec!r}: {error}") from None
    port = port() if callable(port) and not isinstance(port, Port) else port
    if not isinstance(port, Port):
        raise PortError(f"{spec!r} is a {type(port).__name__}, not a parity.port.Port")
    return port
