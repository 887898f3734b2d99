"""The reference's own registry of test problems (independent of `deepobs/`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tf_reference._tf import tf
from tf_reference.layers import Graph, NoiseSource
from tf_reference.models.allcnnc import allcnnc
from tf_reference.models.cnn_2c2d import cnn_2c2d
from tf_reference.models.cnn_3c3d import cnn_3c3d
from tf_reference.models.logreg import logreg
from tf_reference.models.mlp import mlp
from tf_reference.models.vgg import vgg
from tf_reference.models.wrn import wrn


@dataclass(frozen=True)
class ReferenceSpec:
    name: str
    model: Callable[[], Callable]  # -> forward(graph, x, training)
    num_outputs: int
    input_shape: tuple[int, ...]  # one example, NHWC (H, W, C)
    weight_decay: float | None


MNIST = (28, 28, 1)
IMAGE32 = (32, 32, 3)
IMAGENET = (224, 224, 3)

_SPECS = (
    ReferenceSpec("mnist_logreg", lambda: logreg(10), 10, MNIST, None),
    ReferenceSpec("mnist_mlp", lambda: mlp(10), 10, MNIST, None),
    ReferenceSpec("mnist_2c2d", lambda: cnn_2c2d(10), 10, MNIST, None),
    ReferenceSpec("fmnist_logreg", lambda: logreg(10), 10, MNIST, None),
    ReferenceSpec("fmnist_mlp", lambda: mlp(10), 10, MNIST, None),
    ReferenceSpec("fmnist_2c2d", lambda: cnn_2c2d(10), 10, MNIST, None),
    ReferenceSpec("cifar10_3c3d", lambda: cnn_3c3d(10, 0.002), 10, IMAGE32, 0.002),
    ReferenceSpec("cifar100_3c3d", lambda: cnn_3c3d(100, 0.002), 100, IMAGE32, 0.002),
    ReferenceSpec("svhn_3c3d", lambda: cnn_3c3d(10, 0.002), 10, IMAGE32, 0.002),
    ReferenceSpec("cifar100_allcnnc", lambda: allcnnc(100, 5e-4), 100, IMAGE32, 5e-4),
    ReferenceSpec("svhn_wrn164", lambda: wrn(2, 4, 10, 5e-4), 10, IMAGE32, 5e-4),
    ReferenceSpec("cifar10_vgg16", lambda: vgg(16, 10, 5e-4), 10, IMAGE32, 5e-4),
    ReferenceSpec("cifar10_vgg19", lambda: vgg(19, 10, 5e-4), 10, IMAGE32, 5e-4),
    ReferenceSpec("cifar100_vgg16", lambda: vgg(16, 100, 5e-4), 100, IMAGE32, 5e-4),
    ReferenceSpec("cifar100_vgg19", lambda: vgg(19, 100, 5e-4), 100, IMAGE32, 5e-4),
    # 1001 outputs: the original's ImageNet labels keep class 0 for "background".
    ReferenceSpec("imagenet_vgg16", lambda: vgg(16, 1001, 5e-4), 1001, IMAGENET, 5e-4),
    ReferenceSpec("imagenet_vgg19", lambda: vgg(19, 1001, 5e-4), 1001, IMAGENET, 5e-4),
)

REFERENCE_PROBLEMS: dict[str, ReferenceSpec] = {spec.name: spec for spec in _SPECS}


class ReferenceProblem:
    """One test problem with its variables created: forward, losses, regularizer."""

    def __init__(self, name: str, dtype=tf.float32, seed: int = 0):
        if name not in REFERENCE_PROBLEMS:
            raise KeyError(f"the reference has no problem {name!r}; it has: {', '.join(REFERENCE_PROBLEMS)}")
        self.spec = REFERENCE_PROBLEMS[name]
        self.graph = Graph(dtype, seed)
        self._forward = self.spec.model()
        # Build the variables (creation order = forward order) with one inference pass.
        self.forward(np.zeros((1, *self.spec.input_shape)), training=False)

    @property
    def dtype(self):
        return self.graph.dtype

    def forward(self, images_nhwc, training: bool, dropout_noise: NoiseSource | None = None):
        """Returns (logits, taps): taps maps each layer name to its output, NHWC, then 'logits'."""
        logits = self.graph.run(self._forward, images_nhwc, training, dropout_noise)
        taps = dict(self.graph.taps)
        taps["logits"] = logits
        return logits, taps

    def losses(self, logits, labels) -> tf.Tensor:
        """Per-example softmax_cross_entropy_with_logits_v2 on one-hot labels."""
        one_hot = tf.one_hot(labels, self.spec.num_outputs, dtype=self.dtype)
        return tf.nn.softmax_cross_entropy_with_logits(labels=one_hot, logits=logits)

    def loss_terms(self, logits, labels) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean over the batch of the losses, the regularizer); the runner minimises their sum."""
        return tf.reduce_mean(self.losses(logits, labels)), self.graph.regularizer()

    def accuracy(self, logits, labels) -> tf.Tensor:
        correct = tf.equal(tf.argmax(logits, 1), tf.cast(labels, tf.int64))
        return tf.reduce_mean(tf.cast(correct, self.dtype))
