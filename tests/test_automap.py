"""Auditing a port that brings no maps: parity.automap's proposals, parity.describe, declared deviations,
renamed problems, --checks, and an independent mini port (tests/foreign_port.py) audited end to end."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepobs.problems import PROBLEMS
from parity.audit import CHECK_NAMES, DEEP_PROBLEMS, audit_problem, run_audit
from parity.automap import AmbiguousMapError, infer_map, trace_port
from parity.cli import main
from parity.describe import describe
from parity.maps import MAPS
from parity.mutants import Call
from parity.port import Port, load_port
from parity.report import summary, to_markdown, verdict_line

pytestmark = pytest.mark.parity


def _last_call(calls, module):
    return max((c for c in calls if c.module == module), key=lambda c: c.end)


def _same_tensor(calls, a: str, b: str) -> bool:
    """Two modules output the same tensor: one is a container that returns the other's output unchanged
    (it holds it, ends right after it, and nothing else finishes in between)."""
    if a == b:
        return True
    first, second = _last_call(calls, a), _last_call(calls, b)
    outer, inner = (first, second) if first.start < second.start else (second, first)
    between = [c for c in calls if inner.end < c.end < outer.end]
    return outer.end > inner.end and outer.shape == inner.shape and not between


@pytest.mark.parametrize("problem", [pytest.param(p, marks=pytest.mark.deep) if p in DEEP_PROBLEMS else p
                                     for p in PROBLEMS])
def test_inferred_map_is_the_hand_written_one(problem):
    """The map inferred for this repository's port equals parity.maps' (tap rows up to a container that
    returns its child's output): weights by kind, shape and order, taps from a traced forward pass."""
    build = lambda name: PROBLEMS[name].build_model()  # noqa: E731
    inferred = infer_map(build, problem).problem_map
    hand = MAPS[problem]
    assert sorted(inferred.params, key=repr) == sorted(hand.params, key=repr)
    assert inferred.uncompared == ()
    calls = trace_port(build, problem)
    inferred_taps = {row.reference: row for row in inferred.taps}
    assert set(inferred_taps) == {row.reference for row in hand.taps}
    for row in hand.taps:
        assert inferred_taps[row.reference].then == row.then
        assert _same_tensor(calls, inferred_taps[row.reference].port, row.port), (row, inferred_taps[row.reference])


@pytest.mark.parametrize("flatten, transform, note", [
    (lambda x: x.flatten(1), "dense_after_flatten", "NCHW order (torch.flatten(x, 1))"),
    (lambda x: x.permute(0, 2, 3, 1).flatten(1), "dense", "NHWC order, as the reference"),
    (lambda x: x.transpose(2, 3).flatten(1), "dense_after_flatten", "neither flatten order"),
])
def test_the_flatten_order_is_read_off_a_forward_pass(flatten, transform, note):
    """fc1 reads pool2's 64 x 7 x 7 map: rows permuted for an NCHW flatten, a plain transpose for an NHWC one
    (the reference's own order), and the NCHW default, said so, for an order that is neither."""
    def build(name):
        model = PROBLEMS[name].build_model()
        model.flatten = Call(lambda x, module: flatten(x))
        return model
    inferred = infer_map(build, "mnist_2c2d")
    [kernel] = [row for row in inferred.problem_map.params if row.port == "fc1.0.weight"]
    assert kernel.transform == transform
    assert any(note in line for line in inferred.notes if line.startswith("dense:")), inferred.notes


def test_check_names_are_the_checks():
    from parity.checks import CHECKS

    assert list(CHECK_NAMES) == [*CHECKS, "init"]


# --- describe ------------------------------------------------------------------

def test_describe_says_where_each_tap_is_taken():
    cnn = describe("cifar10_3c3d")
    assert cnn.tap("conv2d").what == "after the activation (relu)"
    assert cnn.tap("dense_2").what == "no activation"
    assert cnn.tap("dense").dense_input == (128, 3, 3)
    assert cnn.tap("dense_1").dense_input is None
    l2 = {v.name: v.l2 for v in cnn.variables}
    assert l2["conv2d/kernel"] == 0.002 and l2["dense_2/kernel"] == 0.002 and l2["conv2d/bias"] is None
    wrn = describe("svhn_wrn164")
    assert wrn.tap("unit_1_0/batch_normalization").what == "batch norm output, before any activation"
    assert wrn.tap("unit_1_0").kind == "tap"
    assert not next(v for v in wrn.variables if v.name.endswith("moving_mean")).trainable
    vae = describe("mnist_vae")
    assert vae.tap("decoder/dense_2").activation == "sigmoid" and vae.tap("encoder/conv2d").activation == "lrelu"
    assert vae.tap("encoder/dense_1").dense_input == (64, 7, 7)  # std_dev reads the flattened map too
    assert describe("mnist_mlp").tap("dense").dense_input is None  # one channel: NHWC order = NCHW order


def test_describe_command(capsys):
    assert main(["describe", "mnist_2c2d"]) == 0
    out = capsys.readouterr().out
    assert "conv2d/kernel" in out and "(5, 5, 1, 32)" in out and "after the activation (relu)" in out
    assert main(["describe", "mnist_resnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mnist_resnet" in err


# --- ambiguities -----------------------------------------------------------------

class _RawLogreg(nn.Module):
    """A dense layer as raw parameters used as x @ w: the kernel is stored [in, out], as the reference's."""

    def __init__(self, features: int = 784):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(features, 10))
        self.b = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return x.view(x.size(0), -1) @ self.w + self.b


class _ExtraParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(784, 10)
        self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.dense(x.view(x.size(0), -1)) * self.temperature


def _loss(problem, model, logits, labels):
    return F.cross_entropy(logits, labels), torch.zeros((), dtype=logits.dtype)


def test_a_port_parameter_no_reference_variable_fits_is_reported_not_guessed():
    with pytest.raises(AmbiguousMapError, match="port parameters that no reference variable fits: temperature"):
        infer_map(lambda problem: _ExtraParameter(), "mnist_logreg")


def test_raw_dense_parameters_are_mapped_by_layout_and_a_square_kernel_is_ambiguous():
    from parity.automap import infer_params
    from parity.describe import Description, TapInfo, VariableInfo
    from parity.maps import ParamRow

    inferred = infer_map(lambda problem: _RawLogreg(), "mnist_logreg").problem_map
    assert inferred.params == (ParamRow("w", "dense/kernel", "identity"), ParamRow("b", "dense/bias", "identity"))
    [forward] = audit_problem(Port("raw", ["mnist_logreg"], lambda problem: _RawLogreg(), _loss), "mnist_logreg",
                              "float64", checks=["forward"])
    assert forward.passed
    square = Description("square", (VariableInfo("dense/kernel", (10, 10), True, None),
                                    VariableInfo("dense/bias", (10,), True, None)),
                         (TapInfo("dense", (2, 10), "dense", None),))
    with pytest.raises(AmbiguousMapError, match="is square: cannot tell whether port parameter w holds it"):
        infer_params(_RawLogreg(10), square)


def test_ambiguous_port_stops_the_audit_with_one_line(monkeypatch, capsys, tmp_path):
    import sys
    import types

    module = types.ModuleType("ambiguous_port_for_test")
    module.PORT = Port("ambiguous", ["mnist_logreg"], lambda problem: _ExtraParameter(), _loss)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert main(["audit", "--port", f"{module.__name__}:PORT", "--report", str(tmp_path), "--jobs", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot infer a weight map for mnist_logreg" in err and "temperature" in err
    assert main(["suggest-map", "--port", f"{module.__name__}:PORT", "--problem", "mnist_logreg"]) == 1


def test_unknown_check_is_a_usage_error(capsys):
    assert main(["audit", "--checks", "forward", "steps"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'steps'" in err and "valid names: forward" in err


# --- the independent mini port -----------------------------------------------------

FOREIGN = "tests.foreign_port:PORT"


def test_suggest_map_prints_source_that_builds_the_inferred_map(capsys):
    assert main(["suggest-map", "--port", FOREIGN, "--problem", "my_mnist_cnn"]) == 0
    source = capsys.readouterr().out
    assert "TapRow('conv2d', 'first', then='relu')" in source
    assert "dense_rows('hidden', 'dense', after_flatten_chw=(64, 7, 7))" in source
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102 - the printed source is the product under test
    port = load_port(FOREIGN)
    assert namespace["MAP"] == dataclasses.replace(port.weight_maps["mnist_2c2d"], inferred=False)


@pytest.fixture(scope="module")
def foreign_audit():
    """The mini port's float64 audit without init (its declared initialisers are init_check's business); the
    optimizer steps on mnist_mlp only, to keep the suite short (the CLI run in the README has them all)."""
    port = load_port(FOREIGN)
    model_checks = ["forward", "loss", "gradients", "train_mode"]
    run = run_audit(port, ["mnist_mlp"], ["float64"],
                    checks=model_checks + ["step/sgd", "step/momentum", "step/adam", "carried_state"], init=False)
    others = run_audit(port, ["mnist_2c2d", "cifar10_3c3d", "svhn_wrn164"], ["float64"], checks=model_checks,
                       init=False)
    run.problems += others.problems
    run.results += others.results
    return run


def test_an_independent_port_without_maps_passes_with_its_declared_deviations(foreign_audit):
    run = foreign_audit
    assert run.passed, [(r.problem, r.check, r.error, r.first_divergence) for r in run.results if r.counts_as_failure]
    assert {r.problem for r in run.results} == {"mnist_2c2d", "mnist_mlp", "cifar10_3c3d", "svhn_wrn164"}
    declared = {(r.problem, r.check) for r in run.declared}
    assert declared == {("mnist_mlp", "step/adam"), ("mnist_mlp", "step/adam (reference gradients)")}
    assert {r.check for r in run.results if r.problem == "mnist_mlp" and r.passed} >= {"step/sgd", "step/momentum"}
    assert verdict_line(run) == "PASSED with 2 declared deviations"
    markdown = to_markdown(run, {})
    assert "# Parity audit: PASSED with 2 declared deviations" in markdown and "## Declared deviations" in markdown
    assert "uses stock torch.optim.Adam" in markdown and "| declared deviation |" in markdown
    forward = {r.problem: r for r in run.results if r.check == "forward"}
    assert all(any("inferred" in note for note in r.notes) for r in forward.values())
    assert any("'my_mnist_cnn'" in note for note in forward["mnist_2c2d"].notes)
    # The functional ReLUs are compared through then="relu"; the functional pools are left out, and said so.
    assert {"conv2d", "conv2d_1", "dense", "dense_1", "logits"} <= {c.item for c in forward["mnist_2c2d"].comparisons}
    assert any("max_pooling2d, max_pooling2d_1" in note for note in forward["mnist_2c2d"].notes)
    assert "FAIL" not in "\n".join(summary(run))


def test_foreign_port_planted_bug_symmetric_pool_padding_is_named_at_the_next_layer():
    """torch's MaxPool2d(3, 2, padding=1) pads 1/1 where TF 'SAME' pads 0/1: the pool is not tapped (a
    function call), so the first divergence is the conv that reads it."""
    from tests import foreign_port

    class SymmetricPools(foreign_port.ThreeC3D):
        def forward(self, x):
            for conv in self.convs:
                x = F.max_pool2d(F.relu(conv(x)), 3, 2, padding=1)
            x = x.view(x.size(0), -1)
            for fc in self.fcs:
                x = F.relu(fc(x))
            return self.out(x)

    port = dataclasses.replace(foreign_port.PORT, build_model=lambda problem: SymmetricPools())
    [forward] = audit_problem(port, "cifar10_3c3d", "float64", checks=["forward"])
    assert not forward.passed and forward.first_divergence.item == "conv2d_1"


def test_then_is_applied_and_a_missing_then_is_caught():
    """The same port tapped without then="relu": the conv outputs before the ReLU differ from the reference's."""
    from tests import foreign_port

    port = load_port(FOREIGN)
    inferred = port.weight_maps["mnist_2c2d"]
    without_then = dataclasses.replace(inferred, taps=tuple(dataclasses.replace(t, then=None) for t in inferred.taps))
    bare = dataclasses.replace(foreign_port.PORT, weight_maps={"my_mnist_cnn": without_then})
    [forward] = audit_problem(bare, "mnist_2c2d", "float64", checks=["forward"])
    assert not forward.passed and forward.first_divergence.item == "conv2d"


def test_declared_deviation_matching():
    port = Port("p", ["mine"], lambda problem: None, _loss, problem_names={"mine": "mnist_logreg"},
                deviations={"step/adam": "stock Adam", ("mine", "init"): "default init"})
    assert port.declared_deviation("mnist_logreg", "step/adam (reference gradients)") == "stock Adam"
    assert port.declared_deviation("mnist_mlp", "step/adam") == "stock Adam"
    assert port.declared_deviation("mnist_logreg", "init") == "default init"
    assert port.declared_deviation("mnist_mlp", "init") == ""
    assert port.declared_deviation("mnist_logreg", "step/adamax") == ""


def test_a_module_reused_at_several_layers_is_never_tapped():
    """One nn.ReLU and one nn.MaxPool2d instance serve every layer: a hook on them keeps only the last call's
    output, so the conv taps go through then="relu" and the pools stay uncompared; forward passes."""
    from tests import foreign_port

    class SharedModules(foreign_port.MnistCNN):
        def __init__(self):
            super().__init__()
            self.act, self.pool = nn.ReLU(), nn.MaxPool2d(2)

        def forward(self, x):
            x = self.pool(self.act(self.first(x)))
            x = self.pool(self.act(self.second(x)))
            return self.logits(self.act(self.hidden(x.view(x.size(0), -1))))

    inferred = infer_map(lambda problem: SharedModules(), "mnist_2c2d").problem_map
    assert {(t.reference, t.port, t.then) for t in inferred.taps} == {
        ("conv2d", "first", "relu"), ("conv2d_1", "second", "relu"), ("dense", "hidden", "relu"),
        ("dense_1", "logits", None)}
    assert inferred.uncompared == ("max_pooling2d", "max_pooling2d_1")
    port = Port("shared", ["mnist_2c2d"], lambda problem: SharedModules(), foreign_port.loss_terms)
    [forward] = audit_problem(port, "mnist_2c2d", "float64", checks=["forward"])
    assert forward.passed
