"""Fair conditions for the throughput benchmarks, fixed before either framework runs anything.

Both frameworks get the same intra-op and inter-op thread counts (`parity.frameworks.THREADS`, env
PARITY_THREADS, default min(cores, 2)). TF's pools can only be sized before its runtime starts and
torch's inter-op pool before its first parallel op, so this is done at conftest import, ahead of
any benchmark module.
"""
from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

from parity.frameworks import THREADS, load_tensorflow  # noqa: E402  (sets torch's intra-op threads)

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


def pytest_configure(config):
    # pytest-benchmark writes --benchmark-json before --benchmark-autosave creates the storage folder.
    json_path = config.getoption("benchmark_json", None)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)


def pytest_report_header(config):
    threads = _thread_settings()
    return [
        f"bench conditions: torch {torch.__version__} eager, tensorflow {tf.__version__} tf.function; "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})",
        "threads: " + ", ".join(f"{fw} intra {t['intra']} inter {t['inter']}" for fw, t in threads.items()),
    ]


@pytest.fixture(scope="session")
def thread_settings() -> dict[str, dict[str, int]]:
    return _thread_settings()


@pytest.fixture
def foreign_load():
    return _foreign_load
