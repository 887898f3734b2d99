"""The registry of DeepOBS test problems: the one list the CLI, tests and benchmarks enumerate.

Each problem belongs to a family that states its contract, as the original's TestProblem does with
its `losses` and `accuracy` tensors: what one example's inputs look like (`Input`, PyTorch layout),
what the targets are, the names of the model's outputs (the model returns them in that order, a
single tensor when there is one), the per-example losses and the accuracy (None where the original
defines none). The runner's objective is mean(losses) + regularizer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from deepobs import losses
from deepobs.models.allcnnc import AllCNNC
from deepobs.models.char_rnn import SEQ_LENGTH, VOCAB_SIZE, CharRNN, sequence_losses
from deepobs.models.cnn_2c2d import TwoC2D
from deepobs.models.cnn_3c3d import ThreeC3D
from deepobs.models.inception_v3 import InceptionV3, inception_v3_losses, main_logits_accuracy
from deepobs.models.logreg import LogReg
from deepobs.models.mlp import MLP
from deepobs.models.quadratic import DIM, Quadratic, deep_hessian
from deepobs.models.two_d import TwoD
from deepobs.models.vae import VAE, vae_losses
from deepobs.models.vgg import VGG
from deepobs.models.wrn import WideResNet


class UnknownProblemError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Input:
    """One model input, per example, PyTorch layout."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "image" (NCHW float), "pixels" (NCHW float in [0, 1]), "vector" (float), "ids" (int64 < vocab)
    vocab: int = 0


@dataclass(frozen=True)
class Family:
    name: str
    inputs: tuple[Input, ...]
    targets: str  # "labels" (int64 class per example), "ids" (int64 per input id), "inputs" (input 0), "none"
    outputs: tuple[str, ...]
    losses: Callable  # (outputs, targets) -> per-example losses [B]
    accuracy: Callable | None  # (outputs, targets) -> mean accuracy; None where the original has none
    stateful: bool = False  # the model carries state between batches: call model.reset_state() per phase

    def split_batch(self, batch: tuple) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
        """A data set batch (`deepobs.datasets`: (x, y), (x, None) or two_d's (x, y)) as (model inputs, targets)."""
        first, second = batch
        if self.targets == "inputs":
            return (first,), first
        if self.targets == "none":
            return (first,) if second is None else (first, second), None
        return (first,), second


def classification(input_shape: tuple[int, ...]) -> Family:
    return Family("classification", (Input("images", input_shape, "image"),), "labels", ("logits",),
                  losses.softmax_cross_entropy, losses.accuracy)


VAE_FAMILY = Family("vae", (Input("images", (1, 28, 28), "pixels"),), "inputs",
                    ("reconstruction", "mean", "std_dev"), vae_losses, None)
CHAR_RNN_FAMILY = Family("char_rnn", (Input("chars", (SEQ_LENGTH,), "ids", VOCAB_SIZE),), "ids", ("logits",),
                         sequence_losses, losses.accuracy, stateful=True)
QUADRATIC_FAMILY = Family("quadratic", (Input("x", (DIM,), "vector"),), "none", ("losses",),
                          lambda outputs, targets: outputs, None)
# Inception v3: classification with an aux head; the model returns both heads' logits in train mode.
INCEPTION_V3_FAMILY = Family("classification_aux_head", (Input("images", (3, 224, 224), "image"),), "labels",
                             ("logits", "aux_logits"), inception_v3_losses, main_logits_accuracy)
TWO_D_FAMILY = Family("two_d", (Input("x", (), "vector"), Input("y", (), "vector")), "none", ("losses",),
                      lambda outputs, targets: outputs, None)


@dataclass(frozen=True)
class Problem:
    name: str
    dataset: str
    build_model: Callable[[], nn.Module]
    family: Family
    num_outputs: int | None  # classes (classification), vocabulary (char_rnn), None otherwise
    weight_decay: float  # coefficient of the original's l2_regularizer; 0.0 where it has none
    batch_size: int | None  # the original's default (deepobs/config.py), None where it has none
    num_epochs: int | None = None  # likewise: DEFAULT_TEST_PROBLEMS_SETTINGS, None where it has none

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's shape, one example (the image of an image problem)."""
        return self.family.inputs[0].shape

    def model(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return self.build_model().to(dtype)

    def loss_terms(self, model: nn.Module, outputs, targets):
        """(mean over the batch of the per-example losses, L2 regularizer); the runner's objective is their sum.

        `outputs` is what the model returned, `targets` the family's targets (labels, next characters,
        the input images for the VAE, None for the functions).
        """
        data_loss = self.family.losses(outputs, targets).mean()
        return data_loss, losses.l2_regularizer(model.l2_parameters(), self.weight_decay)

    def accuracy(self, outputs, targets) -> torch.Tensor | None:
        return None if self.family.accuracy is None else self.family.accuracy(outputs, targets)

    def batch_loss_and_accuracy(self, model: nn.Module, batch, weight_decay: float | None = None,
                                with_accuracy: bool = True):
        """The runner's contract for one data set batch: (objective, accuracy or None), the objective
        being mean loss + regularizer as the original's runner minimises and logs it. `weight_decay`
        replaces the problem's L2 coefficient (the runner's --wd). A training step asks for no accuracy (None),
        as the original's training op computes none."""
        inputs, targets = self.family.split_batch(batch)
        outputs = model(*inputs)
        data_loss = self.family.losses(outputs, targets).mean()
        coefficient = self.weight_decay if weight_decay is None else weight_decay
        regularizer = losses.l2_regularizer(model.l2_parameters(), coefficient)
        objective = data_loss if isinstance(regularizer, float) and regularizer == 0.0 else data_loss + regularizer
        return objective, self.accuracy(outputs, targets) if with_accuracy else None


MNIST_SHAPE = (1, 28, 28)
IMAGE32_SHAPE = (3, 32, 32)
MNIST = classification(MNIST_SHAPE)
IMAGE32 = classification(IMAGE32_SHAPE)
IMAGENET = classification((3, 224, 224))

_PROBLEMS = (
    Problem("mnist_logreg", "mnist", lambda: LogReg(10), MNIST, 10, 0.0, 128, 50),
    Problem("mnist_mlp", "mnist", lambda: MLP(10), MNIST, 10, 0.0, 128, 100),
    Problem("mnist_2c2d", "mnist", lambda: TwoC2D(10), MNIST, 10, 0.0, 128, 100),
    Problem("mnist_vae", "mnist", VAE, VAE_FAMILY, None, 0.0, 64, 50),
    Problem("fmnist_logreg", "fmnist", lambda: LogReg(10), MNIST, 10, 0.0, None),
    # The original's fmnist_mlp builds the MNIST data set (a bug); the port loads Fashion-MNIST.
    Problem("fmnist_mlp", "fmnist", lambda: MLP(10), MNIST, 10, 0.0, 128, 100),
    Problem("fmnist_2c2d", "fmnist", lambda: TwoC2D(10), MNIST, 10, 0.0, 128, 100),
    Problem("fmnist_vae", "fmnist", VAE, VAE_FAMILY, None, 0.0, 64, 100),
    Problem("cifar10_3c3d", "cifar10", lambda: ThreeC3D(10), IMAGE32, 10, 0.002, 128, 100),
    Problem("cifar100_3c3d", "cifar100", lambda: ThreeC3D(100), IMAGE32, 100, 0.002, None),
    Problem("svhn_3c3d", "svhn", lambda: ThreeC3D(10), IMAGE32, 10, 0.002, None),
    Problem("cifar100_allcnnc", "cifar100", lambda: AllCNNC(100), IMAGE32, 100, 5e-4, 256, 350),
    Problem("svhn_wrn164", "svhn", lambda: WideResNet(2, 4, 10), IMAGE32, 10, 5e-4, 128, 160),
    Problem("tolstoi_char_rnn", "tolstoi", CharRNN, CHAR_RNN_FAMILY, VOCAB_SIZE, 0.0, 50, 200),
    # Instance 0 of the original's module-level RandomState(42) stream (see deepobs.models.quadratic).
    Problem("quadratic_deep", "quadratic", lambda: Quadratic(deep_hessian(0)), QUADRATIC_FAMILY, None, 0.0, 128, 100),
    Problem("two_d_rosenbrock", "two_d", lambda: TwoD("rosenbrock"), TWO_D_FAMILY, None, 0.0, None),
    Problem("two_d_beale", "two_d", lambda: TwoD("beale"), TWO_D_FAMILY, None, 0.0, None),
    Problem("two_d_branin", "two_d", lambda: TwoD("branin"), TWO_D_FAMILY, None, 0.0, None),
    Problem("cifar100_wrn404", "cifar100", lambda: WideResNet(6, 4, 100), IMAGE32, 100, 5e-4, None),
    Problem("imagenet_inception_v3", "imagenet", lambda: InceptionV3(1001), INCEPTION_V3_FAMILY, 1001, 5e-4, None),
    Problem("cifar10_vgg16", "cifar10", lambda: VGG(16, 10), IMAGE32, 10, 5e-4, None),
    Problem("cifar10_vgg19", "cifar10", lambda: VGG(19, 10), IMAGE32, 10, 5e-4, None),
    Problem("cifar100_vgg16", "cifar100", lambda: VGG(16, 100), IMAGE32, 100, 5e-4, None),
    Problem("cifar100_vgg19", "cifar100", lambda: VGG(19, 100), IMAGE32, 100, 5e-4, None),
    # 1001 outputs: the original's ImageNet labels keep class 0 for "background".
    Problem("imagenet_vgg16", "imagenet", lambda: VGG(16, 1001), IMAGENET, 1001, 5e-4, None),
    Problem("imagenet_vgg19", "imagenet", lambda: VGG(19, 1001), IMAGENET, 1001, 5e-4, None),
)

PROBLEMS: dict[str, Problem] = {problem.name: problem for problem in _PROBLEMS}


def get_problem(name: str) -> Problem:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise UnknownProblemError(
            f"unknown problem {name!r}; valid names: {', '.join(PROBLEMS)}"
        ) from None
