"""What the reference computes, for someone writing or checking a map: its variables and its taps.

`describe(problem)` runs the reference model once (train mode, batch 2, zero weights: only names and
shapes matter) on a Graph that also records, for each tf.layers-style layer, the activation passed to
it. A tap is the layer's output *after* that activation (tf_reference.layers: `activation(y)` runs
before `self.tap`); a BN tap is before any ReLU the model applies next (WRN, Inception apply
`tf.nn.relu` to it outside the layer), a dropout tap is the dropped tensor (identity in inference).
Taps written with `g.tap(...)` in a model (a residual unit's sum, the VAE's z, an LSTM's outputs and
state, the Hessian, an Inception block's concat) are what the model tapped, as written there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tf_reference import initializers
from tf_reference._tf import tf
from tf_reference.layers import Graph
from tf_reference.problems import REFERENCE_PROBLEMS, _placeholder

DESCRIBE_BATCH = 2  # > 1: a train-mode BN of a 1x1 map needs two values per channel on the port side

# What a tap is, by the base name of the layer that made it (the reference's layer names).
LAYER_KINDS = {
    "conv2d": "conv", "dense": "dense", "conv2d_transpose": "conv_transpose",
    "batch_normalization": "batch_norm", "max_pooling2d": "pool", "average_pooling2d": "pool", "max_pool": "pool",
    "dropout": "dropout", "input_dropout": "dropout", "output_dropout": "dropout", "lstm_cell": "lstm",
    "resize_images": "resize",
}
# Activation functions the reference's layers are given, by the name they are reported under
# (`then=` in a TapRow takes these names): tf.nn.relu, the VAE's lrelu, tf.nn.sigmoid.
ACTIVATION_NAMES = {"relu": "relu", "lrelu": "lrelu", "sigmoid": "sigmoid"}


@dataclass(frozen=True)
class VariableInfo:
    name: str
    shape: tuple[int, ...]
    trainable: bool
    l2: float | None  # the weight decay of its L2 term, None if it has none


@dataclass(frozen=True)
class TapInfo:
    name: str
    shape: tuple[int, ...]  # per batch of DESCRIBE_BATCH, reference layout (NHWC for images)
    kind: str  # conv, dense, conv_transpose, batch_norm, pool, dropout, lstm, resize, output, tap
    activation: str | None  # applied inside the layer before the tap (relu, lrelu, sigmoid), or None
    dense_input: tuple[int, int, int] | None = None  # a dense layer fed an NHWC-flattened map: its (C, H, W)

    @property
    def what(self) -> str:
        if self.kind == "output":
            return "model output"
        if self.kind == "tap":
            return "tapped in the model as written (not a layer)"
        if self.kind == "dropout":
            return "dropout output (identity in inference)"
        if self.kind == "batch_norm":
            return "batch norm output, before any activation"
        if self.kind in ("conv", "dense", "conv_transpose"):
            return f"after the activation ({self.activation})" if self.activation else "no activation"
        return {"pool": "pooling output", "lstm": "LSTM outputs over the sequence (h at every step)",
                "resize": "resized images"}.get(self.kind, self.kind)


@dataclass(frozen=True)
class Description:
    problem: str
    variables: tuple[VariableInfo, ...]  # creation order
    taps: tuple[TapInfo, ...]  # forward order (train mode), then the outputs

    def tap(self, name: str) -> TapInfo:
        return next(t for t in self.taps if t.name == name)


def _activation_name(activation) -> str | None:
    if activation is None:
        return None
    name = getattr(activation, "__name__", type(activation).__name__)
    return ACTIVATION_NAMES.get(name, name)


def _base(layer_name: str) -> str:
    last = layer_name.rsplit("/", 1)[-1]
    stem, _, suffix = last.rpartition("_")
    return stem if suffix.isdigit() and stem else last


class _DescribingGraph(Graph):
    """A Graph that records each layer's activation and, for dense layers, where their input came from;
    its variables start at zero (only their names and shapes are described)."""

    def __init__(self, dtype):
        super().__init__(dtype, 0)
        self.activations: dict[str, str | None] = {}
        self.dense_inputs: dict[str, tuple[int, int, int] | None] = {}
        self.input_shapes: list[tuple[int, ...]] = []

    def _variable(self, name, shape, initializer, trainable=True):
        return super()._variable(name, shape, initializers.zeros(), trainable)

    def _input(self, x):
        self.input_shapes.append(tuple(np.shape(x)))
        return super()._input(x)

    def _flattened_map(self, features: int) -> tuple[int, int, int] | None:
        """(C, H, W) of the NHWC map a dense layer's `features` inputs were flattened from, if any: the
        latest tap of that size (a sibling dense reading the same input is skipped), else the model input."""
        for tap in reversed(list(self.taps.values())):
            shape = tuple(int(d) for d in tap.shape[1:])
            size = int(np.prod(shape)) if shape else 1
            if size == features:
                return (shape[2], shape[0], shape[1]) if len(shape) == 3 else None
            if len(shape) == 3:  # another map in between: the dense does not read a flattened tap
                return None
        image = next((s[1:] for s in self.input_shapes if len(s) == 4), None)
        if image is not None and int(np.prod(image)) == features:
            return (image[2], image[0], image[1])
        return None

    def conv2d(self, x, *args, activation=None, **kwargs):
        y = super().conv2d(x, *args, activation=activation, **kwargs)
        self.activations[list(self.taps)[-1]] = _activation_name(activation)
        return y

    def conv2d_transpose(self, x, *args, activation=None, **kwargs):
        y = super().conv2d_transpose(x, *args, activation=activation, **kwargs)
        self.activations[list(self.taps)[-1]] = _activation_name(activation)
        return y

    def dense(self, x, units, activation=None, **kwargs):
        flattened = self._flattened_map(int(x.shape[-1]))
        y = super().dense(x, units, activation, **kwargs)
        name = list(self.taps)[-1]
        self.activations[name] = _activation_name(activation)
        # An NHWC flatten differs from the port's NCHW one only with several channels and positions.
        self.dense_inputs[name] = flattened if flattened and flattened[0] > 1 and flattened[1] * flattened[2] > 1 \
            else None
        return y


def describe(problem: str) -> Description:
    """The reference's variables and taps for `problem` (KeyError if the reference has no such problem)."""
    if problem not in REFERENCE_PROBLEMS:
        raise KeyError(f"the reference has no problem {problem!r}; it has: {', '.join(REFERENCE_PROBLEMS)}")
    spec = REFERENCE_PROBLEMS[problem]
    graph = _DescribingGraph(tf.float32)
    inputs = tuple(_placeholder(s, DESCRIBE_BATCH) for s in spec.inputs)
    outputs = graph.run(spec.model(), inputs if len(inputs) > 1 else inputs[0], training=True)
    variables = tuple(VariableInfo(name, tuple(int(d) for d in v.shape), bool(v.trainable),
                                   graph.l2_coefficients.get(name))
                      for name, v in graph.variables.items())
    taps = []
    for name, value in graph.taps.items():
        kind = LAYER_KINDS.get(_base(name), "tap")
        taps.append(TapInfo(name, tuple(int(d) for d in value.shape), kind, graph.activations.get(name),
                            graph.dense_inputs.get(name)))
    named = outputs if isinstance(outputs, tuple) else (outputs,)
    taps += [TapInfo(name, tuple(int(d) for d in value.shape), "output", None)
             for name, value in zip(spec.family.outputs, named)]
    return Description(problem, variables, tuple(taps))


def format_description(description: Description) -> list[str]:
    """The text `python -m parity describe PROBLEM` prints."""
    lines = [f"{description.problem}: reference variables (creation order)", "",
             f"  {'name':<48} {'shape':<20} {'trainable':<10} L2"]
    for v in description.variables:
        lines.append(f"  {v.name:<48} {str(v.shape):<20} {'yes' if v.trainable else 'no':<10} "
                     f"{'wd ' + format(v.l2, 'g') if v.l2 is not None else '-'}")
    lines += ["", f"layer outputs (taps, forward order in train mode, batch {DESCRIBE_BATCH}, reference layout: "
                  "images NHWC; compare a port module's NCHW output transposed)", "",
              f"  {'tap':<48} {'shape':<22} what it is"]
    for t in description.taps:
        extra = f"; its input is an NHWC-flattened (C, H, W) = {t.dense_input} map" if t.dense_input else ""
        lines.append(f"  {t.name:<48} {str(t.shape):<22} {t.what}{extra}")
    return lines
