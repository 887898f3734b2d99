"""Pinned TensorFlow 2 reference of the DeepOBS test problems with the original TF1 semantics.

Independent of `deepobs/`: it never imports it and shares no architecture code with it.
"""
from tf_reference.problems import REFERENCE_PROBLEMS, ReferenceProblem

__all__ = ["REFERENCE_PROBLEMS", "ReferenceProblem"]
