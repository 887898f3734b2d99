"""Kernels for the layers where torch's own run slower than the reference's oneDNN ones.

- `max_pool` (C, `max_pool.c`, built on first use): the training step's max pool (+ ReLU after it) of
  2c2d, 3c3d, VGG and the WRN shortcut. Bit-identical to aten's `max_pool2d` + `relu` and their gradients
  (tests/test_native.py); cifar10_3c3d's training step x1.07, mnist_2c2d's x1.02 here (docs/benchmarks.md).
  The system C compiler (`$CC`, else `cc`) builds it once per source, compiler and CPU (`-O3 -march=native
  -fopenmp`) into `$DEEPOBS_NATIVE_CACHE` (default `~/.cache/deepobs-torch`); its OpenMP loops run on the
  libgomp torch has loaded, so `torch.set_num_threads` holds for them. Without a compiler or on another OS
  the layers run aten's kernels, with one warning that says why.
- `conv_relu` (torch's own `mkldnn._convolution_pointwise`): conv + ReLU without gradients (evaluation) as
  one oneDNN convolution with a ReLU post-op, the op inductor's freezing pass emits. Bit-identical; saves
  the ReLU's pass over the activation (All-CNN-C's and VGG's evaluation forward, eager and compiled).

- `blocked_eval_applies`: 2c2d's evaluation runs its convolutions and pools on oneDNN's blocked layout
  (`deepobs.layers.conv_pool_relu_blocked`), faster than NHWC for its 5x5 convs here (docs/benchmarks.md).
- `linear` (torch's own `mkldnn._linear_pointwise`): the dense layers' forward and both gradients on oneDNN's
  inner product, the primitive TF's dense layers run. Inside a `FrozenWeights` block (the runner's evaluation
  pass) each weight is reordered to oneDNN's layout once and reused, also from a compiled graph (an opaque
  op): the same bits, VGG's first dense layer 29.8 -> 19.5 ms a product, the VAE's output layer 8.0 -> 6.4.
  The forward runs either so or as (weight @ x.T).T (oneDNN then packs x, not the weight), whichever this
  machine runs faster for the shape, timed at its first use (`product_choices()`): the same bits.
  Not where MKL runs its AVX2 branch on a non-Intel CPU (deepobs/mkl_paths.py): MKL is faster there.
- `winograd` (C, `winograd.c`, and MKL's products): 3x3 stride-1 convolutions with at least 128 channels
  in and out as Winograd F(2x2, 3x3), 4x4 ones with at least 64 as F(2x2, 4x4) (the VAE's, its stride-1
  transposed convolutions included), forward, input gradient and weight gradient, training and evaluation
  (eager, or one opaque op in a compiled graph; kernels transformed once an evaluation pass in a
  FrozenWeights block). 2.25x (3x3) and 2.56x (4x4) fewer multiplications than oneDNN's direct convolution;
  its round-off against float64 2-4x smaller (3x3) or ~4x larger (4x4) than oneDNN's (tests/test_native.py).
  Not bit-identical to oneDNN's: chosen by a rule on the shape (`winograd_applies`), never by a timing.
- `dropout_mask` (C, `dropout.c`): the dropout layer's mask, its uniform draws from Philox4x32-10 (the
  counter-based generator TF's dropout uses; the words match TF's own) on every thread, instead of torch's
  one serial mt19937 stream (9.5 ns a number). Same rule (keep `1 / (1 - p)` where u >= p); the draws are
  other random numbers, keyed per mask from torch's default generator, so `torch.manual_seed` fixes them
  and they do not depend on the thread count. Where the audit injects the reference's draws (it replaces
  `torch.rand_like`), the layer draws through torch again.
- `activation_dropout` (C, `dropout.c`): a ReLU or the VAE's leaky ReLU and the dropout after it in one pass
  each way, the mask drawn again from its key in the backward instead of kept; the same bits as the two
  layers (`deepobs.layers.SequentialFusingDropout` runs it for the VAE's and All-CNN-C's pairs).

`DEEPOBS_NATIVE=0` or the runner's `--no-native-kernels` switches them off: the pool values are the same, the
convolutions Winograd took run on oneDNN (other round-off), the dropout masks come from torch's generator
(another random stream, the same distribution).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import time
import warnings
from pathlib import Path
from typing import NamedTuple, Optional

import torch

from deepobs import mkl_paths
from deepobs.cbuild import NativeBuildError, build_library

SOURCES = tuple(Path(__file__).with_name(name) for name in ("max_pool.c", "dropout.c", "winograd.c"))
HEADERS = (Path(__file__).with_name("vectors.h"),)
FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=gnu11", "-shared", "-fPIC")
# max_pool.c's limits: channels in whole vectors of any width it is built for (16, 8 or 4 floats), at most 2048.
CHANNEL_MULTIPLE, MAX_CHANNELS = 16, 2048
_enabled = os.environ.get("DEEPOBS_NATIVE", "1") != "0"
_HAS_ONEDNN = torch.backends.mkldnn.is_available()  # read once: torch.compile does not trace the call


@contextlib.contextmanager
def enabled(on: bool):
    """The process-wide switch set to `on` for the block (the runner's --native-kernels / --no-native-kernels)."""
    global _enabled
    before, _enabled = _enabled, on
    try:
        yield
    finally:
        _enabled = before


def is_on() -> bool:
    """The process-wide switch (not whether the C kernels built: `status()`)."""
    return _enabled


def status() -> str:
    """What the layers run, for result files: 'built', 'off' or 'unavailable: <why>'."""
    if not _enabled:
        return "off"
    try:
        _library()
    except NativeBuildError as error:
        return f"unavailable: {error}"
    return "built"


@functools.cache
def _load() -> ctypes.CDLL | NativeBuildError:
    """The built library, or why there is none (kept: a failed build is not retried in this process)."""
    try:
        return _build_and_load()
    except NativeBuildError as error:
        return error


def _library() -> ctypes.CDLL:
    loaded = _load()
    if isinstance(loaded, NativeBuildError):
        raise loaded
    return loaded


def _build_and_load(flags: tuple[str, ...] = FLAGS) -> ctypes.CDLL:
    """The library built with `flags` (another -march in tests/test_native.py: other vector widths), loaded."""
    path = build_library(SOURCES, flags, "native", HEADERS)
    try:
        library = ctypes.CDLL(str(path))
    except OSError as error:
        raise NativeBuildError(f"{type(error).__name__}: {error}".splitlines()[0]) from None
    for function in (library.max_pool_forward, library.max_pool_backward, library.philox_bits, library.dropout_mask,
                     library.act_dropout_forward, library.act_dropout_backward, library.winograd_weight,
                     library.winograd_forward, library.winograd_weight_sums,
                     library.winograd_weight_gradient):
        function.restype = None
    return library


@functools.cache
def _warn_once(reason: str) -> None:
    warnings.warn(f"deepobs.native: running torch's own max pool, convolutions and dropout draws instead ({reason})",
                  RuntimeWarning, stacklevel=4)


def max_pool_applies(x: torch.Tensor) -> bool:
    """Is `x` a training-step input the kernel takes (float32 NHWC on the CPU, whole vectors of channels, grad
    needed)?"""
    if not (_enabled and torch.is_grad_enabled() and x.requires_grad and not torch.compiler.is_compiling()):
        return False
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4:
        return False
    channels = x.shape[1]
    if channels % CHANNEL_MULTIPLE or channels > MAX_CHANNELS or not x.is_contiguous(memory_format=torch.channels_last):
        return False
    return _built()


def _built() -> bool:
    """Is the library built (now, if need be)? Without it, one warning that says why, and False."""
    try:
        _library()
    except NativeBuildError as error:
        _warn_once(str(error))
        return False
    return True


def conv_relu_applies(x: torch.Tensor, conv: torch.nn.Conv2d) -> bool:
    """Can conv + ReLU run as one oneDNN primitive: no gradient wanted, float32 on the CPU, zero padding?

    Only without gradients: in a training step the fused forward (with autograd's own backward by hand,
    bit-identical) measured x1.006 and x1.000 on cifar100_allcnnc and x0.984 and x1.001 on VGG16 at batch
    16 (11 and 25 interleaved rounds), though the ReLU pass it saves is 53 ms of VGG16's 7.5 s step: not worth
    a hand-written backward."""
    return (_enabled and not torch.is_grad_enabled() and x.dtype == torch.float32 and x.device.type == "cpu"
            and x.dim() == 4 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str) and _HAS_ONEDNN)


def conv_relu(x, weight, bias, padding, stride, dilation, groups) -> torch.Tensor:
    """relu(conv2d(x, ...)) as one oneDNN convolution with a ReLU post-op (the op inductor's freezing pass
    emits): the same primitive, the ReLU applied to each result before it is stored."""
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), list(stride), list(dilation),
                                                   groups, "relu", [], "")


def blocked_eval_applies(x: torch.Tensor) -> bool:
    """May an evaluation forward run on oneDNN's blocked tensors (`torch.Tensor.to_mkldnn`): no gradient wanted,
    float32 on the CPU, eager (inductor neither traces nor fuses opaque tensors)?"""
    return (_enabled and _HAS_ONEDNN and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 4)


def fastest(candidates, timings: int) -> int:
    """The index of the quickest callable: the least of `timings` timings each, taken in turns after one untimed
    call each (oneDNN creates its primitive then). For choices between spellings of the same result."""
    for candidate in candidates:
        candidate()
    seconds = [math.inf] * len(candidates)
    for _ in range(timings):
        for index, candidate in enumerate(candidates):
            start = time.perf_counter()
            candidate()
            seconds[index] = min(seconds[index], time.perf_counter() - start)
    return seconds.index(min(seconds))


def _long(*values: int) -> list[ctypes.c_int64]:
    return [ctypes.c_int64(value) for value in values]


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, before, out_size, relu):
        n, c, h, w = x.shape
        out = torch.empty((n, c, *out_size), memory_format=torch.channels_last)
        offsets = torch.empty((n, *out_size, c), dtype=torch.int32)
        geometry = (*kernel, *stride, *before)
        _library().max_pool_forward(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(out.data_ptr()),
                                    ctypes.c_void_p(offsets.data_ptr()), *_long(n, h, w, c, *out_size),
                                    *geometry, int(relu))
        ctx.save_for_backward(offsets)
        ctx.shapes = (n, h, w, c, *out_size), geometry
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (offsets,) = ctx.saved_tensors
        return _MaxPoolBackward.apply(grad_out, offsets, *ctx.shapes), None, None, None, None, None


class _MaxPoolBackward(torch.autograd.Function):
    """The pool's input gradient, itself differentiable (Hessian-vector products, create_graph=True): linear
    in the output gradient, its own gradient gathers at each window's maximum, as aten's max_pool2d's does."""

    @staticmethod
    def forward(ctx, grad_out, offsets, sizes, geometry):
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        n, h, w, c = sizes[:4]
        grad_in = torch.empty((n, c, h, w), memory_format=torch.channels_last)
        _library().max_pool_backward(ctypes.c_void_p(grad_out.data_ptr()), ctypes.c_void_p(offsets.data_ptr()),
                                     ctypes.c_void_p(grad_in.data_ptr()), *_long(*sizes), *geometry)
        ctx.save_for_backward(offsets)
        ctx.shapes = sizes, geometry
        return grad_in

    @staticmethod
    def backward(ctx, grad_grad_in):
        (offsets,), (sizes, geometry) = ctx.saved_tensors, ctx.shapes
        return _gather_at_maxima(grad_grad_in, offsets, sizes, geometry), None, None, None


def _gather_at_maxima(values: torch.Tensor, offsets: torch.Tensor, sizes, geometry) -> torch.Tensor:
    """values (shaped as the pool's input) at each output's window maximum, 0 where the ReLU zeroed it."""
    n, h, w, c, out_h, out_w = sizes
    kernel_h, kernel_w, stride_h, stride_w, top, left = geometry
    offsets = offsets.long()
    rows = torch.arange(out_h).view(1, out_h, 1, 1) * stride_h - top + offsets.div(kernel_w, rounding_mode="floor")
    columns = torch.arange(out_w).view(1, 1, out_w, 1) * stride_w - left + offsets.remainder(kernel_w)
    index = (rows.clamp(0, h - 1) * w + columns.clamp(0, w - 1)) * c + torch.arange(c)
    flat = values.permute(0, 2, 3, 1).reshape(n, h * w * c)  # NHWC order
    gathered = torch.gather(flat, 1, index.reshape(n, -1)).reshape(n, out_h, out_w, c)
    return torch.where(offsets >= 0, gathered, 0.0).permute(0, 3, 1, 2)


def max_pool(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], before: tuple[int, int],
             out_size: tuple[int, int], relu: bool) -> torch.Tensor:
    """Max pool of x (where max_pool_applies) over windows i * stride - before + [0, kernel), clipped to the
    input, `out_size` of them; then ReLU if `relu`."""
    return _MaxPool.apply(x, tuple(kernel), tuple(stride), tuple(before), tuple(out_size), relu)


_TORCH_RAND_LIKE = torch.rand_like  # the spelling the audit's draw injection replaces (parity/dropout.py)


def dropout_applies(x: torch.Tensor) -> bool:
    """Can x's dropout mask come from the Philox kernel: float32 on the CPU, outside torch.compile, and
    torch.rand_like torch's own? Where the audit feeds the reference's draws in, it has replaced rand_like,
    and the layer then draws through it, so the audit's train-mode checks run the layer's own rule."""
    if not (_enabled and x.dtype == torch.float32 and x.device.type == "cpu" and not torch.compiler.is_compiling()
            and torch.rand_like is _TORCH_RAND_LIKE):
        return False
    return _built()


def mirroring_applies(x: torch.Tensor) -> bool:
    """May a model run on x's mirror image (deepobs.layers.runs_mirrored): the switch on, on the CPU, and no
    dropout draws injected (those are laid out for the activations the right way round)?"""
    return _enabled and x.device.type == "cpu" and torch.rand_like is _TORCH_RAND_LIKE


def _philox_key() -> int:
    """A fresh key per mask from torch's default generator: torch.manual_seed (and get/set_rng_state) govern it."""
    return int(torch.empty((), dtype=torch.int64).random_())


def philox_bits(n: int, key: int) -> torch.Tensor:
    """The kernel's raw 32-bit words for elements 0 .. n-1 of key (as int32 bit patterns; dropout.c's order)."""
    out = torch.empty(n, dtype=torch.int32)
    _library().philox_bits(ctypes.c_void_p(out.data_ptr()), ctypes.c_int64(n), ctypes.c_uint64(key))
    return out


def dropout_mask(x: torch.Tensor, p: float, scale: float, key: int | None = None) -> torch.Tensor:
    """The mask `rand_like(x).ge_(p).mul_(scale)` computes (scale where the draw u >= p, else 0, float32), its
    draws from Philox4x32-10 on all threads (dropout.c) instead of torch's serial mt19937."""
    mask = torch.empty_like(x)
    _library().dropout_mask(ctypes.c_void_p(mask.data_ptr()), ctypes.c_int64(mask.numel()),
                            ctypes.c_uint64(_philox_key() if key is None else key), ctypes.c_float(p),
                            ctypes.c_float(scale))
    return mask


ACTIVATION_CODES = {"leaky_relu": 0, "relu": 1}  # as in dropout.c


def activation_dropout_applies(x: torch.Tensor) -> bool:
    """Can an activation and the dropout after it run as one kernel on x (where dropout_applies, dense layout)?"""
    dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    return dense and dropout_applies(x)


def _same_layout_as(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad if grad.stride() == x.stride() else torch.empty_like(x).copy_(grad)


class _ActivationDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kind, slope, p, scale, key):
        out = torch.empty_like(x)
        _library().act_dropout_forward(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(out.data_ptr()),
                                       ctypes.c_int64(x.numel()), ctypes.c_uint64(key), ctypes.c_float(p),
                                       ctypes.c_float(scale), ACTIVATION_CODES[kind], ctypes.c_float(slope))
        ctx.save_for_backward(x)
        ctx.settings = kind, slope, p, scale, key
        return out

    @staticmethod
    def backward(ctx, grad):
        (x,), (kind, slope, p, scale, key) = ctx.saved_tensors, ctx.settings
        if torch.is_grad_enabled():  # create_graph=True: the same rule in differentiable ops, the same mask
            kept_grad = grad * dropout_mask(x, p, scale, key)
            if kind == "leaky_relu":
                return torch.where(x >= 0, kept_grad, kept_grad * slope), None, None, None, None, None
            return torch.where(x <= 0, 0.0, kept_grad), None, None, None, None, None
        grad = _same_layout_as(x, grad)
        grad_x = torch.empty_like(x)
        _library().act_dropout_backward(ctypes.c_void_p(grad.data_ptr()), ctypes.c_void_p(x.data_ptr()),
                                        ctypes.c_void_p(grad_x.data_ptr()), ctypes.c_int64(x.numel()),
                                        ctypes.c_uint64(key), ctypes.c_float(p), ctypes.c_float(scale),
                                        ACTIVATION_CODES[kind], ctypes.c_float(slope))
        return grad_x, None, None, None, None, None


def dropout_scale(p: float) -> float:
    """What tf.nn.dropout multiplies a kept element by: 1 / (1 - rate) (0 when every element is dropped)."""
    return 1 / (1 - p) if p < 1 else 0.0


def activation_dropout(x: torch.Tensor, kind: str, slope: float, p: float, key: int | None = None) -> torch.Tensor:
    """Dropout(p)(activation(x)) in one pass each way (dropout.c): kind "relu" (torch.relu) or "leaky_relu"
    (F.leaky_relu(x, slope) forward, TF's max(x, slope x) gradient, 1 at x == 0). The mask is the one
    dropout_mask draws for the same key, drawn again in the backward instead of kept: the same bits as
    the two layers one after the other."""
    key = _philox_key() if key is None else key
    return _ActivationDropout.apply(x, kind, slope, p, dropout_scale(p), key)


# Which dense products run on oneDNN's inner product rather than torch's F.linear (MKL), by whole-step
# measurement (benchmarks/variants.py, docs/benchmarks.md): oneDNN where the reduction is long (2c2d's
# 3136 -> 1024, the VAE's 12544 -> 784, VGG's 25088 -> 4096: evaluation x1.06 and more), MKL where it is short
# (the MLP's 784 -> 1000 -> 500: its training step x1.10 on F.linear) or the product small: oneDNN's call
# costs 20-40 us more than MKL's (0.15 against 0.10 ms for the MLP's 500 -> 100 layer).
MIN_INNER_PRODUCT_INPUTS = 2048
MIN_INNER_PRODUCT_MACS = 32 << 20  # rows x inputs x outputs
# That rule was measured with MKL on its generic path (the AMD EPYC AVX-512 kind) and on Intel. Where this
# process answered MKL's vendor check and MKL runs its AVX2 branch (deepobs/mkl_paths.py; an AMD Zen 2) MKL was
# faster for every dense product: steps with the dense layers on F.linear, mnist_vae train x1.11 [1.09, 1.13],
# eval x1.09 [1.08, 1.10], mnist_2c2d train x1.07 [1.04, 1.08], eval x0.97 [0.92, 1.02]; there they stay on MKL.
# Its AVX-512 branch on a non-Intel CPU has not been measured against oneDNN: the rule stands there (on Intel's
# AVX-512 + AMX kind the VAE's evaluation step ran x0.96 [0.93, 0.99] with its dense layers on F.linear).
DENSE_ON_ONEDNN = _HAS_ONEDNN and not (mkl_paths.answered() and mkl_paths.mkl_code_path() == "AVX2")


def linear_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Should x @ weight.T + bias run on oneDNN's inner product: float32 2-d input on the CPU, the switch on, this
    machine's MKL branch not the faster one (DENSE_ON_ONEDNN), a product as large as the thresholds above? Under
    torch.compile only without gradients (an opaque op in the graph, `_frozen_inner_product`): inductor lowers
    oneDNN's op only with the weight frozen into the graph as a constant, and the op has no autograd formula."""
    return (_enabled and DENSE_ON_ONEDNN and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.device.type == "cpu" and x.dim() == 2 and weight.is_contiguous()
            and weight.shape[1] >= MIN_INNER_PRODUCT_INPUTS and x.shape[0] * weight.numel() >= MIN_INNER_PRODUCT_MACS
            and not (torch.compiler.is_compiling() and torch.is_grad_enabled()))


class FrozenWeights:
    """A block in which the dense layers' weights do not change (an evaluation pass): each weight is reordered
    into oneDNN's blocked layout on its first product in the block and reused, where the plain call reorders it
    on every product (bit-identical, tests/test_native.py). VGG's first dense layer at batch 16: 29.8 -> 19.5
    ms a product here, after a 126-160 ms reorder once per pass (docs/benchmarks.md). A weight changed in place
    (its version counter moves) is reordered again; one changed behind autograd's back (`.data`) is not, so
    changing weights inside the block is not supported. Reusable: the reordered weights live as long as it."""

    def __init__(self):
        self._made: dict[tuple[int, str], tuple[torch.Tensor, int, torch.Tensor]] = {}
        self._outer: list[FrozenWeights | None] = []

    def __enter__(self) -> "FrozenWeights":
        global _frozen
        self._outer.append(_frozen)
        _frozen = self
        return self

    def __exit__(self, *exc_info) -> None:
        global _frozen
        _frozen = self._outer.pop()

    def _reused(self, weight: torch.Tensor, kind: str, make) -> torch.Tensor:
        """make(weight), made once per weight, kind and version in the block."""
        entry = self._made.get((id(weight), kind))
        if entry is None or entry[0] is not weight or entry[1] != weight._version:
            entry = weight, weight._version, make(weight.detach())
            self._made[(id(weight), kind)] = entry
        return entry[2]

    def packed(self, weight: torch.Tensor, rows: int) -> torch.Tensor:
        return self._reused(weight, "inner product", lambda w: torch.ops.mkldnn._reorder_linear_weight(w, rows))

    def winograd(self, weight: torch.Tensor, flip: bool = False) -> torch.Tensor:
        if flip:
            return self._reused(weight, "winograd flipped", lambda w: winograd_weight(flipped(w)))
        return self._reused(weight, "winograd", winograd_weight)


_frozen: FrozenWeights | None = None


def _inner_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


PRODUCT_TIMINGS = 3
_product_swapped: dict[tuple, bool] = {}  # (rows, weight shape, bias, frozen, threads) -> (W @ x.T).T is faster


def product_choices() -> dict[tuple, bool]:
    """What this process measured: for each (input rows, weight shape, with bias, in a FrozenWeights block,
    threads), True where the dense forward runs as (weight @ x.T).T."""
    return dict(_product_swapped)


def _swapped_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias as (weight @ x.T).T: oneDNN packs x as its "weight" instead of the layer's weight."""
    product = _inner_product(weight, x, None).t().contiguous()
    return product if bias is None else product.add_(bias)


def _forward_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     frozen: FrozenWeights | None = None) -> torch.Tensor:
    """x @ weight.T + bias in whichever of two spellings this machine runs faster for the shape, timed at its
    first use in the process: the layer's weight as oneDNN's weight (reordered on every call, or once in a
    `frozen` block), or (weight @ x.T).T, where oneDNN packs x instead. Both sum the same products in the
    same order: the same bits (tests/test_native.py). Here (Zen 5) the swap wins in training wherever the
    weight has more rows than x (the VAE's output layer 4.93 -> 3.78 ms, VGG's first dense layer at batch 16
    20.2 -> 14.8, 2c2d's 2.33 -> 2.10) and in evaluation only for the VAE's (frozen 3.96 against 3.49 ms);
    docs/benchmarks.md."""
    if frozen is None:
        plain = lambda: _inner_product(x, weight, bias)  # noqa: E731
    else:
        plain = lambda: _inner_product(x, frozen.packed(weight, x.shape[0]), bias)  # noqa: E731
    swapped = lambda: _swapped_product(x, weight, bias)  # noqa: E731
    key = (x.shape[0], tuple(weight.shape), bias is not None, frozen is not None, torch.get_num_threads())
    if key not in _product_swapped:
        _product_swapped[key] = fastest((plain, swapped), PRODUCT_TIMINGS) == 1
    return swapped() if _product_swapped[key] else plain()


def _input_gradient(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """grad @ weight, as an inner product with weight.T as its "weight"."""
    return _inner_product(grad.contiguous(), weight.t(), None)


def _weight_gradient(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad.T @ x, the weight gradient [out, in], as an inner product of grad.T with x.T as its "weight": VGG's
    first dense layer at batch 16 27.4 ms against 46.1 for torch's MKL product here, the VAE's output layer 7.7
    against 9.2 (docs/benchmarks.md)."""
    return _inner_product(grad.t().contiguous(), x.t(), None)


class _Linear(torch.autograd.Function):
    """F.linear with its forward and both gradients on oneDNN's inner product (the primitive TF's dense layers
    run): on the CPUs measured here torch's MKL products of the dense layers' shapes were up to 2x slower
    (docs/benchmarks.md)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x = x.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _forward_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        differentiable = torch.is_grad_enabled()  # create_graph=True: spelled in differentiable ops
        if ctx.needs_input_grad[0]:
            grad_x = grad @ weight if differentiable else _input_gradient(grad, weight)
        if ctx.needs_input_grad[1]:
            grad_weight = grad.t() @ x if differentiable else _weight_gradient(grad, x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) (where linear_applies) on oneDNN; without gradients the bare primitive, on the
    reordered weight inside a FrozenWeights block."""
    if not torch.is_grad_enabled():
        if torch.compiler.is_compiling():
            return _frozen_inner_product(x, weight, bias)
        return _frozen_inner_product_eager(x, weight, bias)
    return _Linear.apply(x, weight, bias)


def _frozen_inner_product_eager(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return _forward_product(x.contiguous(), weight, bias, _frozen)


@torch.library.custom_op("deepobs::frozen_inner_product", mutates_args=())
def _frozen_inner_product(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The inference product as one opaque op in a compiled graph: the block's reordered weight is looked up when
    the graph runs, not when it is traced."""
    return _frozen_inner_product_eager(x, weight, bias)


@_frozen_inner_product.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[0]))


# Winograd F(2x2, 3x3) and F(2x2, 4x4) (winograd.c): a 3x3 or 4x4 stride-1 convolution as 16 or 25 matrix
# products of transformed tiles, 2.25x or 2.56x fewer multiplications than the direct convolution, each block of
# tiles transformed, multiplied and transformed back in one core's cache. Where both channel counts are at least
# WINOGRAD_MIN_CHANNELS it ran faster than oneDNN's direct convolution here (Zen 5, both threads, forward,
# interleaved calls: 3x3 VGG's 64 -> 64 at 224x224, batch 16, x1.33, 256 -> 256 at 56x56 x1.84, 512 -> 512 at
# 14x14 x1.60; All-CNN-C's 96 -> 96 at 16x16, batch 128, x1.58; WRN's 128 -> 128 at 16x16 x1.69; 4x4: the VAE's
# 64 -> 64 at 14x14, batch 64, x1.27-1.56). A rule on the shape, not a timing: the two round differently, and a
# model's bits must not depend on a timing race. The 3x3's round-off against float64 was 2-4x below the direct
# convolution's on every shape measured, the 4x4's ~4x above it (its fifth interpolation point;
# docs/benchmarks.md); the parity audit's tolerances hold for both.
WINOGRAD_MIN_CHANNELS = {3: 64, 4: 64}  # kernel size -> the fewest channels in and out


def winograd_applies(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> bool:
    """Does the convolution run as Winograd: float32 on the CPU, a 3x3 or 4x4 kernel at stride 1, the same zero
    padding (0 to kernel - 1) on every side, both channel counts at least WINOGRAD_MIN_CHANNELS[kernel] and whole
    vectors, and for a 4x4 kernel whole 2x2 tiles (an even output size: the VAE's 7x7 layer, whose tiles compute
    64 outputs for its 49, ran x0.99 forward and x0.81 input gradient)? Under torch.compile only without
    gradients (an opaque op in the graph). Needs MKL's sgemm in torch's library."""
    pair = torch.nn.modules.utils._pair
    outputs, inputs = weight.shape[:2]
    size = weight.shape[-1]
    return (_enabled and x.dtype == weight.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 4
            and size in WINOGRAD_MIN_CHANNELS and tuple(weight.shape[2:]) == (size, size) and groups == 1
            and pair(stride) == (1, 1) and pair(dilation) == (1, 1) and not isinstance(padding, str)
            and len(set(pair(padding))) == 1 and 0 <= pair(padding)[0] < size
            and min(outputs, inputs) >= WINOGRAD_MIN_CHANNELS[size]
            and (size == 3 or all((extent + 2 * pair(padding)[0] - size + 1) % 2 == 0 for extent in x.shape[2:]))
            and outputs % CHANNEL_MULTIPLE == 0 and inputs % CHANNEL_MULTIPLE == 0
            and not (torch.compiler.is_compiling() and torch.is_grad_enabled())
            and (torch.compiler.is_compiling() or (_built() and _sgemm() is not None)))


# F(2x2, 3x3): G J = P G (J reverses a kernel's rows or columns, P swaps positions 0 and 3), so the flipped
# kernels' transforms are the kernels' own, their 4x4 positions permuted so. F(2x2, 4x4)'s points (0, 1, -1, 2)
# are not closed under x -> 1/x: its flipped kernels are transformed anew.
FLIPPED_POSITIONS = (3, 1, 2, 0)


def flipped(weight: torch.Tensor) -> torch.Tensor:
    """The kernels of a convolution's input gradient: flipped, in and out swapped."""
    return weight.flip(2, 3).transpose(0, 1)


def input_gradient_transform(weight: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """The transform of `flipped(weight)` (the convolution that gives a convolution's input gradient), given
    `transformed = winograd_weight(weight)`: for a 3x3 kernel its positions permuted and each matrix transposed
    (the values `winograd_weight(flipped(weight))` computes, one copy and no transform); for a 4x4 that
    transform. A copy, not transposed views: MKL's products on transposed kernels ran the input gradient of
    VGG's 512 -> 512 at 14x14, batch 16, in 33.6 ms, on the copy in 18.9."""
    if weight.shape[-1] != 3:
        return winograd_weight(flipped(weight))
    order = [4 * FLIPPED_POSITIONS[a] + FLIPPED_POSITIONS[b] for a in range(4) for b in range(4)]
    return transformed[order].transpose(1, 2).contiguous()


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """G g G^T of each kernel of weight [out, in, r, r] (r = 3 or 4), as [(r + 1)^2, in, out]."""
    size = weight.shape[-1]
    kernels = weight.permute(2, 3, 1, 0).detach().contiguous()
    transformed = kernels.new_empty(((size + 1) ** 2, *kernels.shape[2:]))
    _library().winograd_weight(*_long(size), _pointer(kernels), _pointer(transformed),
                               *_long(kernels[0, 0].numel()))
    return transformed


WINOGRAD_BLOCK_BYTES = 1 << 20  # a block's transformed tiles and products: half this CPU's 2 MB L2 a core
SLAB_PAD = 16  # winograd.c's floats between a block's slabs


def winograd(x: torch.Tensor, transformed: torch.Tensor, bias: torch.Tensor | None, padding: int,
             relu: bool = False) -> torch.Tensor:
    """The convolution of x (NCHW, any layout) with the kernels `winograd_weight` transformed ([(r + 1)^2, in,
    out]), zero-padded by `padding` on every side, + bias, then ReLU where asked; channels_last. Block by block
    of tiles, each transformed, multiplied and transformed back in one core's cache (winograd.c)."""
    x, transformed = x.detach().contiguous(memory_format=torch.channels_last), transformed.contiguous()
    (positions, inputs, outputs), size = transformed.shape, math.isqrt(transformed.shape[0]) - 1
    tiling = _tiling(x, size, padding)
    block = max(1, min(128, WINOGRAD_BLOCK_BYTES // (positions * 4 * (inputs + outputs))))
    out = torch.empty((x.shape[0], outputs, tiling.out_height, tiling.out_width), dtype=x.dtype,
                      memory_format=torch.channels_last)
    scratch = x.new_empty(_library().winograd_threads() * positions * (block * (inputs + outputs) + 2 * SLAB_PAD))
    bias = None if bias is None else bias.detach().contiguous()  # kept alive while the kernels read it
    _library().winograd_forward(*_long(size), _sgemm(), _pointer(x), _pointer(transformed),
                                None if bias is None else _pointer(bias), _pointer(out), _pointer(scratch),
                                *_long(x.shape[2], x.shape[3], inputs, outputs, padding, padding, tiling.out_height,
                                       tiling.out_width, tiling.rows, tiling.columns, tiling.tiles, block),
                                ctypes.c_int(relu))
    return out


@functools.cache
def _sgemm() -> ctypes.c_void_p | None:
    """MKL's Fortran sgemm in torch's own library (the products inside winograd.c), or None."""
    try:
        function = ctypes.CDLL(str(Path(torch.__file__).with_name("lib") / "libtorch_cpu.so")).sgemm_
    except (OSError, AttributeError):
        return None
    return ctypes.cast(function, ctypes.c_void_p)


class _Tiling(NamedTuple):
    out_height: int
    out_width: int
    rows: int  # of tiles
    columns: int
    tiles: int


def _tiling(x: torch.Tensor, size: int, padding: int) -> _Tiling:
    """The 2x2 output tiles of a stride-1 convolution of x (NCHW) with size x size kernels."""
    (n, _, height, width) = x.shape
    out_height, out_width = height + 2 * padding - size + 1, width + 2 * padding - size + 1
    rows, columns = -(-out_height // 2), -(-out_width // 2)
    return _Tiling(out_height, out_width, rows, columns, n * rows * columns)


def _pointer(tensor: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(tensor.data_ptr())


def winograd_weight_gradient_pays(x: torch.Tensor, weight: torch.Tensor, padding: int) -> bool:
    """Is the weight gradient faster by Winograd: more tiles than input channels, and at least
    WINOGRAD_GRADIENT_MIN_TILES? With few tiles its fixed part (the C x K sums and their transform back)
    outweighs what the products save. Here (interleaved calls, oneDNN -> Winograd): VGG's 512 -> 512 at 14x14,
    batch 16 (784 tiles), 41.7 -> 33.9 ms; WRN-40-4's 128 -> 128 at 16x16 (1,024 tiles) 3.14 -> 1.98 ms, its
    256 -> 256 at 8x8 (256 tiles) 3.44 -> 4.44 ms; 128 -> 144 at 13x13, batch 4 (196 tiles), 0.84 -> 0.91 ms."""
    tiles = _tiling(x, weight.shape[-1], padding).tiles
    return tiles > x.shape[1] and tiles >= WINOGRAD_GRADIENT_MIN_TILES


WINOGRAD_GRADIENT_MIN_TILES = 512
WINOGRAD_GRADIENT_BLOCK = 128  # tiles: larger than the forward's blocks, so that each block's products amortise
# reading and writing a thread's C x K sums (VGG's 512 -> 512 at 14x14: 16-tile blocks 60 ms, 128-tile 34 ms)


def winograd_weight_gradient(x: torch.Tensor, grad: torch.Tensor, size: int, padding: int) -> torch.Tensor:
    """The weight gradient [out, in, size, size] (channels_last) of the convolution of x zero-padded by
    `padding`, given its output gradient `grad`, by the same transforms (winograd.c): the products of the
    transformed input tiles with the transformed output gradients, summed over the tiles block by block into
    each thread's sums, those added in thread order, then transformed back."""
    x = x.detach().contiguous(memory_format=torch.channels_last)
    grad = grad.detach().contiguous(memory_format=torch.channels_last)
    (channels, outputs), positions = (x.shape[1], grad.shape[1]), (size + 1) ** 2
    tiling, threads = _tiling(x, size, padding), _library().winograd_threads()
    sums = x.new_zeros((threads, positions, channels, outputs))
    scratch = x.new_empty(threads * positions * (WINOGRAD_GRADIENT_BLOCK * (channels + outputs) + 2 * SLAB_PAD))
    _library().winograd_weight_sums(*_long(size), _sgemm(), _pointer(x), _pointer(grad), _pointer(sums),
                                    _pointer(scratch), *_long(x.shape[2], x.shape[3], channels, outputs, padding,
                                                              padding, tiling.out_height, tiling.out_width,
                                                              tiling.rows, tiling.columns, tiling.tiles,
                                                              WINOGRAD_GRADIENT_BLOCK))
    summed = sums.sum(0)
    weight_grad = torch.empty((outputs, channels, size, size), dtype=x.dtype, memory_format=torch.channels_last)
    _library().winograd_weight_gradient(*_long(size), _pointer(summed), _pointer(weight_grad),
                                        *_long(channels, outputs))
    return weight_grad


def winograd_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                  relu: bool = False, flip: bool = False) -> torch.Tensor:
    """conv2d (+ ReLU) without gradients as Winograd, with the kernels `weight`, or `flipped(weight)` where
    `flip` (a stride-1 transposed convolution's); inside a FrozenWeights block each kernel is transformed once
    a pass. Compiled, one opaque op."""
    if torch.compiler.is_compiling():
        return _winograd_conv_op(x, weight, bias, padding, relu, flip)
    return _winograd_conv_eager(x, weight, bias, padding, relu, flip)


def _winograd_conv_eager(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                         relu: bool, flip: bool) -> torch.Tensor:
    if not _built() or _sgemm() is None:  # a graph compiled where the library built, run where it did not
        out = torch.nn.functional.conv2d(x, flipped(weight) if flip else weight, bias, padding=padding)
        return torch.relu(out) if relu else out
    if _frozen is not None:
        transformed = _frozen.winograd(weight, flip)
    else:
        transformed = winograd_weight(flipped(weight) if flip else weight)
    return winograd(x, transformed, bias, padding, relu)


@torch.library.custom_op("deepobs::winograd_conv", mutates_args=())
def _winograd_conv_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: int,
                      relu: bool, flip: bool) -> torch.Tensor:
    return _winograd_conv_eager(x, weight, bias, padding, relu, flip)


@_winograd_conv_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: int, relu: bool,
      flip: bool) -> torch.Tensor:
    reach = weight.shape[-1] - 1
    size = (x.shape[0], weight.shape[1 if flip else 0], x.shape[2] + 2 * padding - reach,
            x.shape[3] + 2 * padding - reach)
    return x.new_empty(size).contiguous(memory_format=torch.channels_last)
