"""Import order, the one TensorFlow import, and the independence of the reference."""
import ast
import os
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


def _import_reference_tf(tmp_path, keep_logs, fake_tensorflow=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PARITY_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    if keep_logs:
        env["PARITY_TF_LOGS"] = "1"
    if fake_tensorflow is not None:
        (tmp_path / "tensorflow").mkdir()
        (tmp_path / "tensorflow" / "__init__.py").write_text(fake_tensorflow)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
        # _tf.py alone: the package's other modules need the real TensorFlow
        statement = "import runpy; tf = runpy.run_path('tf_reference/_tf.py')['tf']"
    else:
        statement = "from tf_reference._tf import tf"
    return subprocess.run([sys.executable, "-c", statement + "; print(tf.constant(2.0).numpy())"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def test_the_real_tensorflow_import_leaves_none_of_its_noise_on_the_terminal(tmp_path):
    # Which noise TF writes depends on the CPU (no oneDNN line where TF leaves oneDNN off): the filter itself is
    # checked below on a stand-in that always writes it.
    completed = _import_reference_tf(tmp_path, keep_logs=False)
    assert completed.returncode == 0 and completed.stdout.strip() == "2.0", completed.stderr[-2000:]
    assert "oneDNN custom operations are on" not in completed.stderr, completed.stderr
    assert "before absl::InitializeLog()" not in completed.stderr, completed.stderr


# A stand-in TensorFlow that writes to file descriptor 2 from "C++" at import, as TF's runtime does.
NOISY_TENSORFLOW = """import os
os.write(2, b"W0000 00:00 All log messages before absl::InitializeLog() is called go to stderr\\n")
os.write(2, b"I0000 00:00 oneDNN custom operations are on. You may see slightly different numerical results\\n")
os.write(2, b"E0000 00:00 a real error the user must see\\n")
class _Constant(float):
    def numpy(self):
        return float(self)
constant = _Constant
"""


@pytest.mark.parametrize("keep_logs", [False, True])
def test_tensorflow_import_noise_stays_off_the_terminal_unless_asked_for(tmp_path, keep_logs):
    completed = _import_reference_tf(tmp_path, keep_logs, fake_tensorflow=NOISY_TENSORFLOW)
    assert completed.returncode == 0 and completed.stdout.strip() == "2.0", completed.stderr[-2000:]
    assert "a real error the user must see" in completed.stderr
    assert ("oneDNN custom operations are on" in completed.stderr) == keep_logs, completed.stderr
    assert ("All log messages before absl::InitializeLog()" in completed.stderr) == keep_logs, completed.stderr


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


@pytest.mark.parametrize("setting, expected", [("0", "off (TF_ENABLE_ONEDNN_OPTS=0)"),
                                               ("1", "on (TF_ENABLE_ONEDNN_OPTS=1)")])
def test_the_recorded_onednn_setting_is_what_tensorflow_runs(setting, expected):
    # TF reads the switch once, at its first op: a fresh process per setting. Without it TF decides by the CPU
    # (off on AVX2-only CPUs): benchmark tables and audit reports record its answer, not an assumption.
    statement = "from parity.frameworks import tf_onednn_ops; print(tf_onednn_ops())"
    completed = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, timeout=300,
                               cwd=ROOT, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == expected
