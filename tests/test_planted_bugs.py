"""Planted bugs on the deep problems (marker `deep`): each must fail its check at the right layer.

The other planted bugs are rows of the self-test's catalogue, `parity/mutants.py` (`python -m parity selftest`;
its fast subset runs in tests/test_selftest.py).
"""
import dataclasses

import pytest
import torch
from torch import nn

from deepobs import losses
from deepobs.problems import PROBLEMS
from parity.audit import audit_problem
from parity.maps import MAPS, ProblemMap
from parity.mutants import _inception_loss, edit_model
from parity.port import deepobs_port

pytestmark = pytest.mark.parity


def port_with(model_edit=None, **changes):
    """This repository's port with `changes` (Port fields), its models edited by `model_edit` after building."""
    port = dataclasses.replace(deepobs_port(), **changes)
    return edit_model(model_edit)(port) if model_edit else port


def failing(port, problem, check, dtype="float64"):
    results = {r.check: r for r in audit_problem(port, problem, dtype, checks=[check.split(" (")[0]])}
    result = results[check]
    assert not result.passed, f"{check} passed with the planted bug"
    assert not result.error, result.error
    return result.first_divergence


def _set_bn(model, **attributes):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for name, value in attributes.items():
                setattr(module, name, value)


# --- Inception v3 (each audit of it takes a minute or two on 2 cores) --------------------------

INCEPTION = "imagenet_inception_v3"


@pytest.mark.deep
def test_inception_bn_momentum_0_9997_passed_to_torch_as_is():
    first = failing(port_with(lambda m: _set_bn(m, momentum=0.9997)), INCEPTION, "train_mode")
    assert first.item == "stem/batch_normalization/moving_mean"


@pytest.mark.deep
def test_inception_bn_epsilon_1e5_instead_of_the_tf_layers_default():
    first = failing(port_with(lambda m: _set_bn(m, eps=1e-5)), INCEPTION, "forward")
    assert first.item == "stem/batch_normalization"


@pytest.mark.deep
def test_inception_average_pool_counting_the_padding():
    def edit(model):
        for block in (model.block5a, model.block5b_0, model.block5b_1, model.block6a, model.block6b_0,
                      model.block6b_1, model.block6c):
            block.branch1[0] = nn.AvgPool2d(3, 1, 1)  # count_include_pad=True, torch's default
        for block in (model.block7_0, model.block7_1):
            block.branch3[0] = nn.AvgPool2d(3, 1, 1)
    assert failing(port_with(edit), INCEPTION, "forward").item == "inception_block5a/branch1/average_pooling2d"


@pytest.mark.deep
def test_inception_output_dropout_active():
    # The original's output dropout never runs; a port with slim's keep 0.8 (p = 0.2) drops in train mode.
    def edit(model):
        model.head.dropout = nn.Dropout(0.2)
    port = port_with(edit)
    assert next(r for r in audit_problem(port, INCEPTION, "float64", checks=["forward"])).passed  # inert in eval
    [result] = audit_problem(port, INCEPTION, "float64", checks=["train_mode"])
    assert not result.passed
    first = next(comparison for comparison in result.comparisons if not comparison.passed)
    assert first.item == "output/dropout"  # the extra draw is named where it is made
    assert "draws more uniform noise than the reference: an extra draw of shape (2, 2048, 1, 1)" in first.note


@pytest.mark.deep
def test_inception_aux_weight_0_3():
    port = port_with(loss_terms=_inception_loss(aux_weight=0.3))
    assert failing(port, INCEPTION, "train_mode").item == "train data_loss"  # the inference loss has no aux term


@pytest.mark.deep
def test_inception_label_smoothing_missing():
    port = port_with(loss_terms=_inception_loss(label_smoothing=0.0))
    assert failing(port, INCEPTION, "loss").item == "data_loss"
    assert failing(port, INCEPTION, "train_mode").item == "train data_loss"


# --- VGG (224x224: each audit builds a 134M-parameter pair, so these are slow) ------------------

class InterpolateResize(nn.Module):
    """The usual PyTorch port of tf.image.resize_images: F.interpolate, which samples other points."""

    def __init__(self, align_corners: bool):
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x):
        return torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=self.align_corners)


@pytest.mark.deep
@pytest.mark.parametrize("align_corners", [False, True], ids=["half_pixel", "align_corners"])
def test_interpolate_resize_instead_of_tf1_resize_images(align_corners):
    def edit(model):
        model.resize = InterpolateResize(align_corners)
    first = failing(port_with(edit), "cifar10_vgg16", "forward")
    assert first.item == "resize_images" and first.max_rel > 1e-3


@pytest.mark.deep
def test_l2_on_vgg_dense_layers():
    def loss_terms(problem, model, logits, labels):
        data_loss = losses.softmax_cross_entropy(logits, labels).mean()
        kernels = [p for name, p in model.named_parameters() if name.endswith("weight")]  # convs and denses
        return data_loss, losses.l2_regularizer(kernels, PROBLEMS[problem].weight_decay)
    results = {r.check: r for r in audit_problem(port_with(loss_terms=loss_terms), "cifar10_vgg16", "float64",
                                                 checks=["loss", "gradients"])}  # one model pair for both
    assert not results["loss"].passed and results["loss"].first_divergence.item == "regularizer"
    assert not results["gradients"].passed and results["gradients"].first_divergence.item == "dense_2/kernel"


@pytest.mark.deep
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
