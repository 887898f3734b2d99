"""Noisy 2-D test functions (original `two_d_rosenbrock.py`, `two_d_beale.py`, `two_d_branin.py`).

Loss per example: f(u, v) + u * x + v * y, with (x, y) one `two_d` point; u, v are scalars starting
at the original's point (its variables "weight" and "bias").

The training step is all per-op overhead (two parameters; a scalar torch op costs 3-8 us here). With gradients
on the CPU the loss runs as one autograd node (`_NoisyLoss`) that evaluates f and its partial derivatives, from
their formulas (`FUNCTIONS`), on NumPy scalars of the parameters' dtype: the same IEEE operations in the same
order as torch's scalar ops, so the loss has the bits of the plain expression (tested, all three functions),
and four tensor ops per example batch. The gradient is another summation order than autograd's chain (tested
against it in float64; the audit compares it with TF's in both dtypes). A create_graph backward spells it in
differentiable torch ops of u and v, so Hessian-vector products still work.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn


# Squares and cubes as products: torch's pow computes x**2 and x**3 so (x * x, x * x * x), NumPy's scalar ** does
# not, and the formulas run on both (module doc).
def _square(x):
    return x * x


def _cube(x):
    return x * x * x


def _through_torch(op):
    """op on a tensor or, through torch's own kernel, on a NumPy scalar (NumPy's float32 cos differs from torch's in
    the last bit for 1 in 5 values)."""
    return lambda x: op(x) if isinstance(x, torch.Tensor) else type(x)(op(torch.tensor(x)).item())


_cos, _sin = _through_torch(torch.cos), _through_torch(torch.sin)


def rosenbrock(u, v):
    return _square(1 - u) + 100 * _square(v - _square(u))


def rosenbrock_gradient(u, v):
    inner = v - _square(u)
    return -2 * (1 - u) - 400 * u * inner, 200 * inner


def beale(u, v):
    return _square(1.5 - u + u * v) + _square(2.25 - u + u * _square(v)) + _square(2.625 - u + u * _cube(v))


def beale_gradient(u, v):
    r1, r2, r3 = 1.5 - u + u * v, 2.25 - u + u * _square(v), 2.625 - u + u * _cube(v)
    du = 2 * r1 * (v - 1) + 2 * r2 * (_square(v) - 1) + 2 * r3 * (_cube(v) - 1)
    dv = 2 * r1 * u + 4 * r2 * u * v + 6 * r3 * u * _square(v)
    return du, dv


BRANIN = dict(a=1.0, b=5.1 / (4.0 * math.pi**2), c=5 / math.pi, r=6.0, s=10.0, t=1 / (8.0 * math.pi))


def branin(u, v):
    a, b, c, r, s, t = BRANIN.values()
    return a * _square(v - b * _square(u) + c * u - r) + s * (1 - t) * _cos(u) + s


def branin_gradient(u, v):
    a, b, c, r, s, t = BRANIN.values()
    inner = v - b * _square(u) + c * u - r
    return 2 * a * inner * (c - 2 * b * u) - s * (1 - t) * _sin(u), 2 * a * inner


class TestFunction(NamedTuple):
    value: Callable
    gradient: Callable  # (u, v) -> (df/du, df/dv)
    start: tuple[float, float]


FUNCTIONS = {"rosenbrock": TestFunction(rosenbrock, rosenbrock_gradient, (-0.5, 1.5)),
             "beale": TestFunction(beale, beale_gradient, (-4.5, 4.5)),
             "branin": TestFunction(branin, branin_gradient, (2.5, 12.5))}


NUMPY_SCALARS = {torch.float32: np.float32, torch.float64: np.float64}


class _NoisyLoss(torch.autograd.Function):
    """f(u, v) + u * x + v * y per example, f and its gradient on NumPy scalars (see the module's doc)."""

    @staticmethod
    def forward(ctx, u, v, x, y, function: TestFunction):
        scalar = NUMPY_SCALARS[u.dtype]
        u_value, v_value = scalar(u.item()), scalar(v.item())
        with np.errstate(all="ignore"):  # overflow gives inf and NaN silently, as torch's ops do
            value, ctx.partials = function.value(u_value, v_value), function.gradient(u_value, v_value)
        ctx.save_for_backward(u, v, x, y)
        ctx.function = function
        # (f + u * x) + v * y, as the plain expression adds them: f is a float32 (or float64) value, exact as a scalar
        return (u * x).add_(float(value)).add_(v * y)

    @staticmethod
    def backward(ctx, grad):
        u, v, x, y = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: f's gradient in differentiable ops of u and v
            du, dv = ctx.function.gradient(u, v)
        else:
            du, dv = (float(partial) for partial in ctx.partials)
        total = grad.sum()
        grad_u = total * du + (grad * x).sum() if ctx.needs_input_grad[0] else None
        grad_v = total * dv + (grad * y).sum() if ctx.needs_input_grad[1] else None
        grad_x = grad * u if ctx.needs_input_grad[2] else None
        grad_y = grad * v if ctx.needs_input_grad[3] else None
        return grad_u, grad_v, grad_x, grad_y, None


class TwoD(nn.Module):
    def __init__(self, function: str):
        super().__init__()
        self.function = FUNCTIONS[function]
        u, v = self.function.start
        self.u = nn.Parameter(torch.tensor(u))
        self.v = nn.Parameter(torch.tensor(v))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.u.device.type == "cpu" and self.u.dtype in NUMPY_SCALARS:
            return _NoisyLoss.apply(self.u, self.v, x, y, self.function)
        return self.function.value(self.u, self.v) + self.u * x + self.v * y

    def l2_parameters(self) -> list[nn.Parameter]:
        return []
