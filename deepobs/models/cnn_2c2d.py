"""2c2d: two conv layers, two dense layers (original `_2c2d.py`, MNIST / Fashion-MNIST)."""
from __future__ import annotations

import torch
from torch import nn

from deepobs.layers import (Conv2dSame, Dense, FlattenNCHW, MaxPoolReLU, channels_last, conv_pool_relu_blocked,
                            runs_blocked, tf_truncated_normal_)


class TwoC2D(nn.Module):
    # Its evaluation runs eager on oneDNN's blocked layout (layers.conv_pool_relu_blocked): 17.7 ms at batch
    # 128 against 19.7 compiled (NHWC); the runner does not compile it while deepobs.native is on.
    evaluates_blocked = True

    def __init__(self, num_outputs: int = 10, in_channels: int = 1):
        super().__init__()
        # conv -> max pool -> ReLU for the original's conv -> ReLU -> max pool, as in 3c3d (cnn_3c3d.py).
        self.conv1 = nn.Sequential(Conv2dSame(in_channels, 32, 5))
        self.pool1 = MaxPoolReLU(2, 2)
        self.conv2 = nn.Sequential(Conv2dSame(32, 64, 5))
        self.pool2 = MaxPoolReLU(2, 2)
        self.flatten = FlattenNCHW()
        self.fc1 = nn.Sequential(Dense(7 * 7 * 64, 1024), nn.ReLU())
        self.fc2 = Dense(1024, num_outputs)
        for layer in (self.conv1[0], self.conv2[0], self.fc1[0], self.fc2):
            tf_truncated_normal_(layer.weight, stddev=0.05)
            nn.init.constant_(layer.bias, 0.05)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages = [(self.conv1, self.pool1), (self.conv2, self.pool2)]
        if runs_blocked(stages, x):
            x = conv_pool_relu_blocked(stages, x)
        else:
            x = self.pool1(self.conv1(channels_last(x)))
            x = self.pool2(self.conv2(x))
        return self.fc2(self.fc1(self.flatten(x)))

    def l2_parameters(self) -> list[nn.Parameter]:
        return []
