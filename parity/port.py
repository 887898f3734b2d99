"""The port under audit, as a parameter: this repository's `deepobs/` by default, or yours.

To audit your own PyTorch port, build a `Port` (see README, "Audit your own port") and pass
`--port yourmodule:PORT` to `python -m parity audit`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from collections.abc import Mapping
from typing import Callable, Sequence

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


def stock_optimizers() -> dict[str, OptimizerFactory]:
    """torch.optim's own optimizers with the original's hyperparameters (momentum 0.9; Adam's betas and
    epsilon): what a port that brings no optimizers is audited with. Stock Adam adds epsilon to sqrt(v_hat),
    TF1's to sqrt(v), so step/adam differs from the original's by design (declare it, or bring a TF1 Adam)."""
    return {"sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
            "momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
            "adam": lambda params, lr: torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)}


@dataclass(frozen=True)
class Port:
    name: str
    problems: Sequence[str]  # the port's problem names (see problem_names for names other than the original's)
    # problem name -> model; the audit casts it to the dtype and calls model(*inputs), inputs in the order
    # and port layout of the reference family's InputSpecs; the model returns the family's outputs in order.
    build_model: Callable[[str], nn.Module]
    loss_terms: LossTerms  # (problem, model, outputs, targets) -> (mean data loss, regularizer)
    # problem -> ProblemMap; a problem left out gets a map proposed by parity.automap (printed, and noted in
    # the report); `python -m parity suggest-map` prints it as source to edit and keep.
    weight_maps: Mapping[str, ProblemMap] = field(default_factory=dict)
    # 'sgd', 'momentum', 'adam' -> factory(params, lr); default: stock torch.optim (stock_optimizers)
    optimizers: Mapping[str, OptimizerFactory] = field(default_factory=stock_optimizers)
    optimizer_state: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: DEFAULT_OPTIMIZER_STATE)
    # (problem, outputs, targets) -> mean accuracy, or None; compared where the original defines one.
    accuracy: Accuracy = argmax_accuracy
    reset_state: Callable[[nn.Module], None] = reset_model_state  # zero carried state (stateful models)
    # Known deviations, each with its reason: check name ("step/adam": every problem) or (problem, check) ->
    # text. Those checks still run; a failure there is reported as declared, not counted as a failure. A name
    # covers its variants ("step/adam" also "step/adam (reference gradients)").
    deviations: Mapping[object, str] = field(default_factory=dict)
    # The port's problem name -> the original's, where they differ ({"my_mnist_cnn": "mnist_2c2d"}).
    problem_names: Mapping[str, str] = field(default_factory=dict)

    def declared_deviation(self, problem: str, check: str) -> str:
        """The declared reason for `check` on `problem` (original name), or ''."""
        for key, reason in self.deviations.items():
            key_problem, key_check = key if isinstance(key, tuple) else (None, key)
            if key_problem not in (None, problem, *[p for p, o in self.problem_names.items() if o == problem]):
                continue
            if check == key_check or check.startswith(f"{key_check} ("):
                return reason
        return ""

    def port_problem_name(self, problem: str) -> str:
        """The port's own name of an original problem name."""
        return next((own for own, original in self.problem_names.items() if original == problem), problem)


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
    return resolve(port)


class _MapsWithInference(Mapping):
    """The port's own maps, and for a problem it has none for, the map parity.automap proposes (on first use)."""

    def __init__(self, explicit: Mapping[str, ProblemMap], port: "Port"):
        self._explicit, self._port, self._inferred = dict(explicit), port, {}

    def __getitem__(self, problem: str) -> ProblemMap:
        if self._explicit.get(problem) is not None:
            return self._explicit[problem]
        if problem not in self._inferred:
            self._inferred[problem] = inferred_map(self._port, problem).problem_map
        return self._inferred[problem]

    def __iter__(self):
        return iter(self._port.problems)

    def __len__(self) -> int:
        return len(self._port.problems)

    def is_inferred(self, problem: str) -> bool:
        return self._explicit.get(problem) is None


def inferred_map(port: "Port", problem: str):
    """parity.automap's proposal (an InferredMap) for `problem` (original name) of a resolved port."""
    from parity.automap import infer_map

    return infer_map(port.build_model, problem)


def resolve(port: Port) -> Port:
    """The port as the audit sees it: problems under the original's names (build_model, loss_terms, accuracy
    and the maps translated), every problem with a map (proposed where the port has none)."""
    if getattr(port, "_resolved", False):
        return port
    names = dict(port.problem_names)
    if unknown := sorted(n for n in names if n not in port.problems and names[n] not in port.problems):
        raise PortError(f"problem_names names problems the port does not list: {', '.join(unknown)}")
    if names:
        own = {original: mine for mine, original in names.items()}
        build, losses, accuracy = port.build_model, port.loss_terms, port.accuracy

        port = replace(
            port, problems=tuple(names.get(p, p) for p in port.problems),
            build_model=lambda problem: build(own.get(problem, problem)),
            loss_terms=lambda problem, *rest: losses(own.get(problem, problem), *rest),
            accuracy=lambda problem, *rest: accuracy(own.get(problem, problem), *rest),
            weight_maps={names.get(p, p): m for p, m in port.weight_maps.items()})
    if not all(port.weight_maps.get(p) is not None for p in port.problems):
        explicit = port.weight_maps
        port = replace(port, weight_maps={})
        object.__setattr__(port, "weight_maps", _MapsWithInference(explicit, port))
    object.__setattr__(port, "_resolved", True)  # resolving twice would translate the names twice
    return port
