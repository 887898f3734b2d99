import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import deepobs  # noqa: E402,F401  before torch: the MKL kernels the runner gets (deepobs/mkl_paths.py)
