"""The PyTorch port on its own: sizes, TF 'SAME' padding, the TF1 Adam formula."""
import math

import pytest
import torch

from deepobs.layers import Conv2dSame, MaxPool2dSame, tf_same_padding
from deepobs.optim import TF1Adam
from deepobs.problems import PROBLEMS, get_problem, UnknownProblemError

# Trainable parameter counts of the original graphs (shared/deepobs_spec.md, section 2).
ORIGINAL_PARAMETER_COUNTS = {
    "mnist_logreg": 7850, "mnist_mlp": 1336610, "mnist_2c2d": 3274634, "fmnist_logreg": 7850,
    "fmnist_mlp": 1336610, "fmnist_2c2d": 3274634, "cifar10_3c3d": 895210, "cifar100_3c3d": 918340,
    "svhn_3c3d": 895210, "cifar100_allcnnc": 1387108, "svhn_wrn164": 2748890,
    "cifar10_vgg16": 134301514, "cifar10_vgg19": 139611210, "cifar100_vgg16": 134670244,
    "cifar100_vgg19": 139979940, "imagenet_vgg16": 138361641, "imagenet_vgg19": 143671337,
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_parameter_count_and_output_shape(name):
    problem = PROBLEMS[name]
    model = problem.model()
    assert sum(p.numel() for p in model.parameters()) == ORIGINAL_PARAMETER_COUNTS[name]
    assert model(torch.zeros(2, *problem.input_shape)).shape == (2, problem.num_outputs)


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
