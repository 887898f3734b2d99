"""Any torch.optim.Optimizer by import path, its constructor's keyword arguments as typed command-line flags.

The original declares each hyperparameter by hand ({'momentum': {'type': float, 'default': 0.99}}) and
parses booleans with `type=bool`, so `--nesterov False` is True. Here the declaration is read from the
constructor's signature, and a boolean is a switch pair (`--nesterov` / `--no-nesterov`).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any

import torch

# Keyword arguments that choose an implementation, not the update rule: not hyperparameters of a result.
IMPLEMENTATION_SWITCHES = frozenset({"foreach", "fused", "capturable", "differentiable"})
REQUIRED = inspect.Parameter.empty


class OptimizerError(ValueError):
    """The --optimizer value or its flags are unusable; the message is one line for the user."""


@dataclass(frozen=True)
class Hyperparameter:
    name: str  # the constructor's keyword
    kind: type  # float, int, bool or str
    length: int | None  # a tuple of `length` values (Adam's betas), None for a scalar
    default: Any  # REQUIRED when the constructor has none

    def typed_default(self) -> Any:
        """The default in the flag's type (`momentum: float = 0` records 0.0, as a typed --momentum 0 would)."""
        if self.default is None or self.default is REQUIRED:
            return self.default
        if self.length is not None:
            return tuple(self.kind(value) for value in self.default)
        return self.kind(self.default)

    def flags(self, taken: set[str]) -> list[str]:
        """--name-with-hyphens (and --name_with_underscores); prefixed --opt- where a runner flag has the name."""
        names = [f"--{self.name.replace('_', '-')}", f"--{self.name}"]
        if any(name in taken for name in names):
            names = [f"--opt-{self.name.replace('_', '-')}", f"--opt_{self.name}"]
        return list(dict.fromkeys(names))


def import_optimizer(path: str) -> type[torch.optim.Optimizer]:
    """'torch.optim.SGD', 'deepobs.optim.TF1Adam' or 'my_module:MyOptimizer'."""
    module_name, _, attribute = path.replace(":", ".").rpartition(".")
    if not module_name:
        raise OptimizerError(f"--optimizer wants an import path such as torch.optim.SGD, got {path!r}")
    try:
        optimizer_class = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise OptimizerError(f"cannot import optimizer {path!r}: {error}") from None
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        raise OptimizerError(f"{path!r} is not a torch.optim.Optimizer subclass")
    return optimizer_class


def _basic_types(annotation) -> list:
    if isinstance(annotation, (typing._UnionGenericAlias, types.UnionType)) or typing.get_origin(annotation) is typing.Union:
        return [t for arg in typing.get_args(annotation) for t in _basic_types(arg)]
    return [annotation]


def _scalar_kind(candidates: list, default: Any) -> type | None:
    for kind in (bool, float, int, str):  # float before int: `momentum: float = 0`
        if kind in candidates:
            return kind
    if default is not REQUIRED and default is not None and type(default) in (bool, float, int, str):
        return type(default)
    return None


def describe(parameter: inspect.Parameter) -> Hyperparameter | None:
    """The flag a constructor parameter becomes, or None where it is not a plain hyperparameter."""
    default = parameter.default
    candidates = _basic_types(parameter.annotation) if parameter.annotation is not REQUIRED else []
    for candidate in candidates:
        if typing.get_origin(candidate) is tuple or isinstance(default, tuple):
            elements = typing.get_args(candidate) if typing.get_origin(candidate) is tuple else ()
            element_kind = _scalar_kind([t for e in elements for t in _basic_types(e)],
                                        default[0] if isinstance(default, tuple) and default else REQUIRED)
            length = len(default) if isinstance(default, tuple) else len(elements)
            if element_kind is not None and length:
                return Hyperparameter(parameter.name, element_kind, length, default)
    kind = _scalar_kind(candidates, default)
    return None if kind is None else Hyperparameter(parameter.name, kind, None, default)


def hyperparameters(optimizer_class: type[torch.optim.Optimizer]) -> list[Hyperparameter]:
    """Every keyword argument of the constructor except `params`, `lr` (the runner's --lr) and
    implementation switches. Arguments of a type no flag can carry are left at their defaults."""
    signature = inspect.signature(optimizer_class.__init__)
    if "lr" not in signature.parameters:
        raise OptimizerError(f"{optimizer_class.__name__} takes no `lr` argument; the runner sets the learning rate")
    found = []
    for name, parameter in signature.parameters.items():
        if name in ("self", "params", "lr") or name in IMPLEMENTATION_SWITCHES:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            continue
        spec = describe(parameter)
        if spec is None and parameter.default is REQUIRED:
            raise OptimizerError(f"{optimizer_class.__name__}: required argument {name!r} has no type a flag can carry")
        if spec is not None:
            found.append(spec)
    return found


def add_flags(parser: argparse.ArgumentParser, specs: list[Hyperparameter], optimizer_name: str) -> None:
    group = parser.add_argument_group(f"{optimizer_name} hyperparameters (constructor keyword arguments)")
    taken = set(parser._option_string_actions)
    for spec in specs:
        required = spec.default is REQUIRED
        default = None if required else spec.typed_default()
        shown = "required" if required else f"default {default!r}"
        options: dict[str, Any] = dict(dest=f"hp__{spec.name}", required=required, default=default,
                                       help=f"{spec.name} ({shown})")
        if spec.kind is bool and spec.length is None:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = spec.kind
            options["metavar"] = spec.kind.__name__.upper()
            if spec.length is not None:
                options["nargs"] = spec.length
        group.add_argument(*spec.flags(taken), **options)


def collect(args: argparse.Namespace, specs: list[Hyperparameter]) -> dict[str, Any]:
    """The hyperparameter values of a parsed command line, by constructor keyword (tuples as lists)."""
    values = {}
    for spec in specs:
        value = getattr(args, f"hp__{spec.name}")
        values[spec.name] = list(value) if isinstance(value, (tuple, list)) else value
    return values


def step_needs_closure(optimizer_class: type[torch.optim.Optimizer]) -> bool:
    """LBFGS-style optimizers whose step() requires a closure that re-evaluates the loss."""
    closure = inspect.signature(optimizer_class.step).parameters.get("closure")
    return closure is not None and closure.default is REQUIRED


def complete_hyperparams(optimizer_class: type[torch.optim.Optimizer], given: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter with its default, `given` values typed as the flags would type them
    (so a grid's setting lands in the same folder as the same setting run from the command line)."""
    specs = {spec.name: spec for spec in hyperparameters(optimizer_class)}
    if unknown := sorted(set(given) - set(specs)):
        raise OptimizerError(f"{optimizer_class.__name__} has no hyperparameter {', '.join(map(repr, unknown))}; "
                             f"it has: {', '.join(specs)}")
    values = {}
    for name, spec in specs.items():
        value = given.get(name, spec.typed_default())
        if value is REQUIRED:
            raise OptimizerError(f"{optimizer_class.__name__} needs a value for {name!r}")
        if value is not None and spec.length is not None:
            value = [spec.kind(item) for item in value]
        elif value is not None and not (spec.kind is bool and not isinstance(value, bool)):
            value = spec.kind(value)
        elif spec.kind is bool and value is not None:
            raise OptimizerError(f"{optimizer_class.__name__}: {name} must be true or false, got {value!r}")
        values[name] = list(value) if isinstance(value, tuple) else value
    return values
