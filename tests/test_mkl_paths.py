"""MKL's vendor check answered before torch loads (deepobs/mkl_paths.py): what each process gets, in fresh processes."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepobs import mkl_paths

REPOSITORY = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
{first}
from deepobs import mkl_paths
import torch
x = torch.randn(96, 200, dtype=torch.float64)
w = torch.randn(200, 300, dtype=torch.float64)
exact = x @ w
error = ((x.float() @ w.float()).double() - exact).abs().max() / exact.abs().max()
print(json.dumps({{"outcome": mkl_paths.apply(), "answered": mkl_paths.answered(), "branch": mkl_paths.mkl_code_path(),
                  "error": float(error)}}))
"""
ANSWERABLE = (mkl_paths.cpu_vendor() not in ("", "GenuineIntel") and sys.platform == "linux"
              and os.uname().machine == "x86_64" and shutil.which(os.environ.get("CC", "cc")) is not None)


def probe(first: str = "import deepobs", **environment) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), **environment}
    done = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], env=env, capture_output=True, text=True,
                          cwd=REPOSITORY, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not ANSWERABLE, reason="MKL's vendor check is answered on non-Intel x86-64 Linux with a C compiler only")
def test_importing_deepobs_first_puts_mkl_on_its_instruction_set_branch():
    answered = probe()
    assert answered["outcome"] == f"on ({mkl_paths.cpu_vendor()})" and answered["answered"]
    assert not answered["branch"].startswith("AUTO")  # an instruction-set branch, e.g. AVX2
    stock = probe(DEEPOBS_MKL_INTEL_PATHS="0")
    assert stock["outcome"] == "off (DEEPOBS_MKL_INTEL_PATHS=0)" and not stock["answered"]
    assert stock["branch"] != answered["branch"]
    # The products stay within float32 round-off either way (the audit compares the models' with TF's).
    assert answered["error"] < 1e-5 and stock["error"] < 1e-5


@pytest.mark.skipif(not ANSWERABLE, reason="MKL's vendor check is answered on non-Intel x86-64 Linux with a C compiler only")
def test_torch_imported_first_is_too_late_and_says_so():
    late = probe("import torch")
    assert late["outcome"] == "too late (torch was imported before deepobs)" and not late["answered"]
    assert late["branch"] == probe(DEEPOBS_MKL_INTEL_PATHS="0")["branch"]


@pytest.mark.skipif(not ANSWERABLE, reason="MKL's vendor check is answered on non-Intel x86-64 Linux with a C compiler only")
def test_without_a_compiler_mkl_keeps_its_own_choice_with_a_one_line_reason(tmp_path):
    missing = probe(CC="no-such-compiler", DEEPOBS_NATIVE_CACHE=str(tmp_path))
    assert missing["outcome"] == "unavailable (no C compiler ('no-such-compiler' not found; set CC))"
    assert not missing["answered"]


def test_the_outcome_is_decided_once_per_process():
    assert mkl_paths.apply() is mkl_paths.apply()
    assert "MKL path: " in mkl_paths.status()
