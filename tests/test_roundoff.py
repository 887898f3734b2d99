"""Telling float32 round-off from porting slips (parity.roundoff): kink cuts, max-pool ties, the envelope."""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from parity.audit import audit_problem
from parity.frameworks import load_tensorflow
from parity.port import deepobs_port
from parity.results import Comparison, compare
from parity.roundoff import (ENVELOPE_FACTOR, MAX_CUT_FRACTION, EnvelopeJudge, cut_masks, cut_port_gradients,
                             cut_reference_gradients, flip_masks, max_pool_gaps, plan_cuts, sign_masks)

tf = load_tensorflow()


def test_flips_and_near_zero_elements_are_cut():
    reference = {"layer": np.array([[1.0, -1e-7, 0.5, 2e-7, -3.0]])}
    port = np.array([[1.0 + 1e-7, 1e-7, 0.5, 2e-7, -3.0]])  # one flip; max difference 2e-7
    signs = sign_masks(reference, lambda name: port)
    assert flip_masks(signs)["layer"].tolist() == [[False, True, False, False, False]]
    # within 2 x 2e-7 of 0 in the reference: the flipped element and 2e-7, which the exact result may flip
    assert cut_masks(signs, {})["layer"].tolist() == [[False, True, False, True, False]]


def test_elements_exactly_0_in_both_are_not_cut():
    # a ReLU's output: its zeros pass no gradient in either framework, cut or not
    reference = {"relu": np.array([0.0, 0.0, 3e-7, 1.0, 0.0])}
    port = np.array([0.0, 1e-7, 3e-7, 1.0 + 2e-7, 0.0])
    assert cut_masks(sign_masks(reference, lambda name: port), {})["relu"].tolist() == [False, True, True, False,
                                                                                      False]


def test_a_max_pool_over_zeros_is_not_cut_a_near_tie_is():
    inputs = np.zeros((1, 2, 4, 1))
    inputs[0, :, 2:, 0] = [[3.0, 3.0 + 1e-7], [0.0, 0.0]]  # the second window: a near-tie of 3.0
    reference = {"pool": np.array([0.0, 3.0 + 1e-7]).reshape(1, 1, 2, 1)}
    port = reference["pool"] + np.array([0.0, 1e-7]).reshape(1, 1, 2, 1)
    pools = {"pool": (tf.constant(inputs), 2, 2, "VALID")}
    assert cut_masks(sign_masks(reference, lambda name: port), pools)["pool"].ravel().tolist() == [False, True]


def test_a_cut_beyond_the_round_off_bound_is_refused_and_the_widest_tap_named():
    rng = np.random.default_rng(0)
    reference = {"wide": rng.normal(size=10_000), "narrow": rng.normal(size=10_000)}
    reference["narrow"][0] = 1e-8  # within round-off of 0: cut
    # a difference of 0.13 at "wide" puts a fifth of its elements within 2x of 0
    ports = {"wide": reference["wide"] + 0.13, "narrow": reference["narrow"] + 1e-7}
    plan = plan_cuts(sign_masks(reference, ports.get), {}, reference)
    assert plan.too_wide and plan.cut > 0.1 * plan.tapped / 2
    assert "the largest share at wide: " in plan.describe()
    ports["wide"] = reference["wide"] + 1e-7  # round-off-sized everywhere
    narrow_plan = plan_cuts(sign_masks(reference, ports.get), {}, reference)
    assert narrow_plan.cut == 1 and not narrow_plan.too_wide
    assert MAX_CUT_FRACTION * narrow_plan.tapped > 1


def test_a_tap_the_port_lacks_is_not_cut():
    assert cut_masks(sign_masks({"layer": np.array([-1.0, 1.0])}, lambda name: None), {}) == {}


def test_max_pool_gaps_are_the_two_largest_inputs_of_each_window():
    x = np.zeros((1, 4, 4, 1))
    x[0, :2, :2, 0] = [[5.0, 1.0], [4.9, 0.0]]
    x[0, :2, 2:, 0] = [[3.0, 3.0], [0.0, 0.0]]  # a tie
    x[0, 2:, :, 0] = -np.arange(8.0).reshape(2, 4)
    gaps = max_pool_gaps(tf.constant(x), 2, 2, "VALID")
    np.testing.assert_allclose(gaps[0, :, :, 0], [[0.1, 0.0], [1.0, 1.0]], atol=1e-12)


def test_same_padding_never_counts_as_a_window_input():
    x = -np.ones((1, 3, 3, 1))
    x[0, 2, 2, 0] = -0.5  # the last window holds it alone (padding beyond): no second input at -1
    gaps = max_pool_gaps(tf.constant(x), 2, 2, "SAME")
    assert gaps[0, 1, 1, 0] > 1  # against the shifted padding, not a tie with 0


def test_cut_port_gradients_stops_the_gradient_at_exactly_the_masked_elements():
    model = nn.Sequential(nn.Linear(3, 4, bias=False))
    model[0].weight.data = torch.eye(4, 3, dtype=torch.float64)
    model.double()
    mask = np.array([[True, False, False, False]])
    x = torch.ones(1, 3, dtype=torch.float64)
    with cut_port_gradients(model, {"0": mask}):
        model(x).sum().backward()
    assert model[0].weight.grad[0].abs().sum() == 0 and model[0].weight.grad[1:].abs().sum() > 0


def test_cut_reference_gradients_stops_the_gradient_at_exactly_the_masked_elements():
    from tf_reference.layers import Graph

    graph = Graph(tf.float64)
    x = tf.Variable(np.ones((1, 4)))
    with tf.GradientTape() as tape, cut_reference_gradients(graph, {"layer": np.array([[False, True, False, False]])}):
        y = graph.tap("layer", 3.0 * x)
        loss = tf.reduce_sum(y)
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), [[3.0, 0.0, 3.0, 3.0]])
    assert graph.gradient_cuts == {}


def _failed(item):
    return Comparison(item, 1.0, 1.0, 1e-5, False)


def test_envelope_passes_a_port_as_accurate_as_the_float32_reference():
    exact = np.array([1.0, 2.0])
    judged = EnvelopeJudge({"t": exact}).rejudge(_failed("t"), exact + [2e-5, 0], exact + [0, 1e-5])
    assert judged.passed and "ratio 2.00" in judged.note  # RMS: sqrt(mean(e^2)) halves alike on both sides


def test_envelope_fails_a_port_far_less_accurate_than_the_float32_reference():
    exact = np.array([1.0, 2.0])
    judged = EnvelopeJudge({"t": exact}).rejudge(_failed("t"), exact + [1e-3, 0], exact + [0, 1e-5])
    assert not judged.passed and f"> {ENVELOPE_FACTOR:g}" in judged.note


def test_envelope_leaves_passed_and_unknown_items_alone():
    judge = EnvelopeJudge({})
    assert judge.rejudge(_failed("other"), 1.0, 1.0) == _failed("other")


@pytest.mark.parity
def test_a_planted_bn_epsilon_is_not_rescued_by_the_float32_envelope():
    # BN epsilon 1e-3 (the original's is 1e-5 in WRN): far outside what float32 round-off explains.
    def build_model(problem, base=deepobs_port().build_model):
        model = base(problem)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = 1e-3
        return model

    port = dataclasses.replace(deepobs_port(), build_model=build_model)
    results = {r.check: r for r in audit_problem(port, "svhn_wrn164", "float32", checks=["train_mode"])}
    first = results["train_mode"].first_divergence
    assert first.item == "unit_1_0/batch_normalization"
    assert "envelope" in first.note and f"> {ENVELOPE_FACTOR:g}" in first.note


@pytest.mark.deep
@pytest.mark.parametrize("problem", ["cifar100_wrn404", "imagenet_inception_v3"])
def test_deep_bn_nets_pass_float32_gradients_and_train_mode_through_cuts_and_envelope(problem):
    results = {r.check: r for r in audit_problem(deepobs_port(), problem, "float32",
                                                 checks=["gradients", "train_mode"])}
    assert results["gradients"].passed and results["train_mode"].passed
    assert any("cut in both frameworks" in note for note in results["gradients"].notes)


@pytest.mark.parity
def test_a_cut_wider_than_the_bound_leaves_the_kink_flips_in_the_comparison(monkeypatch):
    # WRN-40-4 in float32 flips a few ReLU kinks on batch 0 (README "The deep problems"); with no cut allowed,
    # the gradients are compared as they are, and the first to differ is a parameter of a layer whose output
    # flipped (here: unit_3_5/batch_normalization_1/beta under a flip at unit_3_5/batch_normalization_1).
    monkeypatch.setattr("parity.roundoff.MAX_CUT_FRACTION", 0.0)
    result, = audit_problem(deepobs_port(), "cifar100_wrn404", "float32", checks=["gradients"])
    refusal, = [note for note in result.notes if "would be cut" in note]
    assert "more than 0 of the tapped elements" in refusal and "compared as they are" in refusal
    flipped_layers = refusal.split(" at ", 1)[1].split("; with", 1)[0]
    assert not result.passed and result.first_divergence.item.rsplit("/", 1)[0] + " (" in flipped_layers


def test_an_error_explained_by_the_gradient_difference_passes_with_its_share_of_the_allowance():
    reference = np.array([1.0, 2.0, 4.0])
    port = reference + np.array([0.0, 0.5, 0.1])  # max_rel 0.125, far beyond the tolerance
    plain = compare("step1 w (update)", port, reference, 1e-6)
    assert not plain.passed and not plain.note
    explained = compare("step1 w (update)", port, reference, 1e-6, explained_error=lambda: np.array([0.0, 1.0, 1.0]))
    assert explained.passed and explained.max_rel == plain.max_rel
    assert explained.note == "error within the propagated gradient difference (up to 50% of the allowance)"
    beyond = compare("step1 w (update)", port, reference, 1e-6, explained_error=lambda: np.array([0.0, 0.4, 1.0]))
    assert not beyond.passed  # one element's error beyond what the gradient difference explains
