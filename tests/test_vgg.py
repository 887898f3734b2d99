"""VGG16/19: where the port puts L2 and biases (the original: conv kernels only; every conv has a bias)."""
import pytest
import torch
from torch import nn

from deepobs.problems import PROBLEMS

# Parameter counts against the original's: tests/test_port.py (ORIGINAL_PARAMETER_COUNTS).
VGG_PROBLEMS = sorted(name for name in PROBLEMS if "_vgg" in name)


def _meta_model(name):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return PROBLEMS[name].build_model()


@pytest.mark.parametrize("name", VGG_PROBLEMS)
def test_l2_on_conv_kernels_only(name):
    model = _meta_model(name)
    regularised = {id(p) for p in model.l2_parameters()}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == (13 if name.endswith("16") else 16)
    assert regularised == {id(conv.weight) for conv in convs}
    assert all(conv.bias is not None for conv in convs)
