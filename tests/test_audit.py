"""Every registered problem passes every check against the reference (float64: round-off only).

`tox -e parity` audits float32 too; here each (problem, check) is its own test id.
"""
import dataclasses
import functools

import numpy as np
import torch

import pytest

from parity.audit import audit_problem
from parity.checks import CHECKS
from parity.port import deepobs_port
from parity.tolerances import TOLERANCES
from deepobs.problems import PROBLEMS
from parity.audit import DEEP_PROBLEMS

pytestmark = pytest.mark.parity

# The deep problems cost minutes and GBs per audit: their tests carry the `deep` marker (tox -e deep).
LIGHT_PROBLEMS = [p for p in sorted(PROBLEMS) if p not in DEEP_PROBLEMS]
DEEP = [pytest.param(p, marks=pytest.mark.deep) for p in sorted(DEEP_PROBLEMS)]


@functools.lru_cache(maxsize=None)
def audited(problem: str, dtype: str) -> dict:
    return {result.check: result for result in audit_problem(deepobs_port(), problem, dtype)}


CHECK_NAMES = [name for check in CHECKS for name in
               ([check] if not check.startswith("step/") else [check, f"{check} (reference gradients)"])]


@pytest.mark.parametrize("check", CHECK_NAMES)
@pytest.mark.parametrize("problem", LIGHT_PROBLEMS + DEEP)
def test_check_passes_in_float64(problem, check):
    result = audited(problem, "float64")[check]
    assert not result.error, result.error
    first = result.first_divergence
    assert result.passed, f"first divergence at {first.item}: rel {first.max_rel:.2e} {first.note}"
    if result.not_applicable:  # never silently skipped: the result says why
        assert not result.comparisons and result.verdict == "n/a"
    else:
        assert result.comparisons, "a check that compared nothing"


@pytest.mark.parametrize("problem", LIGHT_PROBLEMS + DEEP)
def test_carried_state_applies_exactly_to_stateful_problems(problem):
    result = audited(problem, "float64")["carried_state"]
    if PROBLEMS[problem].family.stateful:
        items = [c.item for c in result.comparisons]
        assert not result.not_applicable and any(item.startswith("batch2 ") for item in items)
        assert "batch2 rnn/multi_rnn_cell/cell_1/state" in items and "batch2 embedding" in items
    else:
        assert result.not_applicable == "the model carries no state from one batch to the next"


def test_float64_tolerances_are_round_off():
    assert all(value <= 1e-10 for (kind, dtype), value in TOLERANCES.items() if dtype == "float64")


def test_forward_compares_every_layer_not_only_logits():
    result = audited("svhn_wrn164", "float64")["forward"]
    items = [c.item for c in result.comparisons]
    assert items[0] == "conv2d" and items[-3:] == ["logits", "untapped logits", "trainable parameters"]
    assert "unit_2_0/conv2d" in items and "unit_3_1" in items and len(items) > 30


def test_a_bug_on_the_path_only_an_unhooked_model_runs_fails_forward_at_the_untapped_output(monkeypatch):
    """The taps' hooks make the port's fast paths step aside (2c2d's blocked evaluation here), so the tapped
    layers all pass; the untapped pass runs the path the runner does and catches its planted slip: the ReLU
    after each pool forgotten on the blocked layout."""
    import torch.nn.functional as F
    from deepobs.models import cnn_2c2d

    def blocked_without_relu(stages, x):
        h = x.contiguous().to_mkldnn()
        for (conv,), _ in stages:
            h = F.max_pool2d(torch.mkldnn_convolution(h, conv.weight.contiguous(), conv.bias, [2, 2], [1, 1], [1, 1],
                                                      1), 2, 2)
        return h.to_dense()
    monkeypatch.setattr(cnn_2c2d, "conv_pool_relu_blocked", blocked_without_relu)
    [forward] = audit_problem(deepobs_port(), "mnist_2c2d", "float32", checks=["forward"])
    assert not forward.passed and forward.first_divergence.item == "untapped logits"
    assert all(c.passed for c in forward.comparisons if not c.item.startswith("untapped "))


def test_an_equivalent_rewrite_of_the_untapped_path_passes_forward(monkeypatch):
    """The same blocked path with each ReLU before its pool (the original's order; max and ReLU commute): equal
    values, so the untapped outputs pass as the tapped ones do."""
    import torch.nn.functional as F
    from deepobs.models import cnn_2c2d
    calls = []

    def blocked_relu_first(stages, x):
        calls.append(len(stages))
        h = x.contiguous().to_mkldnn()
        for (conv,), _ in stages:
            h = F.max_pool2d(torch.relu(torch.mkldnn_convolution(h, conv.weight.contiguous(), conv.bias, [2, 2],
                                                                 [1, 1], [1, 1], 1)), 2, 2)
        return h.to_dense()
    monkeypatch.setattr(cnn_2c2d, "conv_pool_relu_blocked", blocked_relu_first)
    [forward] = audit_problem(deepobs_port(), "mnist_2c2d", "float32", checks=["forward"])
    assert calls == [2] and forward.passed
    assert "untapped logits" in [c.item for c in forward.comparisons]


def test_forward_states_the_trainable_parameter_count_of_both_frameworks():
    count = audited("svhn_wrn164", "float64")["forward"].comparisons[-1]
    assert count.item == "trainable parameters" and count.passed
    assert count.note == "port 2,748,890, reference 2,748,890"  # the spec table's count for svhn_wrn164


def test_a_missing_parameter_fails_the_count():
    def build_model(problem, base=deepobs_port().build_model):
        model = base(problem)
        model.fc3.bias.requires_grad_(False)  # frozen: the original trains it
        return model

    port = dataclasses.replace(deepobs_port(), build_model=build_model)
    [forward] = audit_problem(port, "cifar10_3c3d", "float64", checks=["forward"])
    assert not forward.passed and forward.first_divergence.item == "trainable parameters"


def test_unknown_problem_is_refused():
    from parity.audit import UnknownProblemError, resolve_problems

    with pytest.raises(UnknownProblemError, match="valid names: .*svhn_wrn164"):
        resolve_problems(deepobs_port(), ["nope"])


@pytest.mark.parametrize("problem", LIGHT_PROBLEMS + DEEP)
def test_weights_port_both_ways(problem):
    from parity.audit import build_pair
    from parity.porting import port_to_reference

    pair = build_pair(deepobs_port(), problem, "float64", seed=3)
    shapes = {name: tuple(v.shape) for name, v in pair.reference.graph.variables.items()}
    back = port_to_reference(pair.model, shapes, pair.problem_map)
    assert set(back) == set(pair.audit_values)
    for name, value in pair.audit_values.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_report_states_the_stock_adam_difference():
    notes = audited("cifar10_3c3d", "float64")["step/adam (reference gradients)"].notes
    assert any("torch.optim.Adam" in note for note in notes)


def test_an_error_inside_a_check_keeps_its_traceback():
    import dataclasses

    def broken_loss(problem, model, logits, labels):
        raise ZeroDivisionError("inside the port's loss")

    port = dataclasses.replace(deepobs_port(), loss_terms=broken_loss)
    [result] = audit_problem(port, "mnist_logreg", "float64", checks=["loss"])
    assert not result.passed and result.error == "ZeroDivisionError: inside the port's loss"
    assert "Traceback" in result.traceback and "broken_loss" in result.traceback
    assert "broken_loss" in result.to_dict()["traceback"]


class _ViewAfterConv2C2D(torch.nn.Module):
    """A foreign port's 2c2d: plain NCHW modules, `.view` to flatten (needs standard strides)."""

    def __init__(self):
        super().__init__()
        from deepobs.models.cnn_2c2d import TwoC2D

        self.inner = TwoC2D(10).to(memory_format=torch.contiguous_format)

    def forward(self, x):
        inner = self.inner
        x = inner.pool2(inner.conv2(inner.pool1(inner.conv1(x))))
        return inner.fc2(inner.fc1(x.view(x.size(0), -1)))

    def l2_parameters(self):
        return []


def test_one_channel_inputs_reach_the_port_as_a_dataloader_yields_them():
    import dataclasses

    from parity.maps import ParamRow, ProblemMap, TapRow

    base = deepobs_port().weight_maps["mnist_2c2d"]
    problem_map = ProblemMap(tuple(ParamRow(f"inner.{r.port}", r.reference, r.transform, r.args) for r in base.params),
                             tuple(TapRow(r.reference, f"inner.{r.port}") for r in base.taps))
    port = dataclasses.replace(
        deepobs_port(), name="view-port", build_model=lambda problem: _ViewAfterConv2C2D(),
        loss_terms=lambda problem, model, logits, labels: (
            torch.nn.functional.cross_entropy(logits, labels), torch.zeros((), dtype=logits.dtype)),
        weight_maps={"mnist_2c2d": problem_map})
    results = audit_problem(port, "mnist_2c2d", "float64", checks=["forward", "gradients"])
    assert all(r.passed for r in results), [(r.check, r.error, r.first_divergence) for r in results]


@pytest.mark.deep
def test_inception_aux_head_is_compared_in_inference_and_train_mode():
    results = audited("imagenet_inception_v3", "float64")  # shared with the per-check tests above
    aux_layers = {"aux_head/average_pooling2d", "aux_head/conv2d", "aux_head/batch_normalization",
                  "aux_head/conv2d_1", "aux_head/batch_normalization_1", "aux_head/dense", "output/dropout"}
    for check in ("forward", "train_mode"):
        assert aux_layers <= {c.item for c in results[check].comparisons}, check
    train_mode = {c.item for c in results["train_mode"].comparisons}
    assert {"train data_loss", "train total_loss", "aux_head/batch_normalization_1/moving_variance"} <= train_mode


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_every_problem_has_a_weight_map_naming_real_port_tensors(problem):
    # Cheap for the deep problems too (the model is built on the meta device): their full audits
    # are deep-marked, so this is what keeps their maps from breaking unnoticed in the light suite.
    from parity.maps import MAPS, ProblemMap
    from parity.porting import port_tensors

    problem_map = MAPS[problem]
    assert isinstance(problem_map, ProblemMap) and problem_map.params
    with torch.device("meta"):
        model = PROBLEMS[problem].build_model()
    tensors = port_tensors(model)
    modules = dict(model.named_modules())
    assert [row.port for row in problem_map.params if row.port not in tensors] == []
    assert [row.port for row in problem_map.taps if row.port not in modules] == []
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable <= {row.port for row in problem_map.params}


def test_sync_restores_every_written_tensor_and_skips_only_untouched_parameters():
    # sync() leaves out port parameters whose version counter says they still hold the audit weights; a
    # write in place, a BN forward (running statistics move without a version bump) and a write through
    # .data announced by parameters_changed() must all be undone by the next sync.
    from parity.audit import build_pair
    from parity.porting import port_tensors, to_port_values

    pair = build_pair(deepobs_port(), "svhn_wrn164", "float64", seed=0)
    audit = to_port_values(pair.audit_values, pair.model, pair.problem_map)
    tensors = port_tensors(pair.model)
    parameters = dict(pair.model.named_parameters())
    assert pair.unchanged_parameters() == set(parameters)

    first, last = list(parameters)[0], list(parameters)[-1]
    with torch.no_grad():
        tensors[first].add_(1.0)  # in place: the version counter moves
        tensors[last].data.mul_(2.0)  # through .data: it does not
    pair.parameters_changed()
    pair.model.train()
    pair.model(*pair.batches[0].port_inputs(torch.float64))  # BN running statistics move
    statistics = [name for name in tensors if name.endswith("running_mean")]
    assert any(not np.array_equal(tensors[name].numpy(), audit[name]) for name in statistics)
    pair.sync()
    for name, value in audit.items():
        np.testing.assert_array_equal(tensors[name].detach().numpy(), value, err_msg=name)

    with torch.no_grad():
        tensors[first].sub_(1.0)
    assert pair.unchanged_parameters() == set(parameters) - {first}
    pair.sync()
    np.testing.assert_array_equal(tensors[first].detach().numpy(), audit[first])
    # The reference side is always loaded whole.
    for name, variable in pair.reference.graph.variables.items():
        np.testing.assert_array_equal(variable.numpy(), pair.audit_values[name], err_msg=name)


def test_large_model_step_samples_are_port_elements_with_their_own_gradients(monkeypatch):
    # step_pair's samples (a large model's optimizer steps): each sampled weight is an element of its port
    # tensor, and both sampled gradients are that same element's (the dense after a flatten permutes the
    # layouts, so an index taken in one layout and applied in the other would pair wrong values).
    from parity import checks
    from parity.audit import build_pair
    from parity.porting import port_tensors, to_port_layout

    monkeypatch.setattr(checks, "STEP_SAMPLE_ELEMENTS", 50)
    pair = build_pair(deepobs_port(), "mnist_2c2d", "float64", seed=0)
    pair.fixed_step_gradients = True
    sampled = checks.step_pair(pair)
    gradients = checks.gradients_at_audit_weights(pair, 0)
    tensors = port_tensors(pair.model)
    for name, row in pair.trainable_rows():
        port_flat = tensors[row.port].detach().numpy().reshape(-1)
        order = np.argsort(port_flat)
        positions = order[np.searchsorted(port_flat, sampled.audit_values[name], sorter=order)]
        np.testing.assert_array_equal(port_flat[positions], sampled.audit_values[name], err_msg=name)
        assert len(set(positions)) == min(50, port_flat.size)
        for kind in ("reference", "port"):
            expected = to_port_layout(row, getattr(gradients, kind)[name]).reshape(-1)[positions]
            np.testing.assert_array_equal(getattr(sampled.gradient_cache[0], kind)[name], expected, err_msg=name)



def test_parallel_audit_runs_each_large_problem_in_a_worker_started_ahead(monkeypatch):
    # The orchestration of run_audit_parallel: light problems in one worker per dtype, then each "large"
    # problem (here every model counts as large) in its own worker, started while the previous one runs
    # its initialisers. Every problem and dtype comes back once, with the initialisers of each.
    import parity.audit as audit

    monkeypatch.setattr(audit, "split_heavy", lambda port, problems: (problems[:1], problems[1:]))
    problems = ["two_d_beale", "two_d_branin", "two_d_rosenbrock"]
    run = audit.run_audit_parallel(None, problems, ["float32", "float64"], checks=["loss", "init"])
    assert sorted(run.seconds) == sorted([f"{p} {d}" for p in problems for d in ("float32", "float64")] + ["init"])
    assert sorted((r.problem, r.check, r.dtype) for r in run.results) == sorted(
        [(p, "loss", d) for p in problems for d in ("float32", "float64")] + [(p, "init", "float32") for p in problems])
    assert run.passed
