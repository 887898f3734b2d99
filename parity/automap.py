"""Proposes a ProblemMap for a port that brings none: weights by kind and shape, taps by forward order.

Weights: the reference's layers (parity.describe: variables in creation order, grouped by layer)
are paired with the port's modules (registration order): a conv kernel with the first unused
nn.Conv2d whose OIHW weight has its shape, a dense kernel with an nn.Linear ([out, in]), a
transposed-conv kernel with an nn.ConvTranspose2d, BN variables with a BatchNorm, an LSTMCell's
kernel and bias with one layer of an nn.LSTM (weight_ih + weight_hh, gates reordered), and
variables outside tf.layers (an embedding, a softmax matrix, a scalar) with the next parameter of
equal shape (or transposed shape, for an nn.Linear weight). Equal-shaped layers pair in order. A
dense layer that reads a flattened conv/pool map gets the NCHW->NHWC row permutation when the port
flattens in NCHW order (torch.flatten(x, 1)) and a plain transpose when it flattens in NHWC order, as
the reference does: read off one CPU forward pass on a random batch (the layer's input against the
map before it, flattened either way); NCHW when neither fits, said so in a note.

Taps: the port model runs once (meta device when it can, else a zero batch on the CPU) with hooks
on every module. A layer's tap is the module that owns its weights, or the activation module (or
container) right after it when the reference's tap is after an activation; when the port applies
the activation as a function, the tap row says `then=`. Pools, dropouts and other taps (a residual
sum, the VAE's z) are the next module of that kind and output shape between their neighbours. A tap
no module computes alone is left uncompared, and said so.

Anything that does not fit (a layer with no candidate, a port parameter left over, a square raw
matrix whose layout cannot be told) raises AmbiguousMapError: one line naming it; nothing is guessed.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from parity.describe import Description, TapInfo, describe
from parity.maps import (ParamRow, ProblemMap, TapRow, bn_rows, conv_rows, conv_transpose_rows, dense_rows,
                         lstm_rows)
from parity.porting import WeightMapError

TRACE_BATCH = 2
PARAM_LAYER_KINDS = ("conv", "dense", "conv_transpose", "batch_norm", "lstm")
LAYER_SUFFIXES = {"kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"}
MODULE_KINDS = ((nn.Conv2d, "conv"), (nn.ConvTranspose2d, "conv_transpose"), (nn.Linear, "dense"),
                (nn.modules.batchnorm._BatchNorm, "batch_norm"), (nn.LSTM, "lstm"), (nn.Embedding, "embedding"))


class AmbiguousMapError(WeightMapError):
    """No map can be proposed without a guess; the message says where."""


# --- the port side -------------------------------------------------------------

def module_kind(module: nn.Module) -> str:
    return next((kind for cls, kind in MODULE_KINDS if isinstance(module, cls)), "raw")


@dataclass
class PortUnit:
    """A module's own tensors (a layer), or one parameter of a module of another type ('raw')."""

    module: str
    kind: str
    tensors: dict[str, tuple[int, ...]]  # attribute -> shape
    layer: int = 0  # nn.LSTM: which of its layers
    used: bool = False

    def name(self, attribute: str) -> str:
        return f"{self.module}.{attribute}" if self.module else attribute


def port_units(model: nn.Module) -> list[PortUnit]:
    units = []
    for module_name, module in model.named_modules():
        kind = module_kind(module)
        own = {n: tuple(t.shape) for n, t in [*module.named_parameters(recurse=False),
                                               *module.named_buffers(recurse=False)]
               if n != "num_batches_tracked"}
        if not own:
            continue
        if kind == "raw":
            units += [PortUnit(module_name, "raw", {n: s}) for n, s in own.items()]
        elif kind == "lstm":
            units += [PortUnit(module_name, "lstm", {n: s for n, s in own.items() if n.endswith(f"_l{k}")}, k)
                      for k in range(module.num_layers)]
        else:
            units.append(PortUnit(module_name, kind, own))
    return units


# --- the reference side --------------------------------------------------------

@dataclass
class ReferenceLayer:
    name: str  # layer name (variable prefix), or the variable itself for a raw one
    kind: str  # conv, dense, conv_transpose, batch_norm, lstm, raw
    variables: dict[str, tuple[int, ...]]  # suffix -> shape ("" for a raw variable)


def reference_layers(description: Description) -> list[ReferenceLayer]:
    from parity.describe import LAYER_KINDS, _base

    layers: dict[str, ReferenceLayer] = {}
    for variable in description.variables:
        prefix, _, suffix = variable.name.rpartition("/")
        kind = LAYER_KINDS.get(_base(prefix)) if prefix and suffix in LAYER_SUFFIXES else None
        if kind in PARAM_LAYER_KINDS:
            layers.setdefault(prefix, ReferenceLayer(prefix, kind, {})).variables[suffix] = variable.shape
        else:
            layers[variable.name] = ReferenceLayer(variable.name, "raw", {"": variable.shape})
    return list(layers.values())


# --- matching ------------------------------------------------------------------

@dataclass
class LayerMatch:
    """One reference layer's rows, as the public helper call that writes them (or literal rows)."""

    reference: ReferenceLayer
    unit: PortUnit
    helper: str  # conv_rows, dense_rows, ..., or "rows" (literal ParamRows)
    args: tuple
    kwargs: dict = field(default_factory=dict)
    rows: list[ParamRow] = field(default_factory=list)


HELPERS = {"conv_rows": conv_rows, "conv_transpose_rows": conv_transpose_rows, "dense_rows": dense_rows,
           "bn_rows": bn_rows, "lstm_rows": lstm_rows}


def _expected_port_shapes(layer: ReferenceLayer) -> dict[str, tuple[int, ...]]:
    """The port attributes (nn.Conv2d etc.) and shapes a layer needs."""
    v = layer.variables
    if layer.kind == "conv":
        kh, kw, cin, cout = v["kernel"]
        shapes = {"weight": (cout, cin, kh, kw)}
    elif layer.kind == "conv_transpose":
        kh, kw, cout, cin = v["kernel"]
        shapes = {"weight": (cin, cout, kh, kw)}
    elif layer.kind == "dense":
        shapes = {"weight": tuple(reversed(v["kernel"]))}
    elif layer.kind == "batch_norm":
        (channels,) = v["gamma"]
        return {"weight": (channels,), "bias": (channels,), "running_mean": (channels,), "running_var": (channels,)}
    else:  # lstm: kernel [in + h, 4h]
        rows, gates = v["kernel"]
        hidden = gates // 4
        return {"weight_ih": (gates, rows - hidden), "weight_hh": (gates, hidden), "bias_ih": (gates,),
                "bias_hh": (gates,)}
    if "bias" in v:
        shapes["bias"] = v["bias"]
    return shapes


def _fits(unit: PortUnit, expected: dict[str, tuple[int, ...]]) -> bool:
    if unit.kind == "lstm":
        found = {n.rsplit("_l", 1)[0]: s for n, s in unit.tensors.items()}
        return all(found.get(n) == s for n, s in expected.items())
    return unit.tensors == expected


def _match_layer(layer: ReferenceLayer, units: list[PortUnit], description: Description, frozen: set[str],
                 notes: list[str]) -> LayerMatch:
    expected = _expected_port_shapes(layer)
    same_kind = [u for u in units if not u.used and u.kind == layer.kind]
    unit = next((u for u in same_kind if _fits(u, expected)), None)
    if unit is None and layer.kind in ("conv", "dense"):
        raw = _match_raw_layer(layer, units, description)
        if raw is not None:
            return raw
    if unit is None:
        offered = "; ".join(f"{u.module or '(model)'} {u.tensors}" for u in same_kind[:4]) or "none left"
        raise AmbiguousMapError(f"no port module fits reference layer {layer.name} ({layer.kind}, port shapes "
                                f"needed {expected}); unused {layer.kind} modules: {offered}")
    if unit is not same_kind[0]:
        notes.append(f"{layer.name} -> {unit.module}: paired by shape, out of registration order")
    unit.used = True
    if layer.kind == "conv":
        return LayerMatch(layer, unit, "conv_rows", (unit.module, layer.name),
                          {} if "bias" in layer.variables else {"bias": False})
    if layer.kind == "conv_transpose":
        return LayerMatch(layer, unit, "conv_transpose_rows", (unit.module, layer.name))
    if layer.kind == "dense":
        chw = next((t.dense_input for t in description.taps if t.name == layer.name), None)
        return LayerMatch(layer, unit, "dense_rows", (unit.module, layer.name),
                          {"after_flatten_chw": chw} if chw else {})
    if layer.kind == "batch_norm":
        return LayerMatch(layer, unit, "bn_rows", (unit.module, layer.name))
    bias_hh = unit.name(f"bias_hh_l{unit.layer}")
    if bias_hh not in frozen:
        raise AmbiguousMapError(
            f"{unit.module} layer {unit.layer}: torch's LSTM has two biases, the reference's LSTMCell {layer.name} one "
            f"(and a constant forget bias 1.0); freeze {bias_hh} at the forget bias (requires_grad_(False), 1 on the "
            f"f gate) so that bias_ih maps onto the reference's bias")
    input_size = layer.variables["kernel"][0] - layer.variables["kernel"][1] // 4
    return LayerMatch(layer, unit, "lstm_rows", (unit.module, layer.name, input_size),
                      {"layer": unit.layer} if unit.layer else {})


def _match_raw_layer(layer: ReferenceLayer, units: list[PortUnit], description: Description) -> LayerMatch | None:
    """A conv or dense layer written as raw parameters of a custom module (F.conv2d(x, self.weight, ...),
    x @ self.weight): its kernel in torch's layout (OIHW; a dense [out, in]) or, for a dense, as the
    reference's [in, out]; a square dense kernel could be either and is reported."""
    kernel = layer.variables["kernel"]
    layouts = {tuple(reversed(kernel)): "dense", kernel: "identity"} if layer.kind == "dense" else \
        {_expected_port_shapes(layer)["weight"]: "conv"}
    chw = next((t.dense_input for t in description.taps if t.name == layer.name), None)
    for index, unit in enumerate(units):
        if unit.used or unit.kind != "raw":
            continue
        [(attribute, shape)] = unit.tensors.items()
        if shape not in layouts:
            continue
        if layer.kind == "dense" and kernel[0] == kernel[1]:
            raise AmbiguousMapError(f"reference kernel {layer.name}/kernel {kernel} is square: cannot tell whether port "
                                    f"parameter {unit.name(attribute)} holds it [out, in] or [in, out]; write this row")
        transform = layouts[shape]
        if chw and transform == "identity":
            raise AmbiguousMapError(f"{layer.name} reads a flattened map and {unit.name(attribute)} holds its kernel "
                                    f"[in, out]: no transform permutes that layout; write this row")
        if chw:
            transform = "dense_after_flatten"
        rows = [ParamRow(unit.name(attribute), f"{layer.name}/kernel", transform, (chw,) if chw else ())]
        unit.used = True
        if "bias" in layer.variables:
            bias = next((u for u in units[index + 1:] if not u.used and u.kind == "raw" and u.module == unit.module
                         and list(u.tensors.values()) == [layer.variables["bias"]]), None)
            if bias is None:
                raise AmbiguousMapError(f"{layer.name}: {unit.name(attribute)} fits its kernel, but module "
                                        f"{unit.module or '(model)'} has no unused bias of shape {layer.variables['bias']}")
            bias.used = True
            rows.append(ParamRow(bias.name(next(iter(bias.tensors))), f"{layer.name}/bias", "identity"))
        return LayerMatch(layer, unit, "rows", (), rows=rows)
    return None


def _match_raw(layer: ReferenceLayer, units: list[PortUnit], linear_weights: set[str]) -> LayerMatch:
    """A variable outside tf.layers (embedding, softmax_w/b, theta, a scalar): the next unused port tensor of its
    shape, or of its transposed shape if that is an nn.Linear weight ([out, in] for a [in, out] matrix)."""
    shape = layer.variables[""]
    for unit in units:
        if unit.used or unit.kind in ("batch_norm", "lstm"):
            continue
        for attribute, port_shape in unit.tensors.items():
            name = unit.name(attribute)
            if name in linear_weights:
                transform = "dense" if port_shape == tuple(reversed(shape)) else None
            elif port_shape == shape:
                if len(shape) == 2 and shape[0] == shape[1] and unit.kind == "raw":
                    raise AmbiguousMapError(f"reference variable {layer.name} {shape} is square: cannot tell whether "
                                            f"port parameter {name} holds it as is or transposed; write this row")
                transform = "identity"
            else:
                transform = None
            if transform:
                if unit.kind in ("dense", "embedding", "conv", "conv_transpose"):
                    unit.tensors = {a: s for a, s in unit.tensors.items() if a != attribute}
                    unit.used = not unit.tensors
                else:
                    unit.used = True
                return LayerMatch(layer, unit, "rows", (), rows=[ParamRow(name, layer.name, transform)])
    raise AmbiguousMapError(f"no port parameter of shape {shape} (or an nn.Linear weight of shape "
                            f"{tuple(reversed(shape))}) left for reference variable {layer.name}")


def infer_params(model: nn.Module, description: Description) -> tuple[list[LayerMatch], list[str]]:
    units = port_units(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    linear_weights = {f"{name}.weight" if name else "weight" for name, m in model.named_modules()
                      if isinstance(m, nn.Linear)}
    matches, notes = [], []
    for layer in reference_layers(description):
        if layer.kind == "raw":
            matches.append(_match_raw(layer, units, linear_weights))
        else:
            match = _match_layer(layer, units, description, frozen, notes)
            if match.helper != "rows":
                match.rows = HELPERS[match.helper](*match.args, **match.kwargs)
            matches.append(match)
    mapped = {row.port for match in matches for row in match.rows}
    if left := [n for n, p in model.named_parameters() if p.requires_grad and n not in mapped]:
        raise AmbiguousMapError(f"port parameters that no reference variable fits: {', '.join(left)}")
    return matches, notes


def _random_inputs(problem: str) -> tuple[torch.Tensor, ...]:
    """The trace's example batch on the CPU with random values (zeros flatten alike in every order)."""
    generator = torch.Generator().manual_seed(0)
    return tuple(x if x.dtype == torch.long else torch.rand(x.shape, generator=generator)
                 for x in _example_inputs(problem, "cpu"))


def flatten_orders(model: nn.Module, inputs: tuple, dense_inputs: dict[str, tuple]) -> dict[str, str | None]:
    """For each nn.Linear named in `dense_inputs` (module -> the (C, H, W) map it reads flattened): "nchw" or
    "nhwc", the order in which its input holds the last C x H x W module output before it; None if neither."""
    last_map: dict[tuple, torch.Tensor] = {}
    orders: dict[str, str | None] = {}

    def remember(module, args, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            last_map[tuple(output.shape[1:])] = output

    def compare(module, args, name):
        chw, (flat,) = dense_inputs[name], args[:1]
        maps = last_map.get(tuple(chw))
        if maps is None or name in orders:
            orders.setdefault(name, None)
            return
        candidates = {"nchw": maps.flatten(1), "nhwc": maps.permute(0, 2, 3, 1).flatten(1)}
        orders[name] = next((order for order, value in candidates.items() if torch.equal(flat, value)), None)

    modules = dict(model.named_modules())
    handles = [module.register_forward_hook(remember) for module in modules.values()]
    handles += [modules[name].register_forward_pre_hook(lambda m, a, name=name: compare(m, a, name))
                for name in dense_inputs]
    _run_hooked(model, inputs, handles, training=False)
    return orders


def _run_hooked(model: nn.Module, inputs: tuple, handles: list, training: bool) -> None:
    """One forward pass without gradients in the given mode; the hooks are removed whatever happens."""
    try:
        model.train(training)
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()


def _apply_flatten_orders(matches: list[LayerMatch], cpu_model, reference_problem: str, notes: list[str]) -> None:
    """Dense layers after a flatten: the row permutation for an NCHW flatten, none for an NHWC one.
    `cpu_model()` gives the port's model on the CPU (values are needed), built only when some layer asks."""
    flattened = {m.unit.module: m for m in matches if m.kwargs.get("after_flatten_chw")}
    if not flattened:
        return
    orders = flatten_orders(cpu_model(), _random_inputs(reference_problem),
                            {name: m.kwargs["after_flatten_chw"] for name, m in flattened.items()})
    for name, match in flattened.items():
        c, h, w = match.kwargs["after_flatten_chw"]
        where = f"{match.reference.name}: reads a flattened {h}x{w}x{c} map; {name}"
        if orders.get(name) == "nhwc":
            match.kwargs = {}
            match.rows = HELPERS[match.helper](*match.args)
            notes.append(f"{where} reads it flattened in NHWC order, as the reference: a plain transpose")
        elif orders.get(name) == "nchw":
            notes.append(f"{where} reads it flattened in NCHW order (torch.flatten(x, 1)), so its rows are permuted")
        else:
            notes.append(f"{where}: neither flatten order of the map before it matched its input on a random "
                         f"batch; taken to be NCHW (torch.flatten(x, 1)), so its rows are permuted")


# --- taps ----------------------------------------------------------------------

@dataclass
class Call:
    module: str
    type_name: str
    start: int
    end: int = -1
    shape: tuple[int, ...] | None = None
    container: bool = False  # an nn.Sequential: its output is its last child's


def _example_inputs(problem: str, device) -> tuple[torch.Tensor, ...]:
    from tf_reference.problems import REFERENCE_PROBLEMS

    inputs = []
    for spec in REFERENCE_PROBLEMS[problem].family.inputs:
        shape = (TRACE_BATCH, *spec.shape)
        if len(shape) == 4:  # images: NHWC -> NCHW
            shape = (shape[0], shape[3], shape[1], shape[2])
        inputs.append(torch.zeros(shape, dtype=torch.long, device=device) if spec.kind == "ids"
                      else torch.zeros(shape, device=device))
    return tuple(inputs)


def trace_calls(model: nn.Module, inputs: tuple) -> list[Call]:
    """Every module call of one train-mode forward pass, with its output shape, in order of completion."""
    calls: list[Call] = []
    open_calls: dict[int, list[Call]] = {}
    clock = [0]

    def before(module, args, name):
        clock[0] += 1
        call = Call(name, type(module).__name__, clock[0], container=isinstance(module, nn.Sequential))
        open_calls.setdefault(id(module), []).append(call)

    def after(module, args, output, name):
        clock[0] += 1
        call = open_calls[id(module)].pop()
        call.end = clock[0]
        value = output[0] if isinstance(output, tuple) else output
        call.shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        calls.append(call)

    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(lambda m, a, name=name: before(m, a, name)))
            handles.append(module.register_forward_hook(lambda m, a, o, name=name: after(m, a, o, name)))
    _run_hooked(model, inputs, handles, training=True)
    return calls


def _port_shape(tap: TapInfo) -> tuple[int, ...]:
    shape = tap.shape
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape


def _is_activation(call: Call, activation: str) -> bool:
    name = call.type_name.lower()
    if activation == "relu":
        return name == "relu"
    if activation == "lrelu":
        return "leakyrelu" in name or "lrelu" in name
    return activation in name


def _descend(call: Call, calls: list[Call]) -> Call:
    """An nn.Sequential's output is its last child's: name that child (as a hand-written map would)."""
    while call.container:
        children = [c for c in calls if c.start > call.start and c.end < call.end
                    and c.module.rpartition(".")[0] == call.module]
        if not children:
            break
        call = max(children, key=lambda c: c.end)
    return call


def infer_taps(description: Description, matches: list[LayerMatch], calls: list[Call],
               weight_modules: set[str]) -> tuple[list[TapRow], list[str], list[str]]:
    """(tap rows, reference taps left uncompared, notes)."""
    module_of_layer = {m.reference.name: m.unit.module for m in matches}
    # A module called more than once (one nn.ReLU or nn.MaxPool2d instance reused) cannot be tapped: its hook
    # keeps the last call's output only. Such taps go through then= or stay uncompared.
    counts = Counter(c.module for c in calls)
    calls = [c for c in calls if counts[c.module] == 1 or c.module in weight_modules]
    first_call = {}
    for call in sorted(calls, key=lambda c: c.start):
        first_call.setdefault(call.module, call)
    taps = [t for t in description.taps if t.kind != "output"]
    layer_call = {t.name: first_call.get(module_of_layer.get(t.name)) for t in taps}
    rows, uncompared, notes = [], [], []
    matched_ends: list[int] = []
    ordered = sorted(calls, key=lambda c: c.end)
    for index, tap in enumerate(taps):
        anchor = layer_call.get(tap.name)
        if anchor is not None:  # a layer with weights: its own module, or the activation after it
            row = _layer_tap(tap, anchor, ordered)
            rows.append(row)
            matched_ends.append(next(c.end for c in ordered if c.module == row.port and c.end >= anchor.end))
            continue
        upper = min((layer_call[t.name].start for t in taps[index + 1:] if layer_call.get(t.name)),
                    default=float("inf"))
        lower = max((end for end in matched_ends if end < upper), default=0)
        window = [c for c in ordered if lower < c.end < upper and c.shape == _port_shape(tap)]
        if tap.kind in ("pool", "dropout"):
            # A dropout the original never runs (Inception's head) may well be an nn.Identity in the port.
            found = next((c for c in window if tap.kind in c.type_name.lower()
                          or (tap.kind == "dropout" and c.type_name == "Identity")), None)
            if found is not None and rows and rows[-1].then and "max" in found.type_name.lower():
                # The layer before went through then=: a port may run its (monotone) activation after the max
                # pool, which commutes with it (conv -> pool -> ReLU); the pool's tap is then after that ReLU.
                found = _activation_holder(found, rows[-1].then, ordered) or found
        else:
            found = [c for c in window if c.module not in weight_modules and "pool" not in c.type_name.lower()
                     and "dropout" not in c.type_name.lower()
                     and not any(_is_activation(c, a) for a in ("relu", "lrelu", "sigmoid"))]
            found = _descend(found[-1], calls) if found else None
        if found is None:
            uncompared.append(tap.name)
            notes.append(f"tap {tap.name} ({tap.what}, {_port_shape(tap)} in port layout): no port module computes it "
                         f"alone; not compared (the layers after it and the outputs are)")
            continue
        rows.append(TapRow(tap.name, found.module))
        matched_ends.append(found.end)
    return rows, uncompared, notes


def _activation_holder(anchor: Call, activation: str, ordered: list[Call]) -> Call | None:
    """The call whose output is `anchor`'s through `activation`, when the port's next call applies it: the
    innermost container that ends right there and holds `anchor` (Sequential(conv, ReLU)), else the activation
    module itself; None when the next call is something else."""
    after = [c for c in ordered if c.end > anchor.end]
    if not after or not _is_activation(after[0], activation) or after[0].shape != anchor.shape:
        return None
    return after[1] if len(after) > 1 and after[1].start < anchor.start and after[1].shape == anchor.shape \
        else after[0]


def _layer_tap(tap: TapInfo, anchor: Call, ordered: list[Call]) -> TapRow:
    if not tap.activation:
        return TapRow(tap.name, anchor.module)
    holder = _activation_holder(anchor, tap.activation, ordered)
    return TapRow(tap.name, holder.module) if holder else TapRow(tap.name, anchor.module, then=tap.activation)


# --- the whole map -------------------------------------------------------------

@dataclass
class InferredMap:
    problem: str
    problem_map: ProblemMap
    matches: list[LayerMatch]
    notes: list[str]


def _build_for_trace(build_model, problem: str) -> tuple[nn.Module, str]:
    try:
        with torch.device("meta"):
            return build_model(problem), "meta"
    except Exception:  # noqa: BLE001 - a model that cannot build on meta is traced on the CPU
        return build_model(problem), "cpu"


def trace_port(build_model, problem: str, reference_problem: str | None = None, built=None) -> list[Call]:
    """trace_calls of the port's model, on the meta device when it builds and runs there, else on the CPU
    (`built`: the model and device _build_for_trace already gave)."""
    model, device = built or _build_for_trace(build_model, problem)
    inputs_problem = reference_problem or problem
    try:
        return trace_calls(model, _example_inputs(inputs_problem, device))
    except Exception as error:  # noqa: BLE001 - e.g. an op without a meta kernel: trace a zero batch on the CPU
        if device == "cpu":
            raise AmbiguousMapError(f"the port's forward pass failed while tracing its modules: "
                                    f"{type(error).__name__}: {error}") from None
        return trace_calls(build_model(problem), _example_inputs(inputs_problem, "cpu"))


def infer_map(build_model, problem: str, reference_problem: str | None = None,
              description: Description | None = None) -> InferredMap:
    """A ProblemMap for the model `build_model(problem)` against the reference's `reference_problem`."""
    description = description or describe(reference_problem or problem)
    model, device = _build_for_trace(build_model, problem)
    matches, notes = infer_params(model, description)
    _apply_flatten_orders(matches, lambda: model if device == "cpu" else build_model(problem), description.problem,
                          notes)
    calls = trace_port(build_model, problem, description.problem, (model, device))
    weight_modules = {m.unit.module for m in matches}
    taps, uncompared, tap_notes = infer_taps(description, matches, calls, weight_modules)
    params = tuple(row for match in matches for row in match.rows)
    problem_map = ProblemMap(params, tuple(taps), tuple(uncompared), inferred=True)
    return InferredMap(problem, problem_map, matches, notes + tap_notes)


# --- as Python source ------------------------------------------------------------

def _call_source(match: LayerMatch) -> str:
    if match.helper == "rows":
        return "[" + ", ".join(f"ParamRow({r.port!r}, {r.reference!r}, {r.transform!r}"
                               + (f", {r.args!r}" if r.args else "") + ")" for r in match.rows) + "]"
    args = ", ".join(repr(a) for a in match.args)
    kwargs = "".join(f", {k}={v!r}" for k, v in match.kwargs.items())
    return f"{match.helper}({args}{kwargs})"


def to_source(inferred: InferredMap, variable: str = "MAP") -> str:
    """The map as Python source using parity.maps' public helpers (paste it into your port module)."""
    helpers = sorted({m.helper for m in inferred.matches if m.helper != "rows"})
    imports = ["ProblemMap", "TapRow"] + (["ParamRow"] if any(m.helper == "rows" for m in inferred.matches) else [])
    lines = [f"# {inferred.problem}: proposed by `python -m parity suggest-map` (check it: it pairs layers by kind,",
             "# shape and order; see the notes)"]
    lines += [f"# note: {note}" for note in inferred.notes]
    lines += [f"from parity.maps import {', '.join(imports + helpers)}", "",
              f"{variable} = ProblemMap(", "    params=tuple("]
    calls = [_call_source(m) for m in inferred.matches]
    lines += [f"        {'+ ' if i else ''}{call}" for i, call in enumerate(calls)]
    lines += ["    ),", "    taps=("]
    for row in inferred.problem_map.taps:
        then = f", then={row.then!r}" if row.then else ""
        lines.append(f"        TapRow({row.reference!r}, {row.port!r}{then}),")
    lines.append("    ),")
    if inferred.problem_map.uncompared:
        lines.append(f"    uncompared={inferred.problem_map.uncompared!r},")
    lines.append(")")
    return "\n".join(lines)
