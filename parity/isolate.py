"""Every deviation in one run: each tapped layer fed the reference's own input (teacher forcing).

The ordinary checks compare the port's layers on the port's own upstream values, so everything after the
first divergence differs too and only the first layer is named. Here every tapped module's output is
*replaced*, through a forward hook, by the reference's output of that layer (in port layout). The next
module then receives the reference's value after the port's own glue code (a functional ReLU, a pool, a
flatten between two taps): its output, compared before it is replaced in turn, is what that layer (and the
untapped code in front of it) computes from the reference's input. So every layer that computes something
different fails with its own error, and a correct layer passes even behind a broken one.

The backward is forced the same way: each replaced output is a fresh leaf, the module's own output gets
the reference's gradient with respect to that layer's output (tf.GradientTape on the reference's taps),
so every parameter gradient and every gradient flowing into a tapped output is computed from the
reference's upstream gradient; a BN whose batch statistics carry no gradient or an activation with a wrong
derivative fails at its own layer. Loss terms are isolated too (the port's loss on the reference's outputs;
its regularizer per tensor group) and train-mode effects per BN layer and per dropout site.

A module's output cannot be replaced when it returns a tuple (a recurrent layer and its state), when it
runs more than once per pass, or when its output's shape differs from the reference's; the layer is then
compared on the port's own upstream values and the result says so for that layer.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from parity.checks import (AuditPair, Batch, NoiseMismatch, _port_in_reference_layout, _scalar, _statistic_rows,
                           inference_at_audit_weights, reference_targets)
from parity.dropout import NoiseRecorder, injected_noise
from parity.frameworks import load_tensorflow
from parity.porting import assemble, port_tensors, to_reference_layout
from parity.results import CheckResult, Comparison, compare
from parity.tolerances import tolerance

tf = load_tensorflow()


def to_port_tap(value, dtype: torch.dtype) -> torch.Tensor:
    """A reference layer output (NHWC for images) in the port's layout (NCHW)."""
    array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    array = array.transpose(0, 3, 1, 2) if array.ndim == 4 else array
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


@dataclass
class ForcedPass:
    """One teacher-forced pass of the port, by port module name."""

    outputs: object = None  # the model's outputs (None if the forward raised)
    own: dict = field(default_factory=dict)  # each tapped module's own output (detached copy, port layout)
    inputs: dict = field(default_factory=dict)  # each tapped module's first input as it received it (detached)
    leaves: dict = field(default_factory=dict)  # the leaf that replaced each forced module's output
    raw: dict = field(default_factory=dict)  # each forced module's own output, in the autograd graph
    unforced: dict = field(default_factory=dict)  # module -> why its output was not replaced
    error: str = ""


def tap_modules(pair: AuditPair) -> dict[str, str]:
    """Port module -> the reference layer it is forced to; a module tapped for two layers is left out."""
    counts = Counter(row.port for row in pair.problem_map.taps)
    return {row.port: row.reference for row in pair.problem_map.taps if counts[row.port] == 1}


# A tap row may name a function the port applies after the module (`then`, an activation called as a function):
# its output is compared through it, and it can stand in for the module's output only where applying the function
# to the reference's (post-activation) value gives that value again.
IDEMPOTENT_THEN = ("relu",)


def then_function(pair: AuditPair, module: str):
    """(name, function) applied after `module` by the map's tap row, or (None, None)."""
    from parity import maps

    name = next((getattr(row, "then", None) for row in pair.problem_map.taps if row.port == module), None)
    return (name, getattr(maps, "THEN_FUNCTIONS", {})[name]) if name else (None, None)


@contextlib.contextmanager
def forced_outputs(pair: AuditPair, reference_taps: dict, requires_grad: bool,
                   off_path: frozenset = frozenset()) -> Iterator[ForcedPass]:
    """Replace each tapped module's output by the reference's; `off_path` reference layers (whose output the
    reference's loss does not depend on) are left to the port in a backward pass, so as not to cut its path."""
    forced_pass = ForcedPass()
    modules = dict(pair.model.named_modules())
    targets = {module: reference for module, reference in tap_modules(pair).items() if module in modules}
    calls: Counter = Counter()

    def remember_input(name, args):
        if name not in forced_pass.inputs and args and isinstance(args[0], torch.Tensor):
            forced_pass.inputs[name] = args[0].detach().clone()

    def replace(name, output):
        calls[name] += 1
        tensor = output[0] if isinstance(output, tuple) else output
        forced_pass.own[name] = tensor.detach().clone()  # before any later in-place op rewrites it
        then, _ = then_function(pair, name)
        if targets[name] in off_path:
            forced_pass.unforced[name] = "the reference's loss does not depend on this layer's output"
            return None
        if calls[name] > 1:
            forced_pass.unforced[name] = "the module runs more than once per pass; only its first output was forced"
            return None
        if isinstance(output, tuple):
            forced_pass.unforced[name] = "the module returns a tuple (a recurrent layer and its state)"
            return None
        if then and then not in IDEMPOTENT_THEN:
            forced_pass.unforced[name] = (f"the map applies then={then!r} after it, which the reference's output "
                                          "cannot stand in for")
            return None
        target = to_port_tap(reference_taps[targets[name]], tensor.dtype)
        if tuple(target.shape) != tuple(tensor.shape):
            forced_pass.unforced[name] = (f"its output's shape {tuple(tensor.shape)} is not the reference's "
                                          f"{tuple(target.shape)} (port layout)")
            return None
        leaf = target.requires_grad_(requires_grad)
        forced_pass.leaves[name] = leaf
        forced_pass.raw[name] = tensor
        return leaf.clone()  # not the leaf itself: the port may rewrite its input in place

    handles = []
    for name in targets:
        handles.append(modules[name].register_forward_pre_hook(lambda m, args, name=name: remember_input(name, args)))
        handles.append(modules[name].register_forward_hook(lambda m, args, out, name=name: replace(name, out)))
    try:
        yield forced_pass
    finally:
        for handle in handles:
            handle.remove()


def forced_forward(pair: AuditPair, batch: Batch, training: bool, draws, reference_taps: dict,
                   requires_grad: bool = False, off_path: frozenset = frozenset()) -> ForcedPass:
    pair.model.train(training)
    with forced_outputs(pair, reference_taps, requires_grad, off_path) as forced_pass, injected_noise(draws):
        try:
            with torch.set_grad_enabled(requires_grad):
                forced_pass.outputs = pair.model(*batch.port_inputs(pair.torch_dtype))
        except (RuntimeError, NoiseMismatch, ValueError) as failure:
            forced_pass.error = f"the port's forward raised {type(failure).__name__}: {failure}"
    return forced_pass


def _named_outputs(pair: AuditPair, outputs) -> dict:
    if outputs is None:
        return {}
    return dict(zip(pair.output_names, outputs if isinstance(outputs, tuple) else (outputs,)))


def compare_forced(pair: AuditPair, reference_taps: dict, forced_pass: ForcedPass, kind: str) -> list[Comparison]:
    """Every reference layer against the port module's own output on the reference's input."""
    modules = pair.problem_map.port_module_for_tap()
    outputs = _named_outputs(pair, forced_pass.outputs)
    limit = tolerance(kind, pair.dtype)
    comparisons = []
    uncompared = set(getattr(pair.problem_map, "uncompared", ()))
    for name, reference_value in reference_taps.items():
        if name in uncompared:
            continue
        module = modules.get(name)
        note = ""
        if name in outputs:
            port_value = outputs[name]
        elif module in forced_pass.own:
            _, then = then_function(pair, module)
            port_value = then(forced_pass.own[module]) if then else forced_pass.own[module]
            if module in forced_pass.unforced:
                note = f"not teacher-forced: {forced_pass.unforced[module]}; its input came from the port's own upstream"
        else:
            why = forced_pass.error or "no port output for this layer (activation map or module not run)"
            if module is not None and module not in tap_modules(pair):
                why = "the map taps this module for another layer too"
            comparisons.append(Comparison(name, float("nan"), float("nan"), limit, False, why))
            continue
        comparisons.append(compare(name, _port_in_reference_layout(port_value), reference_value.numpy(), limit, note))
    return comparisons


# --- the reference's gradients with respect to its layer outputs --------------------------------

@dataclass
class ReferenceBackward:
    taps: dict  # train-mode layer outputs (tf tensors)
    tap_gradients: dict[str, np.ndarray | None]  # d objective / d layer output (None: off the loss's path)
    gradients: dict[str, np.ndarray]  # d objective / d variable
    draws: list
    statistics: dict[str, np.ndarray]  # BN moving statistics after the pass


def reference_backward(pair: AuditPair, batch: Batch) -> ReferenceBackward:
    """The train-mode objective's gradients with respect to every variable and every layer output."""
    pair.sync()
    noise = NoiseRecorder(pair.seed + 1)
    variables = pair.reference.graph.trainable_variables
    with tf.GradientTape() as tape:
        inputs = tuple(tf.convert_to_tensor(x) for x in batch.inputs)
        for x in inputs:  # a layer that only transforms the input (a dropout, a resize) is on the tape too
            if x.dtype.is_floating:
                tape.watch(x)
        outputs, taps = pair.reference.forward(inputs, True, noise)
        data_loss, l2 = pair.reference.loss_terms(outputs, reference_targets(batch))
        total = data_loss + l2
    names = list(taps)
    gradients = tape.gradient(total, list(variables.values()) + [taps[n] for n in names])
    # An embedding's gradient comes as IndexedSlices: made dense. A variable off the loss's path gets zeros.
    gradients = [None if g is None else tf.convert_to_tensor(g).numpy() for g in gradients]
    gradients[:len(variables)] = [np.zeros(v.shape, v.dtype.as_numpy_dtype) if g is None else g
                                  for v, g in zip(variables.values(), gradients)]
    statistics = {row.reference: np.array(pair.reference.graph.variables[row.reference].numpy())
                  for row in _statistic_rows(pair)}
    pair.sync()
    return ReferenceBackward(taps, dict(zip(names, gradients[len(variables):])),
                             dict(zip(variables, gradients[:len(variables)])), noise.draws, statistics)


def _owner(port_name: str, modules: list[str]) -> str | None:
    """The tapped module a port tensor belongs to (the longest module name that prefixes it)."""
    owners = [m for m in modules if port_name.startswith(m + ".")]
    return max(owners, key=len) if owners else None


def backward_rows(pair: AuditPair) -> list[tuple[str, str | None]]:
    """(reference variable, None) and (None, reference layer) rows in backward order: for each tapped layer
    from the loss towards the input, the gradient flowing into its output, then its own parameters; the
    variables of no tapped module last, in reverse creation order."""
    modules = tap_modules(pair)
    by_layer: dict[str, list[str]] = {}
    loose = []
    for name, rows in pair.rows_by_reference().items():
        owner = _owner(rows[0].port, list(modules))
        (by_layer.setdefault(modules[owner], []) if owner else loose).append(name)
    order = []
    for row in reversed(pair.problem_map.taps):
        if row.port in modules:
            order.append((None, row.reference))
            order += [(name, None) for name in reversed(by_layer.get(row.reference, []))]
    return order + [(name, None) for name in reversed(loose)]


def isolated_backward(pair: AuditPair, batch_index: int = 0) -> tuple[CheckResult, CheckResult, dict]:
    """(isolated train_mode, isolated gradients, evidence) on one audit batch."""
    batch = pair.batches[batch_index]
    reference = reference_backward(pair, batch)
    pair.sync()
    pair.model.zero_grad(set_to_none=True)
    off_path = frozenset(name for name, g in reference.tap_gradients.items() if g is None)
    forced_pass = forced_forward(pair, batch, True, reference.draws, reference.taps, requires_grad=True,
                                 off_path=off_path)
    train = CheckResult(pair.problem, "isolated/train_mode", pair.dtype,
                        compare_forced(pair, reference.taps, forced_pass, "train_mode"), diagnostic=True)
    tensors = port_tensors(pair.model)
    limit = tolerance("train_mode", pair.dtype)
    statistics = {row.reference: to_reference_layout(row, tensors[row.port].detach().numpy())
                  for row in _statistic_rows(pair)}
    train.comparisons += [compare(name, statistics[name], value, limit, "from this BN layer's own (reference) input")
                          for name, value in reference.statistics.items()]
    gradients = CheckResult(pair.problem, "isolated/gradients", pair.dtype, diagnostic=True)
    evidence = {"forced_pass": forced_pass, "reference": reference, "statistics": statistics}
    if forced_pass.outputs is None:
        gradients.error = forced_pass.error
        return train, gradients, evidence
    modules = pair.problem_map.port_module_for_tap()
    data_loss, l2 = pair.port.loss_terms(pair.problem, pair.model, forced_pass.outputs,
                                         batch.port_targets(pair.torch_dtype))
    surrogate = data_loss + l2
    for module, raw in forced_pass.raw.items():
        upstream = to_port_tap(reference.tap_gradients[tap_modules(pair)[module]], raw.dtype)
        _, then = then_function(pair, module)
        surrogate = surrogate + ((then(raw) if then else raw) * upstream).sum()
    try:
        surrogate.backward()
    except RuntimeError as error:
        gradients.error = f"the port's backward pass raised: {error}"
        return train, gradients, evidence
    limit = tolerance("gradients", pair.dtype)
    rows_by_reference = pair.rows_by_reference()
    reverse_modules = {reference: module for module, reference in tap_modules(pair).items()}
    forced_layers = [row.reference for row in pair.problem_map.taps if row.port in forced_pass.leaves]
    consumer = dict(zip(forced_layers, forced_layers[1:]))
    for variable, layer in backward_rows(pair):
        if variable is not None:
            grads = {row.port: tensors[row.port].grad for row in rows_by_reference[variable]}
            if any(g is None for g in grads.values()):
                gradients.comparisons.append(Comparison(variable, float("nan"), float("nan"), limit, False,
                                                        "no port gradient for it"))
                continue
            port = assemble(rows_by_reference[variable], {p: g.detach().numpy() for p, g in grads.items()})
            gradients.comparisons.append(compare(variable, port, reference.gradients[variable], limit,
                                                 "from the reference's gradient at its layer's output"))
            continue
        module = reverse_modules.get(layer)
        item = f"{layer} (gradient into its output)"
        expected = reference.tap_gradients[layer]
        leaf = forced_pass.leaves.get(module)
        if leaf is None or expected is None:  # not forced, or off the loss's path: nothing isolated to compare
            continue
        _, then = then_function(pair, module)
        if then:  # the port applies it to the forced value: the leaf gets the reference's gradient through it
            value = leaf.detach().clone().requires_grad_(True)
            then(value).backward(to_port_tap(expected, value.dtype))
            expected = _port_in_reference_layout(value.grad)
        if leaf.grad is None:
            port = np.zeros_like(expected)
            note = "no gradient reaches it in the port"
        else:
            port = _port_in_reference_layout(leaf.grad)
            after = consumer.get(layer)
            note = (f"the backward of {after} (and of anything else that reads it) from the reference's gradients"
                    if after else "the backward of what reads it (the loss) from the reference's gradients")
        gradients.comparisons.append(compare(item, port, expected, limit, note))
    agreeing = {c.item for c in train.comparisons if c.passed}
    flips = _sign_flips(pair, reference.taps, forced_pass, agreeing)
    if flips:
        gradients.notes.append(f"{flips} layer output element(s) on opposite sides of 0 in the two frameworks "
                               "(a ReLU kink): their gradients may differ by round-off alone")
    for module, why in forced_pass.unforced.items():
        gradients.notes.append(f"{modules_to_layer(pair, module)}: not teacher-forced ({why})")
    pair.model.zero_grad(set_to_none=True)
    pair.sync()
    return train, gradients, evidence


def modules_to_layer(pair: AuditPair, module: str) -> str:
    return next((row.reference for row in pair.problem_map.taps if row.port == module), module)


def _sign_flips(pair: AuditPair, reference_taps: dict, forced_pass: ForcedPass, agreeing: set[str]) -> int:
    """Elements on opposite sides of 0 in layers that agree (round-off at a kink, not a real difference)."""
    flips = 0
    for module, reference_layer in tap_modules(pair).items():
        if module in forced_pass.own and reference_layer in reference_taps and reference_layer in agreeing:
            port = _port_in_reference_layout(forced_pass.own[module])
            reference = reference_taps[reference_layer].numpy()
            if port.shape == reference.shape:
                flips += int(np.count_nonzero((port > 0) != (reference > 0)))
    return flips


def isolated_forward(pair: AuditPair) -> tuple[CheckResult, ForcedPass]:
    reference_outputs, reference_taps, _ = inference_at_audit_weights(pair)
    pair.sync()
    forced_pass = forced_forward(pair, pair.batches[0], False, pair.inference_draws, reference_taps)
    result = CheckResult(pair.problem, "isolated/forward", pair.dtype,
                         compare_forced(pair, reference_taps, forced_pass, "forward"), diagnostic=True)
    for module, why in forced_pass.unforced.items():
        result.notes.append(f"{modules_to_layer(pair, module)}: not teacher-forced ({why})")
    return result, forced_pass


# --- loss terms ----------------------------------------------------------------------------------

GROUP, TENSOR = "regularizer, group ", "regularizer, tensor "  # item prefixes of the isolated loss rows
TENSOR_GROUPS = (("kernels", ("kernel", "softmax_w")), ("biases", ("bias", "softmax_b")),
                 ("BN parameters", ("gamma", "beta")))


def tensor_group(reference_name: str) -> str:
    last = reference_name.rsplit("/", 1)[-1]
    return next((group for group, endings in TENSOR_GROUPS if last in endings), "other tensors")


def _port_regularizer(pair: AuditPair, outputs, targets, keep: set[str]) -> float:
    """The port's regularizer with every trainable tensor outside `keep` (reference names) zeroed."""
    tensors = port_tensors(pair.model)
    with torch.no_grad():
        for name, row in pair.trainable_rows():
            if name not in keep:
                tensors[row.port].zero_()
        _, l2 = pair.port.loss_terms(pair.problem, pair.model, outputs, targets)
    pair.sync()
    return _scalar(l2.detach() if isinstance(l2, torch.Tensor) else l2)


def reference_regularizer_terms(pair: AuditPair) -> dict[str, float]:
    """Each regularized variable's term wd/2 * ||W||^2 at the audit weights (0 for the others)."""
    coefficients = pair.reference.graph.l2_coefficients
    return {name: float(coefficients.get(name, 0.0) * 0.5 * np.sum(np.square(pair.audit_values[name],
                                                                             dtype=np.float64)))
            for name in pair.reference.graph.trainable_variables}


def isolated_loss(pair: AuditPair) -> CheckResult:
    """The port's data loss on the reference's own outputs, and its regularizer per tensor group (each
    group alone, the others zeroed); per tensor in a group that differs."""
    reference_outputs, _, _ = inference_at_audit_weights(pair)
    batch = pair.batches[0]
    result = CheckResult(pair.problem, "isolated/loss", pair.dtype, diagnostic=True)
    pair.sync()
    named = reference_outputs if isinstance(reference_outputs, tuple) else (reference_outputs,)
    outputs = tuple(to_port_tap(value, pair.torch_dtype) for value in named)
    outputs = outputs if isinstance(reference_outputs, tuple) else outputs[0]
    targets = batch.port_targets(pair.torch_dtype)
    limit = tolerance("loss", pair.dtype)
    reference_data, _ = pair.reference.loss_terms(reference_outputs, reference_targets(batch))
    with torch.no_grad():
        port_data, _ = pair.port.loss_terms(pair.problem, pair.model, outputs, targets)
    result.comparisons.append(compare("data_loss (on the reference's outputs)", _scalar(port_data),
                                      _scalar(reference_data), limit))
    terms = reference_regularizer_terms(pair)
    groups: dict[str, list[str]] = {}
    for name in terms:
        groups.setdefault(tensor_group(name), []).append(name)
    for group, names in groups.items():
        port = _port_regularizer(pair, outputs, targets, set(names))
        comparison = compare(f"{GROUP}{group}", port, sum(terms[n] for n in names), limit)
        result.comparisons.append(comparison)
        if not comparison.passed:
            result.comparisons += [compare(f"{TENSOR}{name}", _port_regularizer(pair, outputs, targets, {name}),
                                           terms[name], limit) for name in names]
    return result


def isolate(pair: AuditPair) -> tuple[list[CheckResult], dict]:
    """The isolated checks, and what the hints read (the forced passes)."""
    forward, forced_inference = isolated_forward(pair)
    train, gradients, evidence = isolated_backward(pair)
    loss = isolated_loss(pair)
    evidence["forced_inference"] = forced_inference
    return [forward, train, gradients, loss], evidence
