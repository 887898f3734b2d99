"""All-CNN-C (original `cifar100_allcnnc.py`)."""
from __future__ import annotations

import torch
from torch import nn

from deepobs.layers import (Conv2d, Conv2dSame, ConvReLU, Dropout, SequentialFusingDropout, channels_last,
                            runs_mirrored, tf1_glorot_normal_)

# (out_channels, kernel, stride, tf_padding) of the nine convs; each is followed by a ReLU,
# the last (the 1x1 conv to the class scores) included.
CONV_CONFIG = (
    (96, 3, 1, "same"), (96, 3, 1, "same"), (96, 3, 2, "same"),
    (192, 3, 1, "same"), (192, 3, 1, "same"), (192, 3, 2, "same"),
    (192, 3, 1, "valid"), (192, 1, 1, "same"),
)
DROPOUT_BEFORE = {0: 0.2, 3: 0.5, 6: 0.5}  # conv index -> elementwise dropout rate on its input


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, padding: str) -> nn.Conv2d:
    if padding == "valid":
        return Conv2d(in_channels, out_channels, kernel, stride)
    return Conv2dSame(in_channels, out_channels, kernel, stride)


class AllCNNC(nn.Module):
    def __init__(self, num_outputs: int = 100, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        config = CONV_CONFIG + ((num_outputs, 1, 1, "same"),)
        for index, (out_channels, kernel, stride, padding) in enumerate(config):
            if index in DROPOUT_BEFORE:
                layers.append(Dropout(DROPOUT_BEFORE[index]))
            layers.append(ConvReLU(_conv(in_channels, out_channels, kernel, stride, padding)))
            in_channels = out_channels
        self.features = SequentialFusingDropout(*layers)
        for conv in self._convs():
            tf1_glorot_normal_(conv.weight)
            nn.init.constant_(conv.bias, 0.1)
        self.to(memory_format=torch.channels_last)

    def _convs(self) -> list[nn.Conv2d]:
        return [m for m in self.features.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Convolutions, elementwise layers, then the mean over the positions: run on the mirrored image (kernels
        # flipped), the stride-2 convs' 'SAME' padding, (0, 1) per axis, becomes (1, 0), which the convolution
        # pads itself, instead of a copy of its input (layers.runs_mirrored; eval x1.025 here, docs/benchmarks.md).
        if runs_mirrored(self.features, x, (ConvReLU, Dropout)):
            return self.features(channels_last(x.flip(2, 3)), mirrored=True).mean(dim=(2, 3))
        return self.features(channels_last(x)).mean(dim=(2, 3))

    def l2_parameters(self) -> list[nn.Parameter]:
        return [conv.weight for conv in self._convs()]
