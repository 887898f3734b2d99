"""The reference's own registry of test problems (independent of `deepobs/`).

Each problem declares its contract the way the original's TestProblem does: what one example's
inputs are (`InputSpec`, reference layout), what the targets are, the names of the model's
outputs, its per-example `losses` and its `accuracy` (None where the original defines none).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tf_reference._tf import tf
from tf_reference.layers import Graph, NoiseSource
from tf_reference.models.allcnnc import allcnnc
from tf_reference.models.char_rnn import SEQ_LENGTH, VOCAB_SIZE, char_rnn, sequence_accuracy, sequence_losses
from tf_reference.models.cnn_2c2d import cnn_2c2d
from tf_reference.models.cnn_3c3d import cnn_3c3d
from tf_reference.models.inception_v3 import inception_v3, inception_v3_losses, main_logits_accuracy
from tf_reference.models.logreg import logreg
from tf_reference.models.mlp import mlp
from tf_reference.models.quadratic import DIM, deep_hessian, quadratic
from tf_reference.models.two_d import two_d
from tf_reference.models.vae import vae, vae_losses
from tf_reference.models.vgg import vgg
from tf_reference.models.wrn import wrn


@dataclass(frozen=True)
class InputSpec:
    """One model input, per example, in the reference's layout."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "image" (NHWC float), "pixels" (NHWC float in [0, 1]), "vector" (float), "ids" (int < vocab)
    vocab: int = 0


@dataclass(frozen=True)
class Family:
    """How a family of problems feeds its model and scores its outputs (the original's TestProblem contract)."""

    name: str
    inputs: tuple[InputSpec, ...]
    targets: str  # "labels" (int < num_outputs, per example), "ids" (int < vocab, like input 0), "inputs"
    #               (input 0 itself: the VAE reconstructs it), "none" (the loss reads the inputs only)
    outputs: tuple[str, ...]  # names of the model's outputs, in the order it returns them
    losses: Callable  # (outputs, targets) -> per-example losses [B]
    accuracy: Callable | None  # (outputs, targets) -> mean accuracy, or None
    stateful: bool = False  # carries state from one batch to the next (reset at each phase switch)


def _softmax_cross_entropy(num_outputs):
    def losses(logits, labels):
        """Per-example softmax_cross_entropy_with_logits_v2 on one-hot labels."""
        one_hot = tf.one_hot(labels, num_outputs, dtype=logits.dtype)
        return tf.nn.softmax_cross_entropy_with_logits(labels=one_hot, logits=logits)
    return losses


def _argmax_accuracy(logits, labels):
    correct = tf.equal(tf.argmax(logits, 1), tf.cast(labels, tf.int64))
    return tf.reduce_mean(tf.cast(correct, logits.dtype))


def classification(input_shape, num_outputs) -> Family:
    return Family("classification", (InputSpec("images", input_shape, "image"),), "labels", ("logits",),
                  _softmax_cross_entropy(num_outputs), _argmax_accuracy)


VAE = Family("vae", (InputSpec("images", (28, 28, 1), "pixels"),), "inputs",
             ("reconstruction", "mean", "std_dev"), vae_losses, None)
CHAR_RNN = Family("char_rnn", (InputSpec("chars", (SEQ_LENGTH,), "ids", VOCAB_SIZE),), "ids", ("logits",),
                  sequence_losses, sequence_accuracy, stateful=True)
QUADRATIC = Family("quadratic", (InputSpec("x", (DIM,), "vector"),), "none", ("losses",),
                   lambda losses, _: losses, None)
INCEPTION_V3 = Family("classification_aux_head", (InputSpec("images", (224, 224, 3), "image"),), "labels",
                      ("logits", "aux_logits"), inception_v3_losses, main_logits_accuracy)
TWO_D = Family("two_d", (InputSpec("x", (), "vector"), InputSpec("y", (), "vector")), "none", ("losses",),
               lambda losses, _: losses, None)


@dataclass(frozen=True)
class ReferenceSpec:
    name: str
    model: Callable[[], Callable]  # -> forward(graph, inputs, training)
    family: Family
    num_outputs: int | None  # classes (classification), vocabulary (char_rnn), None otherwise
    weight_decay: float | None

    @property
    def inputs(self) -> tuple[InputSpec, ...]:
        return self.family.inputs


MNIST = (28, 28, 1)
IMAGE32 = (32, 32, 3)
IMAGENET = (224, 224, 3)


def _classifier(name, model, num_outputs, input_shape, weight_decay):
    return ReferenceSpec(name, model, classification(input_shape, num_outputs), num_outputs, weight_decay)


_SPECS = (
    _classifier("mnist_logreg", lambda: logreg(10), 10, MNIST, None),
    _classifier("mnist_mlp", lambda: mlp(10), 10, MNIST, None),
    _classifier("mnist_2c2d", lambda: cnn_2c2d(10), 10, MNIST, None),
    ReferenceSpec("mnist_vae", vae, VAE, None, None),
    _classifier("fmnist_logreg", lambda: logreg(10), 10, MNIST, None),
    _classifier("fmnist_mlp", lambda: mlp(10), 10, MNIST, None),
    _classifier("fmnist_2c2d", lambda: cnn_2c2d(10), 10, MNIST, None),
    ReferenceSpec("fmnist_vae", vae, VAE, None, None),
    _classifier("cifar10_3c3d", lambda: cnn_3c3d(10, 0.002), 10, IMAGE32, 0.002),
    _classifier("cifar100_3c3d", lambda: cnn_3c3d(100, 0.002), 100, IMAGE32, 0.002),
    _classifier("svhn_3c3d", lambda: cnn_3c3d(10, 0.002), 10, IMAGE32, 0.002),
    _classifier("cifar100_allcnnc", lambda: allcnnc(100, 5e-4), 100, IMAGE32, 5e-4),
    _classifier("svhn_wrn164", lambda: wrn(2, 4, 10, 5e-4), 10, IMAGE32, 5e-4),
    ReferenceSpec("tolstoi_char_rnn", char_rnn, CHAR_RNN, VOCAB_SIZE, None),
    ReferenceSpec("quadratic_deep", lambda: quadratic(deep_hessian(0)), QUADRATIC, None, None),
    ReferenceSpec("two_d_rosenbrock", lambda: two_d("rosenbrock"), TWO_D, None, None),
    ReferenceSpec("two_d_beale", lambda: two_d("beale"), TWO_D, None, None),
    ReferenceSpec("two_d_branin", lambda: two_d("branin"), TWO_D, None, None),
    _classifier("cifar100_wrn404", lambda: wrn(6, 4, 100, 5e-4), 100, IMAGE32, 5e-4),
    ReferenceSpec("imagenet_inception_v3", lambda: inception_v3(5e-4), INCEPTION_V3, 1001, 5e-4),
    _classifier("cifar10_vgg16", lambda: vgg(16, 10, 5e-4), 10, IMAGE32, 5e-4),
    _classifier("cifar10_vgg19", lambda: vgg(19, 10, 5e-4), 10, IMAGE32, 5e-4),
    _classifier("cifar100_vgg16", lambda: vgg(16, 100, 5e-4), 100, IMAGE32, 5e-4),
    _classifier("cifar100_vgg19", lambda: vgg(19, 100, 5e-4), 100, IMAGE32, 5e-4),
    # 1001 outputs: the original's ImageNet labels keep class 0 for "background".
    _classifier("imagenet_vgg16", lambda: vgg(16, 1001, 5e-4), 1001, IMAGENET, 5e-4),
    _classifier("imagenet_vgg19", lambda: vgg(19, 1001, 5e-4), 1001, IMAGENET, 5e-4),
)

REFERENCE_PROBLEMS: dict[str, ReferenceSpec] = {spec.name: spec for spec in _SPECS}


def _placeholder(spec: InputSpec, batch_size: int) -> np.ndarray:
    return np.zeros((batch_size, *spec.shape), np.int64 if spec.kind == "ids" else np.float64)


class ReferenceProblem:
    """One test problem with its variables created: forward, losses, regularizer, accuracy."""

    def __init__(self, name: str, dtype=tf.float32, seed: int = 0, initialize: bool = True):
        if name not in REFERENCE_PROBLEMS:
            raise KeyError(f"the reference has no problem {name!r}; it has: {', '.join(REFERENCE_PROBLEMS)}")
        self.spec = REFERENCE_PROBLEMS[name]
        self.family = self.spec.family
        self.graph = Graph(dtype, seed, initialize)
        self._forward = self.spec.model()
        # Build the variables (creation order = forward order) with one inference pass.
        placeholders = tuple(_placeholder(spec, 1) for spec in self.spec.inputs)
        self.forward(placeholders, training=False)
        self.reset_state()

    @property
    def dtype(self):
        return self.graph.dtype

    def forward(self, inputs: tuple, training: bool, noise: NoiseSource | None = None):
        """(outputs, taps): the model's outputs (one tensor, or a tuple in `family.outputs` order) and
        each layer's output by name (NHWC), then each output under its name."""
        outputs = self.graph.run(self._forward, inputs if len(inputs) > 1 else inputs[0], training, noise)
        taps = dict(self.graph.taps)
        named = outputs if isinstance(outputs, tuple) else (outputs,)
        taps |= dict(zip(self.family.outputs, named))
        return outputs, taps

    def losses(self, outputs, targets) -> tf.Tensor:
        """The original's `losses`: one value per example."""
        return self.family.losses(outputs, targets)

    def loss_terms(self, outputs, targets) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean over the batch of the losses, the regularizer); the runner minimises their sum."""
        return tf.reduce_mean(self.losses(outputs, targets)), self.graph.regularizer()

    def accuracy(self, outputs, targets) -> tf.Tensor | None:
        return None if self.family.accuracy is None else self.family.accuracy(outputs, targets)

    def reset_state(self) -> None:
        """The zero state every init op of the original assigns (a no-op for stateless problems)."""
        self.graph.reset_state()
