"""The PyTorch port on its own: sizes, TF 'SAME' padding, the TF1 Adam formula, the fused SGD update."""
import copy
import math

import pytest
import torch

from deepobs.layers import Conv2dSame, ConvTranspose2dSame, MaxPool2dSame, tf_same_padding
from deepobs.optim import OPTIMIZERS, TF1Adam
from deepobs.problems import PROBLEMS, get_problem, UnknownProblemError

# Trainable parameter counts of the original graphs (shared/deepobs_spec.md, section 2).
ORIGINAL_PARAMETER_COUNTS = {
    "mnist_logreg": 7850, "mnist_mlp": 1336610, "mnist_2c2d": 3274634, "fmnist_logreg": 7850,
    "fmnist_mlp": 1336610, "fmnist_2c2d": 3274634, "cifar10_3c3d": 895210, "cifar100_3c3d": 918340,
    "svhn_3c3d": 895210, "cifar100_allcnnc": 1387108, "svhn_wrn164": 2748890,
    "mnist_vae": 10151489, "fmnist_vae": 10151489, "tolstoi_char_rnn": 284499, "quadratic_deep": 100,
    "two_d_rosenbrock": 2, "two_d_beale": 2, "two_d_branin": 2,
    "cifar100_wrn404": 8972340, "imagenet_inception_v3": 27164082,  # aux head included
    "cifar10_vgg16": 134301514, "cifar10_vgg19": 139611210, "cifar100_vgg16": 134670244,
    "cifar100_vgg19": 139979940, "imagenet_vgg16": 138361641, "imagenet_vgg19": 143671337,
}
# Numbers the port holds beyond the original's trainable ones: torch's second LSTM bias, frozen at TF's
# constant forget_bias (512 per layer).
FROZEN_PARAMETER_COUNTS = {"tolstoi_char_rnn": 1024}
# One example's output shape per output name (the model returns the family's outputs in order).
OUTPUT_SHAPES = {"logits": lambda p: (p.num_outputs,), "reconstruction": lambda p: (28, 28),
                 "mean": lambda p: (8,), "std_dev": lambda p: (8,), "losses": lambda p: (),
                 "aux_logits": lambda p: (p.num_outputs,)}


def example_inputs(problem, batch: int = 2) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(batch, *spec.shape, dtype=torch.long) if spec.kind == "ids"
                 else torch.zeros(batch, *spec.shape) for spec in problem.family.inputs)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_parameter_count_and_output_shape(name):
    problem = PROBLEMS[name]
    model = problem.model()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ORIGINAL_PARAMETER_COUNTS[name]
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen == FROZEN_PARAMETER_COUNTS.get(name, 0)
    outputs = model(*example_inputs(problem))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert len(outputs) == len(problem.family.outputs)
    sequence = problem.family.inputs[0].shape if problem.family.targets == "ids" else ()
    for output, name_ in zip(outputs, problem.family.outputs):
        assert tuple(output.shape) == (2, *sequence, *OUTPUT_SHAPES[name_](problem)), name_


def test_char_rnn_carries_detached_state_and_resets_at_a_phase_switch():
    model = PROBLEMS["tolstoi_char_rnn"].model().eval()
    chars = torch.randint(0, 83, (2, 50))
    with torch.no_grad():
        from_zero = model(chars)
        from_carried = model(chars)
        assert not torch.equal(from_carried, from_zero)  # the second batch continues the first's streams
        model.reset_state()
        assert torch.equal(model(chars), from_zero)
    model.train()  # eval -> train: the original's train_init_op assigns the zero state
    assert model.state is None
    model(chars).sum().backward()
    assert all(not t.requires_grad for layer in model.state for t in layer)  # truncated backpropagation


def test_unknown_problem_lists_valid_names():
    with pytest.raises(UnknownProblemError, match="valid names: mnist_logreg"):
        get_problem("mnist_resnet")


@pytest.mark.parametrize("size, kernel, stride, expected", [
    (32, 3, 2, (0, 1)), (28, 3, 2, (0, 1)), (7, 4, 1, (1, 2)), (14, 4, 2, (1, 1)), (28, 5, 1, (2, 2)), (32, 1, 2, (0, 0)),
])
def test_tf_same_padding(size, kernel, stride, expected):
    assert tf_same_padding(size, kernel, stride) == expected


def test_stride2_same_conv_samples_tf_grid():
    # TF output i of a k3 s2 SAME conv on an even input is centred on input 2i+1.
    conv = Conv2dSame(1, 1, 3, 2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(conv(x)[0, 0], x[0, 0, 1::2, 1::2])


def test_same_max_pool_pads_after_with_minus_infinity():
    x = -torch.ones(1, 1, 6, 6)
    assert MaxPool2dSame(3, 2)(x).shape == (1, 1, 3, 3)
    assert torch.all(MaxPool2dSame(3, 2)(x) == -1.0)


def fully_padded(layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's convolution with all of its 'SAME' padding copied in by F.pad (the spelling before only the
    asymmetric excess was): the reference for the split padding."""
    import torch.nn.functional as F
    kh, kw = layer.kernel_size
    if isinstance(layer, ConvTranspose2dSame):
        top, bottom = tf_same_padding(x.shape[-2], kh, 1)
        left, right = tf_same_padding(x.shape[-1], kw, 1)
        kernel = layer.weight.flip(2, 3).transpose(0, 1).contiguous(memory_format=torch.channels_last)
        pads = (kw - 1 - left, kw - 1 - right, kh - 1 - top, kh - 1 - bottom)
        return F.conv2d(F.pad(x, pads), kernel, layer.bias)
    top, bottom = tf_same_padding(x.shape[-2], kh, layer.stride[0])
    left, right = tf_same_padding(x.shape[-1], kw, layer.stride[1])
    return F.conv2d(F.pad(x, (left, right, top, bottom)), layer.weight, layer.bias, layer.stride)


# (layer, input size): the asymmetric 'SAME' paddings, where the split changed what is copied: the VAE's stride-1
# conv and transposed convs ((1, 2) and (2, 1) per side), a 6x6 ((2, 3)), a stride-2 conv on an even size
# ((0, 1): all copied, as before). The two spellings hand oneDNN inputs of other shapes, and which kernel (so which
# order of summation) it picks for each depends on the CPU: bit-equal on one machine (Xeon, AMX), not on another
# (CI's): so the split is compared with the fully padded float64 twin to float32 round-off, as the transposed conv
# below is, far below what a misplaced pixel changes (the test after).
SPLIT_PADDING_CASES = [(lambda: Conv2dSame(64, 64, 4, 1), 7), (lambda: ConvTranspose2dSame(64, 64, 4, 1), 14),
                       (lambda: Conv2dSame(16, 16, 6), 11), (lambda: Conv2dSame(16, 32, 3, 2), 12)]


@pytest.mark.parametrize("make, size", SPLIT_PADDING_CASES)
def test_same_padding_split_between_f_pad_and_the_convolution_gives_the_fully_padded_values(make, size):
    torch.manual_seed(size)
    layer = make().to(memory_format=torch.channels_last)
    twin = copy.deepcopy(layer).double()
    x = torch.randn(4, layer.in_channels, size, size).contiguous(memory_format=torch.channels_last)

    def output_and_grads(module, forward, x):
        module.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_()
        out = forward(xg)
        out.backward(torch.ones_like(out))
        return [out.detach(), xg.grad, module.weight.grad]
    split = output_and_grads(layer, layer, x)
    exact = output_and_grads(twin, lambda t: fully_padded(twin, t), x.double())
    assert split[0].shape == exact[0].shape
    for value, truth in zip(split, exact):
        assert relative_error(value, truth) < 1e-5


def test_a_planted_split_padding_on_the_wrong_side_is_caught(monkeypatch):
    """The asymmetric excess copied before instead of after (TF pads the extra pixel after): other values."""
    import deepobs.layers as layers
    real = layers._split_padding
    monkeypatch.setattr(layers, "_split_padding", lambda top, bottom, left, right: real(bottom, top, right, left))
    torch.manual_seed(0)
    layer = Conv2dSame(8, 8, 4, 1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 7, 7).contiguous(memory_format=torch.channels_last)
    assert not torch.allclose(layer(x), fully_padded(layer, x), rtol=1e-3, atol=1e-3)


def cropped_transposed_conv(layer: ConvTranspose2dSame, x: torch.Tensor) -> torch.Tensor:
    """The full transposed convolution, then TF's 'SAME' crop (the spelling before the symmetric crop became
    conv_transpose2d's own padding): the reference for it."""
    import torch.nn.functional as F
    y = F.conv_transpose2d(x, layer.weight, layer.bias, layer.stride)
    (top, bottom), (left, right) = (tf_same_padding(size * stride, kernel, stride) for size, kernel, stride in
                                    zip(x.shape[-2:], layer.kernel_size, layer.stride))
    return y[..., top:y.shape[-2] - bottom, left:y.shape[-1] - right]


def transposed_conv_and_grads(layer: ConvTranspose2dSame, forward, x: torch.Tensor) -> list[torch.Tensor]:
    layer.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_()
    out = forward(xg)
    out.backward(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).sin())
    return [out.detach(), xg.grad, layer.weight.grad, layer.bias.grad]


# (kernel, stride, input size, same bits): the VAE's k4 s2 7->14 (crop (1, 1)) and k2 s2 (no crop) give the
# cropped spelling's bits; an asymmetric crop (k3 s2: (0, 1)) still runs it; k5 s3 (crop (1, 1) of 5->15) runs
# another oneDNN kernel: float32 round-off from it, checked against float64.
@pytest.mark.parametrize("kernel, stride, size, same_bits", [(4, 2, 7, True), (2, 2, 4, True), (3, 2, 6, True),
                                                              (5, 3, 5, False)])
def test_the_strided_transposed_conv_is_the_cropped_full_one(kernel, stride, size, same_bits):
    torch.manual_seed(kernel * size)
    layer = ConvTranspose2dSame(3, 8, kernel, stride).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, size, size).contiguous(memory_format=torch.channels_last)
    ours = transposed_conv_and_grads(layer, layer, x)
    cropped = transposed_conv_and_grads(layer, lambda t: cropped_transposed_conv(layer, t), x)
    twin = copy.deepcopy(layer).double()
    exact = transposed_conv_and_grads(twin, lambda t: cropped_transposed_conv(twin, t), x.double())
    assert ours[0].shape == (4, 8, size * stride, size * stride)
    for value, old, truth in zip(ours, cropped, exact):
        assert torch.equal(value, old) if same_bits else relative_error(value, truth) < 1e-5


# (kernel, height, width): the VAE's k4 on 14x14 (crop (1, 2)), odd kernels (symmetric crops), a non-square input.
@pytest.mark.parametrize("kernel, height, width", [(4, 14, 14), (3, 7, 7), (5, 6, 9), (2, 5, 4)])
def test_the_stride_one_transposed_conv_and_its_hand_written_gradients_are_the_cropped_full_one(kernel, height,
                                                                                               width):
    # Its input gradient is a forward convolution of the output gradient (as TF computes it), not autograd's.
    torch.manual_seed(kernel * height * width)
    layer = ConvTranspose2dSame(16, 8, kernel, 1).to(memory_format=torch.channels_last)
    x = torch.randn(3, 16, height, width).contiguous(memory_format=torch.channels_last)
    ours = transposed_conv_and_grads(layer, layer, x)
    twin = copy.deepcopy(layer).double()
    exact = transposed_conv_and_grads(twin, lambda t: cropped_transposed_conv(twin, t), x.double())
    assert ours[0].shape == (3, 8, height, width)
    for name, value, truth in zip(("output", "input grad", "weight grad", "bias grad"), ours, exact):
        assert relative_error(value, truth) < 1e-5, name


def test_the_stride_one_transposed_conv_is_twice_differentiable_as_the_cropped_full_one():
    torch.manual_seed(1)
    layer = ConvTranspose2dSame(8, 8, 4, 1).double()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64).requires_grad_()

    def hessian_vector_products(forward):
        out = forward(x)
        grads = torch.autograd.grad(out.tanh().pow(2).sum(), (x, layer.weight), create_graph=True)
        return torch.autograd.grad(sum((g * g.detach().sin()).sum() for g in grads), (x, layer.weight, layer.bias))
    for ours, truth in zip(hessian_vector_products(layer), hessian_vector_products(
            lambda t: cropped_transposed_conv(layer, t))):
        assert relative_error(ours, truth) < 1e-10


def test_a_planted_mirrored_padding_in_the_transposed_convs_input_gradient_is_caught(monkeypatch):
    """The output gradient padded by the crop mirrored ((2, 1) for (1, 2)): a shifted input gradient."""
    from deepobs import layers
    real = layers._padded
    monkeypatch.setattr(layers, "_padded", lambda x, top, bottom, left, right: real(x, bottom, top, right, left)
                        if x.shape[1] == 8 else real(x, top, bottom, left, right))  # the gradient's 8 channels only
    torch.manual_seed(0)
    layer = ConvTranspose2dSame(16, 8, 4, 1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 16, 14, 14).contiguous(memory_format=torch.channels_last)
    ours = transposed_conv_and_grads(layer, layer, x)
    exact = transposed_conv_and_grads(layer, lambda t: cropped_transposed_conv(layer, t), x)
    assert relative_error(ours[0], exact[0]) < 1e-5  # the forward untouched
    assert relative_error(ours[1], exact[1]) > 1e-2


def test_a_planted_dropped_crop_of_the_strided_transposed_conv_is_caught(monkeypatch):
    """conv_transpose2d without the crop as its padding (the full 16x16 for the VAE's 7->14): the comparison fails."""
    import torch.nn.functional as F
    from deepobs import layers
    monkeypatch.setattr(layers, "F", type("F", (), {
        "conv_transpose2d": lambda x, w, b, stride, padding=0: F.conv_transpose2d(x, w, b, stride)}))
    layer = ConvTranspose2dSame(3, 8, 4, 2).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 7, 7).contiguous(memory_format=torch.channels_last)
    assert layer(x).shape != cropped_transposed_conv(layer, x).shape


def conv_and_grads(forward, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    out = forward(*leaves)
    out.backward(1.5 + torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).cos())  # sums without cancelling
    return [out.detach()] + [leaf.grad for leaf in leaves]


# (in, out, kernel, padding, input size): 2c2d's second conv (k5, padded 2, where a copy pads faster on the AMD
# EPYC AVX2 kind), 3c3d's VALID one (its input gradient padded by 2), a 'SAME' k3, a 1x1, Inception's 1x7.
PLACED_PADDING_CASES = [(8, 16, (5, 5), (2, 2), (14, 14)), (16, 8, (3, 3), (0, 0), (9, 9)),
                        (8, 8, (3, 3), (1, 1), (6, 7)), (8, 16, (1, 1), (0, 0), (5, 5)),
                        (8, 8, (1, 7), (0, 3), (9, 9))]
PLANS = [(False, False), (True, False), (False, True), (True, True)]  # (copy in the forward, for the input grad)


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("case", PLACED_PADDING_CASES)
def test_every_padding_placement_gives_the_convolution_and_its_gradients(case, plan):
    from deepobs.layers import _PaddingPlacedConv
    (cin, cout, kernel, padding, size), names = case, ("output", "input grad", "weight grad", "bias grad")
    torch.manual_seed(cin * cout + sum(kernel))
    x = torch.randn(3, cin, *size).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, *kernel).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(cout)
    placed = conv_and_grads(lambda *t: _PaddingPlacedConv.apply(*t, padding, plan), x, weight, bias)
    exact = conv_and_grads(lambda *t: torch.nn.functional.conv2d(*t, padding=padding), x.double(), weight.double(),
                           bias.double())
    for name, value, truth in zip(names, placed, exact):
        assert value.shape == truth.shape and relative_error(value, truth) < 1e-5, name


def test_the_placed_padding_convolution_is_twice_differentiable_as_the_plain_one():
    from deepobs.layers import _PaddingPlacedConv
    torch.manual_seed(2)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64).requires_grad_()
    weight = torch.randn(6, 4, 5, 5, dtype=torch.float64).requires_grad_()
    bias = torch.randn(6, dtype=torch.float64)

    def hessian_vector_products(forward):
        out = forward(x, weight, bias)
        grads = torch.autograd.grad(out.tanh().pow(2).sum(), (x, weight), create_graph=True)
        return torch.autograd.grad(sum((g * g.detach().sin()).sum() for g in grads), (x, weight))
    plain = hessian_vector_products(lambda *t: torch.nn.functional.conv2d(*t, padding=(2, 2)))
    for plan in PLANS:
        placed = hessian_vector_products(lambda *t: _PaddingPlacedConv.apply(*t, (2, 2), plan))
        for ours, truth in zip(placed, plain):
            assert relative_error(ours, truth) < 1e-10


@pytest.mark.parametrize("planted", [lambda weight: weight.flip(3).transpose(0, 1),  # one axis flipped
                                     lambda weight: weight.flip(2, 3)])  # in and out not swapped
def test_a_planted_slip_in_the_input_gradient_as_a_forward_convolution_is_caught(planted, monkeypatch):
    """The kernel of the input gradient's forward convolution mirrored along one axis only, or not transposed
    (square channels, so it runs): a wrong input gradient, the output and the other gradients untouched."""
    import deepobs.layers as layers
    from deepobs.layers import _PaddingPlacedConv
    monkeypatch.setattr(layers, "_flipped", lambda w: planted(w).contiguous(memory_format=torch.channels_last))
    torch.manual_seed(3)
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8, 8, 3, 3).contiguous(memory_format=torch.channels_last), torch.randn(8)
    placed = conv_and_grads(lambda *t: _PaddingPlacedConv.apply(*t, (0, 0), (False, True)), x, weight, bias)
    exact = conv_and_grads(lambda *t: torch.nn.functional.conv2d(*t), x, weight, bias)
    assert relative_error(placed[0], exact[0]) < 1e-5 and relative_error(placed[2], exact[2]) < 1e-5
    assert relative_error(placed[1], exact[1]) > 1e-2


def test_a_planted_slip_in_the_copied_forward_padding_is_caught(monkeypatch):
    """The copied padding's rows and columns swapped (Inception's 1x7 pads (0, 3): the copy pads (3, 0)): the
    forced copy plan no longer gives the convolution, while oneDNN's own padding still does."""
    import deepobs.layers as layers
    from deepobs.layers import _PaddingPlacedConv
    real = layers._zero_padded
    monkeypatch.setattr(layers, "_zero_padded", lambda t, padding: real(t, padding[::-1]))
    torch.manual_seed(4)
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8, 8, 1, 7).contiguous(memory_format=torch.channels_last), torch.randn(8)
    exact = torch.nn.functional.conv2d(x, weight, bias, padding=(0, 3))
    with torch.no_grad():
        assert relative_error(_PaddingPlacedConv.apply(x, weight, bias, (0, 3), (False, False)), exact) < 1e-5
        copied = _PaddingPlacedConv.apply(x, weight, bias, (0, 3), (True, False))
    assert copied.shape != exact.shape or relative_error(copied, exact) > 1e-2


def test_the_faster_padding_placement_is_measured_once_per_geometry(monkeypatch):
    import time

    import deepobs.layers as layers
    monkeypatch.setattr(layers, "_padding_copied", {})
    calls = {"slow": 0, "quick": 0}

    def candidate(name, seconds):
        def run():
            calls[name] += 1
            time.sleep(seconds)
        return run
    x, weight = torch.zeros(1, 2, 5, 5), torch.zeros(2, 2, 3, 3)
    assert layers._copy_wins("forward", x, weight, (1, 1), candidate("slow", 0.005), candidate("quick", 0))
    assert calls == {"slow": 1 + layers.PLACEMENT_TIMINGS, "quick": 1 + layers.PLACEMENT_TIMINGS}
    assert layers._copy_wins("forward", x, weight, (1, 1), candidate("slow", 0), candidate("quick", 0.005))
    assert calls["slow"] == 1 + layers.PLACEMENT_TIMINGS  # the geometry's choice kept, not measured again
    assert not layers._copy_wins("forward", x, torch.zeros(2, 2, 5, 5), (2, 2), candidate("quick", 0),
                                 candidate("slow", 0.005))
    assert not layers._copy_wins("forward", torch.zeros(1, 2, 64, 64), weight, (1, 1), candidate("slow", 0.005),
                                 candidate("quick", 0))  # 6% more area: the convolution pads, untimed
    assert calls["quick"] == 2 * (1 + layers.PLACEMENT_TIMINGS) and len(layers.padding_placements()) == 3


def test_only_a_training_pass_s_stride_one_float32_convolution_places_its_padding(monkeypatch):
    import deepobs.layers as layers
    from deepobs import native
    seen = []
    real = layers._PaddingPlacedConv.apply
    monkeypatch.setattr(layers._PaddingPlacedConv, "apply", lambda *args: seen.append(args[3]) or real(*args))
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    for layer in (Conv2dSame(4, 4, 5), layers.Conv2d(4, 4, 3), Conv2dSame(4, 4, 3, 2), layers.Conv2d(4, 4, 3, 2)):
        layer.to(memory_format=torch.channels_last)
        expected = layer.stride == (1, 1)
        seen.clear()
        layer(x).sum().backward()
        assert seen == ([(2, 2)] if isinstance(layer, Conv2dSame) else [(0, 0)]) * expected
        with torch.no_grad():
            layer(x)
        layer.double()(x.double()).sum().backward()
        with native.enabled(False):
            layer.float()(x).sum().backward()
        assert len(seen) == expected


# (conv, input size): All-CNN-C's stride-2 'SAME' conv on even sizes ((0, 1): mirrored, the convolution's own
# padding), its stride-1 and valid convs, paddings the mirror cannot take uncopied ((1, 2) of a 4x4 kernel), and
# plain convs with unread rows at the end.
MIRROR_CASES = [(lambda: Conv2dSame(8, 8, 3, 2), 32), (lambda: Conv2dSame(8, 8, 3, 2), 16),
                (lambda: Conv2dSame(8, 8, 3, 2), 15), (lambda: Conv2dSame(8, 8, 3), 9),
                (lambda: torch.nn.Conv2d(8, 8, 3), 8), (lambda: Conv2dSame(8, 8, 1), 6),
                (lambda: Conv2dSame(8, 8, 4, 1), 7), (lambda: Conv2dSame(8, 8, 4, 2), 14),
                # plain strided convs whose windows stop short of the last row (never read: mirrored, the first)
                (lambda: torch.nn.Conv2d(8, 8, 3, stride=2), 8), (lambda: torch.nn.Conv2d(8, 8, 3, 2, padding=1), 8),
                (lambda: torch.nn.Conv2d(8, 8, 2, stride=3, dilation=2), 10)]


def mirrored_and_plain(conv, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(output, input gradient, kernel gradient) of conv on x, and of layers.mirrored_conv on x's mirror image,
    mirrored back."""
    from deepobs import layers
    results = []
    for forward, mirror in ((conv, lambda t: t), (lambda t: layers.mirrored_conv(conv, t), lambda t: t.flip(2, 3))):
        conv.zero_grad(set_to_none=True)
        xg = mirror(x).detach().requires_grad_()
        out = mirror(forward(xg))
        out.backward(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).sin())
        results.append([out.detach(), mirror(xg.grad), conv.weight.grad])
    return results[0], results[1]


@pytest.mark.parametrize("make, size", MIRROR_CASES)
def test_a_mirrored_convolution_is_the_mirror_image_of_the_convolution(make, size):
    torch.manual_seed(size)
    conv = make().double()
    plain, mirrored = mirrored_and_plain(conv, torch.randn(2, 8, size, size, dtype=torch.float64))
    assert plain[0].shape == mirrored[0].shape
    for one, other in zip(plain, mirrored):
        assert torch.allclose(one, other, rtol=1e-12, atol=1e-12)


def test_all_cnn_c_s_stride_2_convs_run_mirrored_without_a_copied_padding(monkeypatch):
    import torch.nn.functional as F
    from deepobs import layers
    pads = []
    monkeypatch.setattr(layers, "F", type("F", (), {"pad": lambda x, p: pads.append(p) or F.pad(x, p),
                                                    "conv2d": staticmethod(F.conv2d)}))
    for size in (32, 16):
        layers.mirrored_conv(Conv2dSame(8, 8, 3, 2), torch.randn(1, 8, size, size))
    assert pads == []


def test_a_planted_unmirrored_padding_is_caught(monkeypatch):
    """The kernel flipped but TF's padding kept as it is, (before, after) instead of (after, before): other values."""
    from deepobs import layers

    def unmirrored_padding(conv, x):
        x, padding = conv.padded(x)
        return conv.weight.flip(2, 3), x, padding
    monkeypatch.setattr(layers, "_mirrored_conv_inputs", unmirrored_padding)
    torch.manual_seed(0)
    conv = Conv2dSame(8, 8, 3, 2).double()
    plain, mirrored = mirrored_and_plain(conv, torch.randn(2, 8, 32, 32, dtype=torch.float64))
    assert not torch.allclose(plain[0], mirrored[0], rtol=1e-3, atol=1e-3)


def all_cnn_c_output_and_gradients(model, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.backward(torch.ones_like(out))
    return [out.detach()] + [parameter.grad for parameter in model.parameters()]


def relative_error(value: torch.Tensor, exact: torch.Tensor) -> float:
    return ((value.double() - exact).abs().max() / exact.abs().max()).item()


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_all_cnn_c_runs_mirrored_to_round_off(dtype, bound, monkeypatch):
    from deepobs import layers, native
    from deepobs.models import allcnnc
    torch.manual_seed(0)
    model, x = PROBLEMS["cifar100_allcnnc"].model().eval(), torch.randn(3, 3, 32, 32)
    with native.enabled(False):  # the model as built, in float64: the truth
        exact = all_cnn_c_output_and_gradients(model.double(), x.double())
    calls = []
    monkeypatch.setattr(allcnnc, "runs_mirrored", lambda *args: calls.append(layers.runs_mirrored(*args)) or calls[-1])
    with native.enabled(True):
        mirrored = all_cnn_c_output_and_gradients(model.to(dtype), x.to(dtype))
    assert calls == [True]
    for value, truth in zip(mirrored, exact):
        assert relative_error(value, truth) <= bound


def test_all_cnn_c_runs_unmirrored_when_hooked_edited_injected_or_switched_off(monkeypatch):
    from deepobs import layers, native
    model, x = PROBLEMS["cifar100_allcnnc"].model(), torch.randn(1, 3, 32, 32)
    with native.enabled(True):
        assert layers.runs_mirrored(model.features, x, (layers.ConvReLU, layers.Dropout))
        handle = model.features[3][1].register_forward_hook(lambda *args: None)
        assert not layers.runs_mirrored(model.features, x, (layers.ConvReLU, layers.Dropout))
        handle.remove()
        model.features[3][1] = torch.nn.Tanh()  # a user's edit
        assert not layers.runs_mirrored(model.features, x, (layers.ConvReLU, layers.Dropout))
        model.features[3][1] = torch.nn.ReLU()
        with monkeypatch.context() as patched:  # the audit's injected dropout draws
            patched.setattr(torch, "rand_like", lambda t: torch.zeros_like(t))
            assert not layers.runs_mirrored(model.features, x, (layers.ConvReLU, layers.Dropout))
        assert layers.runs_mirrored(model.features, x, (layers.ConvReLU, layers.Dropout))
    with native.enabled(False):
        assert not layers.runs_mirrored(model.features, x, (layers.ConvReLU, layers.Dropout))


def two_c_two_d_evaluation(model, x: torch.Tensor, use_native: bool, monkeypatch) -> tuple[torch.Tensor, list]:
    """The 2c2d model's evaluation output, and whether it ran on the blocked layout."""
    from deepobs import layers, native
    from deepobs.models import cnn_2c2d
    calls = []
    with monkeypatch.context() as patched:
        patched.setattr(cnn_2c2d, "runs_blocked", lambda *args: calls.append(layers.runs_blocked(*args)) or calls[-1])
        with native.enabled(use_native), torch.no_grad():
            return model(x), calls


@pytest.mark.parametrize("name", ["mnist_2c2d", "fmnist_2c2d"])
def test_2c2d_evaluates_on_the_blocked_layout_to_round_off(name, monkeypatch):
    torch.manual_seed(0)
    model, x = PROBLEMS[name].model().eval(), torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        model.conv1[0].bias.uniform_(-0.1, 0.1)  # outputs on both sides of the ReLU
    exact, calls = two_c_two_d_evaluation(copy.deepcopy(model).double(), x.double(), True, monkeypatch)
    assert calls == [False]  # float64: as built, the truth
    blocked, calls = two_c_two_d_evaluation(model, x, True, monkeypatch)
    assert calls == [True]
    nhwc, calls = two_c_two_d_evaluation(model, x, False, monkeypatch)
    assert calls == [False]
    assert relative_error(blocked, exact) <= 2e-6 and relative_error(nhwc, exact) <= 2e-6


def test_a_planted_nhwc_flatten_of_the_blocked_output_is_caught(monkeypatch):
    """The blocked stages' output flattened in NHWC order (TF's) rather than NCHW: the dense weights' rows
    no longer meet their features."""
    from deepobs import layers
    from deepobs.models import cnn_2c2d
    torch.manual_seed(0)
    model, x = PROBLEMS["mnist_2c2d"].model().eval(), torch.rand(4, 1, 28, 28)
    expected, _ = two_c_two_d_evaluation(model, x, False, monkeypatch)
    blocked = layers.conv_pool_relu_blocked

    def flattened_as_nhwc(stages, x):
        return blocked(stages, x).permute(0, 2, 3, 1).contiguous().reshape(x.shape[0], 64, 7, 7)
    monkeypatch.setattr(cnn_2c2d, "conv_pool_relu_blocked", flattened_as_nhwc)
    planted, calls = two_c_two_d_evaluation(model, x, True, monkeypatch)
    assert calls == [True] and relative_error(planted, expected.double()) > 1e-2


def test_2c2d_evaluates_as_built_when_hooked_edited_training_compiling_or_switched_off(monkeypatch):
    from deepobs import layers, native, runner
    model, x = PROBLEMS["mnist_2c2d"].model(), torch.rand(2, 1, 28, 28)
    stages = lambda: [(model.conv1, model.pool1), (model.conv2, model.pool2)]  # noqa: E731
    with native.enabled(True):
        with torch.no_grad():
            assert layers.runs_blocked(stages(), x)
            handle = model.pool2[1].register_forward_hook(lambda *args: None)  # the audit's taps
            assert not layers.runs_blocked(stages(), x)
            handle.remove()
            model.pool1[1] = torch.nn.Tanh()  # a user's edit
            assert not layers.runs_blocked(stages(), x)
            model.pool1[1] = torch.nn.ReLU()
            assert layers.runs_blocked(stages(), x)
            assert not layers.runs_blocked(stages(), x.double())
            monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
            assert not layers.runs_blocked(stages(), x)
            monkeypatch.undo()
        assert not layers.runs_blocked(stages(), x)  # gradients wanted: the training step
        assert not runner.worth_compiling(model)  # its blocked evaluation is the faster one
    with native.enabled(False), torch.no_grad():
        assert not layers.runs_blocked(stages(), x)
        assert runner.worth_compiling(model)


def test_tf1_adam_first_steps_follow_tf1_formula():
    lr, beta1, beta2, eps = 0.1, 0.9, 0.999, 1e-8
    param = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    optimizer = TF1Adam([param], lr=lr, betas=(beta1, beta2), eps=eps)
    grads = [torch.tensor([0.5, 1e-9], dtype=torch.float64), torch.tensor([-0.25, 3.0], dtype=torch.float64)]
    m = torch.zeros(2, dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    expected = param.detach().clone()
    for t, grad in enumerate(grads, start=1):
        param.grad = grad
        optimizer.step()
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        expected = expected - lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (v.sqrt() + eps)
        torch.testing.assert_close(param.detach(), expected, rtol=1e-14, atol=0)


def fused_calls(monkeypatch) -> list:
    calls, real = [], torch._fused_sgd_
    monkeypatch.setattr(torch, "_fused_sgd_", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    return calls


@pytest.mark.parametrize("kind", ["sgd", "momentum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fused_sgd_steps_are_the_for_loop_update_bit_for_bit(kind, dtype, monkeypatch):
    """Parameters in both memory formats with gradients in theirs (as autograd makes them), gradients of every
    size: torch's fused kernel runs and gives the for-loop update's bits; a planted learning-rate slip does not."""
    torch.manual_seed(0)
    start = [torch.randn(784, 257, dtype=dtype), torch.randn(64, dtype=dtype),
             torch.randn(64, 32, 4, 4, dtype=dtype).contiguous(memory_format=torch.channels_last)]
    steps = [[torch.empty_like(value).normal_().mul_(10.0 ** torch.randint(-6, 3, ()).item()) for value in start]
             for _ in range(4)]

    def trained(make, lr: float) -> list[torch.Tensor]:
        params = [value.clone().requires_grad_() for value in start]
        optimizer = make(params, lr)
        for gradients in steps:
            for param, grad in zip(params, gradients):
                param.grad = grad.clone()
            optimizer.step()
        return [param.detach() for param in params]

    extra = {"momentum": 0.9} if kind == "momentum" else {}
    loop = trained(lambda params, lr: torch.optim.SGD(params, lr=lr, foreach=False, **extra), 0.01)
    calls = fused_calls(monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(trained(OPTIMIZERS[kind], 0.01), loop))
    assert len(calls) == 4
    assert not all(torch.equal(a, b) for a, b in zip(trained(OPTIMIZERS[kind], 0.01 * (1 + 2 ** -20)), loop))


@pytest.mark.parametrize("kind", ["sgd", "momentum"])
def test_the_sgd_update_pairs_elements_by_index_whatever_the_gradients_memory_format(kind, monkeypatch):
    """A channels_last parameter given an NCHW gradient (as the audit sets them) is updated element by element.
    torch 2.14.1's fused=True CPU kernel pairs them by memory order and fails this (0.33 off here)."""
    torch.manual_seed(0)
    start = torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, 3, 2, 2)
    param = start.clone(memory_format=torch.channels_last).requires_grad_()
    param.grad = grad.clone()
    calls = fused_calls(monkeypatch)
    OPTIMIZERS[kind]([param], 0.1).step()
    torch.testing.assert_close(param.detach(), start - 0.1 * grad)
    assert calls == []  # the for-loop update ran


@pytest.mark.parametrize("name", ["mnist_vae", "tolstoi_char_rnn", "quadratic_deep", "two_d_branin", "mnist_2c2d"])
def test_data_set_batches_feed_the_problem(name, tmp_path):
    """A batch of the problem's own data set, split by its family, runs through model and loss."""
    from deepobs.datasets import get_dataset
    from parity.fixtures import write_dataset

    problem = PROBLEMS[name]
    write_dataset(problem.dataset, tmp_path)
    dataset = get_dataset(problem.dataset, tmp_path, batch_size=4, shuffle=False)
    inputs, targets = problem.family.split_batch(next(iter(dataset.batches("train"))))
    assert len(inputs) == len(problem.family.inputs)
    model = problem.model()
    data_loss, l2 = problem.loss_terms(model, model(*inputs), targets)
    assert data_loss.ndim == 0 and torch.isfinite(data_loss)


def _smoothed_cross_entropy(logits, labels, smoothing):
    """-sum_k t_k log softmax(logits)_k with t = (1 - s) one_hot + s / K, written out."""
    targets = torch.nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype) * (1 - smoothing)
    targets = targets + smoothing / logits.shape[1]
    return -(targets * torch.log_softmax(logits, 1)).sum(1)


def test_inception_loss_adds_the_aux_head_only_in_the_train_phase():
    from deepobs.models.inception_v3 import InceptionV3, inception_v3_losses

    model = InceptionV3().to(torch.float64)
    images, labels = torch.randn(2, 3, 224, 224, dtype=torch.float64), torch.tensor([0, 1000])
    for training in (False, True):
        model.train(training)
        with torch.no_grad():
            outputs = model(images)
        if training:
            logits, aux_logits = outputs
            assert aux_logits.shape == (2, 1001)
            expected = _smoothed_cross_entropy(logits, labels, 0.1) + 0.4 * _smoothed_cross_entropy(aux_logits, labels, 0.1)
        else:
            expected = _smoothed_cross_entropy(outputs, labels, 0.1)
        torch.testing.assert_close(inception_v3_losses(outputs, labels), expected, rtol=1e-12, atol=0)


def test_inception_l2_on_every_conv_kernel_and_no_dense_layer():
    from deepobs.models.inception_v3 import InceptionV3

    model = InceptionV3()
    regularised = {id(p) for p in model.l2_parameters()}
    names = [name for name, p in model.named_parameters() if id(p) in regularised]
    # conv2d_BN calls in the original: stem 5, block5 3x7, block10 4, block6 4x10, blockD 6, block7 2x9, aux head 2.
    assert len(names) == 5 + 3 * 7 + 4 + 4 * 10 + 6 + 2 * 9 + 2 and all(name.endswith("conv.weight") for name in names)
    assert all(id(p) not in regularised for p in (model.head.dense.weight, model.aux_head.dense.weight))


def test_same_average_pool_excludes_the_padding():
    from deepobs.models.inception_v3 import AvgPoolSame

    pooled = AvgPoolSame(3)(torch.ones(1, 1, 5, 5))
    assert torch.equal(pooled, torch.ones(1, 1, 5, 5))  # count_include_pad=True gives 4/9 in the corners


def two_d_points(dtype: torch.dtype, count: int = 200) -> list[tuple[float, float]]:
    """The functions' starting points and random ones around them."""
    from deepobs.models.two_d import FUNCTIONS
    generator = torch.Generator().manual_seed(0)
    starts = [function.start for function in FUNCTIONS.values()]
    return starts + [tuple((torch.randn(2, generator=generator, dtype=dtype) * 5).tolist()) for _ in range(count)]


def two_d_model(name: str, dtype: torch.dtype, point: tuple[float, float]):
    model = PROBLEMS[name].model().to(dtype)
    with torch.no_grad():
        model.u.fill_(point[0]), model.v.fill_(point[1])
    return model


def plain_two_d_loss(model, x, y) -> torch.Tensor:
    """The expression the model evaluates, through autograd's own chain."""
    return (model.function.value(model.u, model.v) + model.u * x + model.v * y).mean()


@pytest.mark.parametrize("name", ["two_d_rosenbrock", "two_d_beale", "two_d_branin"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_two_d_training_loss_is_the_plain_expression_bit_for_bit(name, dtype):
    """The one-node loss (f on NumPy scalars) gives the bits of the expression in torch's scalar ops, with and
    without gradients, at the starting points and 200 others."""
    x, y = torch.randn(2, 128, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for point in two_d_points(dtype):
        model = two_d_model(name, dtype, point)
        with torch.no_grad():
            plain = plain_two_d_loss(model, x, y)
        trained = model(x, y).mean()
        assert trained.grad_fn is not None and torch.equal(trained.detach(), plain), point


def two_d_gradient_error(model, x, y) -> float:
    """Max relative difference between the model's gradient and autograd's through the plain expression."""
    ours = torch.autograd.grad(model(x, y).mean(), (model.u, model.v))
    theirs = torch.autograd.grad(plain_two_d_loss(model, x, y), (model.u, model.v))
    return max(float((a - b).abs() / b.abs().clamp_min(1e-300)) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("name", ["two_d_rosenbrock", "two_d_beale", "two_d_branin"])
def test_the_two_d_gradient_formulas_are_autograds_gradient(name):
    """In float64 the formulas' gradient is autograd's to 1e-12 everywhere tried; in float32 to round-off."""
    for dtype, bound in ((torch.float64, 1e-12), (torch.float32, 1e-4)):
        x, y = torch.randn(2, 128, dtype=dtype, generator=torch.Generator().manual_seed(1))
        worst = max(two_d_gradient_error(two_d_model(name, dtype, point), x, y) for point in two_d_points(dtype))
        assert worst < bound, (dtype, worst)


def test_a_planted_slip_in_a_two_d_gradient_formula_is_caught():
    from parity.mutants import _beale_gradient_two_terms
    x, y = torch.randn(2, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model = two_d_model("two_d_beale", torch.float64, (-4.5, 4.5))
    model.function = model.function._replace(gradient=_beale_gradient_two_terms)
    assert two_d_gradient_error(model, x, y) > 1e-3


@pytest.mark.parametrize("name", ["two_d_rosenbrock", "two_d_beale", "two_d_branin"])
def test_two_d_hessian_vector_products_are_autograds(name):
    """create_graph=True through the one-node loss: its gradient is itself differentiable, as autograd's is."""
    x, y = torch.randn(2, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model = two_d_model(name, torch.float64, (0.7, -1.3))
    vector = (torch.tensor(0.3, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64))

    def hessian_vector(loss):
        grads = torch.autograd.grad(loss, (model.u, model.v), create_graph=True)
        return torch.autograd.grad(sum(g * w for g, w in zip(grads, vector)), (model.u, model.v))

    for ours, theirs in zip(hessian_vector(model(x, y).mean()), hessian_vector(plain_two_d_loss(model, x, y))):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


@pytest.mark.parametrize("options", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True},
                                     {"momentum": 0.5, "dampening": 0.3, "weight_decay": 0.01},
                                     {"momentum": 0.9, "maximize": True}])
def test_the_direct_fused_sgd_step_is_torchs_sgd_step(options, monkeypatch):
    """deepobs.optim.SGD calls the fused kernel itself: the bits and the optimizer state of torch.optim.SGD's own
    fused steps, with every option, over a learning-rate change; its state dict loads into torch's optimizer.
    (Sizes that are no multiple of the vector width: the kernel's scalar tail, within 1 ulp of the for-loop.)"""
    from deepobs.optim import SGD
    torch.manual_seed(0)
    start = [torch.randn(30, 7), torch.randn(5)]
    steps = [[torch.randn_like(value) for value in start] for _ in range(3)]

    def trained(make):
        params = [value.clone().requires_grad_() for value in start]
        optimizer = make(params)
        for number, gradients in enumerate(steps):
            optimizer.param_groups[0]["lr"] = 0.1 / (number + 1)
            for param, grad in zip(params, gradients):
                param.grad = grad.clone()
            optimizer.step()
        return params, optimizer

    theirs, reference = trained(lambda params: torch.optim.SGD(params, lr=0.1, fused=True, **options))
    loop, _ = trained(lambda params: torch.optim.SGD(params, lr=0.1, foreach=False, **options))
    for a, b in zip(theirs, loop):
        torch.testing.assert_close(a, b, rtol=2 ** -23, atol=0)
    calls = fused_calls(monkeypatch)
    ours, optimizer = trained(lambda params: SGD(params, lr=0.1, **options))
    assert len(calls) == 3
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    for a, b in zip(ours, theirs):
        ours_buffer, their_buffer = optimizer.state[a].get("momentum_buffer"), reference.state[b].get("momentum_buffer")
        assert (ours_buffer is None) == (their_buffer is None)
        if "momentum" in options:
            assert torch.equal(optimizer.state[a]["momentum_buffer"], reference.state[b]["momentum_buffer"])
    torch.optim.SGD(theirs, lr=0.1, **options).load_state_dict(optimizer.state_dict())


def is_the_l2_regularizer(regularizer_of) -> bool:
    """Is regularizer_of(kernels, wd) wd/2 * sum ||W||^2 over kernels of any layout (channels_last, transposed,
    contiguous) against float64, with the gradient wd * W and the second derivative wd?"""
    torch.manual_seed(0)
    leaves = [torch.randn(64, 3, 5, 5).to(memory_format=torch.channels_last), torch.randn(10, 7), torch.randn(7, 10)]
    leaves = [leaf.requires_grad_() for leaf in leaves]
    kernels = leaves[:2] + [leaves[2].t()]
    regularizer = regularizer_of(kernels, 5e-4)
    exact = 0.5 * 5e-4 * sum((kernel.detach().double() ** 2).sum() for kernel in kernels)
    gradients = torch.autograd.grad(regularizer, leaves, create_graph=True)
    (curvature,) = torch.autograd.grad(gradients[0].sum(), leaves[0])
    return (abs(regularizer.item() - exact.item()) <= 1e-6 * exact.item()
            and all(torch.allclose(gradient, 5e-4 * leaf.detach(), rtol=1e-6, atol=0.0)
                    for gradient, leaf in zip(gradients, leaves))
            and torch.allclose(curvature, torch.full_like(curvature, 5e-4), rtol=1e-6, atol=0.0))


def test_the_l2_regularizer_is_half_the_coefficient_times_the_sum_of_squares_with_its_gradient():
    from deepobs import losses
    assert is_the_l2_regularizer(losses.l2_regularizer)


def test_a_planted_half_gradient_in_the_l2_regularizer_is_caught_and_autograds_spelling_passes(monkeypatch):
    """A backward of grad * W (the factor 2 of the square dropped: half TF's l2_loss gradient) fails the check;
    the term spelled in autograd's own ops (what the port computed before) passes it."""
    from deepobs import losses

    class HalfGradient(losses._SumOfSquares):
        @staticmethod
        def backward(ctx, grad):
            return tuple(p * grad for p in ctx.saved_tensors)

    def autograds(kernels, weight_decay):
        return 0.5 * weight_decay * torch.stack([kernel.pow(2).sum() for kernel in kernels]).sum()

    assert is_the_l2_regularizer(autograds)
    monkeypatch.setattr(losses, "_SumOfSquares", HalfGradient)
    assert not is_the_l2_regularizer(losses.l2_regularizer)


@pytest.mark.parametrize("name", ["mnist_mlp", "cifar10_3c3d", "two_d_beale"])
def test_a_training_objective_without_accuracy_is_the_same_objective(name, monkeypatch):
    """The runner's training step asks for no accuracy (the original's training op computes none) and, with no L2
    coefficient, computes no squares: the objective and its gradients keep their bits."""
    from deepobs import losses
    problem = PROBLEMS[name]
    torch.manual_seed(0)
    model = problem.model()
    batch = tuple(torch.randn(4, 2) for _ in range(2)) if name.startswith("two_d") else (
        example_inputs(problem, 4)[0].normal_(), torch.randint(0, problem.num_outputs, (4,)))

    def objective_and_gradients(with_accuracy: bool):
        model.zero_grad(set_to_none=True)
        objective, accuracy = problem.batch_loss_and_accuracy(model, batch, None, with_accuracy=with_accuracy)
        objective.backward()
        return objective.detach(), accuracy, [p.grad.clone() for p in model.parameters()]

    full, with_accuracy, full_grads = objective_and_gradients(True)
    squares = []
    real_dot = torch.dot
    monkeypatch.setattr(torch, "dot", lambda *a: squares.append(1) or real_dot(*a))
    lean, without_accuracy, lean_grads = objective_and_gradients(False)
    assert without_accuracy is None and (with_accuracy is None) == name.startswith("two_d")
    assert torch.equal(full, lean) and all(torch.equal(a, b) for a, b in zip(full_grads, lean_grads))
    assert (len(squares) > 0) == (problem.weight_decay != 0.0)  # 3c3d's L2 is computed, the others' is not
    assert losses.l2_regularizer(model.l2_parameters(), 0.0) == 0.0
