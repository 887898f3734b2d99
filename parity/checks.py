"""The parity checks. Each is a function of an AuditPair returning a CheckResult.

Every check starts from the same audit weights in both frameworks (`pair.sync()`), so
checks are independent and each optimizer step starts from a re-synchronised state.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from parity.dropout import Injection, NoiseMismatch, NoiseRecorder, injected_noise, unshareable_draws
from parity.frameworks import NUMPY_DTYPES, TORCH_DTYPES, assign, load_tensorflow
from parity.maps import THEN_FUNCTIONS, ParamRow, ProblemMap
from parity.port import Port
from parity.porting import (WeightMapError, assemble, iter_port_values, load_port_values, port_tensors,
                            to_port_layout, to_port_values, to_reference_layout)
from parity.results import CheckResult, Comparison, compare
from parity.roundoff import (MAX_FLIP_FRACTION, EnvelopeJudge, cut_elements, cut_port_gradients,
                             cut_reference_gradients, describe_cuts, flip_masks, plan_cuts, sign_masks, tapped_elements)
from parity.tolerances import tolerance
from parity.transforms import TRANSFORMS

tf = load_tensorflow()

LEARNING_RATES = {"sgd": 0.1, "momentum": 0.1, "adam": 1e-3}
# Per (family name, optimizer): the VAE's loss sums 784 squared errors per image, so its gradients are
# hundreds of times a mean cross-entropy's; at SGD lr 0.1 its exp(std_dev) overflows by the third step.
# (Adam's step does not scale with the gradient.)
LEARNING_RATE_SCALE = {("vae", "sgd"): 1e-3, ("vae", "momentum"): 1e-3}


def learning_rate(pair, kind: str) -> float:
    return LEARNING_RATES[kind] * LEARNING_RATE_SCALE.get((pair.reference.family.name, kind), 1.0)

PROPAGATION_BLOCK = 1 << 22  # elements per block in propagated_gradient_error
OPTIMIZER_STEPS = 3
CARRIED_STATE_BATCHES = 3  # consecutive batches, state carried: a slip in carrying it shows from the second


def _to_port(array: np.ndarray, kind: str, dtype: torch.dtype) -> torch.Tensor:
    if kind == "ids":
        return torch.from_numpy(np.ascontiguousarray(array)).long()
    layout = array.transpose(0, 3, 1, 2) if array.ndim == 4 else array  # images: NHWC -> NCHW
    # NCHW with standard strides, as a DataLoader yields it: a transposed NHWC array with C = 1 counts
    # as contiguous for numpy and torch alike (size-1 dimensions are ignored) but keeps channels-last
    # strides, which convolutions propagate; a port calling `.view` after a conv would crash on MNIST.
    return torch.from_numpy(layout).to(dtype).clone(memory_format=torch.contiguous_format)


@dataclass
class Batch:
    """One audit batch in the reference's layouts, as the problem family declares it.

    `inputs` follow the family's InputSpecs (kinds "image"/"pixels" NHWC, "vector", "ids");
    `targets` are labels or character ids, the input images themselves (VAE), or None.
    """

    inputs: tuple[np.ndarray, ...]
    input_kinds: tuple[str, ...]
    targets: np.ndarray | None
    target_kind: str  # "labels", "ids", "inputs" (= inputs[0]) or "none"

    def port_inputs(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        return tuple(_to_port(x, kind, dtype) for x, kind in zip(self.inputs, self.input_kinds))

    def port_targets(self, dtype: torch.dtype) -> torch.Tensor | None:
        if self.target_kind == "none":
            return None
        if self.target_kind == "inputs":
            return self.port_inputs(dtype)[0]
        return torch.from_numpy(self.targets).long()


@dataclass
class AuditPair:
    """The port's model and the reference problem, sharing one set of audit weights."""

    problem: str
    dtype: str
    port: Port
    model: nn.Module
    reference: object  # tf_reference.ReferenceProblem
    problem_map: ProblemMap
    audit_values: dict[str, np.ndarray]  # reference name -> value (reference layout)
    batches: list[Batch]
    seed: int
    gradient_cache: dict = field(default_factory=dict)  # batch index -> GradientPair at the audit weights
    audit_port_values: dict = field(default_factory=dict)  # the audit weights in port layouts (filled once)
    inference_cache: list = field(default_factory=list)  # see inference_at_audit_weights
    inference_draws: list = field(default_factory=list)  # the reference's noise draws in that pass (VAE)
    # Large models: every optimizer step takes batch 0's gradients at the audit weights (see check_optimizer).
    fixed_step_gradients: bool = False
    port_layout_gradients: dict = field(default_factory=dict)  # batch 0's gradients converted once (see _set_port_grads)
    exact: object = None  # ExactTwin: built when a float32 comparison needs the exact result (parity.roundoff)
    exact_cache: dict = field(default_factory=dict)  # what the exact twin computed, by purpose
    # Port parameter -> (storage, version counter) when sync() last loaded the audit weights (see sync).
    audit_parameter_versions: dict = field(default_factory=dict)

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.reference.family.outputs

    def sync(self, values: dict[str, np.ndarray] | None = None, port_values: dict | None = None) -> None:
        """Put `values` (default: the audit weights) into both frameworks, and zero any carried state.

        `port_values`, if given, are `values` already in port layouts (see to_port_values). Syncing the
        audit weights skips the port parameters still holding them since the last such sync (same storage,
        same version counter: no in-place write since; a write through `.data` bypasses the counter, so
        code stepping the port's own optimizer outside a sync calls parameters_changed()). Buffers are
        always loaded: BN kernels update their running statistics without a version bump.
        """
        if values is None:
            unchanged = self.unchanged_parameters()
            values = self.audit_values
            if self.fixed_step_gradients:  # a large model: converted tensor by tensor, not kept
                port_values = iter_port_values(values, self.model, self.problem_map, skip=unchanged)
            else:
                if not self.audit_port_values:
                    self.audit_port_values = to_port_values(values, self.model, self.problem_map)
                port_values = {name: value for name, value in self.audit_port_values.items() if name not in unchanged}
        elif port_values is None:
            port_values = to_port_values(values, self.model, self.problem_map)
        for name, variable in self.reference.graph.variables.items():
            assign(variable, values[name])
        load_port_values(self.model, port_values)
        self.audit_parameter_versions = (_parameter_versions(self.model) if values is self.audit_values else {})
        self.reference.reset_state()
        self.port.reset_state(self.model)

    def unchanged_parameters(self) -> set[str]:
        """Port parameters that hold the audit weights the last sync() loaded (see sync)."""
        recorded = self.audit_parameter_versions
        return {name for name, key in _parameter_versions(self.model).items() if recorded.get(name) == key}

    def parameters_changed(self) -> None:
        """The port's parameters may have been written without a version bump: the next sync loads them all."""
        self.audit_parameter_versions = {}

    def exact_batch(self, index: int) -> Batch:
        """Batch `index` with its floating inputs cast to float64 (the exact twin's input)."""
        batch = self.batches[index]
        return dataclasses.replace(batch, inputs=tuple(x.astype(np.float64) if x.dtype.kind == "f" else x
                                                       for x in batch.inputs))

    def reference_values(self) -> dict[str, np.ndarray]:
        return {name: np.array(v.numpy(), copy=True) for name, v in self.reference.graph.variables.items()}

    def trainable_rows(self):
        """(reference name, row) for every port tensor of every trainable variable (two rows for a split one)."""
        rows = self.problem_map.rows_for_reference()
        return [(name, row) for name in self.reference.graph.trainable_variables for row in rows[name]]

    def rows_by_reference(self):
        rows = self.problem_map.rows_for_reference()
        return {name: rows[name] for name in self.reference.graph.trainable_variables}


def _parameter_versions(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: (p.data_ptr(), p._version) for name, p in model.named_parameters()}


EMBEDDING_STD = 2.0


def audit_values(variables: dict, seed: int, dtype: str) -> dict[str, np.ndarray]:
    """Random values for every reference variable, so no check sees an all-zero or all-one tensor.

    Kernels get a He-scaled normal (activations keep their scale through deep nets), BN
    statistics a spread that makes the epsilon and the momentum visible. Drawn in float64 and cast,
    so both dtypes audit the same values; the draws are kept for the next call (a worker auditing a
    large model in both dtypes draws once). The arrays are shared: never written in place.
    """
    shapes = tuple((name, tuple(int(d) for d in variable.shape)) for name, variable in variables.items())
    return {name: value.astype(NUMPY_DTYPES[dtype], copy=False) for name, value in _audit_draws(shapes, seed).items()}


def forget_audit_draws() -> None:
    _audit_draws.cache_clear()


def variable_kind(name: str) -> str:
    """A reference variable's kind: the last part of its name (kernel, bias, gamma, beta, moving_mean, ...)."""
    return name.rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=1)
def _audit_draws(shapes: tuple, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in shapes:
        kind = variable_kind(name)
        if kind == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif kind == "embedding":  # LSTM gates then reach saturation (sigmoid/tanh near 0 and 1)
            value = rng.normal(0.0, EMBEDDING_STD, shape)
        elif kind in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, beta, moving_mean
            value = rng.normal(0.0, 0.1, shape)
        value.flags.writeable = False
        values[name] = value
    return values


# --- running one side ----------------------------------------------------------

@contextlib.contextmanager
def captured_outputs(model: nn.Module, module_names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    modules = dict(model.named_modules())
    if missing := [name for name in module_names if name not in modules]:
        raise WeightMapError(f"activation map names port modules that do not exist: {', '.join(missing)}")
    outputs: dict[str, torch.Tensor] = {}

    def keep(name, output):
        # Recurrent modules return (sequence, state): the tap is the sequence. Cloned, so the tap holds what
        # the module returned even when later code rewrites it in place (F.relu(x, inplace=True), x += shortcut).
        outputs[name] = (output[0] if isinstance(output, tuple) else output).detach().clone()

    handles = [modules[name].register_forward_hook(lambda module, args, output, name=name: keep(name, output))
               for name in module_names]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class PortPass:
    """One forward pass of the port: its outputs (None if it raised), each tapped module's output, and
    what went wrong (a crash or a noise draw it did not make): the taps up to there still compare."""

    outputs: object
    taps: dict[str, torch.Tensor]
    error: str = ""
    injection: Injection | None = None  # which spelling consumed each shared draw
    unshareable: dict = field(default_factory=dict)  # port module -> why its draws cannot be shared (train mode)

    def named_outputs(self, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        if self.outputs is None:
            return {}
        outputs = self.outputs if isinstance(self.outputs, tuple) else (self.outputs,)
        return dict(zip(names, outputs))


def port_forward(pair: AuditPair, batch: Batch, training: bool, draws, tapped: bool = True) -> PortPass:
    """With `tapped`, every mapped module hooked and torch's samplers replaced by the reference's draws (none
    left over, none extra); without, no module hooked and the samplers replaced only where the reference drew
    (the VAE's epsilon): the port's fast paths step aside for hooks and injections, so only then do they run."""
    pair.model.train(training)
    tap_modules = sorted(set(pair.problem_map.port_module_for_tap().values())) if tapped else []
    noise = injected_noise(draws) if tapped or draws else contextlib.nullcontext()
    outputs, error = None, ""
    with captured_outputs(pair.model, tap_modules) as taps, noise as injection:
        try:
            outputs = pair.model(*batch.port_inputs(pair.torch_dtype))
        except (RuntimeError, NoiseMismatch, ValueError) as failure:  # compared up to where it broke
            error = f"the port's {'' if tapped else 'untapped '}forward raised {type(failure).__name__}: {failure}"
    if not error and injection and injection.unused:
        error = ("the port skipped random draws the reference made: "
                 + ", ".join(f"{draw.kind} at {draw.name}" for draw in injection.unused))
    return PortPass(outputs, taps, error, injection, unshareable_draws(pair.model) if training else {})


def reference_forward(pair: AuditPair, batch: Batch, training: bool):
    """(outputs, taps, draws): the reference's noise source is seeded alike for every pass, in every phase."""
    noise = NoiseRecorder(pair.seed + 1)
    outputs, taps = pair.reference.forward(batch.inputs, training, noise)
    return outputs, taps, noise.draws


def reference_targets(batch: Batch):
    return batch.inputs[0] if batch.target_kind == "inputs" else batch.targets


def tap_value(problem_map: ProblemMap, name: str, module_outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The port's value for reference tap `name`: its module's output, through the row's `then` function."""
    value = module_outputs[problem_map.port_module_for_tap()[name]]
    then = problem_map.then_for_tap().get(name)
    return THEN_FUNCTIONS[then](value) if then else value


def _port_in_reference_layout(value: torch.Tensor) -> np.ndarray:
    array = value.detach().cpu().numpy()
    return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


def port_tap_value(pair: AuditPair, name: str, port_pass: PortPass) -> np.ndarray | None:
    """The port's value for a reference tap (a layer or an output) in reference layout, or None."""
    port_outputs = port_pass.named_outputs(pair.output_names)
    modules = pair.problem_map.port_module_for_tap()
    if name in port_outputs:
        return _port_in_reference_layout(port_outputs[name])
    if name in modules and modules[name] in port_pass.taps:
        return _port_in_reference_layout(tap_value(pair.problem_map, name, port_pass.taps))
    return None


def compare_taps(pair: AuditPair, reference_taps: dict, port_pass: PortPass, kind: str,
                 prefix: str = "") -> list[Comparison]:
    """Every reference layer (and output) against the port's, in forward order; a port pass that broke
    fails from the first layer it did not reach, with its error."""
    limit = tolerance(kind, pair.dtype)
    comparisons = []
    uncompared = set(pair.problem_map.uncompared)
    modules = pair.problem_map.port_module_for_tap()
    for name, reference_value in reference_taps.items():
        role = "output" if name in pair.output_names else "tap"
        if name in uncompared:
            continue
        port_value = port_tap_value(pair, name, port_pass)
        if port_value is None:
            why = port_pass.error or "no port output for this layer (activation map or module not run)"
            comparisons.append(Comparison(f"{prefix}{name}", float("nan"), float("nan"), limit, False, why, role))
            continue
        reference_array = reference_value.numpy()
        comparison = dataclasses.replace(compare(f"{prefix}{name}", port_value, reference_array, limit),
                                         kind=role, exercised=describe_range(reference_array))
        if not comparison.passed and (why := _why_draws_differ(port_pass, name, modules.get(name, ""))):
            comparison = dataclasses.replace(comparison, note="; ".join(filter(None, (comparison.note, why))))
        comparisons.append(comparison)
    if port_pass.error and all(c.passed for c in comparisons):
        comparisons.append(Comparison(f"{prefix}port forward", float("nan"), float("nan"), limit, False,
                                      port_pass.error))
    return comparisons


def _why_draws_differ(port_pass: PortPass, tap: str, port_module: str) -> str:
    """What the noise injection knows about a diverging tap: a mask thresholded from a raw uniform draw, or a
    module whose draws no shared draw can reach ('' if neither)."""
    if port_pass.injection and (note := port_pass.injection.site_note(tap)):
        return note
    return next((reason for module, reason in port_pass.unshareable.items()
                 if port_module == module or port_module.startswith(module + ".")), "")


def describe_range(values: np.ndarray) -> str:
    """The range of values a tap exercised: min, max and the share of exact zeros."""
    if not values.size or not np.issubdtype(values.dtype, np.number):
        return ""
    zeros = np.count_nonzero(values == 0) / values.size
    return f"[{float(np.min(values)):.3g}, {float(np.max(values)):.3g}], {100 * zeros:.0f}% exact zeros"


# --- checks --------------------------------------------------------------------

def inference_at_audit_weights(pair: AuditPair):
    """(reference outputs, reference taps, port pass) in inference mode on batch 0.

    Noise drawn in inference mode too (the VAE's epsilon) is shared like the dropout draws."""
    if not pair.inference_cache:
        pair.sync()
        batch = pair.batches[0]
        reference_outputs, reference_taps, draws = reference_forward(pair, batch, training=False)
        with torch.no_grad():
            port_pass = port_forward(pair, batch, training=False, draws=draws)
        pair.inference_cache.extend([reference_outputs, reference_taps, port_pass])
        pair.inference_draws.extend(draws)
    return pair.inference_cache


def untapped_inference(pair: AuditPair) -> PortPass:
    """The port's inference outputs on batch 0 with no module hooked: the path the runner runs. The port's
    fused, mirrored and blocked kernels step aside for the taps' hooks, so the tapped pass never reaches them;
    this one does, from the audit weights and a zero carried state (the char RNN's), as the tapped pass."""
    inference_at_audit_weights(pair)
    pair.sync()
    with torch.no_grad():
        return port_forward(pair, pair.batches[0], training=False, draws=pair.inference_draws, tapped=False)


UNTAPPED_PREFIX = "untapped "  # the model's outputs again, from a pass with no hooks (untapped_inference)


def check_forward(pair: AuditPair) -> CheckResult:
    """Inference mode: every layer's output, in the reference's NHWC layout, then the model's outputs."""
    _, reference_taps, port_pass = inference_at_audit_weights(pair)
    result = CheckResult(pair.problem, "forward", pair.dtype, compare_taps(pair, reference_taps, port_pass, "forward"))
    reference_outputs = {name: value for name, value in reference_taps.items() if name in pair.output_names}
    result.comparisons += compare_taps(pair, reference_outputs, untapped_inference(pair), "forward",
                                       prefix=UNTAPPED_PREFIX)
    if not pair.problem_map.taps:
        result.notes.append("no layers to tap: the model's outputs are compared")
    if pair.problem_map.inferred:
        result.notes.append("weight and activation map inferred (parity.automap; `python -m parity suggest-map` "
                            "prints it), not written by hand")
    if pair.problem_map.uncompared:
        result.notes.append(f"not compared (no port module computes them alone): "
                            f"{', '.join(pair.problem_map.uncompared)}")
    result.comparisons.append(trainable_parameter_count(pair))
    return result


def trainable_parameter_count(pair: AuditPair) -> Comparison:
    """The port's trainable parameters (requires_grad) against the reference's trainable variables, exactly."""
    port_count = sum(p.numel() for p in pair.model.parameters() if p.requires_grad)
    reference_count = sum(int(np.prod(v.shape)) for v in pair.reference.graph.trainable_variables.values())
    return Comparison("trainable parameters", float(abs(port_count - reference_count)),
                      abs(port_count - reference_count) / reference_count, 0.0, port_count == reference_count,
                      f"port {port_count:,}, reference {reference_count:,}")


def check_train_mode(pair: AuditPair) -> CheckResult:
    """Train mode: BN on batch statistics, dropout on shared draws; then the BN running statistics,
    then the train phase's loss (it may differ from the inference loss: Inception's aux head).

    The train-mode pass is the one behind the gradients of batch 0 (the same forward). In float32, a
    value above its tolerance is judged against the exact (float64) reference (parity.roundoff).
    """
    gradients = gradients_at_audit_weights(pair, 0)
    comparisons = _train_mode_tap_comparisons(pair, gradients)
    limit = tolerance("train_mode", pair.dtype)
    statistics = [compare(name, gradients.port_statistics[name], value, limit)
                  for name, value in gradients.reference_statistics.items()]
    losses = [compare(f"train {name}", gradients.port_loss[name], value, tolerance("loss", pair.dtype))
              for name, value in gradients.reference_loss.items()]
    if pair.dtype == "float32" and not all(c.passed for c in statistics + losses):
        exact = exact_train_mode(pair)
        judge = EnvelopeJudge(exact["statistics"] | {f"train {name}": value for name, value in exact["loss"].items()})
        statistics = [judge.rejudge(c, gradients.port_statistics[c.item], gradients.reference_statistics[c.item])
                      for c in statistics]
        losses = [judge.rejudge(c, gradients.port_loss[c.item[6:]], gradients.reference_loss[c.item[6:]])
                  for c in losses]
    return CheckResult(pair.problem, "train_mode", pair.dtype, comparisons + statistics + losses)


def _train_mode_tap_comparisons(pair: AuditPair, gradients) -> list[Comparison]:
    comparisons = compare_taps(pair, gradients.reference_taps, gradients.port_pass, "train_mode")
    if pair.dtype != "float32" or all(c.passed for c in comparisons):
        return comparisons
    judge = EnvelopeJudge(exact_train_mode(pair)["taps"])
    rejudged = []
    for comparison in comparisons:
        port_value = port_tap_value(pair, comparison.item, gradients.port_pass)
        reference_value = gradients.reference_taps.get(comparison.item)
        rejudged.append(comparison if port_value is None or reference_value is None else
                        judge.rejudge(comparison, port_value, reference_value.numpy()))
    return rejudged


def exact_train_mode(pair: AuditPair) -> dict:
    """The exact twin's train-mode pass on batch 0: taps, BN moving statistics after it, loss terms."""
    if "train_mode" not in pair.exact_cache:
        twin = exact_twin(pair)
        _, _, taps, loss = reference_gradients(twin, pair.exact_batch(0))
        statistics = {row.reference: np.array(twin.reference.graph.variables[row.reference].numpy())
                      for row in _statistic_rows(pair)}
        pair.exact_cache["train_mode"] = {"taps": {name: value.numpy() for name, value in taps.items()},
                                          "statistics": statistics, "loss": loss}
    return pair.exact_cache["train_mode"]


def _statistic_rows(pair: AuditPair):
    return [row for row in pair.problem_map.params if row.transform == "bn_statistic"]


def check_loss(pair: AuditPair) -> CheckResult:
    """Mean of the per-example losses, the L2 regularizer, their sum, and the accuracy where the original
    defines one, in inference mode."""
    reference_outputs, _, port_pass = inference_at_audit_weights(pair)
    result = CheckResult(pair.problem, "loss", pair.dtype)
    if port_pass.outputs is None:
        result.error = port_pass.error
        return result
    batch = pair.batches[0]
    pair.sync()
    targets = reference_targets(batch)
    reference_data, reference_l2 = pair.reference.loss_terms(reference_outputs, targets)
    port_targets = batch.port_targets(pair.torch_dtype)
    with torch.no_grad():
        port_data, port_l2 = pair.port.loss_terms(pair.problem, pair.model, port_pass.outputs, port_targets)
    limit = tolerance("loss", pair.dtype)
    pairs = [("data_loss", port_data, reference_data), ("regularizer", port_l2, reference_l2),
             ("total_loss", port_data + port_l2, reference_data + reference_l2)]
    result.comparisons = [compare(name, _scalar(port), _scalar(reference), limit) for name, port, reference in pairs]
    if pair.reference.accuracy(reference_outputs, targets) is None:
        result.notes.append("accuracy: not compared, the original defines none for this problem")
        return result
    # Accuracy on labels chosen from the reference's logits, so that it is never degenerate where that
    # matters: half the predictions right (a count, or an accuracy over other positions, differs from
    # 1/2), then none right (an error rate, 1 - accuracy, differs from 0).
    for item, share in (("accuracy", 0.5), ("accuracy (no prediction right)", 0.0)):
        labels = labels_with_accuracy(reference_outputs, targets, share) if batch.target_kind in ("labels", "ids") \
            else targets
        reference_accuracy = pair.reference.accuracy(reference_outputs, labels)
        with torch.no_grad():
            port_accuracy = pair.port.accuracy(pair.problem, port_pass.outputs, torch.from_numpy(labels).long())
        if port_accuracy is None:
            result.comparisons.append(Comparison(item, float("nan"), float("nan"), limit, False,
                                                 "the port reports no accuracy; the original defines one"))
            break
        result.comparisons.append(compare(item, _scalar(port_accuracy), _scalar(reference_accuracy), limit,
                                          note=f"labels on which the reference's accuracy is "
                                               f"{_scalar(reference_accuracy):g}"))
    return result


def labels_with_accuracy(outputs, targets: np.ndarray, share: float) -> np.ndarray:
    """Labels on which the reference's accuracy is `share` (rounded down to whole positions): its own
    prediction at the positions where it is clearest (the largest gap between its top two logits), its
    least likely class elsewhere, so that round-off moves neither."""
    logits = np.asarray((outputs[0] if isinstance(outputs, tuple) else outputs).numpy(), np.float64)
    logits = logits.reshape(-1, logits.shape[-1])
    top_two = np.sort(logits, axis=-1)[:, -2:]
    clearest = np.argsort(top_two[:, 0] - top_two[:, 1], kind="stable")[: int(share * len(logits))]
    chosen = logits.argmin(axis=-1)
    chosen[clearest] = logits.argmax(axis=-1)[clearest]
    return chosen.reshape(np.shape(targets)).astype(np.int64)


def _scalar(value) -> float:
    return float(value.numpy()) if hasattr(value, "numpy") and not isinstance(value, torch.Tensor) else float(value)


def reference_gradients(pair: AuditPair, batch: Batch, cuts: dict | None = None):
    """(gradients by variable name, draws, taps, train-mode loss terms) of the objective in train mode.

    `cuts` (tap name -> mask) stop the gradient at those elements (see parity.roundoff)."""
    variables = pair.reference.graph.trainable_variables
    with tf.GradientTape() as tape, cut_reference_gradients(pair.reference.graph, cuts or {}):
        outputs, taps, draws = reference_forward(pair, batch, training=True)
        data_loss, l2 = pair.reference.loss_terms(outputs, reference_targets(batch))
        total = data_loss + l2
    gradients = tape.gradient(total, list(variables.values()))
    # An embedding's gradient comes as IndexedSlices (rows of the looked-up ids): made dense here.
    gradients = [g if g is None else tf.convert_to_tensor(g) for g in gradients]
    return ({name: (g.numpy() if g is not None else np.zeros(v.shape, v.dtype.as_numpy_dtype))
             for (name, v), g in zip(variables.items(), gradients)}, draws, taps, _loss_values(data_loss, l2))


def _loss_values(data_loss, l2) -> dict[str, float]:
    """The train-mode objective's terms: the train phase's own loss (an aux head's term only there)."""
    return {"data_loss": _scalar(data_loss), "total_loss": _scalar(data_loss) + _scalar(l2)}


class PortBackwardError(Exception):
    """The port's forward or backward pass failed (the message says where)."""


def port_gradients(pair: AuditPair, batch: Batch, draws, cuts: dict | None = None, keep_grads: bool = True):
    """(gradients of the port's objective in reference layouts by reference name, its pass, its loss terms).

    `cuts` (reference tap name -> mask) stop the gradient at those elements of the tapped modules."""
    pair.model.zero_grad(set_to_none=True)
    modules = pair.problem_map.port_module_for_tap()
    module_cuts = {modules[name]: mask for name, mask in (cuts or {}).items() if name in modules}
    with cut_port_gradients(pair.model, module_cuts):
        port_pass = port_forward(pair, batch, training=True, draws=draws)
    if port_pass.outputs is None:
        return None, port_pass, {"data_loss": float("nan"), "total_loss": float("nan")}
    data_loss, l2 = pair.port.loss_terms(pair.problem, pair.model, port_pass.outputs,
                                         batch.port_targets(pair.torch_dtype))
    try:
        (data_loss + l2).backward()
    except RuntimeError as error:
        raise PortBackwardError(f"the port's backward pass raised: {error}") from None
    tensors = port_tensors(pair.model)
    gradients = {}
    for name, rows in pair.rows_by_reference().items():
        grads = {row.port: tensors[row.port].grad for row in rows}
        gradients[name] = (None if any(g is None for g in grads.values())
                           else assemble(rows, {port: g.numpy() for port, g in grads.items()}))
        if not keep_grads:  # each gradient lives on in reference layout only (a large model's peak memory)
            for row in rows:
                tensors[row.port].grad = None
    return gradients, port_pass, _loss_values(data_loss.detach(), l2.detach() if isinstance(l2, torch.Tensor) else l2)


@dataclass
class GradientPair:
    """Both frameworks' gradients on one batch at the audit weights (shared by several checks)."""

    reference: dict[str, np.ndarray]
    draws: list
    reference_taps: dict
    port: dict[str, np.ndarray | None]  # reference layouts, by reference name
    port_pass: PortPass
    reference_statistics: dict[str, np.ndarray]  # BN moving statistics after the train-mode pass
    port_statistics: dict[str, np.ndarray]  # the port's running statistics then, reference layouts
    reference_loss: dict[str, float]  # the train-mode objective's terms (the train phase's own loss)
    port_loss: dict[str, float]
    reference_pools: dict = field(default_factory=dict)  # max-pool tap -> its input and geometry (roundoff)


def gradients_at_audit_weights(pair: AuditPair, batch_index: int) -> GradientPair:
    if batch_index not in pair.gradient_cache:
        batch = pair.batches[batch_index]
        pair.sync()
        reference_grads, draws, reference_taps, reference_loss = reference_gradients(pair, batch)
        reference_pools = dict(pair.reference.graph.pool_inputs)
        reference_statistics = {row.reference: np.array(pair.reference.graph.variables[row.reference].numpy())
                                for row in _statistic_rows(pair)}
        pair.sync()
        port_grads, port_pass, port_loss = port_gradients(pair, batch, draws, keep_grads=False)
        if port_grads is None:  # the forward broke: the train-mode taps still say where
            port_grads = {name: None for name in pair.rows_by_reference()}
        tensors = port_tensors(pair.model)
        port_statistics = {row.reference: to_reference_layout(row, tensors[row.port].detach().numpy())
                           for row in _statistic_rows(pair)}
        pair.model.zero_grad(set_to_none=True)  # the port's gradients live on in reference layouts only
        pair.gradient_cache[batch_index] = GradientPair(reference_grads, draws, reference_taps, port_grads,
                                                        port_pass, reference_statistics, port_statistics,
                                                        reference_loss, port_loss, reference_pools)
    return pair.gradient_cache[batch_index]


def check_gradients(pair: AuditPair) -> CheckResult:
    """Gradient of the objective for every parameter at the audit weights (`gradients_at_audit_weights`), then,
    in float64, at exact ties (`tie_gradient_comparisons`)."""
    # The tie rows first: their gradients are dropped before batch 0's, which later checks reuse, are cached.
    ties = tie_gradient_comparisons(pair) if pair.dtype == "float64" else []
    result = _gradients_at_audit_weights_result(pair)
    if pair.dtype == "float64":
        result.comparisons += ties
        result.notes.append(TIES_NOTE)
    else:
        result.notes.append("gradients at exact ties (zero biases, blank inputs) are compared in the float64 audit: "
                            "which side of a kink a tie takes does not depend on the dtype")
    return result


# --- gradients at exact ties -----------------------------------------------------------------------------

TIE_PREFIX = "ties: "
TIES_NOTE = ("ties: every bias and BN beta 0 (as initialised), example 0 all zeros and the top half of every "
             "image blank, so pre-activations sit exactly on the kinks (ReLU at 0, max(x, 0.3x) at 0, max-pool "
             "ties), as they do at initialisation on images with blank regions")


TIE_ZEROED = ("bias", "beta")  # variable kinds set to exactly 0 for the tie rows


def sync_tie_values(pair: AuditPair) -> None:
    """The audit weights (and reset state) in both frameworks, then every bias and BN beta exactly 0, as the
    original initialises them. Only the zeroed variables are written a second time; a zeroed port tensor's
    version counter moves, so the next pair.sync() loads its audit value again."""
    pair.sync()
    zeros = {name: np.zeros(variable.shape, NUMPY_DTYPES[pair.dtype])
             for name, variable in pair.reference.graph.variables.items() if variable_kind(name) in TIE_ZEROED}
    for name, value in zeros.items():
        assign(pair.reference.graph.variables[name], value)
    zeroed_ports = {row.port for row in pair.problem_map.params if row.reference in zeros}
    others = {row.port for row in pair.problem_map.params} - zeroed_ports
    load_port_values(pair.model, iter_port_values(zeros, pair.model, pair.problem_map, skip=others))


def tie_batch(batch: Batch) -> Batch:
    """`batch` with example 0 all zeros and the top half of every image (NHWC) zero: with zero biases, every
    layer's pre-activation over a blank region is exactly 0 in both frameworks."""
    inputs = []
    for values, kind in zip(batch.inputs, batch.input_kinds):
        if kind != "ids":
            values = values.copy()
            values[0] = 0
            if values.ndim == 4:
                values[:, : values.shape[1] // 2] = 0
        inputs.append(values)
    return dataclasses.replace(batch, inputs=tuple(inputs))


def tie_gradient_comparisons(pair: AuditPair) -> list[Comparison]:
    """Both frameworks' gradients with zero biases (sync_tie_values) on tie_batch(batch 0), in backward order,
    named TIE_PREFIX + the variable. The convention a framework's gradient takes at a kink is invisible at the
    audit weights (random biases: no pre-activation is ever exactly 0) but decides the first steps of a real run."""
    batch = tie_batch(pair.batches[0])
    sync_tie_values(pair)
    reference_grads, draws, _, _ = reference_gradients(pair, batch)
    sync_tie_values(pair)
    port_grads, _, _ = port_gradients(pair, batch, draws, keep_grads=False)
    pair.model.zero_grad(set_to_none=True)
    pair.sync()
    return _compare_named(_backward_order(reference_grads), port_grads or {}, tolerance("gradients", pair.dtype),
                          TIE_PREFIX)


def _gradients_at_audit_weights_result(pair: AuditPair) -> CheckResult:
    """Gradient of the objective (mean loss + regularizer, train mode) for every parameter, on batch 0, in
    backward order (the reverse of the reference's creation order): a difference propagates towards the
    input, so the first failing row is the diverging parameter closest to the loss.

    If some differ, and the two train-mode passes put a few activations (at most MAX_FLIP_FRACTION
    of the tapped elements) on opposite sides of 0 while the layers themselves agree (the forward check
    and batch 0's train-mode layers pass), those are round-off at ReLU kinks: both backward passes are
    run again with the gradient cut at exactly those elements (and where round-off may decide the side:
    within NEAR_ZERO_FACTOR x the tap's difference of 0, max-pool near-ties; at most MAX_CUT_FRACTION of the
    tapped elements in all), and that is compared (parity.roundoff). In float32, a gradient still above its tolerance is judged against the exact (float64) reference's
    gradient (the round-off envelope).
    """
    gradients = gradients_at_audit_weights(pair, 0)
    limit = tolerance("gradients", pair.dtype)
    reference_grads, port_grads = _backward_order(gradients.reference), gradients.port
    result = CheckResult(pair.problem, "gradients", pair.dtype, _compare_named(reference_grads, port_grads, limit, ""))
    if result.passed:
        return result

    def port_value(name):
        return port_tap_value(pair, name, gradients.port_pass)

    signs = sign_masks(gradients.reference_taps, port_value)
    masks = flip_masks(signs)
    flipped = cut_elements(masks)
    if not masks:
        return result
    if flipped > MAX_FLIP_FRACTION * tapped_elements(gradients.reference_taps):
        result.notes.append(f"batch 0: {flipped} activations on opposite sides of 0, more than round-off explains "
                            f"({MAX_FLIP_FRACTION:g} of the tapped elements): gradients compared as they are")
        return result
    _, inference_taps, inference_pass = inference_at_audit_weights(pair)
    forward_agrees = all(c.passed for c in compare_taps(pair, inference_taps, inference_pass, "forward"))
    if not (forward_agrees and train_mode_taps_agree(pair)):
        result.notes.append(f"batch 0: {flipped} activation(s) on opposite sides of 0, not attributed to round-off: "
                            "the layers themselves differ (see forward, train_mode)")
        return result
    plan = plan_cuts(signs, gradients.reference_pools, gradients.reference_taps)
    if plan.too_wide:
        result.notes.append(f"batch 0: {flipped} activation(s) on opposite sides of 0, at {describe_cuts(masks)}; "
                            f"with {plan.describe()}, more than {plan.limit:g} of the tapped elements would "
                            "be cut, more than round-off explains: gradients compared as they are")
        return result
    cuts = plan.masks
    reference_grads, port_grads = cut_gradients(pair, cuts)
    reference_grads = _backward_order(reference_grads)
    result.comparisons = _compare_named(reference_grads, port_grads, limit, "")
    result.notes.append(f"batch 0: {flipped} activation(s) on opposite sides of 0 in the two frameworks (round-off "
                        f"at ReLU kinks), at {describe_cuts(masks)}; the gradient was cut in both frameworks at "
                        f"those and at {plan.describe()}, and the rest compared")
    if pair.dtype == "float32" and not result.passed:
        exact, _, _, _ = reference_gradients(exact_twin(pair), pair.exact_batch(0), cuts=cuts)
        judge = EnvelopeJudge(exact)
        result.comparisons = [judge.rejudge(c, port_grads.get(c.item), reference_grads[c.item])
                              if port_grads.get(c.item) is not None else c for c in result.comparisons]
    return result


def _backward_order(gradients: dict) -> dict:
    return dict(reversed(list(gradients.items())))


def cut_gradients(pair: AuditPair, masks: dict) -> tuple[dict, dict]:
    """(reference, port) gradients on batch 0 at the audit weights with the gradient cut at `masks`."""
    batch = pair.batches[0]
    pair.sync()
    reference_grads, draws, _, _ = reference_gradients(pair, batch, cuts=masks)
    pair.sync()
    port_grads, port_pass, _ = port_gradients(pair, batch, draws, cuts=masks)
    pair.model.zero_grad(set_to_none=True)
    pair.sync()
    if port_grads is None:
        raise PortBackwardError(port_pass.error)
    return reference_grads, port_grads


def train_mode_taps_agree(pair: AuditPair) -> bool:
    """Every train-mode layer of batch 0 within its tolerance (or, in float32, the round-off envelope)."""
    gradients = gradients_at_audit_weights(pair, 0)
    return all(c.passed for c in _train_mode_tap_comparisons(pair, gradients))


# --- the exact (float64) reference of a float32 pair ----------------------------

@dataclass
class ExactTwin:
    """The reference in float64 on a float32 pair's own weights and inputs (cast up): the exact result
    the float32 computations approximate. Duck-types what reference_forward/_gradients read of a pair."""

    reference: object
    seed: int
    audit_values: dict

    def sync(self) -> None:
        for name, variable in self.reference.graph.variables.items():
            assign(variable, self.audit_values[name])  # cast to float64 on the way
        self.reference.reset_state()


def exact_twin(pair: AuditPair) -> ExactTwin:
    if pair.exact is None:
        from tf_reference import ReferenceProblem

        pair.exact = ExactTwin(ReferenceProblem(pair.problem, tf.float64, pair.seed, initialize=False), pair.seed,
                               pair.audit_values)  # synced to the audit values at once
    pair.exact.sync()
    return pair.exact


def _compare_named(reference: dict, port: dict, limit: float, prefix: str) -> list[Comparison]:
    comparisons = []
    for name, reference_value in reference.items():
        if port.get(name) is None:
            comparisons.append(Comparison(f"{prefix}{name}", float("nan"), float("nan"), limit, False,
                                          "the port has no value for it (no gradient or no state)"))
        else:
            comparisons.append(compare(f"{prefix}{name}", port[name], reference_value, limit))
    return comparisons


def tf1_update(kind: str, step: int, gradient: np.ndarray, slots_before: dict[str, np.ndarray], lr: float):
    """The TF1 optimizer's update and new slots for one gradient, in float64 numpy."""
    from tf_reference.optimizers import ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, MOMENTUM

    if kind == "sgd":
        return -lr * gradient, {}
    if kind == "momentum":
        accumulator = MOMENTUM * slots_before["momentum"] + gradient
        return -lr * accumulator, {"momentum": accumulator}
    m = ADAM_BETA1 * slots_before["m"] + (1 - ADAM_BETA1) * gradient
    v = ADAM_BETA2 * slots_before["v"] + (1 - ADAM_BETA2) * gradient**2
    lr_t = lr * np.sqrt(1 - ADAM_BETA2**step) / (1 - ADAM_BETA1**step)
    return -lr_t * m / (np.sqrt(v) + ADAM_EPSILON), {"m": m, "v": v}


def propagated_gradient_error(kind: str, step: int, reference_gradient: np.ndarray, port_gradient: np.ndarray,
                              slots_before: dict[str, np.ndarray], lr: float) -> dict[str, np.ndarray]:
    """How far the gradient difference alone moves the update and each slot (x2 for round-off).

    The TF1 formula is applied to both gradients from the same state. Adam divides by
    sqrt(v) + epsilon, so a round-off difference in a near-zero gradient element moves that
    element's update by up to (1-beta1)/epsilon times as much: the end-to-end step is judged
    within this, the update formula alone in the '(reference gradients)' variant, and the
    gradients themselves in the 'gradients' check.
    """
    # Elementwise, so computed block by block: a 100M-element kernel's float64 temporaries never exist whole.
    shape = np.shape(reference_gradient)
    reference_flat, port_flat = np.reshape(reference_gradient, -1), np.reshape(port_gradient, -1)
    slots_flat = {slot: np.reshape(value, -1) for slot, value in slots_before.items()}
    explained: dict[str, np.ndarray] = {}
    for start in range(0, reference_flat.size, PROPAGATION_BLOCK):
        block = slice(start, start + PROPAGATION_BLOCK)
        slots_block = {slot: value[block] for slot, value in slots_flat.items()}
        reference_update, reference_slots = tf1_update(kind, step, reference_flat[block].astype(np.float64),
                                                       slots_block, lr)
        port_update, port_slots = tf1_update(kind, step, port_flat[block].astype(np.float64), slots_block, lr)
        parts = {"update": 2 * np.abs(port_update - reference_update)}
        parts |= {slot: 2 * np.abs(port_slots[slot] - reference_slots[slot]) for slot in reference_slots}
        for quantity, part in parts.items():
            explained.setdefault(quantity, np.empty(reference_flat.size, np.float64))[block] = part
    if not explained:  # an empty tensor
        return {"update": np.zeros(shape)} | {slot: np.zeros(shape) for slot in slots_before}
    return {quantity: value.reshape(shape) for quantity, value in explained.items()}


def _make_port_optimizer(pair: AuditPair, kind: str) -> torch.optim.Optimizer:
    tensors = port_tensors(pair.model)
    params = [tensors[row.port] for _, row in pair.trainable_rows()]
    return pair.port.optimizers[kind](params, learning_rate(pair, kind))


def _sync_optimizer_state(pair, kind, optimizer, reference_optimizer) -> None:
    """Copy the reference's slots into the port optimizer's state (after the first step)."""
    tensors = port_tensors(pair.model)
    slot_keys = pair.port.optimizer_state[kind]
    for name, row in pair.trainable_rows():
        variable = pair.reference.graph.variables[name]
        for slot, key in slot_keys.items():
            slot_variable = reference_optimizer.get_slot(variable, slot)
            if slot_variable is None:
                continue
            value = torch.from_numpy(to_port_layout(row, slot_variable.numpy()))
            optimizer.state[tensors[row.port]][key] = value.to(pair.torch_dtype)


class ReferenceStep:
    """The reference's state after one step, in port layouts, converted tensor by tensor when asked
    (a large model's step then holds one converted tensor at a time, not another copy of the model).
    Used by both variants: the reference does not move between them."""

    def __init__(self, pair: AuditPair, reference_optimizer, before_port: dict):
        self._pair, self._optimizer, self._before_port = pair, reference_optimizer, before_port

    def update(self, name: str, row) -> np.ndarray:
        variable = self._pair.reference.graph.variables[name]
        return to_port_layout(row, variable.numpy()) - self._before_port[row.port]

    def slot(self, name: str, row, slot: str) -> np.ndarray:
        variable = self._pair.reference.graph.variables[name]
        return to_port_layout(row, self._optimizer.get_slot(variable, slot).numpy())


def reference_step(pair: AuditPair, kind: str, reference_optimizer, before_port: dict) -> ReferenceStep:
    return ReferenceStep(pair, reference_optimizer, before_port)


def _step_comparisons(pair, kind, optimizer, reference: ReferenceStep, before_port, step,
                      reference_grads=None, port_grads=None, slots_before=None) -> list[Comparison]:
    """Compare each parameter's update and each optimizer slot after one step (in port layouts).

    With the port's own gradients (port_grads given), errors are allowed to reach what the
    measured gradient difference explains (propagated_gradient_error). An SGD or momentum step whose
    error is that difference alone uses half of the allowance (its x2 is headroom for round-off; the
    comparison's note gives the share): Inception's aux head, whose gradients differ by 0.65 at a ReLU
    kink flip that the 'gradients' check cuts, reads "up to 50%"; more than 50% is error beyond it.
    """
    limit = tolerance("step", pair.dtype)
    tensors = port_tensors(pair.model)
    machine_epsilon = np.finfo(NUMPY_DTYPES[pair.dtype]).eps
    comparisons = []
    split = {name for name, rows in pair.rows_by_reference().items() if len(rows) > 1}
    propagated_cache: dict[str, dict[str, np.ndarray]] = {}  # one TF1-formula pass per variable and step

    def propagated(name: str) -> dict[str, np.ndarray]:
        if name not in propagated_cache:
            propagated_cache[name] = propagated_gradient_error(kind, step, reference_grads[name], port_grads[name],
                                                               slots_before[name], learning_rate(pair, kind))
        return propagated_cache[name]

    for name, row in pair.trainable_rows():
        own_gradients = port_grads is not None and port_grads.get(name) is not None
        item = f"{name} [{row.port}]" if name in split else name

        def explained(quantity: str, name=name, row=row, own_gradients=own_gradients):
            # An update is seen only through the parameter, rounded to its dtype on both sides.
            bound = 2 * machine_epsilon * np.abs(before_port[row.port]) if quantity == "update" else 0.0
            if own_gradients:
                bound = bound + to_port_layout(row, propagated(name)[quantity])
            return bound

        port_update = tensors[row.port].detach().numpy() - before_port[row.port]
        comparisons.append(compare(f"step{step} {item} (update)", port_update, reference.update(name, row), limit,
                                   explained_error=lambda: explained("update")))
        for slot, key in pair.port.optimizer_state[kind].items():
            port_state = optimizer.state.get(tensors[row.port], {}).get(key)
            if port_state is None:
                comparisons.append(Comparison(f"step{step} {item}/{slot}", float("nan"), float("nan"), limit, False,
                                              f"the port optimizer has no state {key!r}"))
            else:
                comparisons.append(compare(f"step{step} {item}/{slot}", port_state.numpy(),
                                           reference.slot(name, row, slot), limit,
                                           explained_error=lambda slot=slot: explained(slot)))
    return comparisons


def check_optimizer(pair: AuditPair, kind: str) -> list[CheckResult]:
    """OPTIMIZER_STEPS steps against the original's TF1 optimizer, each from a re-synchronised state.

    Two results: the port's own gradients into its optimizer (end to end), and the
    reference's gradients into the port's optimizer, which isolates the update formula.
    """
    from tf_reference.optimizers import make_optimizer

    pair.sync()
    reference_optimizer = make_optimizer(kind, learning_rate(pair, kind), pair.reference.dtype)
    optimizer = _make_port_optimizer(pair, kind)
    variables = pair.reference.graph.trainable_variables
    own = CheckResult(pair.problem, f"step/{kind}", pair.dtype)
    fed = CheckResult(pair.problem, f"step/{kind} (reference gradients)", pair.dtype)
    for step in range(1, OPTIMIZER_STEPS + 1):
        batch = pair.batches[(step - 1) % len(pair.batches)]
        before = pair.reference_values()
        before_port = to_port_values(before, pair.model, pair.problem_map)
        pair.sync(before, before_port)
        _sync_optimizer_state(pair, kind, optimizer, reference_optimizer)
        counters_before = _state_without_slots(pair, kind, optimizer)

        if step == 1 or pair.fixed_step_gradients:  # step 1: the same gradients as the 'gradients' check
            cached = gradients_at_audit_weights(pair, 0)
            reference_grads, port_grads = cached.reference, cached.port
            pair.sync(before, before_port)
            _set_port_grads(pair, port_grads, cache_key="port")
        else:
            reference_grads, draws, _, _ = reference_gradients(pair, batch)
            pair.sync(before, before_port)  # undo the BN statistics the reference's train-mode forward moved
            port_grads, port_pass, _ = port_gradients(pair, batch, draws)
            if port_grads is None:
                raise PortBackwardError(port_pass.error)
        optimizer.step()
        slots_before = _reference_slots(pair, kind, reference_optimizer)
        reference_optimizer.apply_gradients(
            [(tf.constant(reference_grads[name]), variable) for name, variable in variables.items()])
        reference = reference_step(pair, kind, reference_optimizer, before_port)
        own.comparisons += _step_comparisons(pair, kind, optimizer, reference, before_port, step,
                                             reference_grads, port_grads, slots_before)

        load_port_values(pair.model, before_port)  # the port back to its pre-step state
        _restore_state(pair, kind, optimizer, counters_before, slots_before)
        _set_port_grads(pair, reference_grads,
                        cache_key="reference" if step == 1 or pair.fixed_step_gradients else None)
        optimizer.step()
        fed.comparisons += _step_comparisons(pair, kind, optimizer, reference, before_port, step)
        if missing := [name for name, grad in port_grads.items() if grad is None]:
            own.notes.append(f"step{step}: no port gradient for {', '.join(missing)}")
        del before, before_port, reference, slots_before, counters_before  # before the next step's copies
    if pair.fixed_step_gradients:
        note = (f"large model: the steps run on a sample of {STEP_SAMPLE_ELEMENTS} elements of each tensor larger "
                "than that (the same elements in both frameworks; the update rules are elementwise), and steps 2-3 "
                "take batch 0's gradients at the audit weights (each framework's own; not recomputed at each "
                "step's weights); the gradients themselves are checked whole, once, in 'gradients'")
        own.notes.append(note)
        fed.notes.append(note)
    if kind == "adam":
        fed.notes.append(stock_adam_deviation(pair))
    return [own, fed]


def _state_without_slots(pair: AuditPair, kind: str, optimizer) -> dict:
    """A copy of the port optimizer's per-parameter state other than its slots (step counts, beta powers).

    The slots before a step are the reference's (just synced), so _restore_state takes them from
    there instead of from a deep copy of the whole state.
    """
    slot_keys = set(pair.port.optimizer_state[kind].values())
    return {param: {key: value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)
                    for key, value in state.items() if key not in slot_keys}
            for param, state in optimizer.state.items()}


def _restore_state(pair: AuditPair, kind: str, optimizer, counters: dict, slots: dict) -> None:
    """The port optimizer's state as it was before the step: `counters` and the reference's `slots`."""
    tensors = port_tensors(pair.model)
    optimizer.state.clear()
    for name, row in pair.trainable_rows():
        param = tensors[row.port]
        if param not in counters:  # no state before the step (the first step)
            continue
        state = dict(counters[param])
        for slot, key in pair.port.optimizer_state[kind].items():
            state[key] = torch.from_numpy(to_port_layout(row, slots[name][slot])).to(pair.torch_dtype)
        optimizer.state[param] = state


def _set_port_grads(pair: AuditPair, gradients: dict[str, np.ndarray | None], cache_key: str | None = None) -> None:
    """Gradients in reference layouts (by reference name) into the port parameters' .grad.

    With a cache_key (batch 0's gradients, which every optimizer's first step, and every step of
    a large model, takes), the layout conversion is done once per pair; each step gets a copy.
    """
    tensors = port_tensors(pair.model)
    if cache_key is not None and cache_key not in pair.port_layout_gradients:
        pair.port_layout_gradients[cache_key] = {  # by port tensor: a split variable has two
            row.port: None if gradients.get(name) is None else
            torch.from_numpy(to_port_layout(row, gradients[name])).to(pair.torch_dtype)
            for name, row in pair.trainable_rows()}
    converted = pair.port_layout_gradients.get(cache_key) if cache_key is not None else None
    for name, row in pair.trainable_rows():
        if converted is not None:
            gradient = converted[row.port]
            tensors[row.port].grad = None if gradient is None else gradient.clone()
        else:
            gradient = gradients.get(name)
            tensors[row.port].grad = None if gradient is None else \
                torch.from_numpy(to_port_layout(row, gradient)).to(pair.torch_dtype)


def stock_adam_deviation(pair: AuditPair) -> str:
    """Measures how far torch.optim.Adam's first step is from TF1's, on the reference's gradients."""
    from tf_reference.optimizers import make_optimizer

    gradients = gradients_at_audit_weights(pair, 0).reference
    pair.sync()
    tensors = port_tensors(pair.model)
    rows = pair.trainable_rows()
    stock = torch.optim.Adam([tensors[row.port] for _, row in rows], lr=learning_rate(pair, "adam"))
    for name, row in rows:
        tensors[row.port].grad = torch.from_numpy(to_port_layout(row, gradients[name])).to(pair.torch_dtype)
    stock.step()
    reference_optimizer = make_optimizer("adam", learning_rate(pair, "adam"), pair.reference.dtype)
    variables = pair.reference.graph.trainable_variables
    reference_optimizer.apply_gradients([(tf.constant(gradients[n]), v) for n, v in variables.items()])
    port_values = {name: tensor.detach().numpy() for name, tensor in tensors.items()}
    worst = max((compare(name, assemble(name_rows, port_values) - pair.audit_values[name],
                         variables[name].numpy() - pair.audit_values[name], tolerance("step", pair.dtype))
                 for name, name_rows in pair.rows_by_reference().items()), key=lambda c: c.max_rel)
    pair.sync()
    return (f"for comparison, torch.optim.Adam (epsilon added to sqrt(v_hat)) differs from TF1 Adam on step 1 "
            f"by max rel {worst.max_rel:.2e} (at {worst.item}); the port's TF1Adam passes")


def _reference_slots(pair, kind, reference_optimizer) -> dict[str, dict[str, np.ndarray]]:
    """The reference optimizer's slots now (zeros before its first step), by variable and slot."""
    from tf_reference.optimizers import SLOT_NAMES

    slots = {}
    for name, variable in pair.reference.graph.trainable_variables.items():
        slots[name] = {}
        for slot in SLOT_NAMES[kind]:
            slot_variable = reference_optimizer.get_slot(variable, slot)
            slots[name][slot] = np.zeros(variable.shape) if slot_variable is None else slot_variable.numpy()
    return slots


def check_carried_state(pair: AuditPair) -> CheckResult:
    """A stateful model over CARRIED_STATE_BATCHES consecutive train-mode batches, its state carried
    from one to the next in both frameworks (no re-synchronisation in between): every layer, the
    state after each batch, the data loss and the gradients, batch by batch. The first batch starts
    from the zero state; a port that does not carry its state diverges on the second, one that does
    not cut the gradient at the batch boundary (truncated backpropagation) fails its backward pass."""
    result = CheckResult(pair.problem, "carried_state", pair.dtype)
    if not pair.reference.family.stateful:
        result.not_applicable = "the model carries no state from one batch to the next"
        return result
    pair.sync()
    gradient_limit, loss_limit = tolerance("gradients", pair.dtype), tolerance("loss", pair.dtype)
    try:
        for index in range(CARRIED_STATE_BATCHES):
            batch, prefix = pair.batches[index], f"batch{index} "
            reference_grads, draws, reference_taps, reference_loss = reference_gradients(pair, batch)
            try:
                port_grads, port_pass, port_loss = port_gradients(pair, batch, draws)
            except PortBackwardError as error:
                result.comparisons.append(Comparison(f"{prefix}gradients", float("nan"), float("nan"), gradient_limit,
                                                     False, str(error)))
                break
            result.comparisons += compare_taps(pair, reference_taps, port_pass, "train_mode", prefix)
            if port_grads is None:
                break
            result.comparisons.append(compare(f"{prefix}data_loss", port_loss["data_loss"], reference_loss["data_loss"],
                                              loss_limit))
            result.comparisons += _compare_named(reference_grads, port_grads, gradient_limit, prefix)
    finally:
        pair.sync()
    return result


# --- large models: the step checks on a sample of each tensor ----------------------

STEP_SAMPLE_ELEMENTS = 1 << 16


@dataclass
class _SampledGraph:
    variables: dict

    @property
    def trainable_variables(self) -> dict:
        return self.variables


@dataclass
class _SampledReference:
    """What check_optimizer reads of a reference: variables (1-D samples) and the family."""

    graph: _SampledGraph
    family: object
    dtype: object

    def reset_state(self) -> None:
        pass


def step_pair(pair: AuditPair) -> AuditPair:
    """The pair the optimizer steps run on: `pair` itself, or for a large model (fixed_step_gradients) a
    pair of 1-D samples: for every trainable port tensor, STEP_SAMPLE_ELEMENTS of its elements (all of a
    smaller one), chosen once per seed, as a parameter of its own, with the audit weights and batch 0's
    gradients of both frameworks at those elements. Each sample keeps its reference variable's name."""
    if not pair.fixed_step_gradients:
        return pair
    if "step_pair" in pair.exact_cache:
        return pair.exact_cache["step_pair"]
    gradients = gradients_at_audit_weights(pair, 0)
    rng = np.random.default_rng(pair.seed)
    split = {name for name, rows in pair.rows_by_reference().items() if len(rows) > 1}
    module, rows, variables, tensors = nn.Module(), [], {}, port_tensors(pair.model)
    values, reference_grads, port_grads = {}, {}, {}
    for index, (name, row) in enumerate(pair.trainable_rows()):
        sample_name = f"{name} [{row.port}]" if name in split else name
        size = tensors[row.port].numel()
        indices = (np.arange(size) if size <= STEP_SAMPLE_ELEMENTS else
                   np.sort(rng.choice(size, STEP_SAMPLE_ELEMENTS, replace=False)))
        # Sampled in the reference layout (the update rules are elementwise, so any one set of elements
        # serves); a port tensor holding part of its variable samples its part's positions.
        shape = pair.audit_values[name].shape
        reference_indices = (to_port_layout(row, np.arange(int(np.prod(shape))).reshape(shape)).reshape(-1)[indices]
                             if TRANSFORMS[row.transform].partial else indices)

        def sampled(array, reference_indices=reference_indices):
            return np.ascontiguousarray(array.reshape(-1)[reference_indices])

        values[sample_name] = sampled(pair.audit_values[name])
        reference_grads[sample_name] = sampled(gradients.reference[name])
        port_grads[sample_name] = None if gradients.port.get(name) is None else sampled(gradients.port[name])
        module.register_parameter(f"p{index}", nn.Parameter(torch.from_numpy(values[sample_name]).to(pair.torch_dtype)))
        rows.append(ParamRow(f"p{index}", sample_name, "identity"))
        variables[sample_name] = tf.Variable(values[sample_name], name=f"sample_{index}")
    reference = _SampledReference(_SampledGraph(variables), pair.reference.family, pair.reference.dtype)
    sampled_pair = AuditPair(pair.problem, pair.dtype, pair.port, module, reference, ProblemMap(tuple(rows), ()),
                             values, pair.batches, pair.seed, fixed_step_gradients=True)
    sampled_pair.gradient_cache[0] = GradientPair(reference_grads, [], {}, port_grads, None, {}, {}, {}, {})
    pair.exact_cache["step_pair"] = sampled_pair
    return sampled_pair


CHECKS: dict[str, Callable[[AuditPair], list[CheckResult]]] = {
    "forward": lambda pair: [check_forward(pair)],
    "loss": lambda pair: [check_loss(pair)],
    "gradients": lambda pair: [check_gradients(pair)],
    "train_mode": lambda pair: [check_train_mode(pair)],
    "step/sgd": lambda pair: check_optimizer(step_pair(pair), "sgd"),
    "step/momentum": lambda pair: check_optimizer(step_pair(pair), "momentum"),
    "step/adam": lambda pair: check_optimizer(step_pair(pair), "adam"),
    "carried_state": lambda pair: [check_carried_state(pair)],
}
