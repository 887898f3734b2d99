"""Import order, the one TensorFlow import, and the independence of the reference."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("deepobs", "tf_reference", "parity")


def _python_files(package):
    return sorted((ROOT / package).rglob("*.py"))


def _imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_tensorflow_is_imported_in_one_place_only():
    offenders = [str(path.relative_to(ROOT)) for package in (*PACKAGES, "tests", "benchmarks")
                 for path in (ROOT / package).rglob("*.py")
                 if path.name != "_tf.py" and any(m.split(".")[0] == "tensorflow" for m in _imported_modules(path))]
    assert offenders == []


def test_reference_never_imports_the_port():
    offenders = [str(p.relative_to(ROOT)) for p in _python_files("tf_reference")
                 if any(m.split(".")[0] in ("deepobs", "parity", "torch") for m in _imported_modules(p))]
    assert offenders == []


@pytest.mark.parametrize("statements", [
    "import tf_reference; import torchvision; import deepobs",
    "import tf_reference.problems; import parity.checks",
    "import parity.checks; import tf_reference",
    "import deepobs; import tf_reference; import torchvision",
])
def test_any_import_order_works(statements):
    # TF imported before torchvision segfaults (exit -11) unless tf_reference._tf orders them.
    completed = subprocess.run([sys.executable, "-c", statements + "; print('ok')"], capture_output=True, text=True,
                               timeout=300, cwd=ROOT)
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", completed.stderr[-2000:]


@pytest.mark.parametrize("keep_logs", [False, True])
def test_tensorflow_import_noise_stays_off_the_terminal_unless_asked_for(keep_logs):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("PARITY_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    if keep_logs:
        env["PARITY_TF_LOGS"] = "1"
    completed = subprocess.run([sys.executable, "-c", "from tf_reference._tf import tf; print(tf.constant(2.0).numpy())"],
                               capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert completed.returncode == 0 and completed.stdout.strip() == "2.0"
    noisy = "oneDNN custom operations are on" in completed.stderr
    assert noisy == keep_logs, completed.stderr


@pytest.mark.parametrize("path", ["numpy", "dlpack"])  # below and at DLPACK_ASSIGN_ELEMENTS
@pytest.mark.parametrize("variable_dtype", ["float32", "float64"])
def test_assign_copies_the_value_into_the_variable_and_keeps_no_tie_to_it(path, variable_dtype):
    import numpy as np

    from parity.frameworks import DLPACK_ASSIGN_ELEMENTS, assign, load_tensorflow

    tf = load_tensorflow()
    size = DLPACK_ASSIGN_ELEMENTS if path == "dlpack" else 10
    value = np.random.default_rng(0).normal(size=(size // 2, 2)).astype(np.float32)
    value.flags.writeable = False  # the audit draws are shared read-only arrays
    original = value.copy()
    variable = tf.Variable(tf.zeros(value.shape, getattr(tf, variable_dtype)))
    assign(variable, value)
    assert variable.dtype.name == variable_dtype
    np.testing.assert_array_equal(variable.numpy(), value.astype(variable_dtype))  # float32 -> float64 is exact
    variable.assign_add(tf.ones_like(variable))  # an in-place update (an optimizer step) must not reach the value
    np.testing.assert_array_equal(variable.numpy(), original.astype(variable_dtype) + 1)
    np.testing.assert_array_equal(value, original)
