"""deepobs.native against torch: the max pool bit for bit with aten's, the dropout masks against TF's Philox and
the layer's own rule, the Winograd convolutions against float64, and the paths that fall back to torch's own
kernels."""
from __future__ import annotations

import ctypes
import platform
import stat
import sys

import numpy as np

import pytest
import torch

from deepobs import cbuild, mkl_paths, native
from deepobs.layers import Conv2dSame, ConvReLU, ConvTranspose2dSame, Dense, Dropout, MaxPool2dSame, MaxPoolReLU, _runs_as_one
from deepobs.problems import PROBLEMS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel is built on Linux only")


@pytest.fixture
def fresh_build_state():
    """Forget the process's build result (and warnings) before and after a test that changes CC or the cache."""
    native._load.cache_clear(), native._warn_once.cache_clear()
    yield
    native._load.cache_clear(), native._warn_once.cache_clear()


def pool_and_grad(module, x: torch.Tensor, grad_out: torch.Tensor | None, use_native: bool, **kwargs):
    with native.enabled(use_native):
        x = x.detach().clone().requires_grad_()
        out = module(x, **kwargs)
        out.backward(grad_out if grad_out is not None else torch.ones_like(out))
        return out.detach(), x.grad


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and float32 bit patterns (-0.0 is not 0.0, a NaN equals its own bits)."""
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def inputs(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(sum(shape))
    if kind == "normal":
        return torch.randn(shape, generator=generator)
    values = torch.randint(-2, 3, shape, generator=generator).float()  # ties in most windows
    if kind == "ties, -0.0 and NaN":
        values[values == 0] = -0.0
        values.view(-1)[::97] = float("nan")
    return values


# (kernel, stride, input size, channels): 3c3d's three pools (the last with padding before), 2c2d's two, VGG's,
# sizes where 'SAME' pads after only or where torch's implicit padding cannot express it, stride 1.
GEOMETRIES = [(3, 2, 28, 64), (3, 2, 10, 96), (3, 2, 5, 128), (2, 2, 28, 32), (2, 2, 14, 64), (2, 2, 7, 16),
              (3, 2, 9, 16), (3, 2, 8, 32), (3, 1, 6, 16), (5, 3, 11, 48), (1, 1, 4, 16)]


@pytest.mark.parametrize("kind", ["normal", "ties", "ties, -0.0 and NaN"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("kernel, stride, size, channels", GEOMETRIES)
def test_native_max_pool_is_aten_bit_for_bit(kernel, stride, size, channels, relu, kind):
    x = nhwc(inputs(kind, (3, channels, size, size + 1)))
    assert native.max_pool_applies(x.detach().requires_grad_()), native.status()
    out_size = (-(-size // stride), -(-(size + 1) // stride))
    grad_out = torch.randn((3, channels, *out_size), generator=torch.Generator().manual_seed(1))
    grad_out.view(-1)[::13] = -0.0
    grad_out = nhwc(grad_out)
    pool = MaxPool2dSame(kernel, stride)
    aten_out, aten_grad = pool_and_grad(pool, x, grad_out, use_native=False, relu=relu)
    native_out, native_grad = pool_and_grad(pool, x, grad_out, use_native=True, relu=relu)
    assert aten_out.shape == (3, channels, *out_size)
    assert native_out.is_contiguous(memory_format=torch.channels_last)
    assert same_bits(aten_out, native_out)
    assert same_bits(aten_grad, native_grad)


def test_a_planted_tie_rule_bug_is_caught_by_the_bit_for_bit_comparison():
    """The comparison above can fail: a kernel that took each window's last maximum instead of its first gives
    the same values and routes the gradient elsewhere. The kernel on the mirrored input is such a kernel (7
    wide, 3x3 stride 2: 'SAME' pads one on each side, so mirroring maps windows onto windows)."""
    x = nhwc(inputs("ties", (2, 16, 7, 7)))
    pool = MaxPool2dSame(3, 2)
    aten_out, aten_grad = pool_and_grad(pool, x, None, use_native=False)
    mirrored_out, mirrored_grad = pool_and_grad(pool, nhwc(x.flip(2, 3)), None, use_native=True)
    last_max_out, last_max_grad = mirrored_out.flip(2, 3), mirrored_grad.flip(2, 3)
    assert same_bits(aten_out, last_max_out)
    assert not same_bits(aten_grad, last_max_grad)


@pytest.mark.parametrize("case", ["float64", "3 channels", "NCHW memory", "no grad", "switched off"])
def test_inputs_the_kernel_does_not_take_run_aten(case):
    shape = (2, 3 if case == "3 channels" else 16, 8, 8)
    dtype = torch.float64 if case == "float64" else torch.float32
    x = torch.randn(shape, dtype=dtype)
    x = (x if case == "NCHW memory" else nhwc(x)).requires_grad_()
    with native.enabled(case != "switched off"), torch.set_grad_enabled(case != "no grad"):
        assert not native.max_pool_applies(x)
        out = MaxPool2dSame(2, 2)(x, relu=True)  # aten's path, as before the kernel existed
        assert torch.equal(out, torch.relu(torch.nn.functional.max_pool2d(x, 2, 2)))


def test_max_pool_relu_runs_its_children_once_one_is_hooked_or_replaced():
    block = MaxPoolReLU(3, 2)
    x = nhwc(torch.randn(2, 16, 9, 9)).requires_grad_()
    fused = block(x)
    seen = []
    block[0].register_forward_hook(lambda module, args, output: seen.append(output))
    assert torch.equal(block(x), fused) and len(seen) == 1  # the pool's own output, before the ReLU
    assert (seen[0] < 0).any()
    block[1] = torch.nn.ReLU6()
    assert torch.equal(block(x), fused.clamp(max=6))
    assert not _runs_as_one(block, (MaxPool2dSame,))


def test_a_3c3d_training_run_is_the_same_with_and_without_the_kernel(monkeypatch):
    problem = PROBLEMS["cifar10_3c3d"]
    monkeypatch.setattr(native, "linear_applies", lambda *args: False)  # the pool alone (the dense layers round apart,
    monkeypatch.setattr(native, "winograd_applies", lambda *args: False)  # and so do the 3x3 convolutions)
    kernel_calls, max_pool = [], native.max_pool
    monkeypatch.setattr(native, "max_pool", lambda x, *args: kernel_calls.append(x.shape) or max_pool(x, *args))
    batch = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))

    def losses(use_native: bool) -> list[str]:
        torch.manual_seed(0)
        model = problem.model().train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        history = []
        for _ in range(3):
            optimizer.zero_grad()
            with native.enabled(use_native):
                loss = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
                loss.backward()
            optimizer.step()
            history.append(float(loss.detach()).hex())
        return history

    assert losses(True) == losses(False)
    assert len(kernel_calls) == 3 * 3  # its three pools in each of the three steps, with the kernel on only


def test_a_missing_compiler_is_one_warning_and_aten(monkeypatch, tmp_path, fresh_build_state):
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("DEEPOBS_NATIVE_CACHE", str(tmp_path))
    x = nhwc(torch.randn(2, 16, 8, 8)).requires_grad_()
    with pytest.warns(RuntimeWarning, match=r"torch's own max pool, convolutions and dropout draws instead \(no C compiler \('no-such-compiler' not found"):
        assert not native.max_pool_applies(x)
    assert native.status() == "unavailable: no C compiler ('no-such-compiler' not found; set CC)"
    assert torch.equal(MaxPool2dSame(2, 2)(x), torch.nn.functional.max_pool2d(x, 2, 2))
    assert not native.winograd_applies(torch.empty(2, 128, 8, 8), torch.empty(128, 128, 3, 3), 1, (1, 1), 1, 1)


def test_a_failing_compiler_is_a_one_line_reason_and_nothing_cached(monkeypatch, tmp_path, fresh_build_state):
    compiler = tmp_path / "cc"
    compiler.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho 'max_pool.c:1: error: planted' >&2\n"
                        "echo 'second line' >&2\nexit 1\n")
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setenv("DEEPOBS_NATIVE_CACHE", str(tmp_path / "cache"))
    assert native.status() == f"unavailable: {compiler} failed on max_pool.c, dropout.c, winograd.c: max_pool.c:1: error: planted"
    assert list((tmp_path / "cache").iterdir()) == []  # the scratch directory is gone, no library half-written


def test_the_library_is_built_once_per_source_and_cpu(monkeypatch, tmp_path, fresh_build_state):
    monkeypatch.setenv("DEEPOBS_NATIVE_CACHE", str(tmp_path))
    assert native.status() == "built"
    (library,) = tmp_path.glob("native-*.so")
    built_at = library.stat().st_mtime_ns
    native._load.cache_clear()
    assert native.status() == "built"
    assert list(tmp_path.glob("native-*.so")) == [library] and library.stat().st_mtime_ns == built_at


def test_a_changed_header_rebuilds_the_library(monkeypatch, tmp_path):
    """The kernels share vectors.h: the cache key holds the headers' text as well as the sources'."""
    if cbuild.shutil.which(cbuild.os.environ.get("CC", "cc")) is None or platform.system() != "Linux":
        pytest.skip("no C compiler here")
    monkeypatch.setenv("DEEPOBS_NATIVE_CACHE", str(tmp_path / "cache"))
    source, header = tmp_path / "value.c", tmp_path / "value.h"
    source.write_text('#include "value.h"\nint value(void) { return VALUE; }\n')
    built = []
    for value in (1, 2):
        header.write_text(f"#define VALUE {value}\n")
        built.append(cbuild.build_library((source,), ("-O2", "-shared", "-fPIC"), "value", (header,)))
    assert built[0] != built[1] and ctypes.CDLL(str(built[1])).value() == 2


# (conv, input size): 'SAME' stride 1 (padding inside the primitive), 'SAME' stride 2 (asymmetric: padded
# before it), VALID, the 1x1 class-score conv of All-CNN-C.
CONVS = [(lambda: Conv2dSame(16, 32, 3), 12), (lambda: Conv2dSame(16, 32, 3, stride=2), 12),
         (lambda: torch.nn.Conv2d(16, 32, 3), 8), (lambda: Conv2dSame(16, 8, 1), 6)]


def conv_relu_pair(make_conv, size: int) -> tuple[ConvReLU, torch.Tensor]:
    torch.manual_seed(size)
    block = ConvReLU(make_conv()).to(memory_format=torch.channels_last)
    with torch.no_grad():
        block[0].bias.uniform_(-0.5, 0.5)  # some outputs on each side of 0
    return block, nhwc(torch.randn(4, 16, size, size))


@pytest.mark.parametrize("make_conv, size", CONVS)
def test_fused_conv_relu_is_conv_then_relu_bit_for_bit(make_conv, size):
    block, x = conv_relu_pair(make_conv, size)
    with torch.no_grad():
        assert native.conv_relu_applies(x, block[0])
        with native.enabled(False):
            separate = torch.relu(block[0](x))
        fused = block(x)
    assert same_bits(separate, fused) and (separate == 0).any() and (separate > 0).any()


@pytest.mark.parametrize("make_conv, size", CONVS[:2])
def test_fused_conv_relu_compiles_into_one_graph(make_conv, size):
    block, x = conv_relu_pair(make_conv, size)
    compiled = torch.compile(block, fullgraph=True)  # a graph break raises
    with torch.no_grad():
        assert same_bits(compiled(x), torch.relu(block[0](x)))


def test_a_planted_bias_slip_in_the_fused_conv_is_caught(monkeypatch):
    block, x = conv_relu_pair(*CONVS[0])
    conv_relu = native.conv_relu
    monkeypatch.setattr(native, "conv_relu", lambda x, weight, bias, *args: conv_relu(x, weight, None, *args))
    with torch.no_grad():
        assert not same_bits(block(x), torch.relu(block[0](x)))


def test_conv_relu_with_gradients_or_a_hooked_child_runs_its_children(monkeypatch):
    block, x = conv_relu_pair(*CONVS[1])
    monkeypatch.setattr(native, "conv_relu", lambda *args: pytest.fail("the fused convolution ran"))
    out = block(x)  # gradients wanted: conv, then ReLU, with autograd's own backward
    assert out.grad_fn.name() == "ReluBackward0"
    seen = []
    block[0].register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        assert same_bits(block(x), out.detach()) and len(seen) == 1 and (seen[0] < 0).any()


# Winograd F(2x2, 3x3): (batch, in, out, height, width, padding). Odd sizes leave half tiles at the edges,
# padding 0 and 2 read past the input on no side / two rows per side, a 1x1 input is nearly all padding. The
# first case has enough tiles (572): its weight gradient runs Winograd too, the others' oneDNN.
WINOGRAD_CASES = [(4, 128, 144, 26, 21, 1), (2, 128, 144, 7, 9, 1), (3, 128, 128, 8, 8, 0), (2, 160, 128, 5, 6, 2),
                  (1, 128, 128, 1, 1, 1), (2, 256, 128, 11, 4, 1), (3, 64, 96, 9, 7, 1)]
# F(2x2, 4x4): whole tiles only (an even output size); padding 0 to 3. The first runs its weight gradient too.
WINOGRAD_4X4_CASES = [(12, 64, 80, 17, 15, 1), (2, 64, 64, 9, 7, 0), (2, 64, 96, 3, 5, 2), (1, 64, 64, 1, 1, 3),
                      (8, 64, 64, 15, 15, 1)]
# The worst round-off against float64 over the forward and every gradient, as a share of the largest value,
# measured here on the cases above: 3x3 1.8e-7-6.0e-7, 4x4 1.1e-6-3.3e-6 (oneDNN's direct convolution:
# 2.0e-7-1.7e-6 and 2.0e-7-1.3e-6).
WINOGRAD_ROUNDOFF = {3: 2e-6, 4: 5e-6}


def is_the_convolution(convolution, case, size: int = 3) -> bool:
    """Does convolution(x, weight, bias, padding) give F.conv2d's output and its three gradients (against
    float64, within WINOGRAD_ROUNDOFF of each one's largest value) on `case` with size x size kernels, in a
    training step and in an evaluation forward?"""
    n, inputs_, outputs, height, width, padding = case
    torch.manual_seed(sum(case))
    x = nhwc(torch.randn(n, inputs_, height, width)).requires_grad_()
    weight = (0.05 * torch.randn(outputs, inputs_, size, size)).requires_grad_()
    bias = torch.randn(outputs).requires_grad_()
    out = convolution(x, weight, bias, padding)
    grad = torch.randn_like(out)
    found = torch.autograd.grad(out, (x, weight, bias), grad)
    exact_leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    exact = torch.nn.functional.conv2d(*exact_leaves, padding=padding)
    expected = torch.autograd.grad(exact, exact_leaves, grad.double())
    with torch.no_grad():
        evaluated = convolution(x, weight, bias, padding)

    def close(value, reference):
        return value.shape == reference.shape and bool(
            (value.double() - reference).abs().max() <= WINOGRAD_ROUNDOFF[size] * reference.abs().max())
    return all(close(value, reference) for value, reference in zip((out, *found, evaluated),
                                                                   (exact, *expected, exact)))


def layers_conv2d(x, weight, bias, padding):
    from deepobs import layers
    return layers.conv2d(x, weight, bias, 1, padding)


@pytest.mark.skipif(native.status() != "built", reason="the kernels are not built here")
@pytest.mark.parametrize("size, case", [(3, case) for case in WINOGRAD_CASES] + [(4, case) for case in WINOGRAD_4X4_CASES])
def test_the_winograd_convolution_and_its_gradients_are_the_convolutions(size, case):
    n, inputs_, outputs, height, width, padding = case
    x, weight = torch.empty(n, inputs_, height, width), torch.empty(outputs, inputs_, size, size)
    assert native.winograd_applies(x, weight, 1, (padding, padding), 1, 1)
    first = (WINOGRAD_CASES if size == 3 else WINOGRAD_4X4_CASES)[0]
    assert native.winograd_weight_gradient_pays(x, weight, padding) == (case == first)
    assert is_the_convolution(layers_conv2d, case, size)


@pytest.mark.skipif(native.status() != "built", reason="the kernels are not built here")
def test_the_vaes_stride_one_transposed_convolution_runs_winograd_and_is_tfs():
    """ConvTranspose2dSame(64, 64, 4, 1) (TF's conv2d_transpose 'same': the full transposed convolution cropped by
    (1, 2)) as F(2x2, 4x4) of the flipped kernels: its output and gradients against float64, its evaluation
    (eager, frozen, compiled) the training forward's bits."""
    torch.manual_seed(3)
    layer = ConvTranspose2dSame(64, 64, 4, 1).to(memory_format=torch.channels_last)
    x = nhwc(torch.randn(4, 64, 14, 14)).requires_grad_()
    out = layer(x)
    assert out.grad_fn.name().startswith("_WinogradConvBackward")
    grad = torch.randn_like(out)
    found = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad)
    exact_x, exact_weight, exact_bias = (t.detach().double().requires_grad_() for t in (x, layer.weight, layer.bias))
    full = torch.nn.functional.conv_transpose2d(exact_x, exact_weight, exact_bias)  # 17x17
    exact = full[..., 1:15, 1:15]
    expected = torch.autograd.grad(exact, (exact_x, exact_weight, exact_bias), grad.double())
    for value, reference in zip((out, *found), (exact, *expected)):
        assert (value.double() - reference).abs().max() <= WINOGRAD_ROUNDOFF[4] * reference.abs().max()
    compiled, frozen = torch.compile(layer, fullgraph=True), native.FrozenWeights()
    with torch.no_grad():
        assert same_bits(layer(x), out.detach())
        with frozen:
            assert same_bits(compiled(x), out.detach()) and same_bits(layer(x), out.detach())
            assert len(frozen._made) == 1


@pytest.mark.skipif(native.status() != "built", reason="the kernels are not built here")
def test_the_winograd_convolution_in_blocks_of_three_tiles_is_the_convolution(monkeypatch):
    """Blocks that end inside a row of tiles and inside an image, each thread's sums over several blocks."""
    monkeypatch.setattr(native, "WINOGRAD_BLOCK_BYTES", 3 * 16 * 4 * (128 + 144))
    monkeypatch.setattr(native, "WINOGRAD_GRADIENT_BLOCK", 3)
    assert is_the_convolution(layers_conv2d, WINOGRAD_CASES[0])
    monkeypatch.setattr(native, "WINOGRAD_BLOCK_BYTES", 3 * 25 * 4 * (64 + 80))
    assert is_the_convolution(layers_conv2d, WINOGRAD_4X4_CASES[0], 4)


@pytest.mark.skipif(native.status() != "built", reason="the kernels are not built here")
@pytest.mark.parametrize("size", [3, 4])
@pytest.mark.parametrize("plant", ["input gradient with the unflipped kernel", "patch one row off",
                                   "a transform entry's sign", "weight gradient's output tiles one column off"])
def test_planted_winograd_bugs_are_caught(plant, size, monkeypatch):
    if plant == "weight gradient's output tiles one column off":
        weight_gradient = native.winograd_weight_gradient
        monkeypatch.setattr(native, "winograd_weight_gradient", lambda x, grad, size, padding: weight_gradient(
            x, grad.roll(1, 3), size, padding))
    elif plant == "input gradient with the unflipped kernel":  # in and out swapped, positions not permuted
        monkeypatch.setattr(native, "input_gradient_transform",
                            lambda weight, transformed: transformed.transpose(1, 2).contiguous())
    elif plant == "patch one row off":
        winograd = native.winograd
        monkeypatch.setattr(native, "winograd", lambda x, transformed, bias, padding, relu=False: winograd(
            x.roll(1, 2), transformed, bias, padding, relu))
    else:
        weight_of, positions = native.winograd_weight, (size + 1) ** 2
        signs = torch.tensor([1.0] * 5 + [-1.0] + [1.0] * (positions - 6)).view(positions, 1, 1)
        monkeypatch.setattr(native, "winograd_weight", lambda *args, **kwargs: weight_of(*args, **kwargs) * signs)
    case = WINOGRAD_CASES[0] if size == 3 else WINOGRAD_4X4_CASES[0]
    assert not is_the_convolution(layers_conv2d, case, size)


@pytest.mark.skipif(native.status() != "built", reason="the kernels are not built here")
def test_the_flipped_transform_is_the_flipped_kernels_transform_bit_for_bit():
    """The input gradient's kernels come from the forward's transform, its positions permuted (G J = P G)."""
    weight = nhwc(torch.randn(48, 32, 3, 3) * torch.logspace(-3, 3, 48).view(48, 1, 1, 1))
    direct = native.winograd_weight(weight.flip(2, 3).transpose(0, 1))
    permuted = native.input_gradient_transform(weight, native.winograd_weight(weight))
    assert same_bits(direct, permuted)
    assert not same_bits(direct[0], native.winograd_weight(weight)[0].t())  # the permutation matters


def test_the_direct_convolution_passes_the_winograd_check(monkeypatch):
    """The check's bound holds for the direct convolution too (oneDNN's, which the shapes below the channel
    threshold run): it asks for the convolution's values, not one algorithm's bits."""
    monkeypatch.setattr(native, "winograd_applies", lambda *args: False)
    assert is_the_convolution(layers_conv2d, WINOGRAD_CASES[0])
    assert is_the_convolution(layers_conv2d, WINOGRAD_4X4_CASES[0], 4)


@pytest.mark.parametrize("x_shape, weight_shape, stride, padding, dilation, groups", [
    ((2, 48, 8, 8), (128, 48, 3, 3), 1, (1, 1), 1, 1),  # 48 channels: below the threshold
    ((2, 128, 8, 8), (32, 128, 3, 3), 1, (1, 1), 1, 1),  # 32 outputs
    ((2, 64, 8, 8), (64, 64, 4, 4), 1, (1, 1), 1, 1),  # 4x4 with an odd output size (the VAE's 7x7 layer)
    ((2, 64, 8, 8), (64, 64, 4, 4), 1, (4, 4), 1, 1),  # 4x4 padded past the patch
    ((2, 64, 8, 8), (64, 64, 5, 5), 1, (2, 2), 1, 1),  # 5x5
    ((2, 128, 8, 8), (128, 128, 3, 3), 2, (1, 1), 1, 1),  # stride 2
    ((2, 128, 8, 8), (128, 128, 3, 3), 1, (0, 1), 1, 1),  # other padding per axis
    ((2, 128, 8, 8), (128, 128, 3, 3), 1, (3, 3), 1, 1),  # padding past the patch
    ((2, 128, 8, 8), (128, 128, 3, 3), 1, (1, 1), 2, 1),  # dilated
    ((2, 136, 8, 8), (136, 136, 3, 3), 1, (1, 1), 1, 1)])  # channels not in whole vectors
def test_convolutions_winograd_does_not_take(x_shape, weight_shape, stride, padding, dilation, groups):
    x, weight = torch.empty(x_shape), torch.empty(weight_shape)
    assert not native.winograd_applies(x, weight, stride, padding, dilation, groups)
    assert not native.winograd_applies(x.double(), weight.double(), 1, (1, 1), 1, 1)


@pytest.mark.skipif(native.status() != "built", reason="the kernels are not built here")
def test_the_winograd_evaluation_is_the_training_forward_eager_compiled_and_frozen():
    """The evaluation forward (ConvReLU's fused ReLU, eager, compiled as one opaque op, with its kernels
    transformed once in a FrozenWeights block and again after an in-place change) gives the training
    forward's bits."""
    torch.manual_seed(0)
    block = ConvReLU(Conv2dSame(128, 128, 3)).to(memory_format=torch.channels_last)
    x = nhwc(torch.randn(2, 128, 6, 6))
    trained = block(x)
    assert trained.grad_fn.name() == "ReluBackward0" and trained.grad_fn.next_functions[0][0].name().startswith(
        "_WinogradConvBackward")
    compiled = torch.compile(block, fullgraph=True)
    frozen = native.FrozenWeights()
    with torch.no_grad():
        assert same_bits(block(x), trained.detach())
        with frozen:
            assert same_bits(compiled(x), trained.detach())
            assert same_bits(compiled(x), trained.detach())
            assert len(frozen._made) == 1
            block[0].weight.mul_(-1)
            assert same_bits(compiled(x), torch.relu(block[0](x)))
            assert len(frozen._made) == 1  # the entry replaced, not added


@pytest.mark.skipif(native.status() != "built", reason="the kernels are not built here")
def test_the_winograd_convolutions_second_derivatives_are_autograds():
    """create_graph=True: the gradient runs autograd's own formulas, differentiable again."""
    n, inputs_, outputs, height, width, padding = WINOGRAD_CASES[0]
    torch.manual_seed(1)
    x = nhwc(torch.randn(n, inputs_, height, width)).double().float().requires_grad_()
    weight = (0.05 * torch.randn(outputs, inputs_, 3, 3)).requires_grad_()

    def curvature(convolution):
        (grad_x,) = torch.autograd.grad(convolution(x, weight, None, padding).pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(grad_x.sum(), weight)[0]
    plain = curvature(lambda *args: torch.nn.functional.conv2d(*args[:3], padding=args[3]))
    assert torch.allclose(curvature(layers_conv2d), plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())


def test_the_max_pool_gradient_is_itself_differentiable_as_atens(monkeypatch):
    """Hessian-vector products (create_graph=True) through the kernel: the gradient's own gradient with
    respect to the output gradient is aten's, bit for bit, ReLU-zeroed outputs and 'SAME' padding included."""
    x = nhwc(inputs("ties", (2, 16, 9, 9)))
    results = []
    for use_native in (False, True):
        with native.enabled(use_native):
            leaf = x.detach().clone().requires_grad_()
            out = MaxPool2dSame(3, 2)(leaf, relu=True)
            grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).requires_grad_()
            (grad_in,) = torch.autograd.grad(out, leaf, grad_out, create_graph=True)
            direction = torch.randn(grad_in.shape, generator=torch.Generator().manual_seed(3))
            (second,) = torch.autograd.grad(grad_in, grad_out, direction)
            results.append((grad_in.detach(), second))
    (aten_grad, aten_second), (native_grad, native_second) = results
    assert same_bits(aten_grad, native_grad) and same_bits(aten_second, native_second)
    assert (native_second == 0).any() and (native_second != 0).any()


def test_a_3c3d_hessian_vector_product_is_the_same_with_and_without_the_kernel(monkeypatch):
    monkeypatch.setattr(native, "linear_applies", lambda *args: False)  # the pool alone (the dense layers round apart,
    monkeypatch.setattr(native, "winograd_applies", lambda *args: False)  # and so do the 3x3 convolutions)
    torch.manual_seed(0)
    model = PROBLEMS["cifar10_3c3d"].model().train()
    images, labels = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    parameters = list(model.parameters())
    vector = [torch.randn_like(p) for p in parameters]

    def hessian_vector_product(use_native: bool) -> list[torch.Tensor]:
        with native.enabled(use_native):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            grads = torch.autograd.grad(loss, parameters, create_graph=True)
            return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vector)), parameters)

    for aten, kernel in zip(hessian_vector_product(False), hessian_vector_product(True)):
        assert same_bits(aten, kernel)


def test_the_evaluation_forward_of_a_pool_block_compiles_into_one_graph():
    """Without gradients the pool is aten's, so the runner's compiled evaluation stays inductor's own graph."""
    block = MaxPoolReLU(3, 2)
    x = nhwc(torch.randn(2, 16, 9, 9))
    compiled = torch.compile(block, fullgraph=True)  # a graph break raises
    with torch.no_grad():
        assert same_bits(compiled(x), torch.relu(torch.nn.functional.max_pool2d(x, 3, 2, 1, ceil_mode=True)))


# The dropout masks: Philox4x32-10 words in dropout.c's order, the layer's rule on them, their statistics.

def element_order(n: int) -> np.ndarray:
    """For elements 0 .. n-1 of dropout.c, the position in a plain Philox stream (4 words per counter)."""
    i = np.arange(n)
    return 4 * (16 * (i // 64) + i % 16) + (i // 16) % 4


@pytest.mark.parametrize("key", [0, 1, 0x123456789ABCDEF0, 2**64 - 1])
def test_the_kernels_words_are_tfs_philox4x32_10(key):
    from tf_reference._tf import tf
    n = 1000  # 15 blocks of 64 and a tail
    stream = tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=[4 * 16 * 16], key=tf.constant([key], tf.uint64), counter=tf.constant([0, 0], tf.uint64), alg=1,
        dtype=tf.uint32).numpy()
    ours = native.philox_bits(n, key).numpy().view(np.uint32)
    assert np.array_equal(ours, stream[element_order(n)])


def uniforms_of(words: torch.Tensor) -> torch.Tensor:
    """torch's float32 uniform of 32-bit words: the top 24 bits times 2^-24."""
    return ((words.long() & 0xFFFFFFFF) >> 8).float() * 2.0 ** -24


@pytest.mark.parametrize("p", [0.2, 0.5, 0.1, 1e-7, 0.0, 1.0])
@pytest.mark.parametrize("n", [64, 1000, 3 * 64 * 64 + 5])
def test_the_mask_is_the_layers_rule_on_the_kernels_own_draws(p, n):
    scale = 1 / (1 - p) if p < 1 else 0.0
    mask = native.dropout_mask(torch.empty(n), p, scale, key=n)
    expected = uniforms_of(native.philox_bits(n, key=n)).ge_(p).mul_(scale)  # Dropout's torch spelling
    assert same_bits(mask, expected)


def test_a_planted_threshold_slip_in_the_mask_is_caught():
    """The mask kept where u < 1 - p (the other common convention, same keep rate) differs from the rule."""
    n, p = 4096, 0.2
    mask = native.dropout_mask(torch.empty(n), p, 1.25, key=7)
    slipped = (uniforms_of(native.philox_bits(n, key=7)) < 1 - p).float().mul_(1.25)
    assert not same_bits(mask, slipped)
    assert abs(slipped.count_nonzero() - mask.count_nonzero()) < 0.02 * n  # same rate: only the elements differ


def test_the_draws_are_uniform_and_uncorrelated_across_the_blocks_layout():
    n = 1 << 22
    u = uniforms_of(native.philox_bits(n, key=2024)).double()
    counts = torch.bincount((u * 256).long(), minlength=256).double()
    chi_square = ((counts - n / 256) ** 2 / (n / 256)).sum().item()
    assert chi_square < 255 + 6 * (2 * 255) ** 0.5  # 255 degrees of freedom, 6 standard deviations
    centred = u - 0.5
    for lag in (1, 4, 16, 64):  # neighbours, across words, lanes and blocks of dropout.c's layout
        correlation = (centred[:-lag] * centred[lag:]).mean().item() / (1 / 12)
        assert abs(correlation) < 6 / (n ** 0.5), lag
    keep = native.dropout_mask(torch.empty(n), 0.2, 1.0, key=2025).mean().item()
    assert abs(keep - 0.8) < 6 * (0.16 / n) ** 0.5


def test_the_mask_does_not_depend_on_the_thread_count_and_follows_torch_manual_seed():
    x = torch.empty(64, 64, 14, 14)
    threads = torch.get_num_threads()
    try:
        masks = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            torch.manual_seed(0)
            masks.append(native.dropout_mask(x, 0.2, 1.25))
    finally:
        torch.set_num_threads(threads)
    assert same_bits(masks[0], masks[1]) and same_bits(masks[0], masks[2])
    assert not torch.equal(masks[0], native.dropout_mask(x, 0.2, 1.25))  # a fresh key per call


def test_the_dropout_layer_draws_from_the_kernel_and_from_torch_where_it_does_not_apply():
    layer = Dropout(0.2).train()
    x = nhwc(torch.randn(8, 16, 6, 6))
    with native.enabled(True):
        assert native.dropout_applies(x)
        torch.manual_seed(3)
        ours = layer(x)
        torch.manual_seed(3)
        key = int(torch.empty((), dtype=torch.int64).random_())
    assert same_bits(ours, x * native.dropout_mask(x, 0.2, 1 / 0.8, key=key))
    for source, switch in ((x, False), (x.double(), True)):  # switched off; float64, which the kernel does not take
        with native.enabled(switch):
            torch.manual_seed(3)
            out = layer(source)
        torch.manual_seed(3)
        assert torch.equal(out, source * torch.rand_like(source).ge_(0.2).mul_(1 / 0.8))


def test_the_audits_injected_draws_reach_the_dropout_layer():
    """Where the audit feeds the reference's draws in, the layer runs its rule on them, not on the kernel's."""
    from parity.dropout import Draw, injected_noise
    x = nhwc(torch.randn(4, 16, 5, 5))
    draw = np.random.default_rng(0).uniform(size=(4, 5, 5, 16))  # the reference's layout, NHWC
    with native.enabled(True), injected_noise([Draw("dropout", "uniform", draw)]) as injection:
        out = Dropout(0.2).train()(x)
    kept = torch.from_numpy(draw.transpose(0, 3, 1, 2)).float() >= 0.2
    assert torch.equal(out, x * kept.float().mul_(1 / 0.8))
    assert injection.consumed == [("dropout", "torch.rand_like")] and injection.unused == []


# The dense layers on oneDNN's inner product: nn.Linear's values and gradients to float32 round-off.

DENSE_SHAPES = [(64, 12544, 784), (128, 3136, 1024), (128, 1152, 512), (16, 4096, 10), (64, 24, 49), (3, 5, 1)]


@pytest.fixture
def every_product_on_onednn(monkeypatch):
    """The dense layer's oneDNN path for products of any size (below the thresholds it runs F.linear)."""
    monkeypatch.setattr(native, "MIN_INNER_PRODUCT_INPUTS", 0)
    monkeypatch.setattr(native, "MIN_INNER_PRODUCT_MACS", 0)
    monkeypatch.setattr(native, "DENSE_ON_ONEDNN", True)  # whatever this machine's MKL branch


def dense_and_grads(layer, x: torch.Tensor, grad_out: torch.Tensor, use_native: bool):
    with native.enabled(use_native):
        layer.zero_grad(set_to_none=True)
        x = x.detach().clone().requires_grad_()
        out = layer(x)
        out.backward(grad_out)
        grads = [x.grad] + [parameter.grad for parameter in layer.parameters()]
        return [out.detach(), *grads]


def exact_dense_and_grads(layer, x: torch.Tensor, grad_out: torch.Tensor):
    """What nn.Linear with the layer's parameters computes in float64."""
    twin = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None).double()
    twin.load_state_dict({name: value.double() for name, value in layer.state_dict().items()})
    return dense_and_grads(twin, x.double(), grad_out.double(), use_native=False)


def relative_error(value: torch.Tensor, exact: torch.Tensor) -> float:
    return ((value.double() - exact).abs().max() / exact.abs().max()).item()


@pytest.mark.usefixtures("every_product_on_onednn")
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch, inputs, outputs", DENSE_SHAPES)
def test_the_dense_layer_on_onednn_is_linear_to_float32_round_off(batch, inputs, outputs, bias):
    torch.manual_seed(batch + inputs)
    layer = Dense(inputs, outputs, bias=bias)
    x, grad_out = torch.randn(batch, inputs), torch.randn(batch, outputs)
    exact = exact_dense_and_grads(layer, x, grad_out)
    ours = dense_and_grads(layer, x, grad_out, use_native=True)
    torchs = dense_and_grads(layer, x, grad_out, use_native=False)
    for mine, theirs, truth in zip(ours, torchs, exact):
        assert mine.shape == truth.shape and mine.dtype == torch.float32
        # within 4x the error torch's own float32 product makes (and 1e-6 of the largest value)
        assert relative_error(mine, truth) <= max(4 * relative_error(theirs, truth), 1e-6)


def spells_the_plain_product(spelling, batch: int, inputs: int, outputs: int, bias: bool) -> bool:
    """Does spelling(x, weight, bias) give the plain and the frozen product's bits, contiguous?"""
    torch.manual_seed(outputs)
    x, weight = torch.randn(batch, inputs), torch.randn(outputs, inputs) / inputs**0.5
    bias = torch.randn(outputs) if bias else None
    product = spelling(x, weight, bias)
    with native.FrozenWeights() as frozen:
        on_frozen = native._inner_product(x, frozen.packed(weight, batch), bias)
    return (product.is_contiguous() and same_bits(product, native._inner_product(x, weight, bias))
            and same_bits(product, on_frozen))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch, inputs, outputs", DENSE_SHAPES + [(16, 25088, 4096), (128, 2304, 384)])
def test_the_swapped_forward_product_is_the_plain_one_bit_for_bit(batch, inputs, outputs, bias):
    """(weight @ x.T).T sums what x @ weight.T sums, plain or on the frozen (reordered) weight, in the same
    order: whichever spelling the timing picks, the bits do not change."""
    assert spells_the_plain_product(native._swapped_product, batch, inputs, outputs, bias)


def test_a_planted_untransposed_swapped_product_is_caught_and_an_out_of_place_bias_passes():
    """(weight @ x.T) reshaped instead of transposed (the same shape, the values in the wrong places) fails the
    check; the bias added out of place, another spelling of the same sums, passes it."""
    def untransposed(x, weight, bias):
        return native._inner_product(weight, x, None).reshape(x.shape[0], weight.shape[0]) + bias

    def bias_out_of_place(x, weight, bias):
        return torch.add(native._inner_product(weight, x, None).t(), bias).contiguous()

    assert not spells_the_plain_product(untransposed, 64, 512, 96, bias=True)
    assert spells_the_plain_product(bias_out_of_place, 64, 512, 96, bias=True)


def test_the_forward_product_is_timed_once_per_shape_and_runs_the_faster_spelling(monkeypatch):
    monkeypatch.setattr(native, "_product_swapped", {})
    calls = []
    monkeypatch.setattr(native, "fastest", lambda candidates, timings: calls.append(len(candidates)) or 1)
    monkeypatch.setattr(native, "_swapped_product", lambda x, weight, bias: torch.full((x.shape[0], 3), 7.0))
    x, weight = torch.randn(4, 5), torch.randn(3, 5)
    assert torch.equal(native._forward_product(x, weight, None), torch.full((4, 3), 7.0))  # the one timed faster
    native._forward_product(x, weight, None)
    native._forward_product(torch.randn(6, 5), weight, None)  # another batch size: timed again
    with native.FrozenWeights() as frozen:
        native._forward_product(x, weight, None, frozen)  # in a frozen block: timed apart
    assert calls == [2, 2, 2]
    assert native.product_choices() == {(4, (3, 5), False, False, torch.get_num_threads()): True,
                                        (6, (3, 5), False, False, torch.get_num_threads()): True,
                                        (4, (3, 5), False, True, torch.get_num_threads()): True}


@pytest.mark.usefixtures("every_product_on_onednn")
def test_a_planted_transposed_input_gradient_in_the_dense_layer_is_caught(monkeypatch):
    """The input gradient from the weight's other orientation (a square layer: same shapes) fails the test."""
    layer, x, grad_out = Dense(32, 32), torch.randn(8, 32), torch.randn(8, 32)
    exact = exact_dense_and_grads(layer, x, grad_out)
    monkeypatch.setattr(native, "_input_gradient", lambda grad, weight: torch.ops.mkldnn._linear_pointwise(
        grad, weight, None, "none", [], ""))  # grad @ weight.T
    ours = dense_and_grads(layer, x, grad_out, use_native=True)
    assert relative_error(ours[0], exact[0]) < 1e-6  # the forward is right
    assert relative_error(ours[1], exact[1]) > 0.1  # the input gradient is not: the comparison sees it


@pytest.mark.usefixtures("every_product_on_onednn")
def test_a_planted_transposed_weight_gradient_in_the_dense_layer_is_caught(monkeypatch):
    """x.T @ grad ([in, out], TF's kernel layout) for grad.T @ x (a square layer: same shapes) fails the test."""
    layer, x, grad_out = Dense(32, 32), torch.randn(8, 32), torch.randn(8, 32)
    exact = exact_dense_and_grads(layer, x, grad_out)
    monkeypatch.setattr(native, "_weight_gradient", lambda grad, x: x.t() @ grad)
    ours = dense_and_grads(layer, x, grad_out, use_native=True)
    assert relative_error(ours[1], exact[1]) < 1e-6  # the input gradient is right
    assert relative_error(ours[2], exact[2]) > 0.1  # the weight gradient is not: the comparison sees it


@pytest.mark.usefixtures("every_product_on_onednn")
def test_the_dense_layer_is_twice_differentiable_and_compiles_into_one_graph_on_f_linear():
    torch.manual_seed(0)
    layer, x = Dense(20, 7), torch.randn(5, 20, requires_grad=True)

    def second_derivative(use_native: bool) -> torch.Tensor:
        with native.enabled(use_native):
            (grad,) = torch.autograd.grad(torch.tanh(layer(x)).pow(2).sum(), x, create_graph=True)
            return torch.autograd.grad(grad.pow(2).sum(), layer.weight)[0]
    assert torch.allclose(second_derivative(True), second_derivative(False), rtol=1e-5, atol=1e-6)
    with native.enabled(True):
        compiled = torch.compile(layer, fullgraph=True)  # with gradients: inductor's own product on F.linear
        assert torch.allclose(compiled(x), layer(x), rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("every_product_on_onednn")
@pytest.mark.parametrize("batch, inputs, outputs", DENSE_SHAPES[:4])
def test_frozen_weights_give_the_plain_products_bit_for_bit_at_any_batch(batch, inputs, outputs):
    torch.manual_seed(batch)
    layer = Dense(inputs, outputs)
    frozen = native.FrozenWeights()
    with torch.no_grad(), native.enabled(True):
        for rows in (batch, batch // 2 + 1, batch):  # reordered for the first batch, reused for the others
            x = torch.randn(rows, inputs)
            with frozen:
                inside = layer(x)
            assert same_bits(inside, layer(x))
    assert len(frozen._made) == 1  # one reorder, reused


def frozen_then_changed(layer: Dense, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's product in a FrozenWeights block after its weight changed in place there (an optimizer
    step), and the plain product of the changed weight."""
    with torch.no_grad(), native.enabled(True), native.FrozenWeights():
        layer(x)
        layer.weight.mul_(-0.5)
        inside = layer(x)
    with torch.no_grad(), native.enabled(True):
        return inside, layer(x)


@pytest.mark.usefixtures("every_product_on_onednn")
def test_a_weight_changed_in_place_in_the_block_is_reordered_again():
    inside, plain = frozen_then_changed(Dense(64, 32), torch.randn(8, 64))
    assert same_bits(inside, plain)


@pytest.mark.usefixtures("every_product_on_onednn")
def test_a_planted_stale_reordered_weight_is_caught(monkeypatch):
    """A cache that ignores the version counter keeps the old weight: the comparison above sees it."""
    def stale(self, weight, rows):
        if id(weight) not in self._made:
            self._made[id(weight)] = weight, 0, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
        return self._made[id(weight)][2]
    monkeypatch.setattr(native.FrozenWeights, "packed", stale)
    inside, plain = frozen_then_changed(Dense(64, 32), torch.randn(8, 64))
    assert not torch.allclose(inside, plain)


@pytest.mark.usefixtures("every_product_on_onednn")
def test_the_compiled_inference_graph_runs_the_frozen_product_when_it_runs():
    torch.manual_seed(0)
    layer, x = torch.nn.Sequential(Dense(40, 24), torch.nn.ReLU(), Dense(24, 5)), torch.randn(6, 40)
    with torch.no_grad(), native.enabled(True):
        compiled = torch.compile(layer, fullgraph=True)
        plain = layer(x)
        frozen = native.FrozenWeights()
        with frozen:
            assert same_bits(compiled(x), plain)  # traced on this first call
            assert same_bits(compiled(x), plain)
        assert len(frozen._made) == 2  # both products looked their reordered weights up in the block
        assert same_bits(compiled(x), plain)  # and outside it the plain weights again


@pytest.mark.parametrize("batch, inputs, outputs, on_onednn", [
    (128, 3136, 1024, True), (64, 12544, 784, True), (16, 25088, 4096, True),  # 2c2d, VAE, VGG: long reductions
    (128, 784, 1000, False), (128, 1000, 500, False),  # the MLP's: short reductions
    (64, 3136, 8, False), (128, 4096, 10, False)])  # small products
def test_dense_products_run_on_onednn_only_where_that_measured_faster(monkeypatch, batch, inputs, outputs,
                                                                     on_onednn):
    x, weight = torch.empty(batch, inputs), torch.empty(outputs, inputs)
    with native.enabled(True):
        monkeypatch.setattr(native, "DENSE_ON_ONEDNN", True)  # MKL on its generic path, or an Intel CPU
        assert native.linear_applies(x, weight) == on_onednn
        monkeypatch.setattr(native, "DENSE_ON_ONEDNN", False)  # MKL's AVX2 branch answered on a non-Intel CPU
        assert not native.linear_applies(x, weight)


def test_the_dense_rule_follows_the_mkl_branch_this_process_runs():
    mkl_avx2_answered = mkl_paths.answered() and mkl_paths.mkl_code_path() == "AVX2"
    assert native.DENSE_ON_ONEDNN is (torch.backends.mkldnn.is_available() and not mkl_avx2_answered)


def test_a_dense_layer_below_the_thresholds_is_f_linear_bit_for_bit():
    torch.manual_seed(0)
    layer, x = Dense(784, 1000), torch.randn(128, 784)
    with native.enabled(True):
        out = layer(x)
    assert same_bits(out.detach(), torch.nn.functional.linear(x, layer.weight, layer.bias))
    assert out.grad_fn.name() == "AddmmBackward0"  # torch's own product and gradient, not native._Linear


def test_the_dense_layer_runs_nn_linear_where_onednn_does_not_apply():
    layer = Dense(6, 4)
    for x in (torch.randn(3, 6).double(), torch.randn(2, 3, 6)):  # float64; 3-d input
        with native.enabled(True):
            assert not native.linear_applies(x, layer.weight.to(x.dtype))
            assert torch.equal(layer.to(x.dtype)(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    with native.enabled(False):
        x = torch.randn(3, 6)
        assert torch.equal(layer.float()(x), torch.nn.functional.linear(x, layer.weight, layer.bias))


# An activation and the dropout after it as one kernel: the same bits as the two layers one after the other.

def unfused(kind: str):
    """The layers the fused kernel replaces: (activation, slope)."""
    from deepobs.models.vae import LRELU_ALPHA, LeakyReLU
    return (LeakyReLU(), LRELU_ALPHA) if kind == "leaky_relu" else (torch.nn.ReLU(), 0.0)


def activation_dropout_and_grads(x, grad_out, kind: str, p: float, key: int, fused: bool):
    activation, slope = unfused(kind)
    x = x.detach().clone().requires_grad_()
    if fused:
        out = native.activation_dropout(x, kind, slope, p, key=key)
    else:
        out = activation(x) * native.dropout_mask(x, p, 1 / (1 - p), key=key)
    out.backward(grad_out)
    return out.detach(), x.grad


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("kind", ["leaky_relu", "relu"])
@pytest.mark.parametrize("values", ["normal", "ties, -0.0 and NaN"])
def test_the_fused_activation_and_dropout_are_the_two_layers_bit_for_bit(kind, values, layout):
    x = inputs("ties, -0.0 and NaN" if values != "normal" else "normal", (4, 16, 7, 9))
    x = nhwc(x) if layout == "nhwc" else x
    grad_out = torch.randn(4, 16, 7, 9)
    fused = activation_dropout_and_grads(x, grad_out, kind, 0.2, key=11, fused=True)
    layers = activation_dropout_and_grads(x, grad_out, kind, 0.2, key=11, fused=False)
    assert same_bits(fused[0], layers[0]) and same_bits(fused[1], layers[1])
    assert fused[0].stride() == x.stride()


def test_a_planted_tie_rule_slip_in_the_fused_backward_is_caught(monkeypatch):
    """The leaky ReLU's gradient at x == 0 taken as 0.3 (F.leaky_relu's rule, not TF's): the comparison fails."""
    x = inputs("ties", (4, 16, 6, 6))  # a fifth of the elements exactly 0
    grad_out = torch.randn(4, 16, 6, 6)
    layers = activation_dropout_and_grads(x, grad_out, "leaky_relu", 0.2, key=5, fused=False)
    real = native._ActivationDropout.backward

    def x_above_zero_rule(ctx, grad):
        (grad_x, *rest) = real(ctx, grad)
        (x,) = ctx.saved_tensors
        return (torch.where(x == 0, grad_x * 0.3, grad_x), *rest)
    monkeypatch.setattr(native._ActivationDropout, "backward", staticmethod(x_above_zero_rule))
    slipped = activation_dropout_and_grads(x, grad_out, "leaky_relu", 0.2, key=5, fused=True)
    assert same_bits(slipped[0], layers[0]) and not same_bits(slipped[1], layers[1])


def training_step_bits(name: str, monkeypatch, fused: bool, batch: int = 4) -> list[torch.Tensor]:
    problem = PROBLEMS[name]
    calls = []
    with monkeypatch.context() as patch:
        real = native.activation_dropout
        patch.setattr(native, "activation_dropout", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
        if not fused:
            patch.setattr(native, "activation_dropout_applies", lambda x: False)
        torch.manual_seed(0)
        model = problem.model().train()
        shape = problem.family.inputs[0].shape
        images = torch.rand(batch, *shape)
        torch.manual_seed(1)
        out = model(images)
        loss = sum(part.float().sum() for part in (out if isinstance(out, tuple) else (out,)))
        loss.backward()
    assert (len(calls) > 0) == fused
    return [loss.detach()] + [parameter.grad for parameter in model.parameters()]


@pytest.mark.parametrize("name", ["mnist_vae", "cifar100_allcnnc"])
def test_a_training_step_is_the_same_with_and_without_the_fused_activation_dropout(name, monkeypatch):
    fused, layers = (training_step_bits(name, monkeypatch, use) for use in (True, False))
    assert all(same_bits(a, b) for a, b in zip(fused, layers))


def test_hooked_or_replaced_pairs_and_double_backward_run_the_layers(monkeypatch):
    from deepobs.layers import SequentialFusingDropout
    pairs = PROBLEMS["mnist_vae"].model().train().decoder_convs
    assert isinstance(pairs, SequentialFusingDropout)
    z = nhwc(torch.randn(2, 1, 7, 7))
    seen, calls, real = [], [], native.activation_dropout
    monkeypatch.setattr(native, "activation_dropout", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    handle = pairs[0][1].register_forward_hook(lambda module, args, out: seen.append(out))
    pairs(z)
    assert len(seen) == 1 and len(calls) == 1  # the hooked ReLU ran as a layer, the unhooked pair fused
    handle.remove()
    pairs[1] = torch.nn.Dropout(0.2)  # replaced: torch's own dropout runs after the first pair
    pairs(z)
    assert len(calls) == 2  # only the second pair fused again
    x = torch.randn(3, 16, 5, 5, requires_grad=True)

    def second(fused: bool) -> torch.Tensor:
        activation, slope = unfused("leaky_relu")
        out = (native.activation_dropout(x, "leaky_relu", slope, 0.2, key=3) if fused
               else activation(x) * native.dropout_mask(x, 0.2, 1.25, key=3))
        (grad,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(grad.sum(), x)[0]
    assert torch.equal(second(True), second(False))


# x86-64 micro-architecture levels: the CPU flags each needs (GCC's -march=x86-64-v3/-v4), and the vector width
# the kernels take there: 4 floats (SSE2, x86-64), 8 (AVX2, v3), 16 (AVX-512, v4).
MARCH_LEVELS = {"x86-64": (), "x86-64-v3": ("avx2", "fma", "bmi2", "f16c", "movbe"),
                "x86-64-v4": ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")}


def _kernel_outputs() -> list[torch.Tensor]:
    """Every kernel's output on fixed inputs: Philox words, a mask, the fused activation + dropout both ways,
    a max pool with ReLU both ways (ties, -0.0 and NaN; channels of several vector widths), a Winograd
    convolution with bias and ReLU (its kernels' transform included) and its weight gradient."""
    x = inputs("ties, -0.0 and NaN", (3, 7, 9, 48)).permute(0, 3, 1, 2)  # NHWC memory, 48 channels
    pooled = native.max_pool(x.requires_grad_(), (3, 3), (2, 2), (1, 1), (4, 5), relu=True)
    pool_grad, = torch.autograd.grad(pooled, x, torch.arange(pooled.numel()).float().view_as(pooled))
    values = torch.randn(10_007, generator=torch.Generator().manual_seed(3)).requires_grad_()
    activated = native.activation_dropout(values, "leaky_relu", 0.2, 0.3, key=11)
    activation_grad, = torch.autograd.grad(activated, values, torch.ones_like(activated))
    images, kernels = inputs("normal", (2, 48, 7, 9)), inputs("normal", (32, 48, 3, 3))
    convolved = native.winograd(images, native.winograd_weight(kernels), torch.linspace(-1, 1, 32), 1, relu=True)
    return [native.philox_bits(1_003, key=5), native.dropout_mask(values.detach(), 0.4, 1 / 0.6, key=9),
            activated.detach(), activation_grad, pooled.detach(), pool_grad, convolved,
            native.winograd_weight_gradient(images, inputs("normal", (2, 32, 7, 9)), 3, 1),
            native.winograd(images, native.winograd_weight(inputs("normal", (32, 48, 4, 4))), None, 2)]


@pytest.mark.skipif(native.status() != "built", reason="the kernels are not built here")
@pytest.mark.parametrize("march", list(MARCH_LEVELS))
def test_every_vector_width_gives_the_same_bits(march, monkeypatch):
    # The kernels take the widest vectors the target has (GCC scalarises wider generic vectors: 16 lanes on an
    # AVX2 CPU ran the pool 9x slower); the random stream and the values must not depend on that width.
    flags = set((cbuild.cpu_flags() or "").split())
    if platform.machine() != "x86_64" or not flags.issuperset(MARCH_LEVELS[march]):
        pytest.skip(f"this CPU cannot run -march={march}")
    expected = _kernel_outputs()
    other = native._build_and_load(tuple(f"-march={march}" if flag == "-march=native" else flag
                                         for flag in native.FLAGS))
    monkeypatch.setattr(native, "_library", lambda: other)
    for name, ours, theirs in zip(("words", "mask", "activation", "its gradient", "pool", "its gradient",
                                   "winograd convolution", "its weight gradient", "4x4 winograd convolution"),
                                  expected, _kernel_outputs()):
        assert same_bits(ours, theirs), f"{name} differs when built for -march={march}"
