"""Feeding the port's dropout layers the reference's random draws.

The reference records the uniform draw behind each dropout layer (NHWC). While the port
runs, torch's functional dropouts are replaced by versions that consume those draws in
call order and derive their mask the way each flavour does: elementwise dropout keeps an
element where its draw is >= p (as tf.nn.dropout); Dropout1d/2d/3d keep a whole channel
on the channel's first draw. A port using the wrong flavour therefore gets another mask
and diverges at that layer, instead of being hidden by the injection.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F


class DropoutMismatch(Exception):
    """The port runs a different number or shape of dropout layers than the reference."""


class NoiseRecorder:
    """The reference's noise source: seeded uniform draws, remembered in call order."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)
        self.draws: list[tuple[str, np.ndarray]] = []

    def __call__(self, layer_name: str, shape: tuple[int, ...]) -> np.ndarray:
        draw = self._rng.uniform(size=shape)
        self.draws.append((layer_name, draw))
        return draw


def _nhwc_to_port(draw: np.ndarray) -> np.ndarray:
    return draw.transpose(0, 3, 1, 2) if draw.ndim == 4 else draw


@contextlib.contextmanager
def injected_dropout(draws: list[tuple[str, np.ndarray]]) -> Iterator[None]:
    queue = list(draws)

    def next_draw(input: torch.Tensor) -> torch.Tensor:
        if not queue:
            raise DropoutMismatch(f"the port runs more dropout layers than the reference "
                                  f"(an extra one on a {tuple(input.shape)} input)")
        name, draw = queue.pop(0)
        draw = torch.from_numpy(_nhwc_to_port(draw)).to(input.dtype)
        if draw.shape != input.shape:
            raise DropoutMismatch(f"dropout at {name}: reference shape (port layout) {tuple(draw.shape)}, "
                                  f"port input {tuple(input.shape)}")
        return draw

    def elementwise(input, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return input
        keep = (next_draw(input) >= p).to(input.dtype)
        return input * (1.0 / (1.0 - p)) * keep

    def channelwise(input, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return input
        draw = next_draw(input)
        first_of_channel = draw.reshape(*draw.shape[:2], -1)[..., :1]
        keep = (first_of_channel >= p).to(input.dtype).reshape(*draw.shape[:2], *[1] * (draw.ndim - 2))
        return input * (1.0 / (1.0 - p)) * keep

    replacements = {"dropout": elementwise, "dropout1d": channelwise, "dropout2d": channelwise,
                    "dropout3d": channelwise}
    originals = {name: getattr(F, name) for name in replacements}
    try:
        for name, function in replacements.items():
            setattr(F, name, function)
        yield
        if queue:
            raise DropoutMismatch(f"the port skipped dropout layers the reference runs: "
                                  f"{', '.join(name for name, _ in queue)}")
    finally:
        for name, function in originals.items():
            setattr(F, name, function)
