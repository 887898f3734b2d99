"""Feeding the port's random draws from the reference's: dropout masks and standard-normal noise.

The reference records each draw it makes (NHWC): the uniform draw behind each dropout layer, and
each standard-normal draw (the VAE's epsilon, drawn in every phase). While the port runs, every
spelling of dropout and of noise that torch offers is replaced by a version that consumes those
draws in call order:

- dropout kernels at their lowest level, `torch._VF.*dropout*` (what `nn.Dropout*`, `F.dropout*`,
  `nn.AlphaDropout` and `F.alpha_dropout` call in torch 2.x, in-place variants included) and their
  `torch.*dropout*` bindings: elementwise dropout keeps an element where its draw is >= p (as
  tf.nn.dropout); feature (channel) dropout keeps a whole channel on the channel's first draw; alpha
  dropout applies its own affine correction to the same mask;
- hand-written masks: `torch.rand`, `torch.rand_like` and `Tensor.uniform_` return the draw itself
  (scaled to the interval), `torch.bernoulli` / `Tensor.bernoulli(_)` with keep probability q keep
  where the draw is >= 1 - q, the same mask as tf.nn.dropout for q = 1 - p;
- standard-normal noise: `torch.randn`, `torch.randn_like`, `torch.normal` and `Tensor.normal_`.

A port using the wrong flavour therefore gets another mask and diverges at that layer, instead of
being hidden by the injection. A draw of the wrong kind or shape raises NoiseMismatch naming the
reference site and the port's spelling; draws the port never consumed are reported by the context
(`Injection.unused`), and which spelling consumed each draw by `Injection.consumed`, so a
divergence at a site fed through a raw uniform says why it may differ (the threshold convention).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

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


# Spellings whose mask depends on how the port thresholds the raw uniform draw.
RAW_UNIFORM = ("torch.rand", "torch.rand_like", "Tensor.uniform_")
RAW_UNIFORM_NOTE = ("the port built this site's mask from a raw uniform draw ({spelling}); the shared draw u keeps an "
                    "element where u >= p, as tf.nn.dropout; a mask kept where u < 1 - p selects other elements "
                    "(write the mask as `u >= p`, or use F.dropout / torch.bernoulli)")


@dataclass
class Injection:
    unused: list[Draw] = field(default_factory=list)  # filled when the context exits
    consumed: list[tuple[str, str]] = field(default_factory=list)  # (reference site, the port's spelling), in order

    def site_note(self, site: str) -> str:
        """Why a divergence at `site` may come from how the port spelled its draw ('' if nothing to say)."""
        spellings = [spelling for name, spelling in self.consumed if name == site and spelling in RAW_UNIFORM]
        return RAW_UNIFORM_NOTE.format(spelling=spellings[0]) if spellings else ""


_ALPHA_PRIME = -1.7580993408473766  # -scale * alpha of SELU: alpha dropout's value for a dropped element


def _shape_of(size) -> tuple[int, ...]:
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)


@contextlib.contextmanager
def injected_noise(draws: list[Draw]) -> Iterator[Injection]:
    queue = list(draws)
    injection = Injection()

    def next_draw(kind: str, shape, dtype, spelling: str) -> torch.Tensor:
        shape = tuple(shape)
        if not queue:
            raise NoiseMismatch(f"the port draws more {kind} noise than the reference: an extra draw of shape "
                                f"{shape} through {spelling}")
        draw = queue.pop(0)
        if draw.kind != kind:
            raise NoiseMismatch(f"the port draws {kind} noise through {spelling} where the reference draws "
                                f"{draw.kind} ({draw.name})")
        values = torch.from_numpy(_nhwc_to_port(draw.values)).to(dtype or torch.get_default_dtype())
        if tuple(values.shape) != shape:
            raise NoiseMismatch(f"{kind} draw at {draw.name}: reference shape (port layout) "
                                f"{tuple(values.shape)}, port {shape} through {spelling}")
        injection.consumed.append((draw.name, spelling))
        return values

    def channel_keep(input, p, spelling):
        draw = next_draw("uniform", input.shape, input.dtype, spelling)
        first_of_channel = draw.reshape(*draw.shape[:2], -1)[..., :1]
        return (first_of_channel >= p).to(input.dtype).reshape(*draw.shape[:2], *[1] * (draw.ndim - 2))

    def element_keep(input, p, spelling):
        return (next_draw("uniform", input.shape, input.dtype, spelling) >= p).to(input.dtype)

    def dropout_kernel(keep_of, alpha: bool, inplace: bool, spelling: str):
        def kernel(input, p, train):
            if not train or p == 0:
                return input
            keep = keep_of(input, p, spelling)
            if alpha:
                a = ((1 - p) * (1 + p * _ALPHA_PRIME ** 2)) ** -0.5
                result = (input * keep + _ALPHA_PRIME * (1 - keep)) * a - a * _ALPHA_PRIME * p
            else:
                result = input * (1.0 / (1.0 - p)) * keep
            return input.copy_(result) if inplace else result
        return kernel

    def rand(*size, dtype=None, **kwargs):
        return next_draw("uniform", _shape_of(size), dtype, "torch.rand")

    def rand_like(input, dtype=None, **kwargs):
        return next_draw("uniform", input.shape, dtype or input.dtype, "torch.rand_like")

    def uniform_(self, a=0.0, b=1.0, **kwargs):
        with torch.no_grad():
            return self.copy_(next_draw("uniform", self.shape, self.dtype, "Tensor.uniform_") * (b - a) + a)

    def bernoulli_mask(probabilities, spelling):
        probabilities = torch.as_tensor(probabilities)
        draw = next_draw("uniform", probabilities.shape, probabilities.dtype, spelling)
        return (draw >= 1 - probabilities).to(probabilities.dtype)

    def bernoulli(input, p=None, **kwargs):
        probabilities = input if p is None else torch.full_like(input, p)
        return bernoulli_mask(probabilities, "torch.bernoulli")

    def bernoulli_(self, p=0.5, **kwargs):
        probabilities = torch.as_tensor(p, dtype=self.dtype).expand(self.shape)
        with torch.no_grad():
            return self.copy_(bernoulli_mask(probabilities, "Tensor.bernoulli_"))

    def randn(*size, dtype=None, **kwargs):
        return next_draw("normal", _shape_of(size), dtype, "torch.randn")

    def randn_like(input, dtype=None, **kwargs):
        return next_draw("normal", input.shape, dtype or input.dtype, "torch.randn_like")

    def normal(mean=0.0, std=1.0, size=None, **kwargs):
        if size is not None:
            shape = tuple(size)
            dtype = kwargs.get("dtype")
        else:
            shape = torch.broadcast_shapes(torch.as_tensor(mean).shape, torch.as_tensor(std).shape)
            dtype = next((t.dtype for t in (mean, std) if isinstance(t, torch.Tensor)), None)
        return mean + std * next_draw("normal", shape, dtype, "torch.normal")

    def normal_(self, mean=0.0, std=1.0, **kwargs):
        with torch.no_grad():
            return self.copy_(mean + std * next_draw("normal", self.shape, self.dtype, "Tensor.normal_"))

    kernels = {"dropout": (element_keep, False), "feature_dropout": (channel_keep, False),
               "alpha_dropout": (element_keep, True), "feature_alpha_dropout": (channel_keep, True)}
    replacements = []
    for name, (keep_of, alpha) in kernels.items():
        for inplace in (False, True):
            attribute = name + ("_" if inplace else "")
            for owner, owner_name in ((torch._VF, "torch._VF"), (torch, "torch")):
                replacements.append((owner, attribute,
                                     dropout_kernel(keep_of, alpha, inplace, f"{owner_name}.{attribute}")))
    replacements += [(torch, "rand", rand), (torch, "rand_like", rand_like), (torch, "bernoulli", bernoulli),
                     (torch, "randn", randn), (torch, "randn_like", randn_like), (torch, "normal", normal),
                     (torch.Tensor, "uniform_", uniform_), (torch.Tensor, "bernoulli_", bernoulli_),
                     (torch.Tensor, "bernoulli", bernoulli), (torch.Tensor, "normal_", normal_)]
    originals = [(owner, name, owner.__dict__.get(name, _ABSENT) if owner is torch._VF else getattr(owner, name))
                 for owner, name, _ in replacements]
    try:
        for owner, name, function in replacements:
            setattr(owner, name, function)
        yield injection
    finally:
        for owner, name, function in originals:
            if function is _ABSENT:
                delattr(owner, name)  # torch._VF resolves it from torch._C._VariableFunctions again
            else:
                setattr(owner, name, function)
        injection.unused = queue


_ABSENT = object()


def unshareable_draws(model: torch.nn.Module) -> dict[str, str]:
    """Port modules whose random draws happen beyond Python's reach, by module name, with the reason.

    nn.LSTM / nn.GRU / nn.RNN with num_layers > 1 and dropout > 0 drop between their layers inside
    torch's C++ kernel: no Python-level function is called, so the reference's masks cannot reach it.
    """
    return {name: (f"{type(module).__name__}(dropout={module.dropout}) at {name} drops between its layers inside "
                   "torch's C++ kernel, which no shared draw can reach: its train-mode output cannot match "
                   "(write its layers as separate modules with nn.Dropout between them)")
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.RNNBase) and module.dropout > 0 and module.num_layers > 1}
