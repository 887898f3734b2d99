"""Inception v3 as the original builds it (`_inception_v3.py`, `imagenet_inception_v3.py`).

Not torchvision's or slim's Inception: every conv is `conv2d_BN` (conv without bias, glorot_uniform,
L2; BN with momentum 0.9997, the tf.layers default epsilon 1e-3, scale and center on; ReLU), the
average pools are TF 'SAME' pools that exclude the padding, the aux head sits after block 6c, and
both heads have 1001 outputs (class 0 is ImageNet's background class).

The original's output head calls `tf.layers.dropout(x, 0.8, training)`: `training` lands in the
`noise_shape` slot and the call's own `training` keeps its default False, so that dropout never
runs in any phase. The port reproduces what the original computed: no dropout (`Head.dropout` is
an identity, kept as a named layer so the audit compares its output).

Each branch of a block is a ModuleList of its layers in the original's creation order; the block's
forward wires them as the original does (parity/maps.py builds the weight map from that order).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepobs import losses
from deepobs.layers import (Conv2d, Conv2dSame, Dense, ResizeBilinearTF1, channels_last, tf_bn_momentum,
                            tf_glorot_uniform_)

NUM_CLASSES = 1001  # 1000 ImageNet classes and a background class 0
INPUT_SIZE = (299, 299)  # the data set yields 224x224 crops; the model resizes them
TF_BN_MOMENTUM = 0.9997
BN_EPSILON = 1e-3  # tf.layers.batch_normalization's default: conv2d_BN does not set it
LABEL_SMOOTHING = 0.1
AUX_LOSS_WEIGHT = 0.4


class ConvBN(nn.Module):
    """The original's `conv2d_BN`: conv (no bias) -> batch norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1, padding: str = "SAME"):
        super().__init__()
        if padding == "SAME":
            self.conv: nn.Conv2d = Conv2dSame(in_channels, out_channels, kernel_size, stride, bias=False)
        else:
            self.conv = Conv2d(in_channels, out_channels, kernel_size, stride, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPSILON, momentum=tf_bn_momentum(TF_BN_MOMENTUM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class AvgPoolSame(nn.Module):
    """TF average_pooling2d, 'SAME', stride 1, odd kernel: the mean over the window's *valid* inputs."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, 1, self.kernel_size // 2, count_include_pad=False)


def _max_pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, 2)  # 3x3, stride 2, 'VALID'


def _branch(*layers: nn.Module) -> nn.ModuleList:
    return nn.ModuleList(layers)


def _sequential(branch: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for layer in branch:
        x = layer(x)
    return x


class Stem(nn.Sequential):
    def __init__(self, in_channels: int = 3):
        super().__init__(
            ConvBN(in_channels, 32, 3, 2, "VALID"), ConvBN(32, 32, 3, 1, "VALID"), ConvBN(32, 64, 3, 1, "SAME"),
            _max_pool(), ConvBN(64, 80, 1, 1, "VALID"), ConvBN(80, 192, 3, 1, "VALID"), _max_pool())


class Block5(nn.Module):
    """`inception_block5` (35x35): variant a has 32 filters after the pool, b 64."""

    def __init__(self, in_channels: int, pool_filters: int):
        super().__init__()
        self.branch0 = _branch(ConvBN(in_channels, 64, 1))
        self.branch1 = _branch(AvgPoolSame(3), ConvBN(in_channels, pool_filters, 1))
        self.branch2 = _branch(ConvBN(in_channels, 48, 1), ConvBN(48, 64, 5))
        self.branch3 = _branch(ConvBN(in_channels, 64, 1), ConvBN(64, 96, 3), ConvBN(96, 96, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch0, self.branch1, self.branch2, self.branch3)
        return torch.cat([_sequential(branch, x) for branch in branches], 1)


class Block10(nn.Module):
    """`inception_block10`: the reduction 35x35 -> 17x17."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch0 = _branch(_max_pool())
        self.branch1 = _branch(ConvBN(in_channels, 384, 3, 2, "VALID"))
        self.branch2 = _branch(ConvBN(in_channels, 64, 1), ConvBN(64, 96, 3), ConvBN(96, 96, 3, 2, "VALID"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([_sequential(branch, x) for branch in (self.branch0, self.branch1, self.branch2)], 1)


class Block6(nn.Module):
    """`inception_block6` (17x17): factorised 7x7 convs with `filters` = 128 (a), 160 (b), 192 (c)."""

    def __init__(self, in_channels: int, filters: int):
        super().__init__()
        self.branch0 = _branch(ConvBN(in_channels, 192, 1))
        self.branch1 = _branch(AvgPoolSame(3), ConvBN(in_channels, 192, 1))
        self.branch2 = _branch(ConvBN(in_channels, filters, 1), ConvBN(filters, filters, (1, 7)),
                               ConvBN(filters, 192, (7, 1)))
        self.branch3 = _branch(ConvBN(in_channels, filters, 1), ConvBN(filters, filters, (7, 1)),
                               ConvBN(filters, filters, (1, 7)), ConvBN(filters, filters, (7, 1)),
                               ConvBN(filters, 192, (1, 7)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch0, self.branch1, self.branch2, self.branch3)
        return torch.cat([_sequential(branch, x) for branch in branches], 1)


class BlockD(nn.Module):
    """`inception_blockD`: the reduction 17x17 -> 8x8."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch0 = _branch(_max_pool())
        self.branch1 = _branch(ConvBN(in_channels, 192, 1), ConvBN(192, 192, (1, 7)), ConvBN(192, 192, (7, 1)),
                               ConvBN(192, 192, 3, 2, "VALID"))
        self.branch2 = _branch(ConvBN(in_channels, 192, 1), ConvBN(192, 320, 3, 2, "VALID"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([_sequential(branch, x) for branch in (self.branch0, self.branch1, self.branch2)], 1)


class Block7(nn.Module):
    """`inception_block7` (8x8): branches 1 and 2 end in a 1x3 and a 3x1 conv side by side."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch0 = _branch(ConvBN(in_channels, 320, 1))
        self.branch1 = _branch(ConvBN(in_channels, 384, 1), ConvBN(384, 384, (1, 3)), ConvBN(384, 384, (3, 1)))
        self.branch2 = _branch(ConvBN(in_channels, 448, 1), ConvBN(448, 384, 3), ConvBN(384, 384, (1, 3)),
                               ConvBN(384, 384, (3, 1)))
        self.branch3 = _branch(AvgPoolSame(3), ConvBN(in_channels, 192, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch0 = self.branch0[0](x)
        stem1 = self.branch1[0](x)
        branch1 = torch.cat([self.branch1[1](stem1), self.branch1[2](stem1)], 1)
        stem2 = self.branch2[1](self.branch2[0](x))
        branch2 = torch.cat([self.branch2[2](stem2), self.branch2[3](stem2)], 1)
        return torch.cat([branch0, branch1, branch2, _sequential(self.branch3, x)], 1)


class AuxHead(nn.Module):
    """The auxiliary classifier on block 6c's 17x17x768 output: 5x5/3 average pool (VALID) -> 1x1 -> 5x5 (VALID)."""

    def __init__(self, in_channels: int, num_outputs: int):
        super().__init__()
        self.layers = nn.Sequential(nn.AvgPool2d(5, 3), ConvBN(in_channels, 128, 1), ConvBN(128, 768, 5, 1, "VALID"))
        self.dense = Dense(768, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(torch.flatten(self.layers(x), 1))  # 1x1 spatial: NCHW and NHWC flatten agree


class Head(nn.Module):
    """8x8 average pool (VALID) -> the original's inactive dropout -> dense."""

    def __init__(self, in_channels: int, num_outputs: int):
        super().__init__()
        self.pool = nn.AvgPool2d(8, 1)
        self.dropout = nn.Identity()  # tf.layers.dropout(x, 0.8, training): never active, see the module docstring
        self.dense = Dense(in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(torch.flatten(self.dropout(self.pool(x)), 1))


class InceptionV3(nn.Module):
    """Returns (main logits, aux logits) in train mode, the main logits in eval mode.

    The original's graph computes the aux head in every phase; only the train phase's loss uses it,
    so only train mode returns it (the family's outputs, "logits" and "aux_logits")."""

    def __init__(self, num_outputs: int = NUM_CLASSES, in_channels: int = 3):
        super().__init__()
        self.resize = ResizeBilinearTF1(INPUT_SIZE)
        self.stem = Stem(in_channels)
        self.block5a, self.block5b_0, self.block5b_1 = Block5(192, 32), Block5(256, 64), Block5(288, 64)
        self.block10 = Block10(288)
        self.block6a, self.block6b_0 = Block6(768, 128), Block6(768, 160)
        self.block6b_1, self.block6c = Block6(768, 160), Block6(768, 192)
        self.aux_head = AuxHead(768, num_outputs)
        self.blockD = BlockD(768)
        self.block7_0, self.block7_1 = Block7(1280), Block7(2048)
        self.head = Head(2048, num_outputs)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                tf_glorot_uniform_(module.weight)  # tf.layers' default kernel initializer
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor):
        x = self.stem(channels_last(self.resize(x)))
        for block in (self.block5a, self.block5b_0, self.block5b_1, self.block10,
                      self.block6a, self.block6b_0, self.block6b_1, self.block6c):
            x = block(x)
        aux_logits = self.aux_head(x)
        for block in (self.blockD, self.block7_0, self.block7_1):
            x = block(x)
        logits = self.head(x)
        return (logits, aux_logits) if self.training else logits

    def l2_parameters(self) -> list[nn.Parameter]:
        """Every conv kernel (aux head included); the two dense layers have no regularizer."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Conv2d)]


def inception_v3_losses(outputs, labels: torch.Tensor) -> torch.Tensor:
    """Per-example losses of `imagenet_inception_v3`: label-smoothed softmax cross-entropy on the
    main logits, plus 0.4 x the same on the aux logits in the train phase only (`tf.cond(training, ...)`):
    the model returns the aux logits only in train mode, as the phase is its mode."""
    logits, aux_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
    main = losses.softmax_cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)
    if aux_logits is None:
        return main
    return main + AUX_LOSS_WEIGHT * losses.softmax_cross_entropy(aux_logits, labels, label_smoothing=LABEL_SMOOTHING)


def main_logits_accuracy(outputs, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy of the main logits (the original's `accuracy` ignores the aux head)."""
    return losses.accuracy(outputs[0] if isinstance(outputs, tuple) else outputs, labels)
