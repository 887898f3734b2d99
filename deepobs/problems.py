"""The registry of DeepOBS test problems: the one list the CLI, tests and benchmarks enumerate."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from deepobs import losses
from deepobs.models.allcnnc import AllCNNC
from deepobs.models.cnn_2c2d import TwoC2D
from deepobs.models.cnn_3c3d import ThreeC3D
from deepobs.models.logreg import LogReg
from deepobs.models.mlp import MLP
from deepobs.models.vgg import VGG
from deepobs.models.wrn import WideResNet


class UnknownProblemError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Problem:
    name: str
    dataset: str
    build_model: Callable[[], nn.Module]
    num_outputs: int
    input_shape: tuple[int, ...]  # one example, PyTorch layout (C, H, W)
    weight_decay: float  # coefficient of the original's l2_regularizer; 0.0 where it has none
    batch_size: int | None  # the original's default (deepobs/config.py), None where it has none

    def model(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return self.build_model().to(dtype)

    def loss_terms(self, model: nn.Module, logits: torch.Tensor, labels: torch.Tensor):
        """(mean cross-entropy, L2 regularizer); the runner's objective is their sum."""
        data_loss = losses.softmax_cross_entropy(logits, labels).mean()
        return data_loss, losses.l2_regularizer(model.l2_parameters(), self.weight_decay)


MNIST_SHAPE = (1, 28, 28)
IMAGE32_SHAPE = (3, 32, 32)
IMAGENET_SHAPE = (3, 224, 224)

_PROBLEMS = (
    Problem("mnist_logreg", "mnist", lambda: LogReg(10), 10, MNIST_SHAPE, 0.0, 128),
    Problem("mnist_mlp", "mnist", lambda: MLP(10), 10, MNIST_SHAPE, 0.0, 128),
    Problem("mnist_2c2d", "mnist", lambda: TwoC2D(10), 10, MNIST_SHAPE, 0.0, 128),
    Problem("fmnist_logreg", "fmnist", lambda: LogReg(10), 10, MNIST_SHAPE, 0.0, None),
    # The original's fmnist_mlp builds the MNIST data set (a bug); the port loads Fashion-MNIST.
    Problem("fmnist_mlp", "fmnist", lambda: MLP(10), 10, MNIST_SHAPE, 0.0, 128),
    Problem("fmnist_2c2d", "fmnist", lambda: TwoC2D(10), 10, MNIST_SHAPE, 0.0, 128),
    Problem("cifar10_3c3d", "cifar10", lambda: ThreeC3D(10), 10, IMAGE32_SHAPE, 0.002, 128),
    Problem("cifar100_3c3d", "cifar100", lambda: ThreeC3D(100), 100, IMAGE32_SHAPE, 0.002, None),
    Problem("svhn_3c3d", "svhn", lambda: ThreeC3D(10), 10, IMAGE32_SHAPE, 0.002, None),
    Problem("cifar100_allcnnc", "cifar100", lambda: AllCNNC(100), 100, IMAGE32_SHAPE, 5e-4, 256),
    Problem("svhn_wrn164", "svhn", lambda: WideResNet(2, 4, 10), 10, IMAGE32_SHAPE, 5e-4, 128),
    Problem("cifar10_vgg16", "cifar10", lambda: VGG(16, 10), 10, IMAGE32_SHAPE, 5e-4, None),
    Problem("cifar10_vgg19", "cifar10", lambda: VGG(19, 10), 10, IMAGE32_SHAPE, 5e-4, None),
    Problem("cifar100_vgg16", "cifar100", lambda: VGG(16, 100), 100, IMAGE32_SHAPE, 5e-4, None),
    Problem("cifar100_vgg19", "cifar100", lambda: VGG(19, 100), 100, IMAGE32_SHAPE, 5e-4, None),
    # 1001 outputs: the original's ImageNet labels keep class 0 for "background".
    Problem("imagenet_vgg16", "imagenet", lambda: VGG(16, 1001), 1001, IMAGENET_SHAPE, 5e-4, None),
    Problem("imagenet_vgg19", "imagenet", lambda: VGG(19, 1001), 1001, IMAGENET_SHAPE, 5e-4, None),
)

PROBLEMS: dict[str, Problem] = {problem.name: problem for problem in _PROBLEMS}


def get_problem(name: str) -> Problem:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise UnknownProblemError(
            f"unknown problem {name!r}; valid names: {', '.join(PROBLEMS)}"
        ) from None
