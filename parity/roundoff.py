"""Telling float32 round-off from a porting slip in deep nets: kink cuts and the exact-reference envelope.

Two effects make a correct port miss fixed float32 tolerances on deep nets (WRN-40-4, Inception v3):

- Kink flips. A pre-activation within round-off of 0 lands on different sides of a ReLU in the two
  frameworks; the gradient then flows through that element in one and not the other, and every
  parameter below it gets an O(1) relative difference from a single element. On a net with ~10^7
  activations a few such elements are expected on every batch. The gradients check therefore finds
  the elements whose sign differs at a tap (train mode, same batch and weights) and, when they are
  few and the train-mode taps agree, runs both backward passes again with the gradient *cut* at
  exactly those elements in both frameworks (`tf.stop_gradient` / `Tensor.detach` there), and
  compares that. The cut elements are counted in the result, by tap.
- Amplified round-off. Batch-statistics BN renormalises its input at every layer, so round-off grows
  with depth (1e-5 after 40 layers); a BN over a 1x1 map normalises 2 values per channel at batch 2
  (Inception's aux head) and magnifies it ~1e3 times. Where a float32 comparison exceeds its
  tolerance, both sides are measured against the exact result: the reference run in float64 on the
  very same float32 weights, inputs and noise. The port passes if its own error from the exact
  result (root mean square over the tensor: round-off is spread over every element, a max is one
  draw of it) is within ENVELOPE_FACTOR times the float32 reference's: it is as accurate as the
  original computation is in float32. A porting slip is far outside: on WRN-16-4 a BN epsilon of
  2e-5 instead of 1e-5 measures a max-error ratio of 9, 1e-4 of 90-125, 1e-3 fails outright
  (tests/test_roundoff.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch import nn

from parity.results import SCALE_FLOOR, Comparison

# Port RMS error from the exact result / the float32 reference's, allowed. Measured (max-error ratios,
# which the RMS ones are below): cifar100_wrn404's train-mode taps 0.8 .. 1.72 (median 1.1); Inception's
# taps up to 2.0, its gradients after the kink cuts up to 4.6 (two BN betas, sums that cancel).
ENVELOPE_FACTOR = 4.0
# Kink flips attributed to round-off: at most this fraction of the tapped elements (measured: 4-6 of
# ~2e7 on cifar100_wrn404, see README); more is a forward difference, not round-off.
MAX_FLIP_FRACTION = 1e-4
# Elements within this many times a tap's measured port-reference difference of 0 are cut too.
NEAR_ZERO_FACTOR = 2.0
# All cut elements (flips, near zeros, max-pool near-ties) at most this fraction of the tapped elements; more
# and the gradients are compared uncut: a cut that wide would hide what a slip does to the gradient. Measured
# (float32, batch 0, seed 0): Inception v3 6.3e-4 (29,390 of 46.8M), the CIFAR VGGs 5.7e-4 (17,475 of 30.5M,
# mostly max-pool near-ties on the upsampled images), the ImageNet VGGs 2.6e-5, WRN-40-4 3.1e-5.
MAX_CUT_FRACTION = 5e-3


class TapSigns(NamedTuple):
    """One tap's elements compared around 0 in the two frameworks (reference layout)."""

    flipped: np.ndarray  # on opposite sides of 0
    near_zero: np.ndarray  # within NEAR_ZERO_FACTOR x the tap's measured difference of 0
    difference: float  # that difference: max |port - reference| over the tap
    both_zero: np.ndarray  # exactly 0 in both


def flip_masks(signs: dict) -> dict:
    """tap name -> boolean mask (reference layout) of the elements on opposite sides of 0 (`signs`: sign_masks)."""
    return {name: tap.flipped for name, tap in signs.items() if tap.flipped.any()}


def cut_masks(signs: dict, pools: dict) -> dict:
    """tap name -> mask of the elements where round-off decides which way the gradient goes: on opposite
    sides of 0 in the two frameworks, or within NEAR_ZERO_FACTOR times the tap's own measured difference
    of 0 (where a third computation, the exact one, may put them on either side); and, at a max pool
    (`pools`: tap name -> (input, window, strides, padding)), the outputs whose window's two largest
    inputs are that close (the gradient goes to either).

    An element exactly 0 in both frameworks is not cut: after a ReLU (a ReLU's zeros, a max pool over
    them) it passes no gradient in either framework, cut or not; before one, a tie at exactly 0 goes the
    same way in both unless the port's derivative at the kink differs, which is a slip, not round-off (the
    float64 audit compares such ties)."""
    masks = {}
    for name, tap in signs.items():
        mask = tap.flipped | tap.near_zero
        if name in pools:
            mask = mask | (max_pool_gaps(*pools[name]) <= NEAR_ZERO_FACTOR * tap.difference)
        mask &= ~tap.both_zero
        if mask.any():
            masks[name] = mask
    return masks


def _pair(value) -> tuple[int, int]:
    values = [value] * 2 if np.isscalar(value) else list(value)
    return tuple(values[1:3]) if len(values) == 4 else tuple(values)


def max_pool_gaps(inputs, window, strides, padding: str) -> np.ndarray:
    """Per max-pool output (NHWC): its window's largest input minus the second largest."""
    from parity.frameworks import load_tensorflow

    tf = load_tensorflow()
    (kh, kw), (sh, sw) = _pair(window), _pair(strides)
    shifted = inputs - tf.reduce_min(inputs) + 1  # 'SAME' patches pad with 0: below every real input
    patches = tf.image.extract_patches(shifted, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1], padding)
    n, h, w, _ = patches.shape
    per_window = tf.transpose(tf.reshape(patches, (n, h, w, kh * kw, -1)), (0, 1, 2, 4, 3))
    top_two = tf.math.top_k(per_window, k=2).values.numpy()
    return top_two[..., 0] - top_two[..., 1]


def sign_masks(reference_taps: dict, port_value) -> dict:
    """tap name -> TapSigns; `port_value(name)` is the port's value for a tap in reference layout, or None
    (the tap is then left out)."""
    masks = {}
    for name, reference_value in reference_taps.items():
        port_array, reference_array = port_value(name), np.asarray(reference_value)
        if port_array is None or port_array.shape != reference_array.shape:
            continue
        difference = float(np.max(np.abs(port_array - reference_array))) if port_array.size else 0.0
        masks[name] = TapSigns((port_array > 0) != (reference_array > 0),
                               np.abs(reference_array) <= NEAR_ZERO_FACTOR * difference, difference,
                               (reference_array == 0) & (port_array == 0))
    return masks


def tapped_elements(reference_taps: dict) -> int:
    return sum(int(np.prod(np.shape(value))) for value in reference_taps.values())


def describe_cuts(masks: dict) -> str:
    return ", ".join(f"{name} ({int(mask.sum())})" for name, mask in masks.items())


def cut_elements(masks: dict) -> int:
    return sum(int(mask.sum()) for mask in masks.values())


@dataclass(frozen=True)
class CutPlan:
    """Where the gradients check cuts (cut_masks), and whether that is narrow enough to be round-off."""

    masks: dict
    tapped: int

    @property
    def cut(self) -> int:
        return cut_elements(self.masks)

    @property
    def limit(self) -> float:
        return MAX_CUT_FRACTION

    @property
    def too_wide(self) -> bool:
        return self.cut > self.limit * self.tapped

    def describe(self) -> str:
        name, mask = max(self.masks.items(), key=lambda item: item[1].mean())
        return (f"the elements within {NEAR_ZERO_FACTOR:g}x each layer's measured difference of 0 "
                f"({self.cut} of {self.tapped} tapped elements; the largest share at {name}: "
                f"{int(mask.sum())} of {mask.size})")


def plan_cuts(signs: dict, pools: dict, reference_taps: dict) -> CutPlan:
    return CutPlan(cut_masks(signs, pools), tapped_elements(reference_taps))


def _to_port_mask(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask.transpose(0, 3, 1, 2).copy() if mask.ndim == 4 else mask)


@contextlib.contextmanager
def cut_port_gradients(model: nn.Module, module_masks: dict[str, np.ndarray]) -> Iterator[None]:
    """While active, each named module's output passes no gradient at its mask's elements."""
    modules = dict(model.named_modules())
    handles = []
    for module_name, mask in module_masks.items():
        port_mask = _to_port_mask(mask)

        def cut(module, args, output, port_mask=port_mask):
            if isinstance(output, tuple) or output.shape != port_mask.shape:
                return output
            return torch.where(port_mask, output.detach(), output)

        handles.append(modules[module_name].register_forward_hook(cut))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def cut_reference_gradients(graph, masks: dict[str, np.ndarray]) -> Iterator[None]:
    """While active, the reference graph's taps pass no gradient at their mask's elements."""
    graph.gradient_cuts = dict(masks)
    try:
        yield
    finally:
        graph.gradient_cuts = {}


# --- the exact-reference envelope -------------------------------------------------

@dataclass
class EnvelopeJudge:
    """Re-judges failed float32 comparisons against exact (float64) values of the same quantities."""

    exact: dict  # item -> exact value (reference layout), for the items that may be re-judged

    def rejudge(self, comparison: Comparison, port_value, reference_value) -> Comparison:
        if comparison.passed or comparison.item not in self.exact or not np.isfinite(comparison.max_abs):
            return comparison
        exact = np.asarray(self.exact[comparison.item], dtype=np.float64)
        port_error = _rms(np.asarray(port_value, dtype=np.float64) - exact)
        reference_error = _rms(np.asarray(reference_value, dtype=np.float64) - exact)
        scale = max(_rms(exact), SCALE_FLOOR)
        ratio = port_error / max(reference_error, SCALE_FLOOR * scale)
        passed = port_error <= ENVELOPE_FACTOR * reference_error
        note = (f"float32 round-off envelope: RMS error from the exact (float64) result, port "
                f"{port_error / scale:.1e}, float32 reference {reference_error / scale:.1e} (of the RMS value), "
                f"ratio {ratio:.2f} ({'<=' if passed else '>'} {ENVELOPE_FACTOR:g})")
        return dataclasses.replace(comparison, passed=passed,
                                   note=f"{comparison.note}; {note}" if comparison.note else note)


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if np.size(values) else 0.0
