"""Named, pure tensor transforms between the port's layouts and the reference's.

Each transform is a pair of numpy functions (port -> reference, reference -> port) that
return new arrays, never views of their input; every pair has a round-trip test. Layouts: conv kernels OIHW (torch) / HWIO (TF);
dense weights [out, in] (torch) / [in, out] (TF).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def identity(x: np.ndarray) -> np.ndarray:
    # A copy: tensor.numpy() shares the tensor's memory, which later syncs overwrite in place.
    return np.array(x, copy=True)


def conv_oihw_to_hwio(weight_oihw: np.ndarray) -> np.ndarray:
    return weight_oihw.transpose(2, 3, 1, 0).copy(order="C")


def conv_hwio_to_oihw(kernel_hwio: np.ndarray) -> np.ndarray:
    return kernel_hwio.transpose(3, 2, 0, 1).copy(order="C")


def dense_oi_to_io(weight_oi: np.ndarray) -> np.ndarray:
    return weight_oi.T.copy(order="C")


def dense_io_to_oi(kernel_io: np.ndarray) -> np.ndarray:
    return kernel_io.T.copy(order="C")


def dense_nchw_flatten_to_nhwc(weight_oi: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Weight of a dense layer after an NCHW flatten -> TF kernel after an NHWC flatten."""
    channels, height, width = chw
    outputs = weight_oi.shape[0]
    kernel = weight_oi.reshape(outputs, channels, height, width).transpose(2, 3, 1, 0)
    return kernel.reshape(height * width * channels, outputs).copy(order="C")


def dense_nhwc_flatten_to_nchw(kernel_io: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    channels, height, width = chw
    outputs = kernel_io.shape[1]
    weight = kernel_io.reshape(height, width, channels, outputs).transpose(3, 2, 0, 1)
    return weight.reshape(outputs, channels * height * width).copy(order="C")


@dataclass(frozen=True)
class Transform:
    name: str
    to_reference: Callable[..., np.ndarray]
    to_port: Callable[..., np.ndarray]
    description: str


TRANSFORMS: dict[str, Transform] = {t.name: t for t in (
    Transform("identity", identity, identity, "biases, BN gamma/beta: same layout"),
    Transform("bn_statistic", identity, identity, "BN running mean/variance buffer <-> moving_mean/moving_variance"),
    Transform("conv", conv_oihw_to_hwio, conv_hwio_to_oihw, "conv kernel OIHW <-> HWIO"),
    Transform("dense", dense_oi_to_io, dense_io_to_oi, "dense weight [out,in] <-> kernel [in,out]"),
    Transform("dense_after_flatten", dense_nchw_flatten_to_nhwc, dense_nhwc_flatten_to_nchw,
              "first dense after a conv stack: NCHW-flatten weight <-> NHWC-flatten kernel (args: C, H, W)"),
)}
