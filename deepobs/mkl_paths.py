"""MKL's code paths for the CPU's instruction sets on any x86-64 CPU, not only on Intel's.

torch's dense products (and the LSTM's) run on MKL, which picks its optimised kernels only where the CPU says
"GenuineIntel"; elsewhere it runs a generic path (MKL reports its branch: "AUTO", no instruction set, where
the same CPU with the check answered gets "AVX2"; `mkl_code_path()`). On an AMD EPYC Zen 2 (AVX2, 2 cores) that
path ran sgemm at 69-75 GFLOP/s on one core against 91-96 on MKL's AVX2 path, OpenBLAS's 88-95 and oneDNN's
77-93, and mnist_mlp's training step took 9.15-9.37 ms against 7.55 (docs/benchmarks.md). TensorFlow runs its
products on oneDNN, which dispatches by instruction set on every vendor: without this the benchmark would
compare the reference's best kernels with the port's generic ones.

MKL asks `mkl_serv_intel_cpu_true()`. torch links MKL into libtorch_cpu.so but exports that symbol, so a
definition loaded into the process's global scope first (`mkl_vendor.c`, built with the system C compiler like
deepobs.native's kernels, loaded with RTLD_GLOBAL) takes precedence for every call, as LD_PRELOAD would. It has
to happen before torch is imported: `import deepobs` does it first thing, so entry points import deepobs before
torch. MKL still chooses among its paths by the CPU's instruction sets (here AVX2 on a CPU without AVX-512).

The products' bits are then MKL's AVX2 kernel's rather than its generic one's: other float32 round-off, the
same mathematics; the parity audit runs with it (parity imports deepobs first). On Intel CPUs nothing is
loaded. `DEEPOBS_MKL_INTEL_PATHS=0` in the environment keeps MKL's own choice.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path

from deepobs.cbuild import NativeBuildError, build_library, cpuinfo_line

SOURCE = Path(__file__).with_name("native") / "mkl_vendor.c"
FLAGS = ("-O2", "-shared", "-fPIC")
SWITCH = "DEEPOBS_MKL_INTEL_PATHS"

_outcome: str | None = None


def cpu_vendor() -> str:
    return (cpuinfo_line("vendor_id") or "").partition(":")[2].strip()


def apply() -> str:
    """Answer MKL's vendor check with yes where that changes its path (once per process); what was done, in words."""
    global _outcome
    if _outcome is None:
        _outcome = _apply()
    return _outcome


def answered() -> bool:
    """Did this process answer MKL's vendor check (MKL then runs its instruction-set branch on a non-Intel CPU)?"""
    return apply().startswith("on ")


def _apply() -> str:
    if os.environ.get(SWITCH, "1") == "0":
        return f"off ({SWITCH}=0)"
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"not needed ({platform.system()} {platform.machine()})"
    vendor = cpu_vendor()
    if vendor == "GenuineIntel":
        return "not needed (an Intel CPU)"
    if "torch" in sys.modules:
        return "too late (torch was imported before deepobs)"
    try:
        path = build_library((SOURCE,), FLAGS, "mkl-vendor")
        ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
    except (NativeBuildError, OSError) as error:
        return f"unavailable ({str(error).splitlines()[0]})"
    return f"on ({vendor or 'unknown vendor'})"


# MKL_CBWR_* (mkl_cbwr.h): the instruction-set branch MKL's dispatch takes, as mkl_cbwr_get_auto_branch reports it.
MKL_BRANCHES = {2: "AUTO: no instruction-set branch, MKL's generic path", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3",
                7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512",
                13: "AVX512_MIC_E1", 14: "AVX512_E1"}


def mkl_code_path() -> str:
    """The instruction-set branch MKL dispatches to in this process (`mkl_cbwr_get_auto_branch`, exported by
    libtorch_cpu.so under MKL's internal name): "AVX2" here with the vendor check answered, "AUTO: ..." without.
    Imports torch."""
    import torch

    library = Path(torch.__file__).with_name("lib") / "libtorch_cpu.so"
    try:
        branch = ctypes.CDLL(str(library)).mkl_serv_cbwr_get_auto_branch()
    except (OSError, AttributeError):
        return "unknown (no MKL in torch's libtorch_cpu.so)"
    return MKL_BRANCHES.get(branch, f"branch {branch}")


def status() -> str:
    """For result files and benchmark tables: what was done and the path MKL runs."""
    return f"vendor check {apply()}; MKL path: {mkl_code_path()}"
