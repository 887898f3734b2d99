"""VGG16/19 (original `_vgg.py`): CIFAR-10/100 resized to 224x224, and ImageNet (1001 outputs)."""
from __future__ import annotations

import functools

import torch
from torch import nn

from deepobs.layers import (Conv2dSame, ConvReLU, Dense, Dropout, FlattenNCHW, MaxPool2dSame, ResizeBilinearTF1,
                            channels_last, tf1_glorot_normal_, tf_glorot_uniform_)

IMAGE_SIZE = (224, 224)  # the original resizes every input to this (ImageNet's 224 passes through)
POOL = "M"  # a 2x2/2 'SAME' max pool
CFGS: dict[int, tuple] = {
    16: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
    19: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL,
         512, 512, 512, 512, POOL),
}
FEATURE_CHW = (512, 7, 7)  # after five pools of 224
HIDDEN_UNITS = 4096
DROPOUT_RATE = 0.5  # tf.layers.dropout(rate=0.5): elementwise


def make_layers(cfg: tuple, in_channels: int = 3) -> nn.Sequential:
    """One entry per table item: Sequential(3x3 'SAME' conv with bias, ReLU), or a max pool."""
    layers: list[nn.Module] = []
    for item in cfg:
        if item == POOL:
            layers.append(MaxPool2dSame(2, 2))
        else:
            layers.append(ConvReLU(Conv2dSame(in_channels, item, 3)))
            in_channels = item
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, variant: int, num_outputs: int, in_channels: int = 3):
        super().__init__()
        self.resize = ResizeBilinearTF1(IMAGE_SIZE)
        self.features = make_layers(CFGS[variant], in_channels)
        self.flatten = FlattenNCHW()
        features = FEATURE_CHW[0] * FEATURE_CHW[1] * FEATURE_CHW[2]
        # skip_init: torch's default draw of the 124M dense weights (a third of the build time) would be
        # overwritten below anyway.
        dense = functools.partial(torch.nn.utils.skip_init, Dense)
        self.classifier = nn.Sequential(
            nn.Sequential(dense(features, HIDDEN_UNITS), nn.ReLU()),
            Dropout(DROPOUT_RATE),
            nn.Sequential(dense(HIDDEN_UNITS, HIDDEN_UNITS), nn.ReLU()),
            Dropout(DROPOUT_RATE),
            dense(HIDDEN_UNITS, num_outputs),
        )
        for conv in self._convs():
            tf1_glorot_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        for dense in self._denses():  # tf.layers.dense defaults: glorot_uniform kernel, zero bias
            tf_glorot_uniform_(dense.weight)
            nn.init.zeros_(dense.bias)
        self.to(memory_format=torch.channels_last)

    def _convs(self) -> list[nn.Conv2d]:
        return [m for m in self.features.modules() if isinstance(m, nn.Conv2d)]

    def _denses(self) -> list[nn.Linear]:
        return [m for m in self.classifier.modules() if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(channels_last(self.resize(x)))
        return self.classifier(self.flatten(x))

    def l2_parameters(self) -> list[nn.Parameter]:
        # The original regularises the conv kernels only: its dense layers have no regularizer.
        return [conv.weight for conv in self._convs()]
