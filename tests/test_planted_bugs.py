"""Real porting bugs, planted in a copy of the port: each must fail its check at the right layer."""
import dataclasses

import pytest
import torch
from torch import nn

from deepobs import losses
from deepobs.problems import PROBLEMS
from parity.audit import audit_problem
from parity.maps import MAPS, ParamRow, ProblemMap
from parity.port import deepobs_port

pytestmark = pytest.mark.parity


def port_with(model_edit=None, **changes):
    port = deepobs_port()
    if model_edit:
        def build_model(problem, base=port.build_model):
            model = base(problem)
            model_edit(model)
            return model
        changes["build_model"] = build_model
    return dataclasses.replace(port, **changes)


def failing(port, problem, check, dtype="float64"):
    results = {r.check: r for r in audit_problem(port, problem, dtype, checks=[check.split(" (")[0]])}
    result = results[check]
    assert not result.passed, f"{check} passed with the planted bug"
    assert not result.error, result.error
    return result.first_divergence


def test_symmetric_padding_on_stride2_same_conv():
    def edit(model):
        model.features[3][0] = nn.Conv2d(96, 96, 3, 2, padding=1)  # PyTorch 1/1 instead of TF's 0/1
    assert failing(port_with(edit), "cifar100_allcnnc", "forward").item == "conv2d_2"


def test_symmetric_padding_on_stride2_same_max_pool():
    def edit(model):
        model.pool1 = nn.MaxPool2d(3, 2, padding=1)
    first = failing(port_with(edit), "cifar10_3c3d", "forward")
    assert first.item == "max_pooling2d" and first.max_abs > 1e-3


def test_nchw_flatten_order():
    # The port flattens NCHW but its weights were ported with a plain transpose.
    rows = tuple(dataclasses.replace(r, transform="dense", args=()) if r.transform == "dense_after_flatten" else r
                 for r in MAPS["mnist_2c2d"].params)
    maps = dict(MAPS, mnist_2c2d=ProblemMap(rows, MAPS["mnist_2c2d"].taps))
    assert failing(port_with(weight_maps=maps), "mnist_2c2d", "forward").item == "dense"


def _set_bn(model, **attributes):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for name, value in attributes.items():
                setattr(module, name, value)


def test_bn_momentum_not_inverted():
    first = failing(port_with(lambda m: _set_bn(m, momentum=0.9)), "svhn_wrn164", "train_mode")
    assert first.item == "unit_1_0/batch_normalization/moving_mean"


def test_bn_epsilon_1e3_instead_of_1e5():
    first = failing(port_with(lambda m: _set_bn(m, eps=1e-3)), "svhn_wrn164", "forward")
    assert first.item == "unit_1_0/batch_normalization"


def test_bn_epsilon_caught_in_float32_too():
    first = failing(port_with(lambda m: _set_bn(m, eps=1e-3)), "svhn_wrn164", "forward", dtype="float32")
    assert first.item == "unit_1_0/batch_normalization"


def test_dropout2d_instead_of_elementwise():
    def edit(model):
        model.features[4] = nn.Dropout2d(0.5)
    assert failing(port_with(edit), "cifar100_allcnnc", "train_mode").item == "dropout_1"


def test_l2_applied_to_biases():
    def loss_terms(problem, model, logits, labels):
        data_loss = losses.softmax_cross_entropy(logits, labels).mean()
        return data_loss, losses.l2_regularizer(list(model.parameters()), PROBLEMS[problem].weight_decay)
    port = port_with(loss_terms=loss_terms)
    assert failing(port, "cifar10_3c3d", "loss").item == "regularizer"
    assert failing(port, "cifar10_3c3d", "gradients").item == "conv2d/bias"


def test_stock_torch_adam_instead_of_tf1_adam():
    optimizers = dict(deepobs_port().optimizers, adam=lambda params, lr: torch.optim.Adam(params, lr=lr))
    port = port_with(optimizers=optimizers)
    first = failing(port, "cifar10_3c3d", "step/adam (reference gradients)")
    assert first.item == "step1 conv2d/kernel (update)"
    assert failing(port, "cifar10_3c3d", "step/adam").item.startswith("step1 ")


def test_all_cnn_c_final_relu_missing():
    def edit(model):
        model.features[11][1] = nn.Identity()  # the last 1x1 conv without its ReLU
    assert failing(port_with(edit), "cifar100_allcnnc", "forward").item == "conv2d_8"


def test_weight_map_shape_mismatch_names_both_sides():
    port = port_with(build_model=lambda problem: PROBLEMS["cifar100_3c3d"].build_model())  # 100 outputs, not 10
    [result] = audit_problem(port, "cifar10_3c3d", "float64")
    assert result.check == "setup" and not result.passed
    assert "dense_2/kernel (256, 10)" in result.error and "fc3.weight is (100, 256)" in result.error


def test_nan_in_the_port_is_a_failed_check_not_a_crash():
    def edit(model):
        model.fc2.register_forward_hook(lambda module, args, output: output * float("nan"))
    first = failing(port_with(edit), "mnist_2c2d", "forward")
    assert first.item == "dense_1" and "non-finite" in first.note


# --- VGG (224x224: each audit builds a 134M-parameter pair, so these are slow) ------------------

class InterpolateResize(nn.Module):
    """The usual PyTorch port of tf.image.resize_images: F.interpolate, which samples other points."""

    def __init__(self, align_corners: bool):
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x):
        return torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=self.align_corners)


@pytest.mark.slow
@pytest.mark.parametrize("align_corners", [False, True], ids=["half_pixel", "align_corners"])
def test_interpolate_resize_instead_of_tf1_resize_images(align_corners):
    def edit(model):
        model.resize = InterpolateResize(align_corners)
    first = failing(port_with(edit), "cifar10_vgg16", "forward")
    assert first.item == "resize_images" and first.max_rel > 1e-3


@pytest.mark.slow
def test_l2_on_vgg_dense_layers():
    def loss_terms(problem, model, logits, labels):
        data_loss = losses.softmax_cross_entropy(logits, labels).mean()
        kernels = [p for name, p in model.named_parameters() if name.endswith("weight")]  # convs and denses
        return data_loss, losses.l2_regularizer(kernels, PROBLEMS[problem].weight_decay)
    results = {r.check: r for r in audit_problem(port_with(loss_terms=loss_terms), "cifar10_vgg16", "float64",
                                                 checks=["loss", "gradients"])}  # one model pair for both
    assert not results["loss"].passed and results["loss"].first_divergence.item == "regularizer"
    assert not results["gradients"].passed and results["gradients"].first_divergence.item == "dense/kernel"


@pytest.mark.slow
def test_vgg_conv_without_bias():
    # The porter drops one conv's bias and, consistently, its row from the weight map.
    from deepobs.layers import Conv2dSame

    def edit(model):
        model.features[6][0] = Conv2dSame(128, 256, 3, bias=False)  # conv3_1, the original's conv2d_4
    rows = tuple(r for r in MAPS["cifar10_vgg16"].params if r.port != "features.6.0.bias")
    maps = dict(MAPS, cifar10_vgg16=ProblemMap(rows, MAPS["cifar10_vgg16"].taps))
    [result] = audit_problem(port_with(edit, weight_maps=maps), "cifar10_vgg16", "float64", checks=["forward"])
    assert result.check == "setup" and not result.passed
    assert "reference variables not in the weight map: conv2d_4/bias" in result.error
