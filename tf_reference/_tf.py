"""The one place TensorFlow is imported, for the whole repository.

With torch 2.14.1 / TF 2.21.0, importing TensorFlow before torchvision segfaults the
process (in triton's native module). Importing torchvision first, when it is installed,
makes every later import order safe. Everything else gets `tf` from here.
"""
from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import torchvision  # noqa: F401  (must precede TensorFlow, see above)
except ImportError:
    pass

# Lines TF's C++ runtime writes to fd 2 on every import (absl logs before TF_CPP_MIN_LOG_LEVEL
# applies). They are dropped; anything else it writes there is passed on. PARITY_TF_LOGS=1 keeps all.
IMPORT_NOISE = ("All log messages before absl::InitializeLog() is called", "oneDNN custom operations are on")


def _import_tensorflow():
    if os.environ.get("PARITY_TF_LOGS"):
        import tensorflow
        return tensorflow
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(noise in line for noise in IMPORT_NOISE)]
            sys.stderr.write("".join(kept))
    return tensorflow


try:
    tf = _import_tensorflow()
except ImportError as error:
    raise ImportError(
        "TensorFlow is not installed; the reference needs the 'tf' extra: pip install -e '.[tf]'"
    ) from error


def onednn_ops_enabled() -> bool | None:
    """TF's own answer to whether it runs its convolutions, pools and products as oneDNN primitives (else as
    Eigen's kernels); None where this TF does not expose it (a private module)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


__all__ = ["tf", "onednn_ops_enabled"]
