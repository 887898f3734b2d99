"""Losses as the original test problems define them."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-example cross-entropy (softmax_cross_entropy_with_logits_v2 on one-hot labels).

    With label_smoothing s, the target is (1 - s) * one_hot + s / num_classes, as in
    tf.losses.softmax_cross_entropy(label_smoothing=s).
    """
    return F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)


def l2_regularizer(parameters: Iterable[torch.Tensor], weight_decay: float) -> torch.Tensor | float:
    """Sum of tf.contrib.layers.l2_regularizer(wd) terms: wd/2 * ||W||^2 per regularised kernel; 0.0 without any
    (the squares are not computed then: the MLP's would be a pass over its 1.3M weights every training step)."""
    if weight_decay == 0.0:
        return 0.0
    parameters = tuple(parameters)
    if not parameters:
        return 0.0
    return 0.5 * weight_decay * _SumOfSquares.apply(*parameters)


def _in_memory_order(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's elements as one vector in the order they lie in memory: a view where the strides allow it
    (contiguous and channels_last kernels alike), else a copy. Sums of squares do not depend on the order."""
    by_stride = tensor.permute(sorted(range(tensor.dim()), key=lambda dim: -tensor.stride(dim)))
    return by_stride.reshape(-1)


class _SumOfSquares(torch.autograd.Function):
    """sum over the tensors of sum(p ** 2), each as a dot product of the tensor with itself (one pass, no squared
    copy), and the gradient 2 * grad * p: the L2 term of WRN-40-4's 9.0M kernels forward and backward 8.7 ->
    3.6 ms (docs/benchmarks.md). Its backward is made of differentiable ops, so create_graph=True works."""

    @staticmethod
    def forward(ctx, *parameters: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(*parameters)
        flat = [_in_memory_order(p) for p in parameters]
        return torch.stack([torch.dot(vector, vector) for vector in flat]).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return tuple(p * (2 * grad) for p in ctx.saved_tensors)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of argmax(logits) == label over every labelled position (examples; characters of sequences)."""
    return (logits.argmax(dim=-1) == labels).to(logits.dtype).mean()
