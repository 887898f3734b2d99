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

# (problem, model, outputs, targets) -> (mean data loss, regularizer). `outputs` is what the model returned
# (logits; the VAE's (reconstruction, mean, std_dev); the functions' per-example losses), `targets` the
# batch's targets in port layout (labels; next characters; the VAE's input images; None for the functions).
LossTerms = Callable[[str, nn.Module, object, object], tuple]
Accuracy = Callable[[str, object, object], "torch.Tensor | None"]
OptimizerFactory = Callable[[list, float], torch.optim.Optimizer]

# reference slot name -> torch optimizer state key, per optimizer kind
DEFAULT_OPTIMIZER_STATE = {"sgd": {}, "momentum": {"momentum": "momentum_buffer"},
                           "adam": {"m": "exp_avg", "v": "exp_avg_sq"}}


def argmax_accuracy(problem: str, outputs, targets) -> torch.Tensor:
    """Mean of argmax over the last axis == target: the original's accuracy wherever it defines one."""
    return (outputs.argmax(dim=-1) == targets).to(outputs.dtype).mean()


def reset_model_state(model: nn.Module) -> None:
    """Zero a stateful model's carried state (`model.reset_state()`); nothing for stateless models."""
    reset = getattr(model, "reset_state", None)
    if reset is not None:
        reset()


class PortError(Exception):
    """The port cannot be loaded or does not provide what the audit needs."""


@dataclass(frozen=True)
class Port:
    name: str
    problems: Sequence[str]
    # problem name -> model; the audit casts it to the dtype and calls model(*inputs), inputs in the order
    # and port layout of the reference family's InputSpecs; the model returns the family's outputs in order.
    build_model: Callable[[str], nn.Module]
    loss_terms: LossTerms  # (problem, model, outputs, targets) -> (mean data loss, regularizer)
    weight_maps: Mapping[str, ProblemMap]
    optimizers: Mapping[str, OptimizerFactory]  # 'sgd', 'momentum', 'adam' -> factory(params, lr)
    optimizer_state: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: DEFAULT_OPTIMIZER_STATE)
    # (problem, outputs, targets) -> mean accuracy, or None; compared where the original defines one.
    accuracy: Accuracy = argmax_accuracy
    reset_state: Callable[[nn.Module], None] = reset_model_state  # zero carried state (stateful models)


def deepobs_port() -> Port:
    """This repository's port, `deepobs/`, with the maps of `parity.maps`."""
    from deepobs import optim
    from deepobs.problems import PROBLEMS

    def loss_terms(problem, model, outputs, targets):
        return PROBLEMS[problem].loss_terms(model, outputs, targets)

    return Port(
        name="deepobs",
        problems=tuple(PROBLEMS),
        build_model=lambda problem: PROBLEMS[problem].build_model(),
        loss_terms=loss_terms,
        weight_maps=MAPS,
        optimizers=dict(optim.OPTIMIZERS),
        accuracy=lambda problem, outputs, targets: PROBLEMS[problem].accuracy(outputs, targets),
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
