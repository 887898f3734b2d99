"""Diagnosis hints: what a failure's measured pattern suggests the port does differently.

Each hint is a hypothesis with the measurement behind it, never a verdict; each is computed from the
teacher-forced passes of parity.isolate (so it is about one layer, on the reference's own input) or, for the
optimizer, from one step on the reference's gradients. A hint that its test does not support is not given.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from parity.checks import AuditPair, gradients_at_audit_weights, learning_rate, tf1_update
from parity.isolate import GROUP, TENSOR, tap_modules, then_function, to_port_tap
from parity.porting import port_tensors, to_port_layout, to_reference_layout
from parity.results import CheckResult, Hint
from parity.tolerances import tolerance


def _failing(result: CheckResult | None):
    return [] if result is None else [c for c in result.comparisons if not c.passed]


def _max_error(port: torch.Tensor, reference: torch.Tensor) -> float:
    return float((port.double() - reference.double()).abs().max()) if port.numel() else 0.0


# --- one-pixel shift at a stride-2 layer ------------------------------------------------------------

def _shifted_up_left(x: torch.Tensor) -> torch.Tensor:
    """x moved one pixel up and left (zeros enter at the bottom and right)."""
    return F.pad(x[..., 1:, 1:], (0, 1, 0, 1))


def stride2_shift(pair: AuditPair, forward: CheckResult, forced_pass, reference_taps: dict) -> list[Hint]:
    """A stride-2 layer whose output matches the original's once its input is moved one pixel up-left:
    it pads symmetrically (PyTorch's padding=1) where TF's 'SAME' pads only the bottom and right."""
    modules, hints = dict(pair.model.named_modules()), []
    layer_module = {reference: module for module, reference in tap_modules(pair).items()}
    for comparison in _failing(forward):
        module = layer_module.get(comparison.item)
        x, own = forced_pass.inputs.get(module), forced_pass.own.get(module)
        if x is None or own is None or x.ndim != 4 or own.ndim != 4:
            continue
        height, width = x.shape[-2:]
        if (height % 2 or width % 2 or (own.shape[-2], own.shape[-1]) != (height // 2, width // 2)
                or min(own.shape[-2:]) < 3):
            continue
        reference = to_port_tap(reference_taps[comparison.item], own.dtype)
        pair.model.eval()
        _, then = then_function(pair, module)
        with torch.no_grad():
            shifted = modules[module](_shifted_up_left(x))
        if then:
            own, shifted = then(own), then(shifted)
        if shifted.shape != reference.shape:
            continue
        inner = (..., slice(1, -1), slice(1, -1))  # the borders see the padding itself
        before, after = _max_error(own[inner], reference[inner]), _max_error(shifted[inner], reference[inner])
        scale = float(reference[inner].abs().max())
        if after <= max(1e-3 * before, 10 * tolerance("forward", pair.dtype) * scale):
            hints.append(Hint(comparison.item, "asymmetric 'SAME' padding: the port pads this stride-2 layer "
                              "symmetrically (PyTorch padding=1), TF's 'SAME' pads only the bottom and right",
                              f"on the reference's input moved one pixel up-left, the port's layer matches the "
                              f"original inside the border (max abs {after:.2e}, was {before:.2e})"))
    return hints


# --- residual add --------------------------------------------------------------------------------

def residual_add(pair: AuditPair, isolated: CheckResult) -> list[Hint]:
    """A block's output differs while every tapped layer inside it agrees (each on the reference's input)."""
    layer_module = {reference: module for module, reference in tap_modules(pair).items()}
    by_layer = {c.item: c for c in isolated.comparisons}
    hints = []
    for comparison in _failing(isolated):
        module = layer_module.get(comparison.item)
        if module is None:
            continue
        inner = [layer for layer, m in layer_module.items() if m.startswith(module + ".") and layer in by_layer]
        if inner and all(by_layer[layer].passed for layer in inner):
            worst = max(by_layer[layer].max_rel for layer in inner)
            hints.append(Hint(comparison.item, "the block combines its branches differently: the shortcut's source "
                              "(its raw input vs the input after the block's first BN and ReLU) or the residual add",
                              f"its {len(inner)} tapped layers agree on the reference's inputs (worst rel "
                              f"{worst:.2e}) while the block's output differs (rel {comparison.max_rel:.2e})"))
    return hints


# --- L2 placement --------------------------------------------------------------------------------

def regularizer_placement(isolated_loss: CheckResult) -> list[Hint]:
    """The data loss agrees on the reference's outputs but the regularizer does not: the tensors it covers."""
    data = next((c for c in isolated_loss.comparisons if c.item.startswith("data_loss")), None)
    if data is None or not data.passed:
        return []
    groups = [c for c in _failing(isolated_loss) if c.item.startswith(GROUP)]
    if not groups:
        return []
    tensors = [c.item.removeprefix(TENSOR) for c in _failing(isolated_loss) if c.item.startswith(TENSOR)]
    evidence = "; ".join(f"{c.item.removeprefix(GROUP)} differ by {c.max_abs:.3e} (rel {c.max_rel:.2e})"
                         for c in groups)
    return [Hint("regularizer", "L2 placement: the port regularizes another set of tensors (or with another factor) "
                 "than the original's wd/2·‖W‖² on its kernels",
                 f"the data loss agrees on the reference's outputs; {evidence}" + (f"; tensors: {', '.join(tensors[:8])}"
                                                       + (" ..." if len(tensors) > 8 else "") if tensors else ""))]


# --- dropout ---------------------------------------------------------------------------------------

def dropout_sites(pair: AuditPair, train: CheckResult, forced_pass, reference) -> list[Hint]:
    """At a dropout site that differs: the keep fractions, the mask's shape and the scale of kept values."""
    sites = {draw.name for draw in reference.draws if draw.kind == "uniform"}
    layer_module = {layer: module for module, layer in tap_modules(pair).items()}
    hints = []
    for comparison in _failing(train):
        module = layer_module.get(comparison.item)
        if comparison.item not in sites or module not in forced_pass.own:
            continue
        port = forced_pass.own[module].double()
        expected = to_port_tap(reference.taps[comparison.item], torch.float64)
        x = forced_pass.inputs.get(module)
        live = (x != 0) if x is not None and x.shape == port.shape else (port != 0) | (expected != 0)
        count = int(live.sum())
        if count < 100:
            continue
        kept_port, kept_reference = port[live] != 0, expected[live] != 0
        fraction_port, fraction_reference = float(kept_port.double().mean()), float(kept_reference.double().mean())
        noise = 4 * math.sqrt(max(fraction_reference * (1 - fraction_reference), 1e-12) / count) + 1 / count
        both = kept_port & kept_reference
        scale = float(torch.median(port[live][both] / expected[live][both])) if int(both.sum()) else float("nan")
        evidence = (f"keeps {fraction_port:.3f} of {count} elements vs the original's {fraction_reference:.3f}; "
                    f"values kept by both are scaled by {scale:.4f} of the original's")
        rate = 1 - fraction_reference
        if scale == scale and abs(scale - 1) > 1e-6:  # kept values scaled by 1/(1-p): another p
            implied = 1 - (1 - rate) / scale if scale > 0 else float("nan")
            hints.append(Hint(comparison.item, f"another dropout rate: the port's scale implies p = {implied:.2f} "
                              f"where the original drops {rate:.2f} (keep_prob passed as the drop rate, or the "
                              "other way round)", evidence))
        elif port.ndim >= 3 and _channel_pattern(port, live):
            hints.append(Hint(comparison.item, "channel-wise dropout (nn.Dropout2d / dropout2d) where the original "
                              "drops single elements (tf.nn.dropout)",
                              evidence + "; every channel of every example is kept or dropped whole, at the "
                              "original's rate (kept values scaled alike)"))
        elif abs(fraction_port - fraction_reference) > noise:
            hints.append(Hint(comparison.item, "another keep fraction at the same scale: the mask is drawn "
                              "another way (compared against the draw differently, or a draw of another shape)",
                              evidence))
        else:
            hints.append(Hint(comparison.item, "the same dropout rate but other masks: the port draws its mask "
                              "elsewhere (its own RNG, another order or spelling than the shared draws reach)",
                              evidence))
    return hints


def _channel_pattern(port: torch.Tensor, live: torch.Tensor) -> bool:
    """Within every (example, channel), the live elements are all kept or all dropped."""
    kept = (port != 0).reshape(*port.shape[:2], -1)
    live = live.reshape(*port.shape[:2], -1)
    for example in range(kept.shape[0]):
        for channel in range(kept.shape[1]):
            values = kept[example, channel][live[example, channel]]
            if values.numel() > 1 and not (values.all() or not values.any()):
                return False
    return True


# --- BN running statistics ------------------------------------------------------------------------

def momentum_ratio(pair: AuditPair, train: CheckResult, reference, port_statistics: dict) -> list[Hint]:
    """A BN's running statistics moving a constant multiple of the original's distance."""
    hints = []
    spread_limit = 1e-6 if pair.dtype == "float64" else 1e-3
    for comparison in _failing(train):
        if comparison.item not in reference.statistics:
            continue
        before = pair.audit_values[comparison.item].astype(np.float64)
        moved_reference = reference.statistics[comparison.item] - before
        moved_port = port_statistics[comparison.item] - before
        usable = np.abs(moved_reference) > 1e-3 * np.abs(moved_reference).max()
        if usable.sum() < 2:
            continue
        ratios = moved_port[usable] / moved_reference[usable]
        mean, spread = float(np.mean(ratios)), float(np.std(ratios))
        if abs(mean - 1) > 1e-3 and spread <= spread_limit * abs(mean):
            hints.append(Hint(comparison.item, "BN momentum not converted: torch's momentum is 1 - TF's decay; the "
                              "port's running statistics move a constant multiple of the original's step",
                              f"(port - before) / (original - before) = {mean:.4f} for every channel (spread "
                              f"{spread:.1e}); a decay d passed as momentum gives d/(1-d) (0.9 -> 9, 0.997 -> 332)"))
    return hints


# --- Adam's epsilon --------------------------------------------------------------------------------

def adam_epsilon(pair: AuditPair) -> list[Hint]:
    """The port's Adam on the reference's gradients against TF1's formula, element by element: an epsilon
    added elsewhere (to sqrt(v_hat) instead of sqrt(v)) moves small-gradient elements most."""
    gradients = gradients_at_audit_weights(pair, 0).reference
    pair.sync()
    tensors = port_tensors(pair.model)
    rows = pair.trainable_rows()
    optimizer = pair.port.optimizers["adam"]([tensors[row.port] for _, row in rows], learning_rate(pair, "adam"))
    for name, row in rows:
        tensors[row.port].grad = torch.from_numpy(to_port_layout(row, gradients[name])).to(pair.torch_dtype)
    before = {row.port: tensors[row.port].detach().clone() for _, row in rows}
    optimizer.step()
    pair.parameters_changed()  # a port optimizer may write through .data
    errors, magnitudes = [], []
    for name, row in rows:
        port_update = to_reference_layout(row, (tensors[row.port].detach() - before[row.port]).numpy())
        reference_update, _ = tf1_update("adam", 1, gradients[name].astype(np.float64),
                                         {"m": 0.0, "v": 0.0}, learning_rate(pair, "adam"))
        if len(pair.rows_by_reference()[name]) > 1:
            continue  # a split variable: each part fills only its own share of the reference layout
        errors.append(np.abs(port_update - reference_update).reshape(-1))
        magnitudes.append(np.abs(gradients[name]).reshape(-1).astype(np.float64))
    pair.model.zero_grad(set_to_none=True)
    pair.sync()
    error, magnitude = np.concatenate(errors), np.concatenate(magnitudes)
    usable = (error > 0) & (magnitude > 0)
    if usable.sum() < 10:
        return []
    correlation = float(np.corrcoef(np.log(error[usable]), np.log(magnitude[usable]))[0, 1])
    worst = error >= np.quantile(error, 0.99)
    if correlation > -0.8:
        return []
    product = float(np.median(error[usable] * magnitude[usable])) / learning_rate(pair, "adam")
    return [Hint("adam", "Adam's epsilon in another place: torch.optim.Adam adds it to sqrt(v_hat), TF1 to sqrt(v) "
                 "before the bias correction (an effective epsilon 1/sqrt(1 - beta2^t) times larger)",
                 f"the update's error grows as the gradient shrinks (log-log correlation {correlation:.2f}); the 1% "
                 f"largest errors sit at median |g| {np.median(magnitude[worst]):.2e} vs {np.median(magnitude):.2e} "
                 f"overall; |error|·|g|/lr ≈ {product:.2e}, constant as an epsilon difference predicts")]


def diagnose(pair: AuditPair, results: list[CheckResult], isolated: list[CheckResult], evidence: dict) -> None:
    """Attach every hint the measurements support to the isolated result (or the step check) it explains."""
    by_check = {r.check: r for r in results + isolated}
    forward, train = by_check["isolated/forward"], by_check["isolated/train_mode"]
    reference = evidence["reference"]
    _, reference_taps, _ = pair.inference_cache
    forward.hints += stride2_shift(pair, forward, evidence["forced_inference"], reference_taps)
    forward.hints += residual_add(pair, forward)
    train.hints += dropout_sites(pair, train, evidence["forced_pass"], reference)
    train.hints += momentum_ratio(pair, train, reference, evidence["statistics"])
    by_check["isolated/loss"].hints += regularizer_placement(by_check["isolated/loss"])
    fed = by_check.get("step/adam (reference gradients)")
    if fed is not None and not fed.passed and not fed.error and "adam" in pair.port.optimizers:
        fed.hints += adam_epsilon(pair)
