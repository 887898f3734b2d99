"""The audit's power and precision: the catalogue of planted bugs and equivalent rewrites (parity.mutants).

The fast subset runs here (every check kind, every light family, the in-place and dropout rewrites);
`python -m parity selftest` / `tox -e selftest` runs the whole catalogue.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parity.mutants import catalogue
from parity.results import CheckResult, Comparison, absorbed_taps, mark_equivalent
from parity.selftest import run_mutant, select

pytestmark = pytest.mark.parity

CHECK_KINDS = {"forward", "loss", "gradients", "train_mode", "step/sgd", "step/momentum", "step/adam", "carried_state",
               "init", "setup"}


def test_catalogue_covers_every_check_kind_and_family():
    from tf_reference.problems import REFERENCE_PROBLEMS

    rows = catalogue()
    bugs = [m for m in rows if not m.equivalent]
    assert len(bugs) >= 60 and len(rows) - len(bugs) >= 20
    assert len({m.name for m in rows}) == len(rows)
    assert {m.expect_check.split(" (")[0] for m in bugs} == CHECK_KINDS
    families = {REFERENCE_PROBLEMS[name].family.name for name in REFERENCE_PROBLEMS}
    assert {REFERENCE_PROBLEMS[m.problem].family.name for m in bugs} == families
    assert {REFERENCE_PROBLEMS[m.problem].family.name for m in rows if m.equivalent} >= families - {
        "classification_aux_head"}
    fast = [m for m in rows if m.fast]
    assert {m.expect_check.split(" (")[0] for m in fast if not m.equivalent} == CHECK_KINDS


@pytest.mark.parametrize("mutant", select(fast=True), ids=lambda m: m.name)
def test_fast_catalogue_row(mutant):
    outcome = run_mutant(mutant)
    assert outcome.ok, f"expected {mutant.expect_check or 'a pass'} at {mutant.expect_item or '-'}; found {outcome.found}"


# --- the noise injection: every spelling of dropout reaches the shared draw -------------------------

P = 0.3


def _spellings():
    def masked(mask):
        return lambda x: x * mask(x) / (1 - P)
    return {
        "nn.Dropout": lambda x: nn.Dropout(P)(x),
        "F.dropout": lambda x: F.dropout(x, P),
        "torch.dropout": lambda x: torch.dropout(x, P, True),
        "F.dropout(inplace=True)": lambda x: F.dropout(x.clone(), P, inplace=True),
        "nn.Dropout(inplace=True)": lambda x: nn.Dropout(P, inplace=True)(x.clone()),
        "torch.rand_like mask": masked(lambda x: (torch.rand_like(x) >= P).to(x.dtype)),
        "torch.rand mask": masked(lambda x: (torch.rand(x.shape, dtype=x.dtype) >= P).to(x.dtype)),
        "torch.bernoulli mask": masked(lambda x: torch.bernoulli(torch.full_like(x, 1 - P))),
        "bernoulli_ mask": masked(lambda x: torch.empty_like(x).bernoulli_(1 - P)),
        "uniform_ mask": masked(lambda x: (torch.empty_like(x).uniform_() >= P).to(x.dtype)),
    }


@pytest.mark.parametrize("spelling", list(_spellings()))
def test_every_dropout_spelling_consumes_the_shared_draw(spelling):
    from parity.dropout import Draw, injected_noise

    draw = np.random.default_rng(0).uniform(size=(2, 7))
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 7)))
    expected = x * torch.from_numpy(draw >= P) / (1 - P)  # tf.nn.dropout: kept where the draw is >= rate
    with injected_noise([Draw("site", "uniform", draw)]) as injection:
        y = _spellings()[spelling](x)
    assert torch.allclose(y, expected) and not injection.unused and len(injection.consumed) == 1
    assert torch.rand(3).shape == (3,)  # restored on exit


def test_a_draw_that_cannot_be_shared_names_the_site_and_the_spelling():
    from parity.dropout import Draw, NoiseMismatch, injected_noise

    with pytest.raises(NoiseMismatch, match=r"dropout_1: reference shape .* port \(2, 5\) through torch._VF.dropout"):
        with injected_noise([Draw("dropout_1", "uniform", np.zeros((2, 7)))]):
            F.dropout(torch.ones(2, 5), 0.5)
    with injected_noise([Draw("dropout_1", "uniform", np.zeros((2, 7)))]) as injection:
        torch.rand(2, 7) < 0.5  # noqa: B015 - a mask thresholded the other way round
    assert "u >= p" in injection.site_note("dropout_1") and "torch.rand" in injection.site_note("dropout_1")


def test_dropout_inside_a_multi_layer_rnn_kernel_is_named_as_unshareable():
    from parity.dropout import unshareable_draws

    model = nn.Sequential(nn.Embedding(5, 4), nn.LSTM(4, 4, num_layers=2, dropout=0.2), nn.LSTM(4, 4, dropout=0.0))
    assert list(unshareable_draws(model)) == ["1"] and "C++ kernel" in unshareable_draws(model)["1"]


# --- the equivalent verdict -------------------------------------------------------------------------

def _result(*passes, check="forward", problem="p"):
    kinds = ["tap"] * (len(passes) - 1) + ["output"]
    return CheckResult(problem, check, "float64", [Comparison(f"t{i}", 1.0 - ok, 1.0 - ok, 0.5, ok, "", kind)
                                                   for i, (ok, kind) in enumerate(zip(passes, kinds))])


def test_a_tap_difference_absorbed_downstream_is_equivalent():
    forward, gradients = _result(True, False, True, True), _result(True, check="gradients")
    mark_equivalent([forward, gradients])
    assert forward.verdict == "equivalent" and forward.passed and "t1" in forward.equivalent


def test_a_difference_that_reaches_a_later_tap_or_another_check_stays_a_failure():
    assert not absorbed_taps(_result(True, False, False, True))  # the next tap differs too
    assert not absorbed_taps(_result(True, False, True, False))  # the output differs
    forward = _result(True, False, True, True)
    mark_equivalent([forward, _result(False, check="gradients")])
    assert forward.verdict == "FAIL" and not forward.passed


# --- inputs that reach every regime ----------------------------------------------------------------

def test_audit_batches_reach_large_magnitudes_and_exact_zeros():
    from parity.audit import make_batches
    from tf_reference.problems import REFERENCE_PROBLEMS

    [batch] = make_batches(REFERENCE_PROBLEMS["cifar10_3c3d"], "float64", seed=0, count=1)
    images = batch.inputs[0]
    assert np.abs(images[1]).max() > 20 and np.abs(images[0]).max() < 6
    assert 0.05 < np.mean(images == 0) < 0.2


def test_accuracy_labels_make_it_half_then_zero():
    from parity.checks import labels_with_accuracy

    logits = np.random.default_rng(0).normal(size=(2, 50, 83))

    class Tensor:  # what the reference returns: anything with .numpy()
        def numpy(self):
            return logits
    for share in (0.5, 0.0):
        labels = labels_with_accuracy(Tensor(), np.zeros((2, 50), np.int64), share)
        assert labels.shape == (2, 50) and np.mean(logits.argmax(-1) == labels) == share
