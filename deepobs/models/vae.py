"""VAE (original `_vae.py`; mnist_vae, fmnist_vae): conv encoder to an 8-d latent, sampled z, deconv decoder.

Default TF initialisers everywhere (glorot_uniform kernels, zero biases), leaky ReLU max(x, 0.3x)
on the encoder convs and the two small decoder dense layers, ReLU on the three transposed convs,
elementwise dropout 0.2 after the three encoder convs and the first two transposed convs, sigmoid
output. forward returns (reconstruction [B, 28, 28], mean [B, 8], std_dev [B, 8]); std_dev is
0.5 * dense (it is log sigma). epsilon ~ N(0, 1) is drawn in every phase, as in the original.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepobs.layers import (Conv2dSame, ConvTranspose2dSame, Dense, Dropout, FlattenNHWC, SequentialFusingDropout,
                            channels_last, tf_glorot_uniform_)

N_LATENT = 8
DROPOUT = 0.2
LRELU_ALPHA = 0.3


class _MaxOfXAndScaledX(torch.autograd.Function):
    """max(x, 0.3 x) with TF's gradient: TF's Maximum sends the whole gradient to its first argument where
    x >= 0.3 x, i.e. x >= 0, ties at x == 0 included (slope 1 there). torch.maximum splits a tie (0.65) and
    F.leaky_relu's backward takes the slope of x < 0 (0.3); at initialisation, with zero biases, every
    all-zero input patch puts a pre-activation exactly at 0 (MNIST's blank borders)."""

    @staticmethod
    def forward(ctx, x):
        # The input is kept, not the output: as with torch.maximum, the output may then be changed in place
        # (F.dropout(inplace=True)).
        ctx.save_for_backward(x)
        return F.leaky_relu(x, LRELU_ALPHA)  # x > 0 ? x : 0.3 x, the same values as max(x, 0.3 x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where(x >= 0, grad, grad * LRELU_ALPHA)  # NaN: the 0.3 slope, as TF's


class LeakyReLU(nn.Module):
    """The original's lrelu: max(x, 0.3 x), with TF's gradient at x == 0 (see _MaxOfXAndScaledX)."""

    fused_activation = ("leaky_relu", LRELU_ALPHA)  # with a Dropout after it (SequentialFusingDropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MaxOfXAndScaledX.apply(x)


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x


class Reparameterize(nn.Module):
    """z = mean + epsilon * exp(std_dev), epsilon ~ N(0, I) drawn at every call (every phase)."""

    def forward(self, mean: torch.Tensor, std_dev: torch.Tensor) -> torch.Tensor:
        epsilon = torch.randn_like(mean)
        return mean + epsilon * torch.exp(std_dev)


class VAE(nn.Module):
    def __init__(self, n_latent: int = N_LATENT):
        super().__init__()
        self.encoder = SequentialFusingDropout(
            nn.Sequential(Conv2dSame(1, 64, 4, 2), LeakyReLU()), Dropout(DROPOUT),
            nn.Sequential(Conv2dSame(64, 64, 4, 2), LeakyReLU()), Dropout(DROPOUT),
            nn.Sequential(Conv2dSame(64, 64, 4, 1), LeakyReLU()), Dropout(DROPOUT),  # pads 1 before, 2 after
            FlattenNHWC())
        self.mean = Dense(7 * 7 * 64, n_latent)
        self.std_dev = nn.Sequential(Dense(7 * 7 * 64, n_latent), Scale(0.5))
        self.sample = Reparameterize()
        self.decoder_dense = nn.Sequential(
            nn.Sequential(Dense(n_latent, 24), LeakyReLU()),
            nn.Sequential(Dense(24, 49), LeakyReLU()))
        self.decoder_convs = SequentialFusingDropout(
            nn.Sequential(ConvTranspose2dSame(1, 64, 4, 2), nn.ReLU()), Dropout(DROPOUT),  # 7 -> 14
            nn.Sequential(ConvTranspose2dSame(64, 64, 4, 1), nn.ReLU()), Dropout(DROPOUT),  # 14 -> 14
            nn.Sequential(ConvTranspose2dSame(64, 64, 4, 1), nn.ReLU()),  # no dropout after the last one
            FlattenNHWC())
        self.output = nn.Sequential(Dense(14 * 14 * 64, 28 * 28), nn.Sigmoid())
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                tf_glorot_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # Activations in channels_last (oneDNN's NHWC kernels, flattened in TF's order without a copy).
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor):
        x = self.encoder(channels_last(images.reshape(-1, 1, 28, 28)))
        mean, std_dev = self.mean(x), self.std_dev(x)
        z = self.sample(mean, std_dev)
        x = self.decoder_dense(z).reshape(-1, 1, 7, 7)  # NHWC [-1, 7, 7, 1] has the same order
        reconstruction = self.output(self.decoder_convs(x)).reshape(-1, 28, 28)
        return reconstruction, mean, std_dev

    def l2_parameters(self) -> list[nn.Parameter]:
        return []


def vae_losses(outputs, images: torch.Tensor) -> torch.Tensor:
    """Per image: sum over the 784 pixels of the squared error, plus the latent KL term."""
    reconstruction, mean, std_dev = outputs
    image_loss = (reconstruction.reshape(-1, 784) - images.reshape(-1, 784)).pow(2).sum(1)
    latent_loss = -0.5 * (1.0 + 2.0 * std_dev - mean.pow(2) - torch.exp(2.0 * std_dev)).sum(1)
    return image_loss + latent_loss
