"""VGG16/19: parameter counts of the original graphs, and the one-table structure of the port."""
import pytest
import torch
from torch import nn

from deepobs.problems import PROBLEMS

# Trainable parameters of the original's graphs (deepobs_spec.md, section 2; counted from the TF definitions).
ORIGINAL_PARAMETER_COUNTS = {
    "cifar10_vgg16": 134_301_514,
    "cifar10_vgg19": 139_611_210,
    "cifar100_vgg16": 134_670_244,
    "cifar100_vgg19": 139_979_940,
    "imagenet_vgg16": 138_361_641,
    "imagenet_vgg19": 143_671_337,
}


def _meta_model(name):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return PROBLEMS[name].build_model()


@pytest.mark.parametrize("name", sorted(ORIGINAL_PARAMETER_COUNTS))
def test_parameter_count_equals_the_original(name):
    assert sum(p.numel() for p in _meta_model(name).parameters()) == ORIGINAL_PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", sorted(ORIGINAL_PARAMETER_COUNTS))
def test_l2_on_conv_kernels_only(name):
    model = _meta_model(name)
    regularised = {id(p) for p in model.l2_parameters()}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == (13 if name.endswith("16") else 16)
    assert regularised == {id(conv.weight) for conv in convs}
    assert all(conv.bias is not None for conv in convs)
