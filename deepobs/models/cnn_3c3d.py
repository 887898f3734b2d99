"""3c3d: three conv layers, three dense layers (original `_3c3d.py`, CIFAR-10/100, SVHN)."""
from __future__ import annotations

import torch
from torch import nn

from deepobs.layers import (Conv2d, Conv2dSame, Dense, FlattenNCHW, MaxPoolReLU, channels_last, tf1_glorot_normal_,
                            tf_glorot_uniform_)


class ThreeC3D(nn.Module):
    def __init__(self, num_outputs: int = 10, in_channels: int = 3):
        super().__init__()
        # The original's conv -> ReLU -> max pool, run as conv -> max pool -> ReLU (docs/problems.md: equal
        # values and gradients, ties included; the ReLU's two passes then touch a quarter of the elements).
        self.conv1 = nn.Sequential(Conv2d(in_channels, 64, 5))  # VALID
        self.pool1 = MaxPoolReLU(3, 2)
        self.conv2 = nn.Sequential(Conv2d(64, 96, 3))  # VALID
        self.pool2 = MaxPoolReLU(3, 2)
        self.conv3 = nn.Sequential(Conv2dSame(96, 128, 3))
        self.pool3 = MaxPoolReLU(3, 2)
        self.flatten = FlattenNCHW()
        self.fc1 = nn.Sequential(Dense(3 * 3 * 128, 512), nn.ReLU())
        self.fc2 = nn.Sequential(Dense(512, 256), nn.ReLU())
        self.fc3 = Dense(256, num_outputs)
        for conv in self._convs():
            tf1_glorot_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        for dense in self._denses():
            tf_glorot_uniform_(dense.weight)
            nn.init.zeros_(dense.bias)
        self.to(memory_format=torch.channels_last)

    def _convs(self) -> list[nn.Conv2d]:
        return [self.conv1[0], self.conv2[0], self.conv3[0]]

    def _denses(self) -> list[nn.Linear]:
        return [self.fc1[0], self.fc2[0], self.fc3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(channels_last(x)))
        x = self.pool2(self.conv2(x))
        x = self.pool3(self.conv3(x))
        return self.fc3(self.fc2(self.fc1(self.flatten(x))))

    def l2_parameters(self) -> list[nn.Parameter]:
        # The original regularises every conv and dense kernel, never a bias.
        return [layer.weight for layer in self._convs() + self._denses()]
