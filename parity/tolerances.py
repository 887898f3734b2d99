"""Declared tolerances, one table: (check kind, dtype) -> max relative error allowed.

Relative error = max |port - reference| / max |reference| over one tensor. Beside each value:
the worst error measured for the correct port over the 11 image classifiers, then (after "new:") over
the VAEs, the character LSTM, quadratic_deep and the 2-D functions (seed 0, batch 2, this machine,
torch 2.14.1 / TF 2.21.0). Planted porting slips measure 1e-4 .. 1 (tests/test_planted_bugs.py).
The carried_state check compares layers with the train_mode tolerance, the data loss with loss's and
gradients with gradients' (measured: 1.3e-15 float64, 1.1e-6 float32, the LSTM over 3 batches).
Deep nets (after "deep:"): cifar100_wrn404 (W404) and imagenet_inception_v3 (I3), VGG (V). Values
marked FAILS exceed the declared tolerance: those problems are audited outside the default run
(`tox -e parity-deep`, see README), and the tolerance was not widened.

VGG (cifar10_vgg16, float32, batch 2; the other VGG problems and float64 VGG were not measured in
this session: a float64 VGG audit needs more memory than the shared machine had free). Every value
is under the floor above, so no tolerance changed: forward 8.0e-7 (dense), loss 2.2e-7, gradients
6.5e-6 (conv2d/bias; no ReLU kink flips on batch 0), train_mode 8.0e-7, step/sgd and step/momentum
6.5e-6 with the port's gradients, 1.8e-6 with the reference's; step/adam 7.5e-6 with the reference's
gradients, and with the port's within the propagated gradient difference (raw 0.77 on conv2d_8/kernel,
Adam's amplification of near-zero gradient elements, as for the small problems).

Step checks compare each parameter's update and optimizer slot. Two allowances there are
computed, not declared: the update is seen only through the parameter, rounded to its dtype
(2 ulp of |theta|), and in the end-to-end variant the gradient difference (checked on its own in
'gradients') propagated through the TF1 update formula (see parity.checks.propagated_gradient_error).
"""
from __future__ import annotations

TOLERANCES: dict[tuple[str, str], float] = {
    # float64: a correct port agrees to round-off.
    ("forward", "float64"): 1e-10,  # measured 3.4e-15; new: 2.6e-15
    ("loss", "float64"): 1e-10,  # measured 1.9e-15; new: 0
    ("gradients", "float64"): 1e-10,  # measured 7.6e-15; new: 2.5e-15
    ("train_mode", "float64"): 1e-10,  # measured 5.4e-15; new: 1.6e-15
    # step float64: measured 4.3e-14 with the reference's gradients, 8.6e-11 with the port's (Adam);
    # new: 3.8e-13 and 6.9e-11 (the VAE's 9.8M-element output kernel)
    ("step", "float64"): 1e-10,
    # float32: the frameworks' kernels sum in different orders.
    ("forward", "float32"): 1e-5,  # measured 1.6e-6; new: 2.0e-6
    ("loss", "float32"): 1e-5,  # measured 4.4e-7; new: 8.7e-8
    ("gradients", "float32"): 1e-4,  # measured 6.4e-6 (kink-flip batches skipped); new: 1.7e-6
    ("train_mode", "float32"): 1e-5,  # measured 3.0e-6; new: 1.2e-6
    # step float32: measured 3.0e-5 with the reference's gradients, 9.7e-5 with the port's; new: 8.8e-5, 9.8e-5
    # (the VAE's, beyond which the propagated gradient difference explains the rest)
    ("step", "float32"): 1e-4,
    # deep: forward float64 W404 3.8e-15, I3 4.7e-15; loss I3 3.7e-16; gradients W404 2.6e-14, I3 1.1e-11 (a BN
    # beta: a sum that cancels); train_mode W404 1.5e-14, I3 7.7e-12 (aux-head BN over 2 values); step I3 2.2e-13.
    # deep float32: forward W404 3.3e-6, I3 4.1e-6, V 8.0e-7; gradients V 6.5e-6; the others exceed these
    # tolerances through round-off alone and are judged as below (parity.roundoff), not by a wider tolerance.
    # Since the port's Winograd convolutions (2026-12-03, deepobs.native): forward V 2.9e-6-3.9e-6 (a conv),
    # gradients V 1.2e-5 (1.1e-5 before), W404 and I3 as before. The two frameworks no longer sum in oneDNN's
    # one order, so the reference's own direct-convolution round-off (1e-6-3e-6 against float64 at VGG's
    # shapes; the port's Winograd 4e-7-8e-7) shows; no tolerance changed.
}
# float32 on the deep BN nets (W404: 40 layers, I3: 96 conv-BN layers), measured on batch 0, seed 0:
# - train_mode: batch-statistics BN amplifies round-off layer by layer: W404 1.2e-5 at its last units,
#   I3 up to 7.5e-4 in block 7 and 4.6e-3 in the aux-head BN (a 1x1 map normalised over 2 values at
#   batch 2). The float32 *reference* is as far from the exact (float64) result: 4.7e-4 and 2.2e-3 there.
#   Judged by the envelope: the port's RMS error from the exact result <= 4x the float32 reference's
#   (measured ratios: W404 0.8 .. 1.7, I3 up to 2.3 over the taps, the statistics and the train-phase loss).
# - gradients: every batch puts a few pre-activations on opposite sides of a ReLU kink in the two
#   frameworks (W404 4-6 elements of ~2e7, I3 585 counting every tap) and max-pool windows hold
#   near-ties; one such element moves a whole kernel's gradient by up to 2.6e-2. The gradient is cut at
#   those elements (and at those within 2x the tap's measured difference of 0, not exactly 0 in both) in
#   both frameworks, at most 5e-3 of the tapped elements (measured: I3 6.3e-4, W404 3.1e-5):
#   W404 then 1.2e-5 (within 1e-4); I3 271 of 292 tensors need the envelope (up to 3.1e-3, RMS ratio <= 2.6).


def tolerance(kind: str, dtype: str) -> float:
    return TOLERANCES[(kind, dtype)]
