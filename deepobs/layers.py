"""Layers and initialisers that reproduce TF1 semantics in PyTorch.

Each initialiser is named after the TF1 initialiser it reproduces. Kernels use
PyTorch layouts (conv OIHW, linear [out, in]); fan-in/fan-out are the same
numbers TF computes from HWIO / [in, out].
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepobs import native

# TF1's VarianceScaling(distribution="truncated_normal") divides the std by the
# std of a unit normal truncated at +-2, so the truncated draw has the target std.
TRUNCATED_NORMAL_STD_CORRECTION = 0.87962566103423978


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for one spatial dimension: extra pixel goes after."""
    effective_kernel = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective_kernel - size, 0)
    return total // 2, total - total // 2


def _same_pads_hw(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int, int, int]:
    top, bottom = tf_same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = tf_same_padding(x.shape[-1], kernel[1], stride[1])
    return top, bottom, left, right


def _split_padding(top: int, bottom: int, left: int, right: int) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """A (top, bottom, left, right) zero padding as (what F.pad adds, in its (left, right, top, bottom) order;
    what the convolution pads on both sides itself): only the asymmetric excess is copied. The VAE's stride-1
    transposed conv, (2, 1) per side: fwd + bwd 24.3 -> 22.6 ms a layer here, the same bits as all copied
    (tests/test_port.py)."""
    rows, columns = max(min(top, bottom), 0), max(min(left, right), 0)  # a negative side: F.pad crops
    return (left - columns, right - columns, top - rows, bottom - rows), (rows, columns)


def _padded(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """x with the asymmetric excess of the padding copied in (`_split_padding`), and the padding left to the
    convolution."""
    explicit, implicit = _split_padding(top, bottom, left, right)
    return (F.pad(x, explicit) if any(explicit) else x), implicit


class Conv2d(nn.Conv2d):
    """nn.Conv2d through `conv2d` (a training pass's zero padding placed where this machine is faster)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return super()._conv_forward(x, weight, bias)
        return conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2dSame(Conv2d):
    """nn.Conv2d with TF 'SAME' padding (asymmetric when the total padding is odd)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, padding = self.padded(x)
        return conv2d(x, self.weight, self.bias, self.stride, padding)

    def padded(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """x, with the 'SAME' padding added where it is asymmetric, and the padding left to the convolution."""
        return _padded(x, *_same_pads_hw(x, self.kernel_size, self.stride))


class ConvTranspose2dSame(nn.ConvTranspose2d):
    """tf.layers.conv2d_transpose(padding='same'): output size input * stride.

    TF computes the full transposed convolution ((n - 1) * stride + kernel) and crops the padding
    of the forward 'SAME' conv from output to input: (1, 1) for k4 s2 7->14, (1, 2) for k4 s1
    14->14. ConvTranspose2d(padding=p) crops p on both sides: exactly TF's crop for the first, 15 (p=1)
    or 13 (p=2) for the second, which therefore runs as a forward convolution (below).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (height, width), (kh, kw), (sh, sw) = x.shape[-2:], self.kernel_size, self.stride
        top, bottom = tf_same_padding(height * sh, kh, sh)
        left, right = tf_same_padding(width * sw, kw, sw)
        if (sh, sw) == (1, 1):
            crop = (top, bottom, left, right)
            padded_x, padding = _correlation_inputs(x, self.weight, crop)
            if native.winograd_applies(padded_x, self.weight.transpose(0, 1), 1, padding, 1, 1):
                return winograd_conv2d(padded_x, self.weight, self.bias, padding[0], flip=True)
            if torch.is_grad_enabled() and not torch.compiler.is_compiling():
                return _StrideOneTransposedConv.apply(x, self.weight, self.bias, crop)
            return _stride_one_transposed_conv(x, self.weight, self.bias, crop)
        if (top, left) == (bottom, right):
            # A symmetric crop is conv_transpose2d's own padding: the 14x14 output directly, not 16x16 then a
            # copy of its middle (the VAE's k4 s2 7->14: the same bits, fwd + bwd 3.6 -> 1.9 ms, tests/test_port.py).
            return F.conv_transpose2d(x, self.weight, self.bias, self.stride, padding=(top, left))
        y = F.conv_transpose2d(x, self.weight, self.bias, self.stride)
        return y[..., top:y.shape[-2] - bottom, left:y.shape[-1] - right]


def _stride_one_transposed_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                crop: tuple[int, int, int, int]) -> torch.Tensor:
    """The stride-1 transposed conv cropped by (top, bottom, left, right): the correlation of the input, padded by
    kernel - 1 less the crop, with the flipped kernel (in and out swapped) is the cropped output itself, as TF's
    Conv2DBackpropInput computes it: 14x14 instead of the full 17x17 then cropped, and oneDNN's forward
    convolution (docs/benchmarks.md). In channels_last: oneDNN's backward of this convolution is x1.36 faster in
    NHWC here."""
    (x, padding), kernel = _correlation_inputs(x, weight, crop), _flipped(weight)
    return F.conv2d(x, kernel, bias, padding=padding)


def _correlation_inputs(x: torch.Tensor, weight: torch.Tensor, crop) -> tuple[torch.Tensor, tuple[int, int]]:
    (kh, kw), (top, bottom, left, right) = weight.shape[-2:], crop
    return _padded(channels_last(x), kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)


def _flipped(weight: torch.Tensor) -> torch.Tensor:
    return weight.flip(2, 3).transpose(0, 1).contiguous(memory_format=torch.channels_last)


class _StrideOneTransposedConv(torch.autograd.Function):
    """`_stride_one_transposed_conv` with its input gradient as TF computes it: a forward convolution of the
    output gradient with the kernel, 'SAME'-padded by the crop. Autograd's would run oneDNN's backward-data on
    the 15x15 padded input and drop its excess row and column: the VAE's layer (64 x 64 x 14 x 14, k4) forward +
    backward 35.6 -> 32.7 ms on the AMD EPYC AVX2 kind, the same bits there (tests/test_port.py compares them
    with the float64 cropped full transposed conv to float32 round-off). A create_graph backward runs autograd's
    own formulas."""

    @staticmethod
    def forward(ctx, x, weight, bias, crop):
        (padded_x, padding), kernel = _correlation_inputs(x, weight, crop), _flipped(weight)
        ctx.save_for_backward(x, weight, bias, padded_x, kernel)
        ctx.crop, ctx.padding = crop, padding
        return F.conv2d(padded_x, kernel, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        (x, weight, bias, padded_x, kernel), crop = ctx.saved_tensors, ctx.crop
        if torch.is_grad_enabled():  # create_graph=True: differentiable again, through the plain ops
            plain = lambda *tensors: _stride_one_transposed_conv(*tensors, crop)  # noqa: E731
            return (*_gradients_through(plain, (x, weight, bias), grad), None)
        grad = channels_last(grad)
        grad_x = None
        if ctx.needs_input_grad[0]:
            padded_grad, padding = _padded(grad, *crop)
            grad_x = F.conv2d(padded_grad, weight, padding=padding)
        _, grad_kernel, grad_bias = torch.ops.aten.convolution_backward(
            grad, padded_x, kernel, None if bias is None else list(bias.shape), [1, 1], list(ctx.padding), [1, 1],
            False, [0, 0], 1, [False, ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]])
        grad_weight = None if grad_kernel is None else grad_kernel.transpose(0, 1).flip(2, 3)
        return grad_x, grad_weight, grad_bias, None


def _gradients_through(plain, tensors: tuple, grad: torch.Tensor) -> tuple:
    """A create_graph backward: the gradients of plain(*tensors) by autograd's own formulas, themselves
    differentiable (None for a tensor that needs none)."""
    inputs = [t for t in tensors if t is not None and t.requires_grad]
    with torch.enable_grad():
        out = plain(*tensors)
    found = iter(torch.autograd.grad(out, inputs, grad, create_graph=True))
    return tuple(next(found) if t is not None and t.requires_grad else None for t in tensors)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """F.conv2d; in a training pass a stride-1 float32 convolution through `_PaddingPlacedConv`."""
    padding = nn.modules.utils._pair(padding) if not isinstance(padding, str) else padding
    if native.winograd_applies(x, weight, stride, padding, dilation, groups):
        return winograd_conv2d(x, weight, bias, padding[0])
    if _places_padding(x, weight, stride, padding, dilation, groups):
        return _PaddingPlacedConv.apply(x, weight, bias, padding, None)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _places_padding(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> bool:
    pair = nn.modules.utils._pair
    return (native.is_on() and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and (x.requires_grad or weight.requires_grad) and x.dtype == weight.dtype == torch.float32
            and x.device.type == "cpu" and x.dim() == 4 and pair(stride) == (1, 1) and pair(dilation) == (1, 1)
            and groups == 1 and not isinstance(padding, str)
            and all(0 <= p < k for p, k in zip(padding, weight.shape[-2:])))


PLACEMENT_TIMINGS = 3  # timed calls of each candidate, interleaved, after an untimed one
# Measured only where the zeros add at least this share to the input's area (2c2d's 14x14 padded by 2: 65%,
# Inception's 17x17 by 3 on one axis: 35%, its 35x35 by 2: 24%); below it the convolution pads, untimed (32x32
# by 1: 13%; VGG's 224x224 by 1: 1.8%, where timing both took 20 s at batch 16).
PADDING_SHARE_TO_MEASURE = 0.2
_padding_copied: dict[tuple, bool] = {}  # (pass, geometry, layout, threads) -> a copy pads faster


def padding_placements() -> dict[tuple, bool]:
    """What this process measured: for each (pass, input shape, kernel shape, padding, channels_last, threads),
    True where the padding is copied in, False where the convolution pads."""
    return dict(_padding_copied)


def _copy_wins(kind, x: torch.Tensor, weight: torch.Tensor, padding, by_convolution, by_copy) -> bool:
    key = (kind, tuple(x.shape), tuple(weight.shape), tuple(padding),
           x.is_contiguous(memory_format=torch.channels_last), torch.get_num_threads())
    if key not in _padding_copied:
        (height, width), (rows, columns) = x.shape[-2:], padding
        share = (height + 2 * rows) * (width + 2 * columns) / (height * width) - 1
        _padding_copied[key] = (share >= PADDING_SHARE_TO_MEASURE
                                and native.fastest((by_convolution, by_copy), PLACEMENT_TIMINGS) == 1)
    return _padding_copied[key]


def _zero_padded(x: torch.Tensor, padding) -> torch.Tensor:
    (rows, columns) = padding
    return F.pad(x, (columns, columns, rows, rows)) if rows or columns else x


class _PaddingPlacedConv(torch.autograd.Function):
    """A stride-1 convolution whose zero padding is either left to oneDNN or copied in first, whichever this
    machine runs faster, chosen per geometry by timing both at its first call in the process (`_copy_wins`);
    its input gradient likewise: oneDNN's backward-data, or the forward convolution of the output gradient,
    zero-padded by kernel - 1 - padding, with the flipped kernel (in and out swapped). Both give the same
    sums in the same order: the same bits on the AMD EPYC AVX2 kind, where torch's oneDNN (v3.12) pads a
    5x5 kernel's 14x14 input by 2 slower than a copy does (2c2d's second conv: forward 18.2 -> 14.0 ms, input
    gradient 17.8 -> 14.1 ms; its training step x1.065-1.087) and a 3x3's by 1 faster (WRN, All-CNN-C; all
    in docs/benchmarks.md). `plan`, (copy in the forward, forward conv for the input gradient), overrides the
    timing (tests). A create_graph backward runs autograd's own formulas."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, plan):
        ctx.save_for_backward(x, weight, bias)
        ctx.padding, ctx.plan = padding, plan
        by_convolution = lambda: F.conv2d(x, weight, bias, padding=padding)  # noqa: E731
        by_copy = lambda: F.conv2d(_zero_padded(x, padding), weight, bias)  # noqa: E731
        if not any(padding):
            return by_convolution()
        copied = plan[0] if plan is not None else _copy_wins("forward", x, weight, padding, by_convolution, by_copy)
        return by_copy() if copied else by_convolution()

    @staticmethod
    def backward(ctx, grad):
        (x, weight, bias), padding = ctx.saved_tensors, ctx.padding
        if torch.is_grad_enabled():  # create_graph=True: differentiable again, through the plain ops
            plain = lambda *tensors: F.conv2d(*tensors, padding=padding)  # noqa: E731
            return (*_gradients_through(plain, (x, weight, bias), grad), None, None)
        grad = channels_last(grad) if x.is_contiguous(memory_format=torch.channels_last) else grad.contiguous()
        wanted = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]]
        bias_sizes = None if bias is None else list(bias.shape)

        def gradients(mask):
            return torch.ops.aten.convolution_backward(grad, x, weight, bias_sizes, [1, 1], list(padding), [1, 1],
                                                       False, [0, 0], 1, mask)

        flipped_padding = tuple(k - 1 - p for k, p in zip(weight.shape[-2:], padding))

        def by_copy():  # the input gradient as a forward convolution, the others as before
            grad_x = F.conv2d(_zero_padded(grad, flipped_padding), _flipped(weight))
            return grad_x, *gradients([False, *wanted[1:]])[1:]

        by_convolution = lambda: gradients(wanted)  # noqa: E731
        copied = wanted[0] and (ctx.plan[1] if ctx.plan is not None else _copy_wins(
            ("backward", *wanted), grad, weight, flipped_padding, by_convolution, by_copy))
        return (*(by_copy() if copied else by_convolution()), None, None)


def winograd_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                    relu: bool = False, flip: bool = False) -> torch.Tensor:
    """conv2d (+ ReLU) as Winograd (where `native.winograd_applies`) with the kernels `weight`, or where `flip`
    (a stride-1 transposed convolution's) `native.flipped(weight)`: in a training pass through `_WinogradConv`,
    else the bare forward."""
    tracked = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
    if torch.is_grad_enabled() and tracked:
        out = _WinogradConv.apply(x, _flipped(weight) if flip else weight, bias, padding)
        return torch.relu(out) if relu else out
    return native.winograd_conv(x, weight, bias, padding, relu, flip)


class _WinogradConv(torch.autograd.Function):
    """A 3x3 or 4x4 stride-1 convolution whose forward and gradients run as Winograd F(2x2, 3x3) or F(2x2, 4x4)
    (deepobs.native): the input gradient is the convolution of the output gradient, zero-padded by kernel - 1 -
    padding, with the flipped kernels, in and out swapped (`native.input_gradient_transform`); the weight
    gradient sums the transformed input tiles times the transformed output gradients over the tiles (oneDNN's
    where there are few tiles, `native.winograd_weight_gradient_pays`). A create_graph backward runs autograd's
    own formulas."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight, bias)
        ctx.padding, ctx.transformed = padding, native.winograd_weight(weight)
        return native.winograd(x, ctx.transformed, bias, padding)

    @staticmethod
    def backward(ctx, grad):
        (x, weight, bias), padding, size = ctx.saved_tensors, ctx.padding, ctx.saved_tensors[1].shape[-1]
        if torch.is_grad_enabled():  # create_graph=True: differentiable again, through the plain ops
            plain = lambda *tensors: F.conv2d(*tensors, padding=padding)  # noqa: E731
            return (*_gradients_through(plain, (x, weight, bias), grad), None)
        grad = channels_last(grad)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            kernels = native.input_gradient_transform(weight, ctx.transformed)
            grad_x = native.winograd(grad, kernels, None, size - 1 - padding)
        if ctx.needs_input_grad[1] and native.winograd_weight_gradient_pays(x, weight, padding):
            grad_weight = native.winograd_weight_gradient(x, grad, size, padding)
            if not weight.is_contiguous(memory_format=torch.channels_last):
                grad_weight = grad_weight.contiguous()
        elif ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, channels_last(x), weight, None, [1, 1], [padding] * 2, [1, 1], False, [0, 0], 1,
                [False, True, False])[1]
        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None


class MaxPool2dSame(nn.Module):
    """TF max_pool with 'SAME' padding: padded positions never win (-inf), extra pixel after.

    In a training step on float32 NHWC input the pool runs deepobs.native's kernel (bit-identical to the
    aten path below, faster); `forward(x, relu=True)` is the pool followed by ReLU, fused there.
    """

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size = (kernel_size, kernel_size)
        self.stride = (stride, stride)

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        top, bottom, left, right = _same_pads_hw(x, self.kernel_size, self.stride)
        if native.max_pool_applies(x):
            out_size = tuple(-(-size // stride) for size, stride in zip(x.shape[-2:], self.stride))
            return native.max_pool(x, self.kernel_size, self.stride, (top, left), out_size, relu)
        if _implicit_pool_padding_is_same(x.shape[-2:], self.kernel_size, self.stride, (top, left)):
            # max_pool2d's own padding is -inf and ceil_mode clips the last window at the edge: the
            # same windows as padding -inf after, without materialising a padded copy.
            pooled = F.max_pool2d(x, self.kernel_size, self.stride, (top, left), ceil_mode=True)
        else:
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
            pooled = F.max_pool2d(x, self.kernel_size, self.stride)
        return F.relu(pooled) if relu else pooled


class MaxPoolReLU(nn.Sequential):
    """Sequential(MaxPool2dSame, nn.ReLU), the two run as one (MaxPool2dSame.forward(x, relu=True))."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__(MaxPool2dSame(kernel_size, stride), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _runs_as_one(self, (MaxPool2dSame,)):
            return self[0](x, relu=True)
        return super().forward(x)


CONV_TYPES = (nn.Conv2d, Conv2d, Conv2dSame)  # the convolutions a fused block takes as they are


class ConvReLU(nn.Sequential):
    """Sequential(conv, nn.ReLU); without gradients (evaluation) one oneDNN convolution with the ReLU as
    its post-op (deepobs.native.conv_relu: bit-identical, no second pass over the activation).
    `forward(x, mirrored=True)` takes and gives the mirror images (see `mirrored_conv`)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv, nn.ReLU())

    def forward(self, x: torch.Tensor, mirrored: bool = False) -> torch.Tensor:
        conv = self[0]
        if not (mirrored or (_runs_as_one(self, CONV_TYPES) and native.conv_relu_applies(x, conv))):
            return super().forward(x)
        weight, x, padding = _mirrored_conv_inputs(conv, x) if mirrored else _conv_inputs(conv, x)
        if native.winograd_applies(x, weight, conv.stride, padding, conv.dilation, conv.groups):
            return winograd_conv2d(x, weight, conv.bias, nn.modules.utils._pair(padding)[0], relu=True)
        if native.conv_relu_applies(x, conv):
            return native.conv_relu(x, weight, conv.bias, padding, conv.stride, conv.dilation, conv.groups)
        return torch.relu(conv2d(x, weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups))


def _conv_inputs(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """(kernel, input, padding) of conv on x as F.conv2d takes them ('SAME''s excess copied in)."""
    return (conv.weight, *conv.padded(x)) if isinstance(conv, Conv2dSame) else (conv.weight, x, conv.padding)


def _read_padding(conv: nn.Conv2d, size: int, axis: int) -> tuple[int, int]:
    """The zero padding (before, after) conv's windows read along one axis: TF 'SAME''s for Conv2dSame; a plain
    conv's own, less, after, the input rows its strided windows stop short of (a negative: rows never read)."""
    if isinstance(conv, Conv2dSame):
        return tf_same_padding(size, conv.kernel_size[axis], conv.stride[axis])
    pad, reach = conv.padding[axis], (conv.kernel_size[axis] - 1) * conv.dilation[axis] + 1
    return pad, pad - (size + 2 * pad - reach) % conv.stride[axis]


def _mirrored_conv_inputs(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """(kernel, input, padding) that convolve the mirror image `x` (both spatial axes flipped) into the mirror image
    of conv's output: the flipped kernel, and the padding the windows read mirrored, (after, before). TF puts
    'SAME''s odd pixel after, so mirrored it comes first, and padding it on both sides is the same when the zeros
    this adds at the end lie past the last window: All-CNN-C's stride-2 convs then read their input uncopied."""
    pads = []
    for axis, size in enumerate(x.shape[-2:]):
        after, before = _read_padding(conv, size, axis)
        reach, stride = (conv.kernel_size[axis] - 1) * conv.dilation[axis] + 1, conv.stride[axis]
        if before > after and (size + 2 * before - reach) // stride == (size + before + after - reach) // stride:
            after = before  # as many windows, at the same places
        pads.append((before, after))
    return (conv.weight.flip(2, 3), *_padded(x, *pads[0], *pads[1]))


def mirrored_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv(x.flip(2, 3)).flip(2, 3) without flipping any activation: the mirror image of conv's output from the
    mirror image of its input. A network of such convolutions, elementwise layers and a closing spatial mean
    (All-CNN-C) can run on the mirrored image end to end: the same sums in another order."""
    weight, x, padding = _mirrored_conv_inputs(conv, x)
    return conv2d(x, weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)


def _symmetric_conv_padding(conv: nn.Conv2d, size: tuple[int, int]) -> list[int] | None:
    """The padding conv reads, where it is the same on both sides of each axis; else None."""
    pads = [_read_padding(conv, n, axis) for axis, n in enumerate(size)]
    return None if any(before != after for before, after in pads) else [before for before, _ in pads]


def _conv_output_size(conv: nn.Conv2d, size: tuple[int, int], padding: list[int]) -> tuple[int, int]:
    return tuple((n + 2 * p - (k - 1) * d - 1) // s + 1
                 for n, p, k, d, s in zip(size, padding, conv.kernel_size, conv.dilation, conv.stride))


def _same_pool_before(pool: "MaxPool2dSame", size) -> list[int]:
    """The 'SAME' padding before each axis's first window of `pool` on an input of `size`."""
    return [tf_same_padding(n, k, s)[0] for n, k, s in zip(size, pool.kernel_size, pool.stride)]


def runs_blocked(stages: list[tuple[nn.Sequential, "MaxPoolReLU"]], x: torch.Tensor) -> bool:
    """May `stages` ((Sequential(conv), MaxPoolReLU) pairs) run on oneDNN's blocked layout
    (`conv_pool_relu_blocked`)? In an eager evaluation with deepobs.native on (`native.blocked_eval_applies`),
    as the model was built: plain unhooked convs with a symmetric zero padding, pools that run as one and whose
    'SAME' windows max_pool2d's own padding reproduces. Otherwise the stages run one by one, so taps see them."""
    if not native.blocked_eval_applies(x):
        return False
    size = tuple(x.shape[-2:])
    for conv_block, pool_block in stages:
        if len(conv_block) != 1 or type(conv_block[0]) not in CONV_TYPES or _hooked(conv_block, conv_block[0]):
            return False
        conv = conv_block[0]
        padding = _symmetric_conv_padding(conv, size)
        if padding is None or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return False
        size = _conv_output_size(conv, size, padding)
        if type(pool_block) is not MaxPoolReLU or _hooked(pool_block) or not _runs_as_one(pool_block, (MaxPool2dSame,)):
            return False
        pool = pool_block[0]
        if not _implicit_pool_padding_is_same(size, pool.kernel_size, pool.stride, _same_pool_before(pool, size)):
            return False
        size = tuple(-(-n // s) for n, s in zip(size, pool.stride))
    return True


def conv_pool_relu_blocked(stages: list[tuple[nn.Sequential, "MaxPoolReLU"]], x: torch.Tensor) -> torch.Tensor:
    """The stages (conv, then 'SAME' max pool and ReLU; where runs_blocked) on oneDNN's blocked layout
    (nChw8c/16c, `to_mkldnn`), returned as a dense NCHW tensor. oneDNN's convolution prefers that layout to NHWC
    on AVX-512: 2c2d's 5x5 convs ran 0.82 and 10.4 ms there against 1.10 and 11.3 ms (batch 128), and its
    evaluation 17.7 against 19.7 ms compiled (docs/benchmarks.md). Values to float32 round-off (another
    summation order), tested against the float64 model."""
    h = x.contiguous().to_mkldnn()
    for (conv,), (pool, _) in stages:
        padding = _symmetric_conv_padding(conv, tuple(h.shape[-2:]))
        h = torch.mkldnn_convolution(h, conv.weight.contiguous(), conv.bias, padding, conv.stride, conv.dilation,
                                     conv.groups)
        before = _same_pool_before(pool, h.shape[-2:])
        h = torch.relu(F.max_pool2d(h, pool.kernel_size, pool.stride, before, ceil_mode=True))
    return h.to_dense()


def runs_mirrored(model: nn.Module, x: torch.Tensor, block_types: tuple[type, ...]) -> bool:
    """May `model` (its children: ConvReLU blocks and elementwise layers of `block_types`) run on x's mirror image?
    Only with deepobs.native on, on the CPU, where it was measured (the copies of All-CNN-C's asymmetric 'SAME'
    paddings saved), and as the model was built: no module hooked or replaced, so taps and edits see the
    activations the right way round, and no dropout draws injected (the audit's, laid out for the unmirrored
    activations; it replaces torch.rand_like)."""
    if not (native.mirroring_applies(x) and not _hooked(*model.modules())):
        return False
    return all(type(block) in block_types and (type(block) is not ConvReLU or (
        _runs_as_one(block, CONV_TYPES) and block[0].padding_mode == "zeros" and not isinstance(block[0].padding, str)))
        for block in model.children())


def _hooked(*modules: nn.Module) -> bool:
    return any(_GLOBAL_MODULE_HOOKS) or any(module._forward_hooks or module._forward_pre_hooks or
                                            module._backward_hooks or module._backward_pre_hooks for module in modules)


def _runs_as_one(block: nn.Sequential, first_types: tuple[type, ...]) -> bool:
    """Are `block`'s two children still (one of `first_types`, a plain nn.ReLU), neither hooked? Once a child is
    replaced (a planted bug, a user's edit) or hooked (the audit's taps), the children run one by one, so
    taps, hooks and edits address them as before ("pool1.0", "features.3.1")."""
    if len(block) != 2:
        return False
    first, activation = block[0], block[1]
    return (type(first) in first_types and type(activation) is nn.ReLU and not activation.inplace
            and not _hooked(first, activation))


# torch.nn.modules.module.register_module_*_hook: hooks on every module, the children of a fused pair included
_GLOBAL_MODULE_HOOKS = tuple(getattr(torch.nn.modules.module, name, {}) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))


def _implicit_pool_padding_is_same(size, kernel, stride, before) -> bool:
    """Does max_pool2d(padding=before, ceil_mode=True) pool exactly TF 'SAME''s windows?

    Its window i starts at i*stride - before, as TF's does, so the two agree when torch makes as
    many windows as TF (ceil(size / stride)) and accepts the padding (at most half the kernel).
    """
    for n, k, s, p in zip(size, kernel, stride, before):
        out = -(-(n + 2 * p - k) // s) + 1
        if (out - 1) * s >= n + p:  # torch drops a last window that would start in the padding
            out -= 1
        if 2 * p > k or out != -(-n // s):
            return False
    return True


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """The conv models' activation layout: NHWC memory under NCHW shapes (values and order unchanged).

    oneDNN convolutions reorder NCHW inputs and outputs on every call and CPU max-pooling
    vectorises over channels only in NHWC; a no-op when x is already channels_last.
    """
    return x.contiguous(memory_format=torch.channels_last)


def tf1_bilinear_source(in_size: int, out_size: int):
    """TF1 `resize_images` bilinear sampling for one axis: (lower, upper, lerp) per output index.

    The original's ResizeBilinear kernel (align_corners=False, half_pixel_centers=False) samples
    output i at source i * (in/out) with no half-pixel shift, computed in float32, and clamps the
    upper neighbour at the edge: for 32->224 the last 7 outputs repeat the edge pixel.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.arange(out_size, dtype=np.float32) * scale
    floor = np.floor(source)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(source).astype(np.int64), in_size - 1)
    return lower, upper, (source - floor).astype(np.float32)


class ResizeBilinearTF1(nn.Module):
    """`tf.image.resize_images(x, size)` of TF1 (bilinear, legacy pixel grid), NCHW.

    Not `F.interpolate`: align_corners=False uses half-pixel centres and align_corners=True
    stretches the corners; both sample other source points. Same-size input passes through
    unchanged, as TF1's resize_images returns it.
    """

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)
        self._grids: dict = {}

    def _grid(self, in_hw, dtype, device):
        key = (tuple(in_hw), dtype, device)
        if key not in self._grids:
            grid = []
            for in_size, out_size in zip(in_hw, self.size):
                lower, upper, lerp = tf1_bilinear_source(in_size, out_size)
                grid += [torch.from_numpy(lower).to(device), torch.from_numpy(upper).to(device),
                         torch.from_numpy(lerp).to(device=device, dtype=dtype)]
            self._grids[key] = grid
        return self._grids[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        y_lower, y_upper, y_lerp, x_lower, x_upper, x_lerp = self._grid(x.shape[-2:], x.dtype, x.device)
        rows_lower, rows_upper = x.index_select(2, y_lower), x.index_select(2, y_upper)
        top_left, top_right = rows_lower.index_select(3, x_lower), rows_lower.index_select(3, x_upper)
        bottom_left, bottom_right = rows_upper.index_select(3, x_lower), rows_upper.index_select(3, x_upper)
        # The kernel's order of operations (compute_lerp), so float32 agrees to round-off.
        top = top_left + (top_right - top_left) * x_lerp
        bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
        return top + (bottom - top) * y_lerp[:, None]


class Dense(nn.Linear):
    """nn.Linear whose large float32 CPU products with long reductions run on oneDNN's inner product
    (deepobs.native.linear, the primitive TF's dense layers run; native.MIN_INNER_PRODUCT_* say which); the same
    parameters, hooks and names as nn.Linear, its other inputs on nn.Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if native.linear_applies(x, self.weight):
            return native.linear(x, self.weight, self.bias)
        return super().forward(x)


class Dropout(nn.Dropout):
    """tf.nn.dropout (what the original's tf.layers.dropout runs): keep x / (1 - rate) where a uniform draw is
    >= rate, 0 elsewhere. nn.Dropout computes the same with a Bernoulli(1 - p) mask; on CPU torch draws that
    (bernoulli_) from 53-bit doubles, two mt19937 numbers per element, one after the other, where rand_like
    takes one: this site is 1.5-2x faster (docs/benchmarks.md). On float32 CPU input the draws come from
    deepobs.native's Philox kernel on every thread (same rule, other random numbers; keyed from torch's
    generator), unless the switch is off or the audit injects its draws through torch.rand_like."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        scale = native.dropout_scale(self.p)
        if native.dropout_applies(x):
            kept = native.dropout_mask(x, self.p, scale)  # the same rule, Philox draws on every thread
        else:
            kept = torch.rand_like(x).ge_(self.p).mul_(scale)  # 1.0 / 0.0 in the draw's own buffer, then scaled
        return x.mul_(kept) if self.inplace else x * kept


class _FlattenKeepingLayout(torch.autograd.Function):
    """torch.flatten(x, 1) whose gradient has x's memory layout. Flatten's own backward hands a channels_last
    model an NCHW gradient, and the max pool before it then copies that, its input and its indices to one
    layout (3 copies per step; x1.03 on 2c2d's training step, docs/benchmarks.md)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        ctx.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return torch.flatten(x, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.reshape(ctx.shape).contiguous(memory_format=ctx.memory_format)


class FlattenNHWC(nn.Module):
    """Flatten in TF's own order (NHWC), a view of a channels_last activation in both directions; the next
    dense kernel maps as a plain transpose."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


class FlattenNCHW(nn.Module):
    """Flatten in PyTorch's own NCHW order; the weight map permutes the next dense kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FlattenKeepingLayout.apply(x)


# --- initialisers -----------------------------------------------------------

def _fans(tensor: torch.Tensor) -> tuple[int, int]:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    return fan_in, fan_out


@torch.no_grad()
def tf_truncated_normal_(tensor: torch.Tensor, stddev: float) -> torch.Tensor:
    """tf.truncated_normal_initializer(stddev): N(0, stddev) redrawn outside +-2*stddev."""
    # trunc_normal_'s a and b are absolute bounds, so they must be scaled by stddev.
    return nn.init.trunc_normal_(tensor, mean=0.0, std=stddev, a=-2.0 * stddev, b=2.0 * stddev)


@torch.no_grad()
def tf1_glorot_normal_(tensor: torch.Tensor) -> torch.Tensor:
    """TF1 glorot_normal: a *truncated* normal, std sqrt(2/(fan_in+fan_out))/0.8796, cut at +-2 std."""
    fan_in, fan_out = _fans(tensor)
    stddev = math.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_NORMAL_STD_CORRECTION
    return tf_truncated_normal_(tensor, stddev)


@torch.no_grad()
def tf_glorot_uniform_(tensor: torch.Tensor) -> torch.Tensor:
    """glorot_uniform (TF's default kernel initialiser): U(+-sqrt(6/(fan_in+fan_out)))."""
    return nn.init.xavier_uniform_(tensor)


def tf_bn_momentum(tf_momentum: float) -> float:
    """TF keeps `momentum` of the old statistic, PyTorch weights the new batch with it."""
    return 1.0 - tf_momentum


class SequentialFusingDropout(nn.Sequential):
    """nn.Sequential in which a block ending in an activation (a plain nn.ReLU, or a module naming its kind in a
    `fused_activation` (kind, slope) attribute) followed by a Dropout runs, in training, the activation and the
    dropout as one pass each way (deepobs.native.activation_dropout: the same bits as the two layers, the
    mask drawn again in the backward instead of kept). Hooked or replaced modules run one by one."""

    def forward(self, x: torch.Tensor, mirrored: bool = False) -> torch.Tensor:
        """`mirrored`: x is the mirror image and its ConvReLU blocks run mirrored (see `runs_mirrored`)."""
        children, index = list(self), 0
        while index < len(children):
            block = children[index]
            after = children[index + 1] if index + 1 < len(children) else None
            activation = _fusable_activation(block, after)
            if activation is None:
                x = block(x, mirrored=True) if mirrored and isinstance(block, ConvReLU) else block(x)
                index += 1
                continue
            for module in list(block)[:-1]:
                x = mirrored_conv(module, x) if mirrored else module(x)
            if native.activation_dropout_applies(x):
                x = native.activation_dropout(x, *activation, after.p)
            else:
                x = after(block[-1](x))
            index += 2
        return x


def _fusable_activation(block: nn.Module, after: nn.Module | None) -> tuple[str, float] | None:
    """(kind, slope) of `block`'s last module if it and the Dropout `after` it may run as one, else None."""
    if type(after) is not Dropout or not after.training or type(block) not in (nn.Sequential, ConvReLU):
        return None
    if len(block) == 0 or _hooked(block, block[-1], after):
        return None
    activation = block[-1]
    if type(activation) is nn.ReLU:
        return None if activation.inplace else ("relu", 0.0)
    return getattr(activation, "fused_activation", None)
