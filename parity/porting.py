"""Moving weights both ways between the port and the reference, through a ProblemMap."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from parity.maps import ParamRow, ProblemMap
from parity.transforms import TRANSFORMS


class WeightMapError(Exception):
    """The weight map does not fit the two models (missing names or wrong shapes)."""


def port_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters()) | dict(model.named_buffers())


def to_reference_layout(row: ParamRow, port_value: np.ndarray) -> np.ndarray:
    return TRANSFORMS[row.transform].to_reference(port_value, *row.args)


def to_port_layout(row: ParamRow, reference_value: np.ndarray) -> np.ndarray:
    return TRANSFORMS[row.transform].to_port(reference_value, *row.args)


def assemble(rows, port_values: Mapping[str, np.ndarray]) -> np.ndarray:
    """One reference variable, in its layout, from the port tensors of its rows (`port_values` by port
    name): the tensor itself, or the sum of the parts of a variable split across tensors (each partial
    transform fills its own part and leaves zeros elsewhere)."""
    parts = [to_reference_layout(row, port_values[row.port]) for row in rows]
    return parts[0] if len(parts) == 1 else np.sum(parts, axis=0)


def check_coverage(problem_map: ProblemMap, reference_names, model: nn.Module) -> None:
    """Every reference variable and every port parameter must appear in the map, with a valid name."""
    mapped_reference = {row.reference for row in problem_map.params}
    mapped_port = {row.port for row in problem_map.params}
    port_names = set(port_tensors(model))
    problems = []
    if missing := [n for n in reference_names if n not in mapped_reference]:
        problems.append(f"reference variables not in the weight map: {', '.join(missing)}")
    if unknown := sorted(n for n in mapped_reference if n not in set(reference_names)):
        problems.append(f"weight map names reference variables that do not exist: {', '.join(unknown)}")
    if unknown := sorted(mapped_port - port_names):
        problems.append(f"weight map names port tensors that do not exist: {', '.join(unknown)}")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if unmapped := sorted(trainable - mapped_port):
        problems.append(f"port parameters not in the weight map: {', '.join(unmapped)}")
    if problems:
        raise WeightMapError("; ".join(problems))


def to_port_values(reference_values: Mapping[str, np.ndarray], model: nn.Module,
                   problem_map: ProblemMap) -> dict[str, np.ndarray]:
    """Reference values (reference layouts) in the port's layouts, by port tensor name; shapes checked."""
    return dict(iter_port_values(reference_values, model, problem_map))


def iter_port_values(reference_values: Mapping[str, np.ndarray], model: nn.Module, problem_map: ProblemMap,
                     skip: frozenset[str] | set[str] = frozenset()):
    """(port tensor name, value in its layout) one at a time, the port tensors in `skip` left out: a large
    model's weights converted tensor by tensor, never a second copy of the whole model."""
    tensors = port_tensors(model)
    for row in problem_map.params:
        if row.port in skip:
            continue
        reference_value = np.asarray(reference_values[row.reference])
        target = tensors[row.port]
        try:
            value = to_port_layout(row, reference_value)
        except ValueError:
            value = reference_value  # the transform cannot even reshape it: report the raw shapes
        if tuple(value.shape) != tuple(target.shape):
            raise WeightMapError(
                f"shape mismatch: reference {row.reference} {tuple(reference_value.shape)} "
                f"-> {row.transform} -> {tuple(value.shape)}, but port {row.port} is {tuple(target.shape)}")
        yield row.port, value


def load_port_values(model: nn.Module, port_values) -> None:
    """Port-layout values (a mapping, or an iterable of (name, value) pairs) into the model's tensors."""
    tensors = port_tensors(model)
    pairs = port_values.items() if isinstance(port_values, Mapping) else port_values
    with torch.no_grad():
        for name, value in pairs:
            tensors[name].copy_(torch.from_numpy(value))


def reference_to_port(reference_values: Mapping[str, np.ndarray], model: nn.Module, problem_map: ProblemMap) -> None:
    """Copy reference values (reference layouts) into the port's parameters and buffers."""
    load_port_values(model, to_port_values(reference_values, model, problem_map))


def port_to_reference(model: nn.Module, reference_shapes: Mapping[str, tuple], problem_map: ProblemMap) -> dict:
    """Port parameters and buffers in reference layouts, keyed by reference name."""
    port_values = {name: tensor.detach().cpu().numpy() for name, tensor in port_tensors(model).items()}
    values = {}
    for reference, rows in problem_map.rows_for_reference().items():
        try:
            value = assemble(rows, port_values)
        except ValueError:
            value = port_values[rows[0].port]
        expected = tuple(reference_shapes[reference])
        if tuple(value.shape) != expected:
            ports = ", ".join(f"{row.port} {tuple(port_values[row.port].shape)}" for row in rows)
            raise WeightMapError(f"shape mismatch: port {ports} -> {rows[0].transform} -> "
                                 f"{tuple(value.shape)}, but reference {reference} is {expected}")
        values[reference] = value
    return values
