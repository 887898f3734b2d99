"""Optimizers whose update rule is the original's TF1 `tf.compat.v1.train` formula.

SGD and momentum: `torch.optim.SGD` (dampening 0, no Nesterov) is exactly TF1's
GradientDescentOptimizer / MomentumOptimizer, since TF1's accumulator starts at zero.
Adam: `torch.optim.Adam` adds epsilon to the bias-corrected sqrt(v_hat); TF1 adds it to
the uncorrected sqrt(v) (its "epsilon hat"). `TF1Adam` follows TF1's ApplyAdam kernel:
    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m += (g - m) * (1 - beta1);  v += (g^2 - v) * (1 - beta2)
    theta -= lr_t * m / (sqrt(v) + epsilon)
with beta1^t and beta2^t kept as running products in the parameter's dtype, as TF1 keeps
its beta*_power variables (in float32, 1 - beta2^t loses ~1e-4 relative at t=2: the original
has that error, so the port reproduces it).
"""
from __future__ import annotations

import torch


class TF1Adam(torch.optim.Optimizer):
    """Adam with TF1's epsilon placement and arithmetic (tf.compat.v1.train.AdamOptimizer)."""

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
                    state["beta1_power"] = torch.ones((), dtype=param.dtype)
                    state["beta2_power"] = torch.ones((), dtype=param.dtype)
                # Hyperparameters in the parameter's dtype, as TF1 casts them before its kernel.
                lr, b1, b2, eps = (torch.tensor(v, dtype=param.dtype) for v in (group["lr"], beta1, beta2, group["eps"]))
                state["step"] += 1
                state["beta1_power"].mul_(b1)
                state["beta2_power"].mul_(b2)
                lr_t = lr * torch.sqrt(1 - state["beta2_power"]) / (1 - state["beta1_power"])
                exp_avg, exp_avg_sq, grad = state["exp_avg"], state["exp_avg_sq"], param.grad
                exp_avg.add_((grad - exp_avg) * (1 - b1))
                exp_avg_sq.add_((grad * grad - exp_avg_sq) * (1 - b2))
                param.sub_(exp_avg * lr_t / (exp_avg_sq.sqrt() + eps))
        return loss


class SGD(torch.optim.SGD):
    """torch.optim.SGD on torch's fused CPU kernel (one pass over parameter, gradient and momentum; the same bits
    as the for-loop update on whole vectors, within 1 ulp on the scalar tail of a size that is no multiple of the
    vector width, tests/test_port.py) for the steps where that is safe, the for-loop update otherwise.

    torch 2.14.1's fused CPU kernel pairs parameter, gradient and momentum elements by memory order: a gradient
    in another memory format than its channels_last parameter (as the audit sets them) would update the wrong
    elements (relative error 1.7 in the audit's step checks). So a step is fused only when every parameter is
    a CPU floating tensor whose gradient and momentum buffer have its strides, as autograd's gradients do.
    mnist_vae's training step x1.01 [1.00, 1.02] on the AMD machine (docs/benchmarks.md).

    A fused step calls the kernel directly, one call per group, instead of through torch.optim.SGD.step's
    bookkeeping (lists rebuilt, tensors grouped by device and dtype, state written back): 77 -> 55 us a step for
    the 2-D functions' two scalars, 947 -> 889 us for the MLP's 1.3M parameters (AMD EPYC, AVX2, interleaved;
    docs/benchmarks.md). The same kernel with the same arguments, so the same bits; step hooks run as for any
    optimizer."""

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plans = [self._fused_plan(group) for group in self.param_groups]
        if any(plan is None for plan in plans):
            for group, plan in zip(self.param_groups, plans):
                group["fused"] = plan is not None or None
            super().step()  # the for-loop update where a group cannot fuse (the kernel for those that can)
            return loss
        with torch.no_grad():
            for group, (params, grads, buffers) in zip(self.param_groups, plans):
                self._fused_step(group, params, grads, buffers)
        return loss

    def _fused_plan(self, group) -> tuple[list, list, list] | None:
        """(params, gradients, momentum buffers) of the group's parameters with a gradient, or None where the
        fused kernel would not give the for-loop update (memory orders, dtypes, devices, sparse gradients)."""
        params = [param for param in group["params"] if param.grad is not None]
        buffers = ([self.state[param].get("momentum_buffer") for param in params] if group["momentum"] != 0
                   else [None] * len(params))
        if (group["differentiable"] or len({(param.dtype, param.device) for param in params}) > 1
                or getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None):
            return None
        # torch's fused step creates every momentum buffer on its first step, or none
        if not (all(b is None for b in buffers) or all(b is not None for b in buffers)):
            return None
        if not all(map(self._pairs_by_memory_order, params, buffers)):
            return None
        return params, [param.grad for param in params], buffers

    def _fused_step(self, group, params: list, grads: list, buffers: list) -> None:
        if not params:
            return
        momentum = group["momentum"]
        first_step = momentum != 0 and buffers[0] is None
        if first_step:
            buffers = [torch.empty_like(grad) for grad in grads]
            for param, buffer in zip(params, buffers):
                self.state[param]["momentum_buffer"] = buffer
        torch._fused_sgd_(params, grads, buffers if momentum != 0 else [], weight_decay=group["weight_decay"],
                          momentum=momentum, lr=group["lr"], dampening=group["dampening"],
                          nesterov=group["nesterov"], maximize=group["maximize"], is_first_step=first_step,
                          grad_scale=None, found_inf=None)

    @staticmethod
    def _pairs_by_memory_order(param: torch.Tensor, buffer: torch.Tensor | None) -> bool:
        return (param.device.type == "cpu" and param.is_floating_point() and not param.grad.is_sparse
                and param.grad.stride() == param.stride() and (buffer is None or buffer.stride() == param.stride()))


def sgd(params, lr: float) -> torch.optim.Optimizer:
    return SGD(params, lr=lr)


def momentum(params, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    return SGD(params, lr=lr, momentum=momentum)


def adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    return TF1Adam(params, lr=lr, betas=betas, eps=eps)


OPTIMIZERS = {"sgd": sgd, "momentum": momentum, "adam": adam}
