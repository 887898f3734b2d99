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
    terms = [p.pow(2).sum() for p in parameters]
    if not terms:
        return 0.0
    return 0.5 * weight_decay * torch.stack(terms).sum()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of argmax(logits) == label over every labelled position (examples; characters of sequences)."""
    return (logits.argmax(dim=-1) == labels).to(logits.dtype).mean()
