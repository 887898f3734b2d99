"""The audit's command line: bad input gets one clear line and a non-zero exit."""
import subprocess
import sys

import pytest

from parity.cli import main

pytestmark = pytest.mark.parity


def test_unknown_problem_exits_2_with_valid_names(capsys):
    assert main(["audit", "--problem", "mnist_resnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mnist_resnet" in err and "valid names: mnist_logreg" in err


@pytest.mark.parametrize("argv", [["audit", "--seed", "-5"], ["audit", "--seed", "x"], ["audit", "--jobs", "0"]])
def test_invalid_arguments_are_usage_errors(argv, capsys):
    # Never an audit result: a negative seed used to reach the audit and report the port FAILED.
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {argv[1]}: '{argv[2]}' is not" in err and "Traceback" not in err


def test_data_check_rejects_batch_size_0(capsys):
    from deepobs.cli import main as deepobs_main

    with pytest.raises(SystemExit) as exit_info:
        deepobs_main(["data", "check", "mnist", "--batch-size", "0"])
    assert exit_info.value.code == 2 and "'0' is not a positive integer" in capsys.readouterr().err


def test_bad_port_exits_2(capsys):
    assert main(["list", "--port", "no_such_module:PORT"]) == 2
    assert "cannot load port" in capsys.readouterr().err


def test_list_names_every_problem(capsys):
    from deepobs.problems import PROBLEMS

    assert main(["list"]) == 0
    assert capsys.readouterr().out.split() == list(PROBLEMS)


def test_audit_writes_reports_and_exit_code(tmp_path, capsys):
    assert main(["audit", "--problem", "mnist_logreg", "--dtype", "float64", "--report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out
    assert (tmp_path / "parity-report.json").exists() and "# Parity audit: PASSED" in (
        tmp_path / "parity-report.md").read_text()
    assert "<svg" in (tmp_path / "parity-report.html").read_text()
    assert not list(tmp_path.glob(".*.part"))


def test_missing_tensorflow_names_the_extra():
    code = ("import sys; sys.modules['tensorflow'] = None; from parity.cli import main; "
            "sys.exit(main(['list']))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "pip install -e '.[tf]'" in completed.stderr and "Traceback" not in completed.stderr


def test_help_exits_0():
    completed = subprocess.run([sys.executable, "-m", "parity", "--help"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0 and "audit" in completed.stdout


def test_parallel_audit_of_both_dtypes_reports_every_check(tmp_path, capsys):
    import json

    assert main(["audit", "--problem", "mnist_logreg", "--report", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "parity-report.json").read_text())
    checks = {(r["dtype"], r["check"]) for r in report["results"]}
    assert {("float32", "forward"), ("float64", "forward"), ("float32", "init")} <= checks
    assert len(report["results"]) == 2 * 11 + 1 and report["passed"]  # 11 checks per dtype (carried_state n/a), init
