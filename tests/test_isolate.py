"""Teacher forcing (--isolate) and diagnosis hints: several real slips planted at once, every one listed at its
own layer with the hint its measured pattern supports; the faithful port lists nothing and gets no hint."""
import dataclasses
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepobs import losses
from deepobs.problems import PROBLEMS
from parity.audit import audit_problem, build_pair, mark_unjudged_steps
from parity.hints import adam_epsilon
from parity.port import deepobs_port
from parity.results import CheckResult, Comparison
from tests.test_planted_bugs import port_with

pytestmark = pytest.mark.parity


def by_check(results):
    return {r.check: r for r in results}


def failing_items(result):
    return [c.item for c in result.comparisons if not c.passed]


def hints_at(result):
    return {hint.where: hint for hint in result.hints}


def test_every_slip_of_all_cnn_c_is_listed_at_its_own_layer_with_its_hint():
    def edit(model):
        model.features[3][0] = nn.Conv2d(96, 96, 3, 2, padding=1)  # symmetric padding at a stride-2 'SAME' conv
        model.features[4] = nn.Dropout2d(0.5)  # channel-wise dropout
        model.features[8] = nn.Dropout(0.3)  # another rate (the original drops 0.5)
        model.features[11][1] = nn.Identity()  # the last ReLU missing
    results = by_check(audit_problem(port_with(edit), "cifar100_allcnnc", "float64", checks=["forward"],
                                     isolate=True))
    assert results["forward"].first_divergence.item == "conv2d_2"  # the ordinary check names the first only
    forward, train = results["isolated/forward"], results["isolated/train_mode"]
    assert forward.diagnostic and failing_items(forward) == ["conv2d_2", "conv2d_8"]
    assert failing_items(train) == ["conv2d_2", "dropout_1", "dropout_2", "conv2d_8"]
    assert "asymmetric 'SAME' padding" in hints_at(forward)["conv2d_2"].hypothesis
    assert set(hints_at(forward)) == {"conv2d_2"}  # the missing ReLU has no pattern hint
    assert "channel-wise dropout" in hints_at(train)["dropout_1"].hypothesis
    assert "another dropout rate" in hints_at(train)["dropout_2"].hypothesis
    assert "p = 0.30" in hints_at(train)["dropout_2"].hypothesis
    assert results["isolated/loss"].passed


def test_pool_padding_and_l2_on_biases_listed_with_hints():
    def edit(model):
        model.pool1[0] = nn.MaxPool2d(3, 2, padding=1)

    def loss_terms(problem, model, logits, labels):
        data_loss = losses.softmax_cross_entropy(logits, labels).mean()
        return data_loss, losses.l2_regularizer(list(model.parameters()), PROBLEMS[problem].weight_decay)
    results = by_check(audit_problem(port_with(edit, loss_terms=loss_terms), "cifar10_3c3d", "float64",
                                     checks=["loss"], isolate=True))
    assert failing_items(results["isolated/forward"]) == ["max_pooling2d"]
    assert "asymmetric 'SAME' padding" in hints_at(results["isolated/forward"])["max_pooling2d"].hypothesis
    loss = results["isolated/loss"]
    assert failing_items(loss)[0] == "regularizer, group biases"
    assert "regularizer, group kernels" not in failing_items(loss)
    assert {"regularizer, tensor conv2d/bias", "regularizer, tensor dense_2/bias"} <= set(failing_items(loss))
    hint = hints_at(loss)["regularizer"]
    assert "L2 placement" in hint.hypothesis and "biases" in hint.evidence


def _shortcut_from_activated(unit):
    """A WRN unit (later units: identity shortcut) whose shortcut reads the activated input, not the raw one."""
    def forward(self, x):
        activated = F.relu(self.bn1(x))
        return activated + self.conv2(F.relu(self.bn2(self.conv1(activated))))
    unit.forward = types.MethodType(forward, unit)


def _statistics_without_gradient(bn):
    """Batch statistics computed outside autograd (a BN whose mean and variance carry no gradient)."""
    def forward(self, x):
        if not self.training:
            return nn.BatchNorm2d.forward(self, x)
        with torch.no_grad():
            nn.BatchNorm2d.forward(self, x)  # moves the running statistics
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        normalised = (x - mean) / torch.sqrt(var + self.eps)
        return normalised * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
    bn.forward = types.MethodType(forward, bn)


@pytest.fixture(scope="module")
def wrn_slips():
    def edit(model):
        _shortcut_from_activated(model.groups[0][1])
        _statistics_without_gradient(model.groups[1][1].bn2)
        model.groups[2][1].bn1.momentum = 0.9  # TF's decay passed as torch's momentum
    return by_check(audit_problem(port_with(edit), "svhn_wrn164", "float64", checks=["forward"], isolate=True))


def test_residual_shortcut_source_named_at_its_block(wrn_slips):
    forward = wrn_slips["isolated/forward"]
    assert failing_items(forward) == ["unit_1_1"]
    assert "shortcut" in hints_at(forward)["unit_1_1"].hypothesis


def test_bn_statistics_without_gradient_named_in_the_isolated_backward(wrn_slips):
    gradients = wrn_slips["isolated/gradients"]
    differing = failing_items(gradients)
    # The BN's own gamma and beta get the right gradients; what flows into the conv before it does not.
    assert "unit_2_1/conv2d (gradient into its output)" in differing
    assert not [item for item in differing if item.startswith("unit_2_1/batch_normalization_1/")]
    assert not [item for item in differing if item.startswith(("unit_3", "fully-connected"))]


def test_bn_momentum_ratio_hint(wrn_slips):
    train = wrn_slips["isolated/train_mode"]
    assert "unit_3_1/batch_normalization/moving_mean" in failing_items(train)
    hint = hints_at(train)["unit_3_1/batch_normalization/moving_mean"]
    assert "momentum not converted" in hint.hypothesis and "= 9.0000" in hint.evidence


class _StraightThroughReLU(torch.autograd.Function):
    """ReLU forward, derivative 1 everywhere: an activation with a wrong derivative."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad


def test_wrong_activation_derivative_localised_in_both_gradient_checks():
    def edit(model):
        model.hidden[1][1] = _Apply(_StraightThroughReLU.apply)
    results = by_check(audit_problem(port_with(edit), "mnist_mlp", "float64", checks=["gradients", "step/sgd"],
                                     isolate=True))
    # Backward order: the diverging parameter closest to the loss first (creation order would give dense/kernel).
    assert results["gradients"].first_divergence.item == "dense_1/bias"
    assert failing_items(results["isolated/gradients"]) == ["dense_1/bias", "dense_1/kernel",
                                                            "dense (gradient into its output)"]
    assert results["isolated/forward"].passed and results["isolated/train_mode"].passed
    # The SGD step on the port's (wrong) gradients is explained by them: not judged, and not a pass.
    assert results["step/sgd"].verdict == "not judged (gradients differ)"
    assert results["step/sgd (reference gradients)"].verdict == "pass"


class _Apply(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


def test_sign_flips_are_not_round_off_when_the_layers_differ():
    def edit(model):
        model.pool1[0] = nn.MaxPool2d(3, 2, padding=1)
    [result] = audit_problem(port_with(edit), "cifar10_3c3d", "float32", checks=["gradients"])
    assert not result.passed
    assert any("not attributed to round-off" in note or "more than round-off explains" in note
               for note in result.notes), result.notes
    assert not any("(round-off at" in note for note in result.notes)


def test_stock_adam_gets_the_epsilon_hint():
    optimizers = dict(deepobs_port().optimizers, adam=lambda params, lr: torch.optim.Adam(params, lr=lr))
    results = by_check(audit_problem(port_with(optimizers=optimizers), "mnist_mlp", "float64",
                                     checks=["step/adam"], isolate=False))
    assert not results["step/adam (reference gradients)"].hints  # hints come with the diagnosis
    results = by_check(audit_problem(port_with(optimizers=optimizers), "mnist_mlp", "float64",
                                     checks=["step/adam"], isolate=True))
    [hint] = results["step/adam (reference gradients)"].hints
    assert "epsilon" in hint.hypothesis and "correlation" in hint.evidence


@pytest.mark.parametrize("problem", ["cifar100_allcnnc", "svhn_wrn164", "cifar10_3c3d"])
def test_faithful_port_isolates_clean_and_gets_no_hint(problem):
    results = by_check(audit_problem(deepobs_port(), problem, "float64", checks=["loss"], isolate=True))
    for check in ("isolated/forward", "isolated/train_mode", "isolated/gradients", "isolated/loss"):
        assert results[check].passed and not results[check].hints, (check, failing_items(results[check]))
    if problem == "cifar10_3c3d":
        assert adam_epsilon(build_pair(deepobs_port(), problem, "float64", 0)) == []


def test_a_step_passing_only_within_failed_gradients_is_not_judged():
    explained = Comparison("step1 w (update)", 1.0, 0.5, 1e-10, True, "error within the propagated gradient difference")
    gradients = CheckResult("p", "gradients", "float64", [Comparison("w", 1.0, 0.5, 1e-10, False)])
    own = CheckResult("p", "step/sgd", "float64", [explained])
    fed = CheckResult("p", "step/sgd (reference gradients)", "float64", [Comparison("step1 w (update)", 0, 0, 1e-10,
                                                                                    True)])
    mark_unjudged_steps([gradients, own, fed])
    assert own.verdict == "not judged (gradients differ)" and fed.verdict == "pass"
    own_alone = CheckResult("p", "step/sgd", "float64", [explained])
    mark_unjudged_steps([CheckResult("p", "gradients", "float64", [Comparison("w", 0, 0, 1e-10, True)]), own_alone])
    assert own_alone.verdict == "pass"  # gradients agree: an explained float32 Adam step stays a pass


def test_taps_with_a_function_after_the_module(monkeypatch):
    """A map row whose module is followed by a functional activation (`then`): compared through it, forced
    (relu is idempotent), its backward fed through it; a wrong derivative of that activation is still named."""
    from parity import maps
    from parity.maps import ProblemMap, TapRow

    @dataclasses.dataclass(frozen=True)
    class ThenRow(TapRow):
        then: str | None = None

    monkeypatch.setattr(maps, "THEN_FUNCTIONS", {"relu": lambda x: x.clamp_min(0)}, raising=False)
    base = maps.MAPS["mnist_mlp"]
    taps = tuple(ThenRow(row.reference, f"{row.port}.0", "relu") if row.port.startswith("hidden") else row
                 for row in base.taps)
    weight_maps = dict(maps.MAPS, mnist_mlp=ProblemMap(base.params, taps))
    faithful = by_check(audit_problem(port_with(weight_maps=weight_maps), "mnist_mlp", "float64", checks=["forward"],
                                      isolate=True))
    for check in ("isolated/forward", "isolated/train_mode", "isolated/gradients"):
        assert faithful[check].passed, (check, failing_items(faithful[check]))
    assert not faithful["isolated/forward"].notes  # every row forced

    def edit(model):
        model.hidden[1][1] = _Apply(_StraightThroughReLU.apply)
    buggy = by_check(audit_problem(port_with(edit, weight_maps=weight_maps), "mnist_mlp", "float64",
                                   checks=["forward"], isolate=True))
    assert failing_items(buggy["isolated/gradients"]) == ["dense_1 (gradient into its output)"]
