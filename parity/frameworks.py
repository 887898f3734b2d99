"""Loads both frameworks for the harness, in the one order that works, with fixed threads.

TensorFlow itself is imported only through `tf_reference._tf`, which puts torchvision first.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

THREADS = int(os.environ.get("PARITY_THREADS", min(os.cpu_count() or 1, 2)))


def load_tensorflow(inter_op_threads: int = THREADS):
    """Import TF (via the reference's guarded import) and pin its thread pools once (the first call's
    `inter_op_threads` wins: 1 runs its ops one after the other, as torch's eager engine does)."""
    from tf_reference._tf import tf

    if not getattr(load_tensorflow, "_configured", False):
        try:
            tf.config.threading.set_intra_op_parallelism_threads(THREADS)
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
        except RuntimeError:
            pass  # TF's runtime already started (another module used it first): keep its pools
        load_tensorflow._configured = True
    return tf


def tf_onednn_ops() -> str:
    """Whether TF runs its convolutions, pools and products as oneDNN primitives ("on") or as Eigen's kernels
    ("off"; Eigen's contractions still call oneDNN's sgemm as their block kernel), and why. Unless
    TF_ENABLE_ONEDNN_OPTS says otherwise, TF decides per CPU: since 2.9 it turns them on for CPUs with
    "neural-network-focused hardware features such as AVX512_VNNI, AVX512_BF16, AMX" (its release notes), off
    elsewhere: off on the AMD EPYC Zen 2 kind (AVX2 only), on on the AVX-512 kinds."""
    load_tensorflow()
    from tf_reference._tf import onednn_ops_enabled

    on = onednn_ops_enabled()
    if on is None:
        return "unknown (this TensorFlow does not say)"
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    why = f"TF_ENABLE_ONEDNN_OPTS={setting}" if setting is not None else "TF's default for this CPU"
    return f"{'on' if on else 'off'} ({why})"


def require_tensorflow() -> None:
    """Fail early, in one line, where the reference cannot be imported (checked without importing it)."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError("TensorFlow is not installed; the reference needs the 'tf' extra: pip install -e '.[tf]'")


# Arrays from this size on are handed to TF through DLPack (see assign).
DLPACK_ASSIGN_ELEMENTS = 1 << 20


def assign(variable, value: np.ndarray) -> None:
    """`variable.assign(value)` for a numpy value, copying it once.

    TF copies a numpy array twice on its way in (an explicit copy, then an aligned one); a large value
    is copied once by torch instead (its allocations are 64-byte aligned, as TF requires; the cast to
    the variable's dtype happens in that copy) and handed over through DLPack. Nothing else holds that
    copy, so TF may keep its buffer as the variable's and update it in place.
    """
    if value.size < DLPACK_ASSIGN_ELEMENTS:
        variable.assign(value.astype(variable.dtype.as_numpy_dtype, copy=False))
        return
    tf = load_tensorflow()
    with warnings.catch_warnings():  # a read-only value (the shared audit draws) is only read here
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(np.ascontiguousarray(value))
    copy = source.to(TORCH_DTYPES[variable.dtype.name], copy=True)
    variable.assign(tf.experimental.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(copy)))


torch.set_num_threads(THREADS)

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
NUMPY_DTYPES = {"float32": np.float32, "float64": np.float64}
DTYPES = tuple(TORCH_DTYPES)
