"""Throughput benchmarks of the port against the reference (docs/benchmarks.md)."""
import deepobs  # noqa: F401  before torch: the MKL kernels the runner gets (deepobs/mkl_paths.py)
