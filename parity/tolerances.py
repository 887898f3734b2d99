"""Declared tolerances, one table: (check kind, dtype) -> max relative error allowed.

Relative error = max |port - reference| / max |reference| over one tensor. Beside each value:
the worst error measured for the correct port over all 11 registered problems (seed 0, batch 2, this
machine, torch 2.14.1 / TF 2.21.0). Planted porting slips measure 1e-4 .. 1 (tests/test_planted_bugs.py).

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
    ("forward", "float64"): 1e-10,  # measured 3.4e-15
    ("loss", "float64"): 1e-10,  # measured 1.9e-15
    ("gradients", "float64"): 1e-10,  # measured 7.6e-15
    ("train_mode", "float64"): 1e-10,  # measured 5.4e-15
    ("step", "float64"): 1e-10,  # measured 4.3e-14 with the reference's gradients, 8.6e-11 with the port's (Adam)
    # float32: the frameworks' kernels sum in different orders.
    ("forward", "float32"): 1e-5,  # measured 1.6e-6
    ("loss", "float32"): 1e-5,  # measured 4.4e-7
    ("gradients", "float32"): 1e-4,  # measured 6.4e-6 (kink-flip batches skipped)
    ("train_mode", "float32"): 1e-5,  # measured 3.0e-6
    ("step", "float32"): 1e-4,  # measured 3.0e-5 with the reference's gradients, 9.7e-5 with the port's
}


def tolerance(kind: str, dtype: str) -> float:
    return TOLERANCES[(kind, dtype)]
