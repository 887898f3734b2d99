"""Grids (python -m deepobs grid SPEC): every run lands in the runner's layout; an interrupted grid resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepobs.cli import main
from parity.fixtures import write_mnist

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    return root


def write_spec(tmp_path: Path, data_dir: Path, **extra) -> Path:
    spec = {"problems": ["mnist_logreg"], "seeds": [1, 2], "num_epochs": 1, "batch_size": 64,
            "data_dir": str(data_dir), "output_dir": str(tmp_path / "results"),
            "optimizers": [{"optimizer": "torch.optim.SGD", "learning_rates": [0.1, 0.01],
                            "hyperparams": {"momentum": 0.9}}], **extra}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def result_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "results").rglob("*.json"))


def test_grid_setting_matches_the_command_line_setting(tmp_path, data_dir):
    from deepobs.grid import expand, read_spec

    runs = expand(read_spec(write_spec(tmp_path, data_dir)))
    assert [(r.learning_rate, r.random_seed) for r in runs] == [(0.1, 1), (0.1, 2), (0.01, 1), (0.01, 2)]
    assert runs[0].setting_dir().name == ("num_epochs__1__batch_size__64__dampening__0.e+00__maximize__False__"
                                          "momentum__9.e-01__nesterov__False__weight_decay__0.e+00__lr__1.e-01")


def test_interrupted_local_grid_resumes_without_redoing_finished_runs(tmp_path, data_dir, monkeypatch, capsys):
    import deepobs.grid as grid

    spec = write_spec(tmp_path, data_dir)
    real_run_one, calls = grid.run_one, []

    def interrupted_after_two(settings):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(settings)
        return real_run_one(settings)

    monkeypatch.setattr(grid, "run_one", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        main(["grid", str(spec)])
    first_two = {path: path.read_bytes() for path in result_files(tmp_path)}
    assert len(first_two) == 2
    monkeypatch.setattr(grid, "run_one", real_run_one)
    assert main(["grid", str(spec)]) == 0
    assert "4 run(s), 2 already finished, 2 to run" in capsys.readouterr().out
    files = result_files(tmp_path)
    assert len(files) == 4 and all(path.read_bytes() == content for path, content in first_two.items())
    assert main(["grid", str(spec)]) == 0 and "4 already finished, 0 to run" in capsys.readouterr().out


@pytest.mark.slow
def test_submitit_local_grid_killed_then_resumed(tmp_path, data_dir):
    """The 2x2 grid through submitit's LocalExecutor, killed (the grid and its jobs) after its first result,
    then run again: the finished runs stay as they were, the rest are done, each seed of each setting once."""
    pytest.importorskip("submitit")
    spec = write_spec(tmp_path, data_dir)
    command = [sys.executable, "-m", "deepobs", "grid", str(spec), "--engine", "submitit", "--executor", "local",
               "--log-dir", str(tmp_path / "logs"), "--timeout-min", "10"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    grid_process = subprocess.Popen(command, cwd=tmp_path, env=environment, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not result_files(tmp_path) and time.time() < deadline and grid_process.poll() is None:
            time.sleep(0.5)
    finally:
        os.killpg(grid_process.pid, signal.SIGKILL)  # the grid's own process group: it and its job processes
        grid_process.wait()
    before = {path: path.read_bytes() for path in result_files(tmp_path)}
    assert 1 <= len(before) < 4
    completed = subprocess.run([*command, "--max-parallel", "3"], cwd=tmp_path, env=environment,
                               capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"{len(before)} already finished, {4 - len(before)} to run" in completed.stdout
    files = result_files(tmp_path)
    assert len(files) == 4 and all(path.read_bytes() == content for path, content in before.items())
    assert sorted((f.parent.name.rsplit("__", 1)[-1], f.name.split("__")[1]) for f in files) == [
        ("1.e-01", "1"), ("1.e-01", "2"), ("1.e-02", "1"), ("1.e-02", "2")]
    assert not (tmp_path / "results" / "logs").exists()


@pytest.mark.parametrize("change, message", [
    ({"optimizer_list": []}, "unknown grid spec key(s) optimizer_list"),
    ({"optimizers": [{"optimizer": "torch.optim.SGD", "learning_rates": [0.1], "hyperparams": {"momentun": 0.9}}]},
     "SGD has no hyperparameter 'momentun'"),
    ({"problems": ["mnist_resnet"]}, "valid names"),
    ({"problems": ["cifar100_3c3d"], "batch_size": None}, "no default batch size for cifar100_3c3d"),
])
def test_bad_spec_is_one_line(tmp_path, data_dir, capsys, change, message):
    spec = json.loads(write_spec(tmp_path, data_dir).read_text())
    spec.update(change)
    spec = {key: value for key, value in spec.items() if value is not None}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main(["grid", str(tmp_path / "spec.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not result_files(tmp_path)


def test_log_dir_inside_results_is_refused(tmp_path, data_dir, capsys):
    spec = write_spec(tmp_path, data_dir)
    assert main(["grid", str(spec), "--engine", "submitit", "--executor", "local",
                 "--log-dir", str(tmp_path / "results" / "logs")]) == 1
    assert "inside the results folder" in capsys.readouterr().err
