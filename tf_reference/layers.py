"""A define-by-run re-creation of the TF1 `tf.layers` graph on `tf.nn` ops.

A model is a plain function `fn(graph, x, training)` written like the original
(`graph.conv2d(...)` where the original has `tf.layers.conv2d(...)`). The first call
creates the variables with the original graph's names (`unit_1_0/conv2d_1/kernel`:
layer names uniquified per variable scope, as TF1 does); later calls reuse them.
Every layer output is recorded as a tap under its layer name, so a comparison can
look at each layer, not only the logits.
"""
from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from typing import Iterator

import numpy as np

from tf_reference import initializers
from tf_reference._tf import tf

class NoiseSource:
    """Where the graph's random draws come from when they are to be shared with another framework.

    `uniform(name, shape)` backs each dropout mask, `normal(name, shape)` each standard-normal draw
    (the VAE's epsilon). Without a source the graph draws with TensorFlow's own ops.
    """

    def uniform(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def normal(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError


class Graph:
    def __init__(self, dtype=tf.float32, seed: int = 0, initialize: bool = True):
        self.dtype = tf.as_dtype(dtype)
        # False: variables are created as zeros, not drawn (the audit overwrites every one at once; drawing
        # VGG's 138M initial values took 3 of the 5 s a float64 build took).
        self.initialize = initialize
        self.variables: dict[str, tf.Variable] = {}
        self.l2_coefficients: dict[str, float] = {}  # kernel name -> weight decay of its regularizer
        self.taps: dict[str, tf.Tensor] = {}
        self._scopes: list[str] = []
        self._layer_counts: dict[str, Counter] = defaultdict(Counter)
        self._training = False
        self._noise: NoiseSource | None = None
        # The original's non-trainable state variables (the LSTM's c and h), kept apart from `variables`
        # (they are not weights): carried from one run to the next, zeroed by reset_state.
        self.state: dict[str, tf.Variable] = {}
        # An audit hook, not semantics: tap name -> boolean mask of elements that pass no gradient
        # (set by the audit to cut round-off kink flips in both frameworks; empty otherwise).
        self.gradient_cuts: dict[str, np.ndarray] = {}
        # Audit metadata: max-pool tap name -> (input, window, strides, padding), for finding near-ties.
        self.pool_inputs: dict[str, tuple] = {}
        tf.random.set_seed(seed)

    # --- running ---------------------------------------------------------------
    def run(self, fn, inputs, training: bool, noise: NoiseSource | None = None):
        """Call `fn(self, inputs, training)`; returns its output. Layer outputs land in `self.taps`.

        `inputs` is one array or a tuple of arrays; floating arrays are cast to the graph's dtype,
        integer arrays (character ids) are kept as they are.
        """
        self.taps = {}
        self.pool_inputs = {}
        self._layer_counts = defaultdict(Counter)
        self._training = training
        self._noise = noise
        converted = tuple(self._input(x) for x in inputs) if isinstance(inputs, tuple) else self._input(inputs)
        return fn(self, converted, training)

    def _input(self, x):
        integer = x.dtype.is_integer if isinstance(x, tf.Tensor) else np.issubdtype(np.asarray(x).dtype, np.integer)
        if integer:
            return tf.convert_to_tensor(x)
        return tf.cast(x, self.dtype) if isinstance(x, tf.Tensor) else tf.convert_to_tensor(x, dtype=self.dtype)

    # --- carried state ---------------------------------------------------------
    def carried_state(self, name: str, shape) -> tf.Tensor:
        """The state variable `name` (non-trainable, as the original's; zeros when created or reset).

        A gradient tape does not watch a non-trainable variable, so backpropagation stops at the batch
        boundary, as in the original. It is (re)created when the batch size changes.
        """
        shape = tuple(int(d) for d in shape)
        if name not in self.state or tuple(self.state[name].shape) != shape:
            self.state[name] = tf.Variable(tf.zeros(shape, self.dtype), trainable=False,
                                           name=name.replace("/", "__"))
        return self.state[name].read_value()

    def carry(self, name: str, value: tf.Tensor) -> None:
        """`state_variable.assign(new_state)`: the next run starts from it."""
        self.state[name].assign(value)

    def reset_state(self) -> None:
        """The original's init ops assign the zero state at every phase switch."""
        for variable in self.state.values():
            variable.assign(tf.zeros_like(variable))

    @property
    def trainable_variables(self) -> dict[str, tf.Variable]:
        return {name: v for name, v in self.variables.items() if v.trainable}

    def regularizer(self) -> tf.Tensor:
        """tf.losses.get_regularization_loss(): sum of wd * l2_loss(W) = wd/2 * ||W||^2."""
        terms = [wd * tf.nn.l2_loss(self.variables[name]) for name, wd in self.l2_coefficients.items()]
        return tf.add_n(terms) if terms else tf.constant(0.0, self.dtype)

    # --- naming ----------------------------------------------------------------
    @contextlib.contextmanager
    def variable_scope(self, name: str) -> Iterator[None]:
        self._scopes.append(name)
        try:
            yield
        finally:
            self._scopes.pop()

    def _layer_name(self, base: str) -> str:
        scope = "/".join(self._scopes)
        count = self._layer_counts[scope][base]
        self._layer_counts[scope][base] += 1
        name = base if count == 0 else f"{base}_{count}"
        return f"{scope}/{name}" if scope else name

    def _variable(self, name: str, shape, initializer, trainable: bool = True) -> tf.Variable:
        shape = tuple(int(d) for d in shape)
        if name not in self.variables:
            value = initializer(shape, dtype=self.dtype) if self.initialize else tf.zeros(shape, self.dtype)
            self.variables[name] = tf.Variable(value, name=name.replace("/", "__"), trainable=trainable)
        variable = self.variables[name]
        if tuple(variable.shape) != shape:
            raise ValueError(f"variable {name} has shape {tuple(variable.shape)}, the graph asks for {shape}")
        return variable

    def get_variable(self, name: str, shape, initializer=None) -> tf.Variable:
        """tf.get_variable(name, shape) in the current variable scope (default initializer: glorot_uniform)."""
        scope = "/".join(self._scopes)
        return self._variable(f"{scope}/{name}" if scope else name, shape,
                              initializer or initializers.glorot_uniform())

    def tap(self, name: str, x: tf.Tensor) -> tf.Tensor:
        self.taps[name] = x
        if name in self.gradient_cuts:
            return tf.where(self.gradient_cuts[name], tf.stop_gradient(x), x)
        return x

    # --- layers (tf.layers semantics) ------------------------------------------
    def conv2d(self, x, filters: int, kernel_size, strides=1, padding: str = "valid", activation=None,
               use_bias: bool = True, kernel_initializer=None, bias_initializer=None,
               weight_decay: float | None = None) -> tf.Tensor:
        name = self._layer_name("conv2d")
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        kernel = self._variable(f"{name}/kernel", (kh, kw, x.shape[-1], filters),
                                kernel_initializer or initializers.glorot_uniform())
        if weight_decay is not None:
            self.l2_coefficients[kernel_name(name)] = weight_decay
        y = tf.nn.conv2d(x, kernel, strides, padding.upper())
        if use_bias:
            y = tf.nn.bias_add(y, self._variable(f"{name}/bias", (filters,), bias_initializer or initializers.zeros()))
        if activation is not None:
            y = activation(y)
        return self.tap(name, y)

    def dense(self, x, units: int, activation=None, kernel_initializer=None, bias_initializer=None,
              weight_decay: float | None = None) -> tf.Tensor:
        name = self._layer_name("dense")
        kernel = self._variable(f"{name}/kernel", (x.shape[-1], units),
                                kernel_initializer or initializers.glorot_uniform())
        if weight_decay is not None:
            self.l2_coefficients[kernel_name(name)] = weight_decay
        bias = self._variable(f"{name}/bias", (units,), bias_initializer or initializers.zeros())
        y = tf.nn.bias_add(tf.matmul(x, kernel), bias)
        if activation is not None:
            y = activation(y)
        return self.tap(name, y)

    def conv2d_transpose(self, x, filters: int, kernel_size: int, strides: int, activation=None) -> tf.Tensor:
        """tf.layers.conv2d_transpose(padding='same'): kernel [kh, kw, filters, in], output size input * stride.

        (The only padding the original uses; TF derives the crop from the forward conv's 'SAME' padding.)
        """
        name = self._layer_name("conv2d_transpose")
        kernel = self._variable(f"{name}/kernel", (kernel_size, kernel_size, filters, x.shape[-1]),
                                initializers.glorot_uniform())
        output_shape = tf.stack([tf.shape(x)[0], x.shape[1] * strides, x.shape[2] * strides, filters])
        y = tf.nn.conv2d_transpose(x, kernel, output_shape, strides, "SAME")
        y = tf.nn.bias_add(y, self._variable(f"{name}/bias", (filters,), initializers.zeros()))
        if activation is not None:
            y = activation(y)
        return self.tap(name, y)

    def random_normal(self, name: str, shape) -> tf.Tensor:
        """tf.random_normal(shape): drawn by the noise source when one is given (in every phase)."""
        shape = tuple(int(d) for d in shape)
        if self._noise is None:
            return tf.random.normal(shape, dtype=self.dtype)
        return tf.constant(self._noise.normal(name, shape), dtype=self.dtype)

    def max_pooling2d(self, x, pool_size: int, strides: int, padding: str = "valid") -> tf.Tensor:
        name = self._layer_name("max_pooling2d")
        self.pool_inputs[name] = (x, pool_size, strides, padding.upper())
        return self.tap(name, tf.nn.max_pool2d(x, pool_size, strides, padding.upper()))

    def average_pooling2d(self, x, pool_size: int, strides, padding: str = "valid") -> tf.Tensor:
        """tf.layers.average_pooling2d: 'SAME' windows average over their valid inputs only (padding excluded)."""
        name = self._layer_name("average_pooling2d")
        return self.tap(name, tf.nn.avg_pool2d(x, pool_size, strides, padding.upper()))

    def max_pool(self, x, ksize, strides, padding: str) -> tf.Tensor:
        """tf.nn.max_pool called directly (no tf.layers layer): tapped as 'max_pool', uniquified per scope."""
        name = self._layer_name("max_pool")
        self.pool_inputs[name] = (x, ksize, strides, padding)
        return self.tap(name, tf.nn.max_pool2d(x, ksize, strides, padding))

    def batch_normalization(self, x, momentum: float = 0.99, epsilon: float = 1e-3, training: bool = False):
        """tf.layers.batch_normalization(fused=True) on the last axis.

        Train mode normalises with the biased batch variance and moves the moving
        variance towards the *unbiased* one (FusedBatchNormV3's batch_variance output),
        as `variable -= (variable - value) * (1 - momentum)`.
        """
        name = self._layer_name("batch_normalization")
        channels = (x.shape[-1],)
        gamma = self._variable(f"{name}/gamma", channels, initializers.ones())
        beta = self._variable(f"{name}/beta", channels, initializers.zeros())
        moving_mean = self._variable(f"{name}/moving_mean", channels, initializers.zeros(), trainable=False)
        moving_variance = self._variable(f"{name}/moving_variance", channels, initializers.ones(), trainable=False)
        if training:
            mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), self.dtype)
            unbiased_variance = variance * count / tf.maximum(count - 1.0, 1.0)
            decay = tf.constant(1.0 - momentum, self.dtype)
            moving_mean.assign_sub((moving_mean - tf.stop_gradient(mean)) * decay)
            moving_variance.assign_sub((moving_variance - tf.stop_gradient(unbiased_variance)) * decay)
        else:
            mean, variance = moving_mean, moving_variance
        y = (x - mean) * (gamma * tf.math.rsqrt(variance + epsilon)) + beta
        return self.tap(name, y)

    def resize_images(self, x, size: tuple[int, int]) -> tf.Tensor:
        """tf.image.resize_images(x, size) of TF1: bilinear, align_corners=False, no half-pixel centres.

        In float32 this runs the original's own op (ResizeBilinear, half_pixel_centers=False). That
        kernel computes in float32 whatever the input, so float64 runs its arithmetic written out:
        source = i * float32(in/out), lower = floor, upper = min(ceil, in-1), lerp in float32, then
        top/bottom/out lerps in the kernel's order.
        """
        name = self._layer_name("resize_images")
        if tuple(x.shape[1:3]) == tuple(size):  # resize_images returns same-size images unchanged
            return self.tap(name, x)
        if self.dtype == tf.float32:
            return self.tap(name, tf.compat.v1.image.resize_images(x, size))
        axes = [_legacy_bilinear_axis(int(n), int(m), self.dtype) for n, m in zip(x.shape[1:3], size)]
        (y_lower, y_upper, y_lerp), (x_lower, x_upper, x_lerp) = axes
        rows_lower, rows_upper = tf.gather(x, y_lower, axis=1), tf.gather(x, y_upper, axis=1)
        top_left, top_right = tf.gather(rows_lower, x_lower, axis=2), tf.gather(rows_lower, x_upper, axis=2)
        bottom_left, bottom_right = tf.gather(rows_upper, x_lower, axis=2), tf.gather(rows_upper, x_upper, axis=2)
        x_lerp = tf.reshape(x_lerp, (1, 1, -1, 1))
        top = top_left + (top_right - top_left) * x_lerp
        bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
        return self.tap(name, top + (bottom - top) * tf.reshape(y_lerp, (1, -1, 1, 1)))

    def dropout(self, x, rate: float, training: bool, name: str | None = None) -> tf.Tensor:
        """tf.layers.dropout: elementwise, kept with prob 1-rate, scaled by 1/(1-rate), train phase only.

        `name` names a dropout that is not a tf.layers layer (the LSTM's DropoutWrapper sites).
        """
        name = name or self._layer_name("dropout")
        if training:
            if self._noise is None:
                x = tf.nn.dropout(x, rate=rate)
            else:
                # tf.nn.dropout keeps an element where its uniform draw is >= rate.
                noise = tf.constant(self._noise.uniform(name, tuple(x.shape)), dtype=self.dtype)
                x = x * (1.0 / (1.0 - rate)) * tf.cast(noise >= rate, self.dtype)
        return self.tap(name, x)


def _legacy_bilinear_axis(in_size: int, out_size: int, dtype):
    """One axis of ResizeBilinear's CachedInterpolation (legacy scaler), as in its CPU kernel."""
    scale = tf.constant(in_size, tf.float32) / tf.constant(out_size, tf.float32)
    source = tf.cast(tf.range(out_size), tf.float32) * scale
    floor = tf.floor(source)
    lower = tf.maximum(tf.cast(floor, tf.int64), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(source), tf.int64), in_size - 1)
    return lower, upper, tf.cast(source - floor, dtype)


def kernel_name(layer_name: str) -> str:
    return f"{layer_name}/kernel"
