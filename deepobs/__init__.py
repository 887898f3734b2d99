"""DeepOBS test problems in PyTorch, faithful to the original TensorFlow 1 semantics."""
from deepobs import mkl_paths

mkl_paths.apply()  # before anything imports torch: MKL's kernels for the CPU (deepobs/mkl_paths.py)

from deepobs.problems import PROBLEMS, Problem, UnknownProblemError, get_problem

__version__ = "0.1.0"
__all__ = ["PROBLEMS", "Problem", "UnknownProblemError", "get_problem"]
