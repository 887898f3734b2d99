"""The self-test's catalogue: planted porting bugs and equivalent rewrites of this repository's port.

Each row is a real edit of a copy of the port (`deepobs_port()`): a module of the built model replaced
or its forward rewritten, as a porter would write it; a weight-map row changed; an optimizer, loss or
constructor (initialiser) swapped. The repository's files are never touched. A bug names the check
and the layer (first diverging tensor) it must be caught at; an equivalent rewrite must pass every
check it lists (an "equivalent" verdict counts as passing). `parity.selftest` runs them.
"""
from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from parity.init_check import SEEDING_ITEM
from parity.maps import ProblemMap
from parity.port import Port

FORWARD_CHECKS = ("forward",)
ALL_MODEL_CHECKS = ("forward", "loss", "gradients", "train_mode")


@dataclass(frozen=True)
class Mutant:
    name: str
    problem: str
    mutate: Callable[[Port], Port]  # the port's copy -> the edited copy
    checks: tuple[str, ...]  # audit checks to run ("init" runs parity.init_check)
    expect_check: str = ""  # a bug: the check that must fail ("setup": the weight-map set-up)
    expect_item: str = ""  # ... and its first diverging tensor (setup: a substring of the error)
    dtype: str = "float64"
    fast: bool = False  # in the test suite's subset
    deep: bool = False  # a deep problem (minutes and GBs): only with --deep

    @property
    def equivalent(self) -> bool:
        return not self.expect_check


# --- how a port is edited ------------------------------------------------------------------------

def edit_model(edit: Callable[[nn.Module], None]) -> Callable[[Port], Port]:
    """The port whose models are built as before, then edited by `edit` (modules replaced, forwards rewritten)."""
    def mutate(port: Port) -> Port:
        def build_model(problem, base=port.build_model):
            model = base(problem)
            edit(model)
            return model
        return dataclasses.replace(port, build_model=build_model)
    return mutate


def edit_constructor(after: Callable[[nn.Module], None] | None = None,
                     around: Callable[[Callable[[], nn.Module]], nn.Module] | None = None) -> Callable[[Port], Port]:
    """The port whose constructor runs inside `around` and/or ends with `after` (an initialiser changed)."""
    def mutate(port: Port) -> Port:
        def build_model(problem, base=port.build_model):
            model = around(lambda: base(problem)) if around else base(problem)
            if after:
                with torch.no_grad():
                    after(model)
            return model
        return dataclasses.replace(port, build_model=build_model)
    return mutate


def edit_map(problem: str, edit_rows: Callable[[tuple], tuple] | None = None,
             edit_model_too: Callable[[nn.Module], None] | None = None,
             edit_taps: Callable[[tuple], tuple] | None = None) -> Callable[[Port], Port]:
    def mutate(port: Port) -> Port:
        old = port.weight_maps[problem]
        maps = dict(port.weight_maps)
        maps[problem] = ProblemMap(edit_rows(old.params) if edit_rows else old.params,
                                   edit_taps(old.taps) if edit_taps else old.taps)
        port = dataclasses.replace(port, weight_maps=maps)
        return edit_model(edit_model_too)(port) if edit_model_too else port
    return mutate


def edit_optimizer(kind: str, factory) -> Callable[[Port], Port]:
    return lambda port: dataclasses.replace(port, optimizers=dict(port.optimizers, **{kind: factory}))


def edit_loss(loss_terms) -> Callable[[Port], Port]:
    return lambda port: dataclasses.replace(port, loss_terms=loss_terms)


def edit_accuracy(accuracy) -> Callable[[Port], Port]:
    return lambda port: dataclasses.replace(port, accuracy=accuracy)


def rewrite_forward(module: nn.Module, forward) -> None:
    module.forward = types.MethodType(forward, module)


def submodule(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def set_all(model: nn.Module, kind: type, **attributes) -> None:
    for module in model.modules():
        if isinstance(module, kind):
            for name, value in attributes.items():
                setattr(module, name, value)


def chain(*edits):
    def edit(model):
        for one in edits:
            one(model)
    return edit


class Call(nn.Module):
    """A module around a function of (input, module): how ports write F.relu, F.dropout, torch.flatten..."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x, self)


def loss_with(per_example: Callable, regularizer: Callable | None = None):
    """loss_terms built from a per-example loss (outputs, targets) and a regularizer (model, problem)."""
    from deepobs import losses
    from deepobs.problems import PROBLEMS

    def loss_terms(problem, model, outputs, targets):
        data = per_example(outputs, targets)
        if regularizer is None:
            l2 = losses.l2_regularizer(model.l2_parameters(), PROBLEMS[problem].weight_decay)
        else:
            l2 = regularizer(model, PROBLEMS[problem].weight_decay)
        return data, l2
    return loss_terms


# --- equivalent building blocks ---------------------------------------------------------------------

class LinearByMatmul(nn.Linear):
    def forward(self, x):
        return x @ self.weight.T + self.bias


class LinearAddInPlace(nn.Linear):
    def forward(self, x):
        out = x @ self.weight.T
        out.add_(self.bias)
        return out


class ConvPaddedByFPad(nn.Conv2d):
    """A stride-1 odd-kernel 'SAME' conv: symmetric padding by F.pad, then a VALID conv."""

    def forward(self, x):
        pad = self.kernel_size[0] // 2
        return F.conv2d(F.pad(x, (pad, pad, pad, pad)), self.weight, self.bias, self.stride)


class FunctionalBatchNorm(nn.BatchNorm2d):
    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)


def _copy_conv(conv: nn.Conv2d, cls, **changes) -> nn.Conv2d:
    arguments = dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                     stride=conv.stride, padding=0, bias=conv.bias is not None) | changes
    new = cls(**arguments)
    new.load_state_dict(conv.state_dict())
    return new


def _copy_linear(linear: nn.Linear, cls) -> nn.Linear:
    new = cls(linear.in_features, linear.out_features)
    new.load_state_dict(linear.state_dict())
    return new


def _functional_bns(model):
    for name, module in list(model.named_modules()):
        if type(module) is nn.BatchNorm2d:
            new = FunctionalBatchNorm(module.num_features, eps=module.eps, momentum=module.momentum)
            new.load_state_dict(module.state_dict())
            replace(model, name, new)


# --- WRN forwards ----------------------------------------------------------------------------------

def _wrn_units(model, kind):
    from deepobs.models.wrn import FirstUnit, Unit
    wanted = {"first": FirstUnit, "later": Unit}[kind]
    return [m for m in model.modules() if type(m) is wanted]


def _unit_residual_in_place(self, x):
    residual = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
    residual += x
    return residual


def _unit_relu_in_place(self, x):
    out = F.relu(self.bn1(x), inplace=True)
    out = F.relu(self.bn2(self.conv1(out)), inplace=True)
    return x + self.conv2(out)


def _first_unit_shortcut_from_raw_input(self, x):
    activated = F.relu(self.bn1(x))
    residual = self.conv2(F.relu(self.bn2(self.conv1(activated))))
    return residual + self.shortcut(x)


def _first_unit_in_place(self, x):
    activated = F.relu(self.bn1(x), inplace=True)
    residual = self.conv2(F.relu(self.bn2(self.conv1(activated)), inplace=True))
    residual += self.shortcut(activated)
    return residual


def _wrn_forward(pool):
    def forward(self, x):
        from deepobs.layers import channels_last
        x = self.stem(channels_last(x))
        for group in self.groups:
            x = group(x)
        return self.dense(pool(F.relu(self.bn_last(x))))
    return forward


# --- VAE and quadratic forwards -----------------------------------------------------------------------

def _reparameterize(noise):
    def forward(self, mean, std_dev):
        return mean + noise(mean) * torch.exp(std_dev)
    return forward


def _vae_losses(kl_factor=2.0, reduce_pixels="sum"):
    def per_example(outputs, images):
        reconstruction, mean, std_dev = outputs
        squared = (reconstruction.reshape(-1, 784) - images.reshape(-1, 784)).pow(2)
        image_loss = squared.sum(1) if reduce_pixels == "sum" else squared.mean(1)
        latent = -0.5 * (1.0 + kl_factor * std_dev - mean.pow(2) - torch.exp(2.0 * std_dev)).sum(1)
        return (image_loss + latent).mean()
    return per_example


def _quadratic_forward(form):
    def forward(self, x):
        q = self.hessian_out(self.hessian)
        return form(self.theta, x, q)
    return forward


def _two_d_function(function=None, gradient=None):
    """The 2-D model with its function's value or its gradient formula (the training step's backward) replaced."""
    def edit(model):
        model.function = model.function._replace(**{k: f for k, f in (("value", function), ("gradient", gradient))
                                                      if f is not None})
    return edit


# --- losses -----------------------------------------------------------------------------------------

def _ce_mean(outputs, labels):
    return F.cross_entropy(outputs, labels)


def _l2_every_parameter(model, wd):
    from deepobs import losses
    return losses.l2_regularizer(list(model.parameters()), wd)


def _l2_without_half(model, wd):
    return wd * torch.stack([p.pow(2).sum() for p in model.l2_parameters()]).sum()


def _char_losses(reduce_steps):
    def per_example(logits, targets):
        crossent = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   reduction="none").reshape(targets.shape)
        return reduce_steps(crossent).mean()
    return per_example


# --- optimizers -------------------------------------------------------------------------------------

class PlainSGD(torch.optim.Optimizer):
    """A hand-written SGD: p -= lr * g."""

    def __init__(self, params, lr):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.add_(param.grad, alpha=-group["lr"])


class AdamWithoutBiasCorrection(torch.optim.Optimizer):
    def __init__(self, params, lr):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                state["exp_avg"].mul_(0.9).add_(param.grad, alpha=0.1)
                state["exp_avg_sq"].mul_(0.999).addcmul_(param.grad, param.grad, value=0.001)
                param.sub_(group["lr"] * state["exp_avg"] / (state["exp_avg_sq"].sqrt() + 1e-8))


def _tf1_adam(**changes):
    from deepobs.optim import TF1Adam
    return lambda params, lr: TF1Adam(params, lr=lr, **changes)


# --- map edits ----------------------------------------------------------------------------------------

def _dense_after_flatten_as_plain_dense(rows):
    return tuple(dataclasses.replace(r, transform="dense", args=()) if r.transform == "dense_after_flatten" else r
                 for r in rows)


def _lstm_gates(gates):
    def edit(rows):
        return tuple(dataclasses.replace(r, args=(r.args[0], gates)) if r.transform.startswith("lstm_") and r.args
                     else dataclasses.replace(r, args=(gates,)) if r.transform == "lstm_bias" else r for r in rows)
    return edit


def _without_rows(*ports):
    return lambda rows: tuple(r for r in rows if r.port not in ports)


def _swap_rows(first, second):
    """Two rows' reference variables exchanged (a map that pairs two same-shaped tensors the wrong way)."""
    def edit(rows):
        names = {r.port: r.reference for r in rows}
        return tuple(dataclasses.replace(r, reference=names[second] if r.port == first else
                                         names[first] if r.port == second else r.reference) for r in rows)
    return edit


# --- the char RNN ---------------------------------------------------------------------------------

def _char_rnn_from_zero_state(model):
    forward = model.forward

    def forward_from_zero_state(chars):
        model.reset_state()
        return forward(chars)
    model.forward = forward_from_zero_state


def _char_rnn_state_not_detached(model):
    model._keep_state = lambda states: setattr(model, "state", list(states))


def _zero_forget_bias(model):
    with torch.no_grad():
        for lstm in model.lstm:
            lstm.bias_hh_l0.zero_()


# --- dropout spellings --------------------------------------------------------------------------

def _dropout_as(function, under: str = ""):
    """Every nn.Dropout of the model (under the module path `under`) replaced by a module calling
    `function(x, p, module)`."""
    def edit(model):
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Dropout) and name.startswith(under):
                replace(model, name, Call(lambda x, self, p=module.p: function(x, p, self)))
    return edit


def _keep_mask_dropout(mask):
    def function(x, p, module):
        if not module.training:
            return x
        return x * mask(x, p).to(x.dtype) / (1 - p)
    return function


# --- seeds ---------------------------------------------------------------------------------------

def _seeded_constructor(build):
    torch.manual_seed(0)
    return build()


def _reseeded_constructor(build):
    torch.seed()  # a fresh seed from the OS: the global seed no longer decides the weights
    return build()


# --- the catalogue --------------------------------------------------------------------------------

C3, C2, ALL, WRN, MLP, LOGREG = "cifar10_3c3d", "mnist_2c2d", "cifar100_allcnnc", "svhn_wrn164", "mnist_mlp", \
    "mnist_logreg"
VAE, RNN, QUAD = "mnist_vae", "tolstoi_char_rnn", "quadratic_deep"
SINGLE = ("forward",)


def _bugs() -> list[Mutant]:
    from deepobs.layers import Conv2dSame
    from deepobs.models.quadratic import DIM, Quadratic, _rotation
    from deepobs.models.two_d import rosenbrock
    import numpy as np

    def rotation_first_hessian():
        rng = np.random.RandomState(42)
        rotation = _rotation(DIM, rng)
        eigenvalues = np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)))
        return rotation.T @ (np.diag(eigenvalues) @ rotation)

    relu6 = lambda path: edit_model(lambda m: replace(m, path, nn.ReLU6()))  # noqa: E731
    return [
        # forward: convolutions, pools, activations, layouts
        Mutant("symmetric padding on a stride-2 SAME conv", ALL, edit_model(
            lambda m: replace(m, "features.3.0", nn.Conv2d(96, 96, 3, 2, padding=1))), SINGLE, "forward", "conv2d_2",
            fast=True),
        Mutant("symmetric padding on a stride-2 SAME max pool", C3, edit_model(
            lambda m: replace(m, "pool1.0", nn.MaxPool2d(3, 2, padding=1))), SINGLE, "forward", "max_pooling2d"),
        Mutant("NCHW flatten with the dense kernel only transposed", C2,
               edit_map(C2, _dense_after_flatten_as_plain_dense), SINGLE, "forward", "dense", fast=True),
        Mutant("All-CNN-C's last ReLU missing", ALL, edit_model(lambda m: replace(m, "features.11.1", nn.Identity())),
               SINGLE, "forward", "conv2d_8"),
        # (3c3d's ReLUs run after its pools: the first tap a ReLU6 there changes is the pool's)
        Mutant("ReLU6 instead of ReLU (3c3d first block)", C3, relu6("pool1.1"), SINGLE, "forward", "max_pooling2d",
               fast=True),
        Mutant("ReLU6 instead of ReLU (MLP layer 3)", MLP, relu6("hidden.2.1"), SINGLE, "forward", "dense_2"),
        Mutant("hardtanh instead of ReLU", MLP, edit_model(lambda m: replace(m, "hidden.1.1", nn.Hardtanh(0.0, 1.0))),
               SINGLE, "forward", "dense_1"),
        Mutant("leaky ReLU 0.01 instead of ReLU", C2, edit_model(lambda m: replace(m, "fc1.1", nn.LeakyReLU(0.01))),
               SINGLE, "forward", "dense"),
        # gradients at exact ties (the gradients check's float64 part: zero biases, blank inputs)
        Mutant("ReLU as torch.maximum(x, 0) (a tie splits the gradient: 0.5, TF's ReluGrad 0)", C2, edit_model(
            lambda m: replace(m, "pool1.1", Call(lambda x, m: torch.maximum(x, torch.zeros_like(x))))), ("gradients",),
            "gradients", "ties: conv2d/bias", fast=True),
        Mutant("lrelu as torch.maximum(x, 0.3 x) (a tie splits the gradient: 0.65, TF's 1)", VAE, edit_model(lambda m: [
            replace(m, f"encoder.{i}.1", Call(lambda x, m: torch.maximum(x, x * 0.3))) for i in (0, 2, 4)]),
            ("forward", "gradients"), "gradients", "ties: encoder/conv2d_2/bias"),
        Mutant("nn.LeakyReLU(0.3) for max(x, 0.3 x) (slope 0.3 at 0, TF's 1)", VAE, edit_model(lambda m: [
            replace(m, f"encoder.{i}.1", nn.LeakyReLU(0.3)) for i in (0, 2, 4)]), ("forward", "gradients"),
            "gradients", "ties: encoder/conv2d_2/bias"),
        Mutant("ELU instead of ReLU", MLP, edit_model(lambda m: replace(m, "hidden.0.1", nn.ELU())), SINGLE, "forward",
               "dense"),
        Mutant("max pool 2x2 instead of 3x3 stride 2", C3, edit_model(
            lambda m: replace(m, "pool2.0", nn.MaxPool2d(2, 2))), SINGLE, "forward", "max_pooling2d_1"),
        Mutant("average pool instead of max pool", C2, edit_model(lambda m: replace(m, "pool2.0", nn.AvgPool2d(2, 2))),
               SINGLE, "forward", "max_pooling2d_1"),
        Mutant("VALID conv written as SAME", C3, edit_model(
            lambda m: replace(m, "conv2.0", Conv2dSame(64, 96, 3))), SINGLE, "forward", "conv2d_1"),
        Mutant("softmax inside the model (probabilities as logits)", LOGREG, edit_model(
            lambda m: rewrite_forward(m, lambda self, x: F.softmax(self.dense(self.flatten(x)), -1))), SINGLE,
            "forward", "logits"),
        Mutant("NaN produced by a layer", C2, edit_model(
            lambda m: m.fc2.register_forward_hook(lambda module, args, output: output * float("nan"))), SINGLE,
            "forward", "dense_1"),
        Mutant("WRN shortcut from the raw input, not the pre-activated one", WRN, edit_model(
            lambda m: [rewrite_forward(u, _first_unit_shortcut_from_raw_input) for u in _wrn_units(m, "first")]),
            SINGLE, "forward", "unit_1_0/conv2d"),
        Mutant("WRN's final ReLU missing", WRN, edit_model(
            lambda m: rewrite_forward(m, lambda self, x: self.dense(self.bn_last(_wrn_body(self, x)).mean(dim=(2, 3))))),
            SINGLE, "forward", "fully-connected/dense"),
        Mutant("WRN global max pool instead of mean", WRN, edit_model(
            lambda m: rewrite_forward(m, _wrn_forward(lambda t: t.amax(dim=(2, 3))))), SINGLE, "forward",
            "fully-connected/dense"),
        Mutant("BN epsilon 1e-3 instead of 1e-5", WRN, edit_model(lambda m: set_all(m, nn.BatchNorm2d, eps=1e-3)),
               SINGLE, "forward", "unit_1_0/batch_normalization", fast=True),
        Mutant("BN epsilon 1e-3, float32", WRN, edit_model(lambda m: set_all(m, nn.BatchNorm2d, eps=1e-3)),
               SINGLE, "forward", "unit_1_0/batch_normalization", dtype="float32"),
        Mutant("quadratic: Hessian from another draw order", QUAD, lambda port: dataclasses.replace(
            port, build_model=lambda problem: Quadratic(rotation_first_hessian())), SINGLE, "forward", "hessian",
            fast=True),
        Mutant("quadratic: the 1/2 missing", QUAD, edit_model(lambda m: rewrite_forward(m, _quadratic_forward(
            lambda theta, x, q: (((theta - x) @ q) * (theta - x)).sum(1)))), SINGLE, "forward", "losses"),
        Mutant("rosenbrock with 10 instead of 100", "two_d_rosenbrock", edit_model(_two_d_function(
            lambda u, v: (1 - u)**2 + 10 * (v - u**2)**2)), SINGLE, "forward", "losses", fast=True),
        Mutant("beale without its third term", "two_d_beale", edit_model(_two_d_function(
            lambda u, v: (1.5 - u + u * v)**2 + (2.25 - u + u * v**2)**2)), SINGLE, "forward", "losses"),
        Mutant("branin with cos(v) for cos(u)", "two_d_branin", edit_model(_two_d_function(_branin_cos_v)), SINGLE, "forward", "losses"),
        Mutant("beale's gradient formula without its third term", "two_d_beale", edit_model(_two_d_function(
            gradient=_beale_gradient_two_terms)), ("gradients",), "gradients", "bias", fast=True),
        Mutant("2-D noise subtracted, not added", "two_d_rosenbrock", edit_model(lambda m: rewrite_forward(
            m, lambda self, x, y: rosenbrock(self.u, self.v) - self.u * x - self.v * y)), SINGLE, "forward",
            "losses"),
        # the VAE
        Mutant("VAE stride-1 conv padded 1/1", VAE, edit_model(
            lambda m: replace(m, "encoder.4.0", nn.Conv2d(64, 64, 4, 1, padding=1))), SINGLE, "forward",
            "encoder/conv2d_2"),
        Mutant("VAE transposed conv output 15 instead of 14", VAE, edit_model(
            lambda m: replace(m, "decoder_convs.2.0", nn.ConvTranspose2d(64, 64, 4, 1, padding=1))), SINGLE,
            "forward", "decoder/conv2d_transpose_1"),
        Mutant("VAE decoder ReLU missing", VAE, edit_model(lambda m: replace(m, "decoder_convs.4.1", nn.Identity())),
               SINGLE, "forward", "decoder/conv2d_transpose_2", fast=True),
        Mutant("VAE std_dev without the 1/2", VAE, edit_model(lambda m: replace(m, "std_dev.1", nn.Identity())),
               SINGLE, "forward", "encoder/z"),
        Mutant("VAE leaky slope 0.2 instead of 0.3", VAE, edit_model(
            lambda m: replace(m, "encoder.0.1", nn.LeakyReLU(0.2))), SINGLE, "forward", "encoder/conv2d"),
        Mutant("VAE z = mean + eps * std_dev (no exp)", VAE, edit_model(lambda m: rewrite_forward(
            m.sample, lambda self, mean, std: mean + torch.randn_like(mean) * std)), SINGLE, "forward", "encoder/z"),
        Mutant("VAE epsilon drawn uniform (rand_like)", VAE, edit_model(lambda m: rewrite_forward(
            m.sample, _reparameterize(torch.rand_like))), SINGLE, "forward", "encoder/z"),
        Mutant("VAE sigmoid output missing", VAE, edit_model(lambda m: replace(m, "output.1", nn.Identity())),
               SINGLE, "forward", "decoder/dense_2"),
        # the char RNN
        Mutant("LSTM: TF gate order left unpermuted", RNN, edit_map(RNN, _lstm_gates((0, 1, 2, 3))), SINGLE,
               "forward", "rnn/multi_rnn_cell/cell_0/lstm_cell", fast=True),
        Mutant("LSTM forget bias dropped", RNN, edit_model(_zero_forget_bias), SINGLE, "forward",
               "rnn/multi_rnn_cell/cell_0/lstm_cell"),
        Mutant("the two LSTM layers' input kernels swapped in the map", RNN, edit_map(
            RNN, _swap_rows("lstm.0.weight_ih_l0", "lstm.1.weight_ih_l0")), SINGLE, "forward",
            "rnn/multi_rnn_cell/cell_0/lstm_cell"),
        # loss
        Mutant("L2 on the biases too (loss)", C3, edit_loss(loss_with(_ce_mean, _l2_every_parameter)), ("loss",),
               "loss", "regularizer", fast=True),
        Mutant("L2 without the 1/2", C3, edit_loss(loss_with(_ce_mean, _l2_without_half)), ("loss",), "loss",
               "regularizer"),
        Mutant("summed, not averaged, cross-entropy", C3, edit_loss(loss_with(
            lambda o, t: F.cross_entropy(o, t, reduction="sum"))), ("loss",), "loss", "data_loss"),
        Mutant("label smoothing 0.1 where the original has none", C2, edit_loss(loss_with(
            lambda o, t: F.cross_entropy(o, t, label_smoothing=0.1))), ("loss",), "loss", "data_loss"),
        Mutant("accuracy as a count of right answers", C2, edit_accuracy(
            lambda problem, o, t: (o.argmax(-1) == t).sum().to(o.dtype)), ("loss",), "loss", "accuracy", fast=True),
        Mutant("accuracy as the error rate", MLP, edit_accuracy(
            lambda problem, o, t: (o.argmax(-1) != t).to(o.dtype).mean()), ("loss",), "loss",
            "accuracy (no prediction right)"),
        Mutant("char RNN accuracy on the last step only", RNN, edit_accuracy(
            lambda problem, o, t: (o[:, -1].argmax(-1) == t[:, -1]).to(o.dtype).mean()), ("loss",), "loss",
            "accuracy"),
        Mutant("char RNN loss summed over the steps", RNN, edit_loss(loss_with(_char_losses(lambda c: c.sum(1)))),
               ("loss",), "loss", "data_loss"),
        Mutant("VAE KL with std_dev where the original has 2 std_dev", VAE, edit_loss(loss_with(
            _vae_losses(kl_factor=1.0))), ("loss",), "loss", "data_loss"),
        Mutant("VAE image loss averaged over pixels", VAE, edit_loss(loss_with(_vae_losses(reduce_pixels="mean"))),
               ("loss",), "loss", "data_loss"),
        # gradients
        Mutant("L2 on the biases too (gradients)", C3, edit_loss(loss_with(_ce_mean, _l2_every_parameter)),
               ("gradients",), "gradients", "dense_2/bias"),
        Mutant("a bias frozen (requires_grad False)", C3, edit_model(lambda m: m.fc3.bias.requires_grad_(False)),
               ("gradients",), "gradients", "dense_2/bias", fast=True),
        Mutant("features detached before the classifier", C2, edit_model(lambda m: rewrite_forward(
            m, lambda self, x: self.fc2(self.fc1(self.flatten(self.pool2(self.conv2(self.pool1(self.conv1(
                x))))).detach())))), ("gradients",), "gradients", "conv2d_1/bias"),
        Mutant("embedding gradients scaled by id frequency", RNN, edit_model(
            lambda m: setattr(m.embedding, "scale_grad_by_freq", True)), ("gradients",), "gradients", "embedding"),
        Mutant("embedding with padding_idx 0 (its row gets no gradient)", RNN, edit_model(
            lambda m: setattr(m.embedding, "padding_idx", 0)), ("gradients",), "gradients", "embedding"),
        # train mode
        Mutant("BN momentum passed to torch uninverted", WRN, edit_model(
            lambda m: set_all(m, nn.BatchNorm2d, momentum=0.9)), ("train_mode",), "train_mode",
            "unit_1_0/batch_normalization/moving_mean", fast=True),
        Mutant("BN in eval mode while training (frozen statistics)", WRN, edit_model(lambda m: rewrite_forward(
            m.groups[0][0].bn1, lambda self, x: F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                                             self.bias, False, 0.0, self.eps))),
            ("train_mode",), "train_mode", "unit_1_0/batch_normalization"),
        Mutant("Dropout2d instead of elementwise dropout", ALL, edit_model(
            lambda m: replace(m, "features.4", nn.Dropout2d(0.5))), ("train_mode",), "train_mode", "dropout_1",
            fast=True),
        Mutant("AlphaDropout instead of dropout", ALL, edit_model(
            lambda m: replace(m, "features.0", nn.AlphaDropout(0.2))), ("train_mode",), "train_mode", "dropout"),
        Mutant("dropout rate 0.5 instead of 0.2", VAE, edit_model(lambda m: replace(m, "encoder.1", nn.Dropout(0.5))),
               ("train_mode",), "train_mode", "encoder/dropout"),
        Mutant("a dropout site missing", VAE, edit_model(lambda m: replace(m, "encoder.3", nn.Identity())),
               ("train_mode",), "train_mode", "encoder/dropout_1"),
        Mutant("an extra dropout layer", MLP, edit_model(lambda m: m.hidden[1].append(nn.Dropout(0.5))),
               ("train_mode",), "train_mode", "dense_1"),
        Mutant("nn.LSTM(dropout=) instead of the four dropout sites", RNN, edit_model(chain(
            lambda m: replace(m, "input_dropout.0", nn.Identity()), lambda m: replace(m, "input_dropout.1", nn.Identity()),
            lambda m: replace(m, "output_dropout.1", nn.Identity()))), ("train_mode",), "train_mode",
            "rnn/multi_rnn_cell/cell_0/input_dropout"),
        # carried state
        Mutant("LSTM state not carried between batches", RNN, edit_model(_char_rnn_from_zero_state),
               ("carried_state",), "carried_state", "batch1 rnn/multi_rnn_cell/cell_0/lstm_cell", fast=True),
        Mutant("LSTM state not detached", RNN, edit_model(_char_rnn_state_not_detached), ("carried_state",),
               "carried_state", "batch1 gradients"),
        # optimizers
        Mutant("stock torch Adam for TF1 Adam (formula)", C3, edit_optimizer(
            "adam", lambda params, lr: torch.optim.Adam(params, lr=lr)), ("step/adam",),
            "step/adam (reference gradients)", "step1 conv2d/kernel (update)", fast=True),
        Mutant("Adam epsilon 1e-7", C2, edit_optimizer("adam", _tf1_adam(eps=1e-7)), ("step/adam",),
               "step/adam (reference gradients)", "step1 conv2d/kernel (update)"),
        Mutant("Adam beta2 0.99", C2, edit_optimizer("adam", _tf1_adam(betas=(0.9, 0.99))), ("step/adam",),
               "step/adam (reference gradients)", "step1 conv2d/kernel (update)"),
        Mutant("Adam without bias correction", MLP, edit_optimizer(
            "adam", lambda params, lr: AdamWithoutBiasCorrection(params, lr)), ("step/adam",),
            "step/adam (reference gradients)", "step1 dense/kernel (update)"),
        Mutant("AdamW (decoupled weight decay 0.01)", LOGREG, edit_optimizer(
            "adam", lambda params, lr: torch.optim.AdamW(params, lr=lr)), ("step/adam",),
            "step/adam (reference gradients)", "step1 dense/kernel (update)"),
        Mutant("momentum with dampening 0.9", C3, edit_optimizer(
            "momentum", lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, dampening=0.9)),
            ("step/momentum",), "step/momentum (reference gradients)", "step2 conv2d/kernel (update)", fast=True),
        Mutant("Nesterov momentum", C2, edit_optimizer(
            "momentum", lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)),
            ("step/momentum",), "step/momentum (reference gradients)", "step1 conv2d/kernel (update)"),
        Mutant("momentum 0.99", MLP, edit_optimizer(
            "momentum", lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.99)), ("step/momentum",),
            "step/momentum (reference gradients)", "step2 dense/kernel (update)"),
        Mutant("momentum forgotten (plain SGD)", LOGREG, edit_optimizer(
            "momentum", lambda params, lr: torch.optim.SGD(params, lr=lr)), ("step/momentum",),
            "step/momentum (reference gradients)", "step1 dense/kernel/momentum"),
        Mutant("SGD with weight decay 5e-4", C3, edit_optimizer(
            "sgd", lambda params, lr: torch.optim.SGD(params, lr=lr, weight_decay=5e-4)), ("step/sgd",),
            "step/sgd (reference gradients)", "step1 conv2d/kernel (update)", fast=True),
        Mutant("SGD ignoring the learning rate (default 0.01)", QUAD, edit_optimizer(
            "sgd", lambda params, lr: torch.optim.SGD(params, lr=0.01)), ("step/sgd",),
            "step/sgd (reference gradients)", "step1 theta (update)"),
        Mutant("stock torch Adam on a 2-D function", "two_d_beale", edit_optimizer(
            "adam", lambda params, lr: torch.optim.Adam(params, lr=lr)), ("step/adam",),
            "step/adam (reference gradients)", "step1 weight (update)"),
        # init
        Mutant("conv kernels left at torch's default init", C3, edit_constructor(
            after=lambda m: [c.reset_parameters() for c in m._convs()]), ("init",), "init", "conv2d/kernel",
            fast=True),
        Mutant("a plain normal for TF's truncated normal", MLP, edit_constructor(
            after=lambda m: [nn.init.normal_(lin.weight, std=0.03) for lin in m._linears()]), ("init",), "init",
            "dense/kernel"),
        Mutant("conv bias 0.1 instead of 0.05", C2, edit_constructor(
            after=lambda m: nn.init.constant_(m.conv1[0].bias, 0.1)), ("init",), "init", "conv2d/bias"),
        Mutant("2-D function started at another point", "two_d_rosenbrock", edit_constructor(
            after=lambda m: m.u.fill_(0.5)), ("init",), "init", "weight"),
        Mutant("constructor seeds its own RNG", C3, edit_constructor(around=_seeded_constructor), ("init",), "init",
               SEEDING_ITEM, fast=True),
        Mutant("constructor reseeds from the OS", MLP, edit_constructor(around=_reseeded_constructor), ("init",),
               "init", SEEDING_ITEM),
        # weight-map set-up
        Mutant("another problem's model (100 outputs for 10)", C3, lambda port: dataclasses.replace(
            port, build_model=lambda problem: port.build_model("cifar100_3c3d")), SINGLE, "setup",
            "dense_2/kernel (256, 10)", fast=True),
        Mutant("a conv without its bias (and its map row)", C3, edit_map(
            C3, _without_rows("conv2.0.bias"), lambda m: replace(m, "conv2.0", nn.Conv2d(64, 96, 3, bias=False))),
            SINGLE, "setup", "conv2d_1/bias"),
    ]


INCEPTION = "imagenet_inception_v3"


def _inception_loss(aux_weight=0.4, label_smoothing=0.1):
    """Inception v3's loss with a slip in its aux weight or label smoothing."""
    from deepobs import losses
    from deepobs.problems import PROBLEMS

    def loss_terms(problem, model, outputs, labels):
        logits, aux_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
        per_example = losses.softmax_cross_entropy(logits, labels, label_smoothing=label_smoothing)
        if aux_logits is not None:
            per_example = per_example + aux_weight * losses.softmax_cross_entropy(
                aux_logits, labels, label_smoothing=label_smoothing)
        return per_example.mean(), losses.l2_regularizer(model.l2_parameters(), PROBLEMS[problem].weight_decay)
    return loss_terms


def _inception_pools_counting_padding(model):
    for block in (model.block5a, model.block5b_0, model.block5b_1, model.block6a, model.block6b_0, model.block6b_1,
                  model.block6c):
        block.branch1[0] = nn.AvgPool2d(3, 1, 1)  # count_include_pad=True, torch's default
    for block in (model.block7_0, model.block7_1):
        block.branch3[0] = nn.AvgPool2d(3, 1, 1)


def _deep_bugs() -> list[Mutant]:
    """Inception v3 (the classification_aux_head family): each audit of it takes minutes and GBs."""
    return [
        Mutant("Inception BN epsilon 1e-5 for the TF layers' 1e-3", INCEPTION, edit_model(
            lambda m: set_all(m, nn.BatchNorm2d, eps=1e-5)), SINGLE, "forward", "stem/batch_normalization", deep=True),
        Mutant("Inception average pool counting the padding", INCEPTION, edit_model(_inception_pools_counting_padding),
               SINGLE, "forward", "inception_block5a/branch1/average_pooling2d", deep=True),
        Mutant("Inception label smoothing missing", INCEPTION, edit_loss(_inception_loss(label_smoothing=0.0)),
               ("loss",), "loss", "data_loss", deep=True),
        Mutant("Inception aux weight 0.3 for 0.4", INCEPTION, edit_loss(_inception_loss(aux_weight=0.3)),
               ("train_mode",), "train_mode", "train data_loss", deep=True),
        Mutant("Inception BN momentum 0.9997 passed to torch as is", INCEPTION, edit_model(
            lambda m: set_all(m, nn.BatchNorm2d, momentum=0.9997)), ("train_mode",), "train_mode",
            "stem/batch_normalization/moving_mean", deep=True),
    ]


def _wrn_body(self, x):
    from deepobs.layers import channels_last
    x = self.stem(channels_last(x))
    for group in self.groups:
        x = group(x)
    return x


def _beale_gradient_two_terms(u, v):
    r1, r2 = 1.5 - u + u * v, 2.25 - u + u * v**2
    return 2 * r1 * (v - 1) + 2 * r2 * (v**2 - 1), 2 * r1 * u + 4 * r2 * u * v


def _beale_gradient_factored(u, v):
    """Beale's gradient as 2 * sum(r_i * dr_i), the same derivative in another spelling."""
    r1, r2, r3 = 1.5 - u + u * v, 2.25 - u + u * v**2, 2.625 - u + u * v**3
    du = 2 * (r1 * (v - 1) + r2 * (v**2 - 1) + r3 * (v**3 - 1))
    dv = 2 * u * (r1 + 2 * r2 * v + 3 * r3 * v**2)
    return du, dv


def _branin_cos_v(u, v):
    from deepobs.models.two_d import BRANIN
    a, b, c, r, s, t = BRANIN.values()
    return a * (v - b * u**2 + c * u - r)**2 + s * (1 - t) * torch.cos(v) + s


def _equivalents() -> list[Mutant]:
    def in_place_relus(model):
        set_all(model, nn.ReLU, inplace=True)

    def relu_before_pool(model):  # conv -> ReLU -> pool, as the original writes it, for the port's conv -> pool -> ReLU
        model.conv1 = nn.Sequential(model.conv1[0], nn.ReLU())
        model.pool1 = model.pool1[0]

    def functional_relus(model):
        for name, module in list(model.named_modules()):
            if type(module) is nn.ReLU:
                replace(model, name, Call(lambda x, self: F.relu(x)))

    def flatten_as(function):
        return edit_model(lambda m: setattr(m, "flatten", Call(lambda x, self: function(x))))

    def nhwc_flatten(model):
        model.flatten = Call(lambda x, self: x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))

    steps = ("step/sgd", "step/momentum", "step/adam")
    return [
        Mutant("in-place ReLU everywhere", C3, edit_model(in_place_relus), ALL_MODEL_CHECKS, fast=True),
        Mutant("in-place ReLU in the VAE decoder", VAE, edit_model(in_place_relus), ("forward", "train_mode")),
        Mutant("residual added in place (x += shortcut)", WRN, edit_model(lambda m: [
            rewrite_forward(u, _unit_residual_in_place) for u in _wrn_units(m, "later")] + [
            rewrite_forward(u, _first_unit_in_place) for u in _wrn_units(m, "first")]), ALL_MODEL_CHECKS, fast=True),
        Mutant("F.relu(inplace=True) in the residual units", WRN, edit_model(lambda m: [
            rewrite_forward(u, _unit_relu_in_place) for u in _wrn_units(m, "later")]), ("forward", "train_mode")),
        Mutant("F.relu for nn.ReLU", C2, edit_model(functional_relus), ("forward", "gradients")),
        Mutant("nn.Flatten for torch.flatten", C3, flatten_as(lambda x: nn.Flatten()(x)), SINGLE),
        Mutant("reshape for torch.flatten", C2, flatten_as(lambda x: x.reshape(x.shape[0], -1)), SINGLE),
        Mutant("contiguous().view for torch.flatten", C3, flatten_as(lambda x: x.contiguous().view(x.shape[0], -1)),
               SINGLE),
        Mutant("NHWC flatten with a plainly transposed dense kernel", C2, edit_map(
            C2, _dense_after_flatten_as_plain_dense, nhwc_flatten), ("forward", "gradients"), fast=True),
        Mutant("ReLU before the max pool instead of after", C3, edit_model(relu_before_pool),
               ("forward", "loss", "gradients", "train_mode", "step/sgd"), fast=True),
        Mutant("a tap taken before its ReLU (the conv, not conv + ReLU)", C3, edit_map(C3, edit_taps=lambda taps: tuple(
            dataclasses.replace(t, then=None) if t.port == "conv2" else t for t in taps)),
            ("forward", "loss", "gradients", "train_mode")),
        Mutant("BN through F.batch_norm", WRN, edit_model(_functional_bns), ("forward", "train_mode")),
        Mutant("SAME padding by F.pad then a VALID conv", C2, edit_model(
            lambda m: replace(m, "conv1.0", _copy_conv(m.conv1[0], ConvPaddedByFPad))), ("forward", "gradients")),
        Mutant("nn.Conv2d(padding='same') for a stride-1 odd kernel", C2, edit_model(
            lambda m: replace(m, "conv2.0", _copy_conv(m.conv2[0], nn.Conv2d, padding="same"))), SINGLE),
        Mutant("matmul + bias for nn.Linear", MLP, edit_model(
            lambda m: replace(m, "output", _copy_linear(m.output, LinearByMatmul))), ("forward", "gradients")),
        Mutant("bias added in place after the matmul", LOGREG, edit_model(
            lambda m: replace(m, "dense", _copy_linear(m.dense, LinearAddInPlace))), ("forward", "gradients")),
        Mutant("log_softmax + nll_loss for cross_entropy", C3, edit_loss(loss_with(
            lambda o, t: F.nll_loss(F.log_softmax(o, -1), t))), ("loss", "gradients")),
        Mutant("sum / batch size for mean", C2, edit_loss(loss_with(
            lambda o, t: F.cross_entropy(o, t, reduction="sum") / o.shape[0])), ("loss", "gradients"), fast=True),
        Mutant("SGD spelled out (no foreach, dampening 0)", C3, edit_optimizer(
            "sgd", lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.0, dampening=0.0, foreach=False)),
            ("step/sgd",)),
        Mutant("a hand-written SGD", MLP, edit_optimizer("sgd", PlainSGD), ("step/sgd",)),
        Mutant("torch.optim.SGD(momentum=0.9, dampening=0) spelled out", C2, edit_optimizer(
            "momentum", lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, dampening=0, nesterov=False,
                                                           foreach=False)), ("step/momentum",)),
        Mutant("dropout through F.dropout", ALL, edit_model(_dropout_as(
            lambda x, p, m: F.dropout(x, p, m.training))), ("train_mode",), fast=True),
        Mutant("dropout through torch.dropout", ALL, edit_model(_dropout_as(
            lambda x, p, m: torch.dropout(x, p, m.training))), ("train_mode",)),
        # (after the encoder's leaky ReLUs: after a ReLU, whose backward needs its output, torch itself refuses it)
        Mutant("dropout in place (F.dropout(inplace=True))", VAE, edit_model(_dropout_as(
            lambda x, p, m: F.dropout(x, p, m.training, inplace=True), under="encoder")), ("train_mode", "gradients")),
        Mutant("nn.Dropout(inplace=True)", RNN, edit_model(lambda m: set_all(m, nn.Dropout, inplace=True)),
               ("train_mode", "gradients")),
        Mutant("hand-written dropout mask (rand_like >= p)", ALL, edit_model(_dropout_as(_keep_mask_dropout(
            lambda x, p: torch.rand_like(x) >= p))), ("train_mode",)),
        Mutant("hand-written dropout mask (bernoulli of 1 - p)", VAE, edit_model(_dropout_as(_keep_mask_dropout(
            lambda x, p: torch.bernoulli(torch.full_like(x, 1 - p))))), ("train_mode",), fast=True),
        Mutant("VAE epsilon by torch.randn(shape)", VAE, edit_model(lambda m: rewrite_forward(
            m.sample, _reparameterize(lambda mean: torch.randn(mean.shape, dtype=mean.dtype)))),
            ("forward", "train_mode")),
        Mutant("VAE epsilon by empty_like().normal_()", VAE, edit_model(lambda m: rewrite_forward(
            m.sample, _reparameterize(lambda mean: torch.empty_like(mean).normal_()))), SINGLE),
        Mutant("ReLU as clamp(min=0) (its gradient at 0 is 0, as TF's)", C2, edit_model(
            lambda m: replace(m, "pool1.1", Call(lambda x, m: x.clamp(min=0)))), ("forward", "gradients")),
        Mutant("quadratic: (x - theta) for (theta - x)", QUAD, edit_model(lambda m: rewrite_forward(
            m, _quadratic_forward(lambda theta, x, q: 0.5 * (((x - theta) @ q) * (x - theta)).sum(1)))),
            ("forward", "gradients")),
        Mutant("global average pool by adaptive_avg_pool2d", ALL, edit_model(lambda m: rewrite_forward(
            m, lambda self, x: F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))), SINGLE),
        Mutant("rosenbrock's squares as products", "two_d_rosenbrock", edit_model(_two_d_function(
            lambda u, v: (1 - u) * (1 - u) + 100 * (v - u * u) * (v - u * u))), ("forward",) + steps),
        Mutant("beale's gradient formula factored", "two_d_beale", edit_model(_two_d_function(
            gradient=_beale_gradient_factored)), ("gradients",) + steps, fast=True),
        Mutant("truncated normal init through nn.init.trunc_normal_ directly", C2, edit_constructor(after=lambda m: [
            nn.init.trunc_normal_(layer.weight, std=0.05, a=-0.1, b=0.1)
            for layer in (m.conv1[0], m.conv2[0], m.fc1[0], m.fc2)]), ("init",)),
    ]


def catalogue() -> list[Mutant]:
    return _bugs() + _deep_bugs() + _equivalents()

