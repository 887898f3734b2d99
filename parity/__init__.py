import deepobs  # noqa: F401  before torch: the port audited runs the MKL kernels the runner gets (deepobs/mkl_paths.py)
