"""Fair conditions for the throughput benchmarks, fixed before either framework runs anything.

Both frameworks get the same intra-op and inter-op thread counts (`parity.frameworks.THREADS`, env
PARITY_THREADS, default min(cores, 2)). TF's pools can only be sized before its runtime starts and
torch's inter-op pool before its first parallel op, so this is done at conftest import, ahead of
any benchmark module.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

from benchmarks.table import cpu_description, machine_kind  # noqa: E402
from deepobs import mkl_paths  # noqa: E402

from parity.frameworks import THREADS, load_tensorflow, tf_onednn_ops  # noqa: E402  (sets torch's intra-op threads)

try:
    torch.set_num_interop_threads(THREADS)
except RuntimeError:  # torch's inter-op pool already started in this process: it keeps its size
    pass
tf = load_tensorflow()


def _thread_settings() -> dict[str, dict[str, int]]:
    """The thread counts each framework actually runs with (0 would mean TF's own default)."""
    return {
        "torch": {"intra": torch.get_num_threads(), "inter": torch.get_num_interop_threads()},
        "tf": {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
               "inter": tf.config.threading.get_inter_op_parallelism_threads()},
    }


def _busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has run since boot (/proc/stat), None where unavailable."""
    try:
        with open("/proc/stat") as stat:
            user, nice, system, _idle, _iowait, irq, softirq = map(int, stat.readline().split()[1:8])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _foreign_load(record: dict):
    """Sets record["foreign_cores"]: the cores other processes kept busy, on average, during the block.

    torch's OpenMP regions wait for every thread at a barrier, so one core taken by another process
    can slow small torch ops tens of times while TF's work-stealing pool hardly notices: a result
    measured with foreign_cores well above 0 says more about the machine than about the port.
    """
    busy, own, wall = _busy_cpu_seconds(), time.process_time(), time.perf_counter()
    yield
    if busy is not None:
        others = (_busy_cpu_seconds() - busy) - (time.process_time() - own)
        record["foreign_cores"] = round(max(others, 0.0) / (time.perf_counter() - wall), 2)


TF_ONEDNN_PROBE = "import tensorflow as tf; tf.nn.conv2d(tf.ones([1, 4, 4, 1]), tf.ones([1, 1, 1, 1]), 1, 'SAME')"


def tf_onednn_build() -> str:
    """The oneDNN TensorFlow bundles (its version and threading runtime differ from torch's: v3.7.3 on a
    threadpool against v3.12 on OpenMP here), as oneDNN's own log states it; TF exposes neither. A child
    process runs one tiny convolution with ONEDNN_VERBOSE=1 (a few seconds, once per run)."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run([sys.executable, "-c", TF_ONEDNN_PROBE], env=env, capture_output=True, text=True,
                              timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"oneDNN unknown ({type(error).__name__})"
    log = done.stdout + done.stderr
    version, runtime = re.search(r"info,oneDNN (v[\d.]+)", log), re.search(r"info,cpu,runtime:(\w+)", log)
    if not version:
        return "oneDNN unknown (no oneDNN log from a convolution)"
    return f"oneDNN {version.group(1)}" + (f", {runtime.group(1)} runtime" if runtime else "")


def library_builds() -> dict:
    config = torch.__config__.show()
    picked = [line.strip(" -") for line in config.splitlines()
              if any(word in line for word in ("Math Kernel Library", "MKL-DNN", "oneDNN", "OpenMP", "CPU capability"))]
    return {"torch": torch.__version__, "torch_build": picked, "mkldnn_enabled": torch.backends.mkldnn.is_available(),
            "mkl_enabled": torch.backends.mkl.is_available(), "mkl_paths": mkl_paths.status(),
            "tensorflow": tf.__version__,
            "tf_onednn": tf_onednn_ops(),
            "tf_onednn_build": tf_onednn_build()}


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def pytest_addoption(parser):
    parser.addoption("--bench-json", type=Path, default=None,
                     help="write the model benchmarks' results (with the machine's description) to this JSON")


class BenchResults(list):
    """The rows measured so far; the run's JSON is rewritten after each, so a stopped run keeps its rows."""

    def __init__(self, path: Path | None):
        super().__init__()
        self.path = path

    def append(self, row: dict) -> None:
        super().append(row)
        if self.path is not None:
            cpu = cpu_description()
            run = {"datetime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine_kind": machine_kind(cpu),
                   "cpu": cpu, "libraries": library_builds(), "threads": _thread_settings(), "results": list(self)}
            write_atomically(self.path, json.dumps(run, indent=1))


@pytest.fixture(scope="session")
def bench_results(request) -> BenchResults:
    return BenchResults(request.config.getoption("bench_json"))


def pytest_report_header(config):
    threads = _thread_settings()
    return [
        f"bench conditions: torch {torch.__version__}, tensorflow {tf.__version__} tf.function; "
        f"{machine_kind(cpu_description())}",
        "threads: " + ", ".join(f"{fw} intra {t['intra']} inter {t['inter']}" for fw, t in threads.items()),
    ]


@pytest.fixture(scope="session")
def thread_settings() -> dict[str, dict[str, int]]:
    return _thread_settings()


@pytest.fixture
def foreign_load():
    return _foreign_load
