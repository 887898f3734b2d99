"""Trajectory parity (python -m parity trajectory): the port follows the reference's training curve within
the round-off envelope, and a slow drift (a learning rate 1% off) leaves it at a named step."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from parity.cli import main
from parity.fixtures import write_mnist

pytestmark = [pytest.mark.parity, pytest.mark.slow]
STEPS = 25


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    return root


@pytest.fixture(scope="module")
def faithful(data_dir):
    from parity.trajectory import run_trajectory

    return run_trajectory("mnist_mlp", "momentum", STEPS, data_dir)


def test_faithful_port_stays_inside_the_envelope(faithful):
    assert faithful.passed, faithful.summary()
    assert len(faithful.port_losses) == len(faithful.divergence["params"]) == STEPS
    assert faithful.reference_losses[-1] < faithful.reference_losses[0]  # it trains
    assert max(faithful.divergence["params"]) > 0  # float32 round-off is there, and measured


def test_learning_rate_one_percent_off_leaves_the_envelope_and_names_the_step(data_dir, faithful):
    from parity.trajectory import run_trajectory

    drifted = run_trajectory("mnist_mlp", "momentum", STEPS, data_dir, port_lr_factor=1.01)
    assert not drifted.passed
    step, quantity = drifted.first_exit
    assert 1 <= step <= STEPS and quantity == "params"
    assert f"left the envelope at step {step}" in drifted.summary()
    # the same weights and batches: the drift, not the data, is what moved
    assert drifted.reference_losses == faithful.reference_losses


def test_cli_writes_report_with_plot_and_exit_code(tmp_path, data_dir, capsys):
    report = tmp_path / "report"
    argv = ["trajectory", "--problem", "mnist_logreg", "--optimizer", "adam", "--steps", "10",
            "--data-dir", str(data_dir), "--report", str(report)]
    assert main(argv) == 0
    assert "PASS mnist_logreg adam" in capsys.readouterr().out
    assert (report / "trajectory-mnist_logreg-adam.png").read_bytes()[:4] == b"\x89PNG"
    [result] = json.loads((report / "trajectory-report.json").read_text())
    assert result["passed"] and len(result["envelope"]["loss"]) == 10
    assert main([*argv, "--port-lr-factor", "1.01"]) == 1
    assert "FAIL mnist_logreg adam" in capsys.readouterr().out


def test_unknown_problem_is_one_line(capsys):
    assert main(["trajectory", "--problem", "mnist_resnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "valid names" in err


def test_a_problem_outside_its_scope_is_a_usage_error(capsys):
    from parity.cli import main

    assert main(["trajectory", "--problem", "mnist_vae", "--steps", "1"]) == 2
    assert "covers the classification problems so far; not mnist_vae" in capsys.readouterr().err
