"""Noisy quadratic (original `_quadratic.py`, `quadratic_deep.py`): 0.5 (theta - x)^T Q (theta - x) per example.

quadratic_deep's Hessian Q = R^T diag(lambda) R: lambda = 90 draws U(0, 1) then 10 draws U(30, 60),
R = the original's random_rotation(100) (Diaconis-Shahshahani, returns -R), all from one
np.random.RandomState(42) that the original keeps at module level. So its n-th instance in one
process gets the n-th Hessian of that stream; `deep_hessian(instance)` gives it, instance 0 (what one
run of the original, one problem per process, used) by default. Q is kept in float64 and cast with
the model, as TF casts the float64 NumPy array to the graph's dtype.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

DIM = 100


def _rotation(dim: int, rng: np.random.RandomState) -> np.ndarray:
    """Haar-random rotation by the subgroup algorithm: a 2-D rotation, then one Householder step per size."""
    angle = 2 * np.pi * rng.uniform()
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    for size in range(2, dim):
        v = rng.normal(size=(size + 1, 1))
        v = v / np.sqrt(v.T @ v)
        e = np.zeros((size + 1, 1))
        e[0, 0] = 1.0
        x = (e - v) / np.sqrt((e - v).T @ (e - v))
        embedded = np.block([[np.ones((1, 1)), np.zeros((1, size))], [np.zeros((size, 1)), rotation]])
        rotation = embedded - 2 * np.outer(x, x.T @ embedded)
    return -rotation


def _draw_deep_hessian(rng: np.random.RandomState) -> np.ndarray:
    eigenvalues = np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)))
    rotation = _rotation(DIM, rng)
    return rotation.T @ (np.diag(eigenvalues) @ rotation)


def deep_hessian(instance: int = 0) -> np.ndarray:
    """The Hessian the original's `instance`-th quadratic_deep of one process draws (float64)."""
    rng = np.random.RandomState(42)
    for _ in range(instance):
        _draw_deep_hessian(rng)
    return _draw_deep_hessian(rng)


class Quadratic(nn.Module):
    """theta (1, dim), initialised to 1.0; forward(x [B, dim]) returns the per-example losses [B]."""

    def __init__(self, hessian: np.ndarray):
        super().__init__()
        self.register_buffer("hessian", torch.from_numpy(np.asarray(hessian, dtype=np.float64)))
        self.theta = nn.Parameter(torch.ones(1, self.hessian.shape[0]))
        self.hessian_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.hessian_out(self.hessian)
        difference = self.theta - x
        # The diagonal of the [B, B] product the original forms: each example's quadratic form.
        return 0.5 * ((difference @ q) * difference).sum(1)

    def l2_parameters(self) -> list[nn.Parameter]:
        return []
