"""Every registered problem passes every check against the reference (float64: round-off only).

`tox -e parity` audits float32 too; here each (problem, check) is its own test id.
"""
import functools

import numpy as np

import pytest

from parity.audit import audit_problem
from parity.checks import CHECKS
from parity.port import deepobs_port
from parity.tolerances import TOLERANCES
from deepobs.problems import PROBLEMS
from parity.audit import split_heavy

pytestmark = pytest.mark.parity

# The large models (VGG: ~140M parameters, 224x224) cost minutes and GBs per float64 audit: the
# audit itself (tox -e parity) covers them; here tests/test_vgg.py and the planted-bug tests do.
LIGHT_PROBLEMS, HEAVY_PROBLEMS = split_heavy(deepobs_port(), sorted(PROBLEMS))


@functools.lru_cache(maxsize=None)
def audited(problem: str, dtype: str) -> dict:
    return {result.check: result for result in audit_problem(deepobs_port(), problem, dtype)}


CHECK_NAMES = [name for check in CHECKS for name in
               ([check] if not check.startswith("step/") else [check, f"{check} (reference gradients)"])]


@pytest.mark.parametrize("check", CHECK_NAMES)
@pytest.mark.parametrize("problem", LIGHT_PROBLEMS)
def test_check_passes_in_float64(problem, check):
    result = audited(problem, "float64")[check]
    assert not result.error, result.error
    first = result.first_divergence
    assert result.passed, f"first divergence at {first.item}: rel {first.max_rel:.2e} {first.note}"
    assert result.comparisons, "a check that compared nothing"


def test_float64_tolerances_are_round_off():
    assert all(value <= 1e-10 for (kind, dtype), value in TOLERANCES.items() if dtype == "float64")


def test_forward_compares_every_layer_not_only_logits():
    result = audited("svhn_wrn164", "float64")["forward"]
    items = [c.item for c in result.comparisons]
    assert items[0] == "conv2d" and items[-1] == "logits"
    assert "unit_2_0/conv2d" in items and "unit_3_1" in items and len(items) > 30


def test_unknown_problem_is_refused():
    from parity.audit import UnknownProblemError, resolve_problems

    with pytest.raises(UnknownProblemError, match="valid names: .*svhn_wrn164"):
        resolve_problems(deepobs_port(), ["nope"])


@pytest.mark.parametrize("problem", LIGHT_PROBLEMS + [pytest.param(p, marks=pytest.mark.slow) for p in HEAVY_PROBLEMS])
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
