"""Feeding the port's random draws from the reference's: dropout masks and standard-normal noise.

The reference records each draw it makes (NHWC): the uniform draw behind each dropout layer, and
each standard-normal draw (the VAE's epsilon, drawn in every phase). While the port runs, torch's
functional dropouts and `torch.randn` / `torch.randn_like` are replaced by versions that consume those
draws in call order. Elementwise dropout keeps an element where its draw is >= p (as tf.nn.dropout);
Dropout1d/2d/3d keep a whole channel on the channel's first draw. A port using the wrong flavour
therefore gets another mask and diverges at that layer, instead of being hidden by the injection.
A draw of the wrong kind or shape raises NoiseMismatch; draws the port never consumed are reported
by the context (`Injection.unused`), so the comparison can still name the layer where it diverged.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from tf_reference.layers import NoiseSource


class NoiseMismatch(Exception):
    """The port draws in another order, kind or shape than the reference."""




@dataclass(frozen=True)
class Draw:
    name: str  # the reference layer (or noise) name
    kind: str  # "uniform" (a dropout mask) or "normal"
    values: np.ndarray  # reference layout


class NoiseRecorder(NoiseSource):
    """The reference's noise source: seeded draws, remembered in call order."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)
        self.draws: list[Draw] = []

    def uniform(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        return self._record(name, "uniform", self._rng.uniform(size=shape))

    def normal(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        return self._record(name, "normal", self._rng.standard_normal(size=shape))

    def _record(self, name, kind, values):
        self.draws.append(Draw(name, kind, values))
        return values


def _nhwc_to_port(draw: np.ndarray) -> np.ndarray:
    return draw.transpose(0, 3, 1, 2) if draw.ndim == 4 else draw


@dataclass
class Injection:
    unused: list[Draw] = field(default_factory=list)  # filled when the context exits


@contextlib.contextmanager
def injected_noise(draws: list[Draw]) -> Iterator[Injection]:
    queue = list(draws)
    injection = Injection()

    def next_draw(kind: str, shape, dtype) -> torch.Tensor:
        if not queue:
            raise NoiseMismatch(f"the port draws more {kind} noise than the reference")
        draw = queue.pop(0)
        if draw.kind != kind:
            raise NoiseMismatch(f"the port draws {kind} noise where the reference draws {draw.kind} ({draw.name})")
        values = torch.from_numpy(_nhwc_to_port(draw.values)).to(dtype)
        if tuple(values.shape) != tuple(shape):
            raise NoiseMismatch(f"{kind} draw at {draw.name}: reference shape (port layout) "
                                f"{tuple(values.shape)}, port {tuple(shape)}")
        return values

    def elementwise(input, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return input
        keep = (next_draw("uniform", input.shape, input.dtype) >= p).to(input.dtype)
        return input * (1.0 / (1.0 - p)) * keep

    def channelwise(input, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return input
        draw = next_draw("uniform", input.shape, input.dtype)
        first_of_channel = draw.reshape(*draw.shape[:2], -1)[..., :1]
        keep = (first_of_channel >= p).to(input.dtype).reshape(*draw.shape[:2], *[1] * (draw.ndim - 2))
        return input * (1.0 / (1.0 - p)) * keep

    def randn(*size, dtype=None, **kwargs):
        shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        return next_draw("normal", tuple(shape), dtype or torch.get_default_dtype())

    def randn_like(input, dtype=None, **kwargs):
        return next_draw("normal", input.shape, dtype or input.dtype)

    replacements = [(F, "dropout", elementwise), (F, "dropout1d", channelwise), (F, "dropout2d", channelwise),
                    (F, "dropout3d", channelwise), (torch, "randn", randn), (torch, "randn_like", randn_like)]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in replacements]
    try:
        for owner, name, function in replacements:
            setattr(owner, name, function)
        yield injection
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)
        injection.unused = queue
