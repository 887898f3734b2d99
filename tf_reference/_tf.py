"""The one place TensorFlow is imported, for the whole repository.

With torch 2.14.1 / TF 2.21.0, importing TensorFlow before torchvision segfaults the
process (in triton's native module). Importing torchvision first, when it is installed,
makes every later import order safe. Everything else gets `tf` from here.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import torchvision  # noqa: F401  (must precede TensorFlow, see above)
except ImportError:
    pass

try:
    import tensorflow as tf
except ImportError as error:
    raise ImportError(
        "TensorFlow is not installed; the reference needs the 'tf' extra: pip install -e '.[tf]'"
    ) from error

__all__ = ["tf"]
