"""Initialisation parity (parity/init_check.py): the port's initialisers against the original's, in law.

- every registered problem passes with the default seeds;
- no false alarm on a correct port over 20 further seed sets (slow);
- planted initialisation bugs fail, each on the tensor it plants and by the criterion that should see it;
- the power table in parity/init_check.py, recomputed by simulation (slow; `python tests/test_init.py`
  prints it with more repetitions).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from deepobs.problems import PROBLEMS
from parity.audit import DEEP_PROBLEMS
from parity.frameworks import load_tensorflow
from parity.init_check import (CRITERIA, DEFAULT_SEEDS, MAX_DRAWS, SEEDING_ITEM, TRUNCATED_NORMAL_STD_CORRECTION,
                               Family, Sample, audit_init, check_init, random_outcomes)
from parity.port import Port, deepobs_port
from parity.porting import port_tensors

load_tensorflow()  # before any model is built: TF's thread pools are pinned once

FALSE_ALARM_SEED_SETS = 20


def seed_set(index: int) -> tuple[int, ...]:
    """Seed set 0 is the default; the others start at 1000, 1100, ... so no two sets share a seed."""
    return DEFAULT_SEEDS if index == 0 else tuple(range(900 + 100 * index, 900 + 100 * index + MAX_DRAWS))


def failures(result) -> dict[str, str]:
    return {c.item: c.note for c in result.comparisons if not c.passed}


@pytest.fixture(scope="module")
def port() -> Port:
    return deepobs_port()


LIGHT_PROBLEMS = [p for p in PROBLEMS if p not in DEEP_PROBLEMS]


@pytest.mark.parametrize("problem", LIGHT_PROBLEMS + [pytest.param(p, marks=pytest.mark.deep) for p in DEEP_PROBLEMS])
def test_port_initialisers_match_the_original(port, problem):
    result = check_init(port, problem)
    assert not result.error, result.error
    assert result.check == "init" and result.dtype == "float32"
    assert result.passed, failures(result)
    # Every reference variable is compared, the BN moving statistics (non-trainable) included,
    # then the seeding row.
    assert len(result.comparisons) == len(port.weight_maps[problem].rows_for_reference()) + 1
    assert result.comparisons[-1].item == SEEDING_ITEM


def test_constants_and_families_are_read_from_the_reference(port):
    notes = {c.item: c.note for c in check_init(port, "svhn_wrn164").comparisons}
    assert notes["unit_1_0/batch_normalization/moving_variance"].startswith("expected constant 1;")
    assert notes["unit_1_0/batch_normalization/moving_mean"].startswith("expected constant 0;")
    assert notes["unit_1_0/batch_normalization/gamma"].startswith("expected constant 1;")
    assert notes["conv2d/kernel"].startswith("expected uniform ±0.187")  # sqrt(6 / (27 + 144))
    notes = {c.item: c.note for c in check_init(port, "cifar100_allcnnc").comparisons}
    assert notes["conv2d/bias"].startswith("expected constant 0.1;")
    assert notes["conv2d/kernel"].startswith("expected truncated normal std=0.0539 (cut 2σ)")


def test_check_is_deterministic(port):
    first, second = check_init(port, "cifar10_3c3d"), check_init(port, "cifar10_3c3d")
    assert [(c.max_abs, c.max_rel) for c in first.comparisons] == [(c.max_abs, c.max_rel) for c in second.comparisons]


def test_check_leaves_the_callers_torch_rng_alone(port):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_init(port, "mnist_logreg")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(1, FALSE_ALARM_SEED_SETS + 1))
def test_no_false_alarm_on_the_correct_port(port, index):
    """Each seed set redraws every tensor of every light problem (parity.audit.DEEP_PROBLEMS aside) on both sides."""
    results = audit_init(port, LIGHT_PROBLEMS, seeds=seed_set(index))
    assert all(not r.error for r in results)
    assert {r.problem: failures(r) for r in results if not r.passed} == {}


# --- planted bugs --------------------------------------------------------------------------------

def planted(problem: str, reinit: Callable[[dict[str, torch.Tensor], nn.Module], None]) -> Port:
    """The deepobs port, with `reinit` applied to `problem`'s model after it is built."""
    base = deepobs_port()

    def build_model(name: str) -> nn.Module:
        model = base.build_model(name)
        if name == problem:
            with torch.no_grad():
                reinit(port_tensors(model), model)
        return model

    return dataclasses.replace(base, build_model=build_model)


def _tensor(name: str, init: Callable[[torch.Tensor], object]):
    return lambda tensors, model: init(tensors[name])


PLANTED_BUGS = {
    # id: (problem, re-initialisation, {reference tensor: criteria that must fail})
    "xavier_normal_ for TF1 glorot_normal (untruncated)": (
        "cifar10_3c3d", _tensor("conv1.0.weight", nn.init.xavier_normal_), {"conv2d/kernel": ["support"]}),
    "torch default init (kaiming_uniform a=sqrt5) on a glorot_uniform dense kernel": (
        "cifar10_3c3d", _tensor("fc1.0.weight", lambda w: nn.init.kaiming_uniform_(w, a=math.sqrt(5))),
        {"dense/kernel": ["std", "support", "ks"]}),
    "torch default reset_parameters() left on a dense layer (kernel and bias)": (
        "cifar10_3c3d", lambda tensors, model: model.fc1[0].reset_parameters(),
        {"dense/kernel": ["std", "support", "ks"], "dense/bias": []}),
    "bias 0 where All-CNN-C has 0.1": (
        "cifar100_allcnnc", _tensor("features.1.0.bias", nn.init.zeros_), {"conv2d/bias": []}),
    "bias 0 where 2c2d has 0.05": (
        "mnist_2c2d", _tensor("conv1.0.bias", nn.init.zeros_), {"conv2d/bias": []}),
    "trunc_normal_(std=0.03) with its default absolute bounds +-2": (
        "mnist_mlp", _tensor("hidden.0.0.weight", lambda w: nn.init.trunc_normal_(w, std=0.03)),
        {"dense/kernel": ["std", "support", "ks"]}),
    "glorot_uniform for TF1 glorot_normal, All-CNN-C first conv (2,592 elements)": (
        "cifar100_allcnnc", _tensor("features.1.0.weight", nn.init.xavier_uniform_), {"conv2d/kernel": ["support"]}),
    "glorot_uniform for TF1 glorot_normal, All-CNN-C second conv (82,944 elements)": (
        "cifar100_allcnnc", _tensor("features.2.0.weight", nn.init.xavier_uniform_),
        {"conv2d_1/kernel": ["support", "ks"]}),
    "BN gamma drawn U(0, 1) (PyTorch < 1.2 default) where TF has ones": (
        "svhn_wrn164", _tensor("groups.1.0.bn2.weight", nn.init.uniform_),
        {"unit_2_0/batch_normalization_1/gamma": []}),
    "nn.Embedding's default N(0, 1) where TF has glorot_uniform (+-0.169)": (
        "tolstoi_char_rnn", _tensor("embedding.weight", nn.init.normal_), {"embedding": ["std", "support", "ks"]}),
    "torch default reset_parameters() on the softmax head (bias U(+-0.088), TF's glorot_uniform U(+-0.19))": (
        "tolstoi_char_rnn", lambda tensors, model: model.softmax.reset_parameters(),
        {"rnnlm/softmax_w": ["std", "support"], "rnnlm/softmax_b": ["support"]}),
    # (torch's default LSTM init, U(+-1/sqrt(128)), happens to equal TF's glorot_uniform of the whole
    # [256, 512] kernel, sqrt(6/768); glorot on each torch matrix alone does not.)
    "xavier_uniform_ on each torch LSTM matrix (fans 128/512: +-0.097) instead of the whole TF kernel's": (
        "tolstoi_char_rnn", lambda tensors, model: [nn.init.xavier_uniform_(tensors[f"lstm.0.weight_{m}_l0"])
                                                    for m in ("ih", "hh")],
        {"rnn/multi_rnn_cell/cell_0/lstm_cell/kernel": ["support"]}),
    "BN moving variance left at 0": (
        "svhn_wrn164", _tensor("bn_last.running_var", nn.init.zeros_),
        {"unit_last/batch_normalization/moving_variance": []}),
}


@pytest.mark.parametrize("bug", list(PLANTED_BUGS))
def test_planted_bug_fails_on_its_tensor(bug):
    problem, reinit, expected = PLANTED_BUGS[bug]
    result = check_init(planted(problem, reinit), problem)
    assert not result.error, result.error
    failed = failures(result)
    assert set(failed) == set(expected), failed
    for item, criteria in expected.items():
        for criterion in criteria:  # random tensors: the criteria that must see it, named in the verdict
            verdict = failed[item].rsplit("FAIL: ", 1)[-1]
            assert criterion in verdict.split(", "), failed[item]
    worst = result.worst
    assert worst is not None and worst.item in expected and worst.max_rel > worst.tolerance


def _seeding_row(result):
    return next(c for c in result.comparisons if c.item == SEEDING_ITEM)


def test_initial_weights_follow_the_global_seed():
    row = _seeding_row(check_init(deepobs_port(), "mnist_2c2d"))
    assert row.passed and row.max_abs == 0.0 and "4 of 4 random tensors differ" in row.note, row.note


def test_a_constructor_that_seeds_itself_fails():
    base = deepobs_port()

    def self_seeding(name):
        torch.manual_seed(1234)  # the slip: the model ignores the caller's seed
        return base.build_model(name)

    result = check_init(dataclasses.replace(base, build_model=self_seeding), "mnist_2c2d")
    row = _seeding_row(result)
    assert not row.passed and "identical across seeds" in row.note and not result.passed


def test_a_constructor_that_draws_from_a_fresh_seed_fails():
    base = deepobs_port()
    counter = iter(range(10**6))

    def fresh_seed(name):
        torch.manual_seed(next(counter) + 10_000)  # the slip: a new seed per build, not the caller's
        return base.build_model(name)

    row = _seeding_row(check_init(dataclasses.replace(base, build_model=fresh_seed), "mnist_2c2d"))
    assert not row.passed and row.max_abs > 0, row.note


def test_a_port_that_cannot_build_is_an_error_not_a_crash():
    def broken(name):
        raise RuntimeError("no such layer")
    [result] = audit_init(dataclasses.replace(deepobs_port(), build_model=broken), ["mnist_logreg"])
    assert not result.passed and "no such layer" in result.error


# --- power of the criteria (the table in parity/init_check.py) ------------------------------------

def _truncated_normal(stddev: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: stats.truncnorm.rvs(-2, 2, scale=stddev, size=n, random_state=rng)


def _normal(stddev: float):
    return lambda rng, n: rng.normal(0.0, stddev, n)


def _uniform(bound: float):
    return lambda rng, n: rng.uniform(-bound, bound, n)


STD = 1.0  # the criteria are scale-free; the std both sides share unless the alternative changes it
ALTERNATIVES = {
    # name: (reference law, port law, sample sizes per side as the check draws them)
    "xavier_normal_ vs TF1 glorot_normal": (
        _truncated_normal(STD / TRUNCATED_NORMAL_STD_CORRECTION), _normal(STD), (800, 4800, 100_000)),
    "glorot_uniform vs TF1 glorot_normal": (
        _truncated_normal(STD / TRUNCATED_NORMAL_STD_CORRECTION), _uniform(math.sqrt(3) * STD), (800, 2592, 100_000)),
    "xavier_normal_ vs glorot_uniform": (
        _uniform(math.sqrt(3) * STD), _normal(STD), (864, 100_000)),
    "trunc_normal_(std=s) bounds +-2 vs truncated_normal(s)": (
        _truncated_normal(STD), _normal(STD), (800, 100_000)),
    "torch default kaiming_uniform(a=sqrt5) vs glorot_uniform (3c3d dense, std -51%)": (
        _uniform(math.sqrt(6 / (1152 + 512))), _uniform(1 / math.sqrt(1152)), (2560, 100_000)),
    "same law, std +10%": (
        _truncated_normal(STD), _truncated_normal(1.1 * STD), (800, 100_000)),
    "same law, std +3%": (
        _truncated_normal(STD), _truncated_normal(1.03 * STD), (800, 100_000)),
    "null: same law (false-alarm rate)": (
        _truncated_normal(STD), _truncated_normal(STD), (800, 100_000)),
}


def simulated_power(reference_law, port_law, n: int, repetitions: int, seed: int = 0) -> dict[str, float]:
    """Fraction of repetitions in which each criterion (and any of them) fails, n elements per side."""
    rng = np.random.default_rng(seed)
    counts = {name: 0 for name in (*CRITERIA, "any")}
    for _ in range(repetitions):
        reference = Sample.of(reference_law(rng, n).astype(np.float32))
        port = Sample.of(port_law(rng, n).astype(np.float32))
        outcomes = random_outcomes(port, reference, rng)
        for outcome in outcomes:
            counts[outcome.criterion] += not outcome.passed
        counts["any"] += not all(o.passed for o in outcomes)
    return {name: count / repetitions for name, count in counts.items()}


POWER_CLAIMS = [  # (alternative, n, criterion, minimum power claimed) at 1e-5 per criterion
    ("xavier_normal_ vs TF1 glorot_normal", 800, "support", 0.99),
    ("xavier_normal_ vs TF1 glorot_normal", 100_000, "ks", 0.99),
    ("glorot_uniform vs TF1 glorot_normal", 800, "support", 0.99),
    ("glorot_uniform vs TF1 glorot_normal", 100_000, "ks", 0.99),
    ("xavier_normal_ vs glorot_uniform", 864, "support", 0.99),
    ("trunc_normal_(std=s) bounds +-2 vs truncated_normal(s)", 800, "support", 0.99),
    ("trunc_normal_(std=s) bounds +-2 vs truncated_normal(s)", 100_000, "std", 0.99),
    ("torch default kaiming_uniform(a=sqrt5) vs glorot_uniform (3c3d dense, std -51%)", 2560, "any", 0.99),
    ("same law, std +10%", 800, "support", 0.95),
    ("same law, std +3%", 100_000, "std", 0.99),
]


@pytest.mark.slow
@pytest.mark.parametrize("alternative, n, criterion, minimum", POWER_CLAIMS)
def test_power_claims(alternative, n, criterion, minimum):
    reference_law, port_law, _ = ALTERNATIVES[alternative]
    power = simulated_power(reference_law, port_law, n, repetitions=100, seed=n)
    # Seeded, so deterministic. 99 or more rejections in 100 happen with probability < 0.04 when the true
    # power is below 0.95; the table in init_check.py has 1,000 repetitions.
    assert power[criterion] >= minimum, power


@pytest.mark.slow
def test_no_false_alarm_in_simulation():
    reference_law, port_law, sizes = ALTERNATIVES["null: same law (false-alarm rate)"]
    for n in sizes:
        assert simulated_power(reference_law, port_law, n, repetitions=200, seed=n)["any"] == 0.0


if __name__ == "__main__":  # the power table of parity/init_check.py
    import sys

    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(f"{'alternative':<82} {'n':>7} " + " ".join(f"{c:>7}" for c in (*CRITERIA, "any")))
    for name, (reference_law, port_law, sizes) in ALTERNATIVES.items():
        for n in sizes:
            power = simulated_power(reference_law, port_law, n, repetitions if n < 50_000 else repetitions // 5, seed=n)
            print(f"{name:<82} {n:>7} " + " ".join(f"{power[c]:>7.3f}" for c in (*CRITERIA, "any")))


@pytest.mark.parametrize("law", ["uniform", "off-centre normal", "constant"])
def test_sample_statistics_are_numpys_float64_statistics(law):
    """Sample.of reduces with torch on every core; it must read what numpy's float64 reductions read."""
    rng = np.random.default_rng(0)
    values = {"uniform": rng.uniform(-0.02, 0.02, 200_003), "off-centre normal": rng.normal(0.5, 0.1, 200_003),
              "constant": np.full(1001, 0.05)}[law].astype(np.float32)
    sample = Sample.of(values)
    exact = values.astype(np.float64)
    assert sample.max_abs == float(np.max(np.abs(values)))
    assert sample.std == pytest.approx(float(np.std(exact)), rel=1e-6, abs=0.0)
    if law == "constant":
        assert sample.family == Family("constant", float(np.float32(0.05)))
    elif law == "uniform":
        assert sample.family == Family("uniform", float(np.max(np.abs(values))), 0.0)
    else:
        assert sample.family.kind == "normal"
        assert sample.family.center == pytest.approx(float(np.mean(exact)), rel=1e-6)
