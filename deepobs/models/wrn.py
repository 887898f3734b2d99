"""Wide Residual Network (original `_wrn.py`): WRN-16-4 for SVHN, WRN-40-4 for CIFAR-100."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepobs.layers import Conv2dSame, Dense, MaxPool2dSame, channels_last, tf_bn_momentum, tf_glorot_uniform_

TF_BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
GROUP_STRIDES = (1, 2, 2)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> Conv2dSame:
    return Conv2dSame(in_channels, out_channels, kernel, stride, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=tf_bn_momentum(TF_BN_MOMENTUM))


class FirstUnit(nn.Module):
    """First unit of a group: the shortcut is taken from the pre-activated input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = _bn(in_channels)
        if in_channels != out_channels:
            self.shortcut: nn.Module = _conv(in_channels, out_channels, 1, stride)
        elif stride != 1:
            self.shortcut = MaxPool2dSame(stride, stride)  # VALID == SAME here: size divisible by stride
        else:
            self.shortcut = nn.Identity()
        self.conv1 = _conv(in_channels, out_channels, 3, stride)
        self.bn2 = _bn(out_channels)
        self.conv2 = _conv(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        residual = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return residual + self.shortcut(activated)


class Unit(nn.Module):
    """Later units of a group: identity shortcut from the raw input."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn1 = _bn(channels)
        self.conv1 = _conv(channels, channels, 3)
        self.bn2 = _bn(channels)
        self.conv2 = _conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))


class WideResNet(nn.Module):
    def __init__(self, num_residual_units: int, widening_factor: int, num_outputs: int, in_channels: int = 3):
        super().__init__()
        filters = [16, 16 * widening_factor, 32 * widening_factor, 64 * widening_factor]
        self.stem = _conv(in_channels, filters[0], 3)
        self.groups = nn.ModuleList()
        for group, stride in enumerate(GROUP_STRIDES):
            units = [FirstUnit(filters[group], filters[group + 1], stride)]
            units += [Unit(filters[group + 1]) for _ in range(1, num_residual_units)]
            self.groups.append(nn.Sequential(*units))
        self.bn_last = _bn(filters[-1])
        self.dense = Dense(filters[-1], num_outputs)
        for conv in self._convs():
            tf_glorot_uniform_(conv.weight)
        tf_glorot_uniform_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)
        self.to(memory_format=torch.channels_last)

    def _convs(self) -> list[nn.Conv2d]:
        return [m for m in self.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(channels_last(x))
        for group in self.groups:
            x = group(x)
        x = F.relu(self.bn_last(x)).mean(dim=(2, 3))
        return self.dense(x)

    def l2_parameters(self) -> list[nn.Parameter]:
        return [conv.weight for conv in self._convs()] + [self.dense.weight]
