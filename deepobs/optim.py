"""Optimizers whose update rule is the original's TF1 `tf.compat.v1.train` formula.

SGD and momentum: `torch.optim.SGD` (dampening 0, no Nesterov) is exactly TF1's
GradientDescentOptimizer / MomentumOptimizer, since TF1's accumulator starts at zero.
Adam: `torch.optim.Adam` adds epsilon to the bias-corrected sqrt(v_hat); TF1 adds it to
the uncorrected sqrt(v) (its "epsilon hat"). `TF1Adam` follows TF1:
    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    theta -= lr_t * m / (sqrt(v) + epsilon)
"""
from __future__ import annotations

import math

import torch


class TF1Adam(torch.optim.Optimizer):
    """Adam with TF1's epsilon placement (tf.compat.v1.train.AdamOptimizer)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if lr < 0.0 or eps < 0.0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid TF1Adam hyperparameters: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                step = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(param.grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(param.grad, param.grad, value=1.0 - beta2)
                step_size = group["lr"] * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
                param.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size)
        return loss


def sgd(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr)


def momentum(params, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    return TF1Adam(params, lr=lr, betas=betas, eps=eps)


OPTIMIZERS = {"sgd": sgd, "momentum": momentum, "adam": adam}
