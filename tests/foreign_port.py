"""An independent mini port of four DeepOBS problems, written as a new user would: no weight maps.

Its own module names, activations as function calls (F.relu), flattening with `.view`, torch.optim
optimizers (stock Adam: a declared deviation), its own L2 term, torch's default initialisers (a declared
deviation), its own problem name for mnist_2c2d. What it gets right on purpose, because the original
computes it: TF 'SAME' padding (asymmetric at stride 2 and on the 3x3/s2 pools), BN momentum 0.1
(TF's 0.9) and epsilon 1e-5, L2 on exactly the kernels (wd/2 * ||W||^2, as tf.nn.l2_loss).

    python -m parity audit --port tests.foreign_port:PORT
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from parity.port import Port


def same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TF 'SAME': total padding max((ceil(n/s) - 1) s + k - n, 0), the odd pixel after."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class MnistCNN(nn.Module):  # mnist_2c2d
    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(1, 32, 5, padding=2)
        self.second = nn.Conv2d(32, 64, 5, padding=2)
        self.hidden = nn.Linear(64 * 7 * 7, 1024)
        self.logits = nn.Linear(1024, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.first(x)), 2)
        x = F.max_pool2d(F.relu(self.second(x)), 2)
        return self.logits(F.relu(self.hidden(x.view(x.size(0), -1))))


class MLP(nn.Module):  # mnist_mlp
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(784, 1000), nn.Linear(1000, 500), nn.Linear(500, 100)])
        self.head = nn.Linear(100, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.head(x)


class ThreeC3D(nn.Module):  # cifar10_3c3d
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 64, 5), nn.Conv2d(64, 96, 3), nn.Conv2d(96, 128, 3, padding=1)])
        self.fcs = nn.ModuleList([nn.Linear(128 * 3 * 3, 512), nn.Linear(512, 256)])
        self.out = nn.Linear(256, 10)

    def forward(self, x):
        for conv in self.convs:
            x = F.max_pool2d(same_pad(F.relu(conv(x)), 3, 2, float("-inf")), 3, 2)
        x = x.view(x.size(0), -1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.out(x)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.norm_a = nn.BatchNorm2d(cin, eps=1e-5, momentum=0.1)
        self.project = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout else None
        self.conv_a = nn.Conv2d(cin, cout, 3, stride, bias=False)
        self.norm_b = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv_b = nn.Conv2d(cout, cout, 3, 1, bias=False)

    def forward(self, x):
        out = F.relu(self.norm_a(x))
        shortcut = self.project(out) if self.project is not None else x
        out = self.conv_a(same_pad(out, 3, self.stride))
        out = self.conv_b(same_pad(F.relu(self.norm_b(out)), 3, 1))
        return out + shortcut


class WRN16(nn.Module):  # svhn_wrn164: 2 units per group, widening 4
    def __init__(self):
        super().__init__()
        self.entry = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        blocks, cin = [], 16
        for cout, stride in ((64, 1), (128, 2), (256, 2)):
            blocks += [Block(cin, cout, stride), Block(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.final_norm = nn.BatchNorm2d(256, eps=1e-5, momentum=0.1)
        self.classifier = nn.Linear(256, 10)

    def forward(self, x):
        x = F.relu(self.final_norm(self.blocks(self.entry(x))))
        return self.classifier(x.mean(dim=(2, 3)))


MODELS = {"my_mnist_cnn": MnistCNN, "mnist_mlp": MLP, "cifar10_3c3d": ThreeC3D, "svhn_wrn164": WRN16}
WEIGHT_DECAY = {"cifar10_3c3d": 0.002, "svhn_wrn164": 5e-4}


def loss_terms(problem, model, logits, labels):
    decay = WEIGHT_DECAY.get(problem, 0.0)
    kernels = [p for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1]
    l2 = decay * 0.5 * sum((w ** 2).sum() for w in kernels) if decay else torch.zeros((), dtype=logits.dtype)
    return F.cross_entropy(logits, labels), l2


PORT = Port(
    name="foreign-mini",
    problems=list(MODELS),
    build_model=lambda problem: MODELS[problem](),
    loss_terms=loss_terms,
    problem_names={"my_mnist_cnn": "mnist_2c2d"},
    deviations={"step/adam": "uses stock torch.optim.Adam (epsilon added to sqrt(v_hat))",
                "init": "keeps torch's default initialisers"},
)
