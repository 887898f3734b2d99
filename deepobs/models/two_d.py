"""Noisy 2-D test functions (original `two_d_rosenbrock.py`, `two_d_beale.py`, `two_d_branin.py`).

Loss per example: f(u, v) + u * x + v * y, with (x, y) one `two_d` point; u, v are scalars starting
at the original's point (its variables "weight" and "bias").
"""
from __future__ import annotations

import math

import torch
from torch import nn


def rosenbrock(u, v):
    return (1 - u)**2 + 100 * (v - u**2)**2


def beale(u, v):
    return (1.5 - u + u * v)**2 + (2.25 - u + u * v**2)**2 + (2.625 - u + u * v**3)**2


def branin(u, v):
    a, b, c, r, s, t = 1.0, 5.1 / (4.0 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8.0 * math.pi)
    return a * (v - b * u**2 + c * u - r)**2 + s * (1 - t) * torch.cos(u) + s


FUNCTIONS = {"rosenbrock": (rosenbrock, (-0.5, 1.5)), "beale": (beale, (-4.5, 4.5)),
             "branin": (branin, (2.5, 12.5))}


class TwoD(nn.Module):
    def __init__(self, function: str):
        super().__init__()
        self.function, (u, v) = FUNCTIONS[function]
        self.u = nn.Parameter(torch.tensor(u))
        self.v = nn.Parameter(torch.tensor(v))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.function(self.u, self.v) + self.u * x + self.v * y

    def l2_parameters(self) -> list[nn.Parameter]:
        return []
