"""Named, pure tensor transforms between the port's layouts and the reference's.

Each transform is a pair of numpy functions (port -> reference, reference -> port) that
return new arrays, never views of their input; every pair has a round-trip test. Layouts: conv kernels OIHW (torch) / HWIO (TF);
dense weights [out, in] (torch) / [in, out] (TF); transposed-conv kernels [in, out, kh, kw] (torch) /
[kh, kw, out, in] (TF); LSTM gates i, f, g, o (torch) / i, j, f, o (TF, j = the candidate g).

A *partial* transform maps one port tensor onto a part of a reference variable: TF's LSTM kernel
[in + hidden, 4 hidden] is torch's weight_ih (its first `in` rows) and weight_hh (the rest). Its
to_reference returns the whole reference shape with zeros outside its part, so the parts of one
variable add up to it (`parity.porting.assemble`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

# Above this many elements an axis permutation is copied by torch (blocked and on every thread): numpy's
# strided copy of VGG's 103M-element first dense kernel took 4.5 s, half of a float64 VGG audit's time.
THREADED_PERMUTE_ELEMENTS = 1 << 20


def permuted(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """A new C-contiguous array holding `array.transpose(axes)`."""
    if array.size < THREADED_PERMUTE_ELEMENTS or array.dtype.kind not in "fiu":
        return array.transpose(axes).copy(order="C")
    with warnings.catch_warnings():  # a read-only input (a TF tensor's numpy()) is only read here
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(array)
    return source.permute(axes).contiguous().numpy()


def identity(x: np.ndarray) -> np.ndarray:
    # A copy: tensor.numpy() shares the tensor's memory, which later syncs overwrite in place.
    return np.array(x, copy=True)


def conv_oihw_to_hwio(weight_oihw: np.ndarray) -> np.ndarray:
    return permuted(weight_oihw, (2, 3, 1, 0))


def conv_hwio_to_oihw(kernel_hwio: np.ndarray) -> np.ndarray:
    return permuted(kernel_hwio, (3, 2, 0, 1))


def dense_oi_to_io(weight_oi: np.ndarray) -> np.ndarray:
    return permuted(weight_oi, (1, 0))


def dense_io_to_oi(kernel_io: np.ndarray) -> np.ndarray:
    return permuted(kernel_io, (1, 0))


def dense_nchw_flatten_to_nhwc(weight_oi: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Weight of a dense layer after an NCHW flatten -> TF kernel after an NHWC flatten."""
    channels, height, width = chw
    outputs = weight_oi.shape[0]
    kernel = permuted(weight_oi.reshape(outputs, channels, height, width), (2, 3, 1, 0))
    return kernel.reshape(height * width * channels, outputs)


def dense_nhwc_flatten_to_nchw(kernel_io: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    channels, height, width = chw
    outputs = kernel_io.shape[1]
    weight = permuted(kernel_io.reshape(height, width, channels, outputs), (3, 2, 0, 1))
    return weight.reshape(outputs, channels * height * width)


def conv_transpose_iohw_to_hwoi(weight_iohw: np.ndarray) -> np.ndarray:
    """torch ConvTranspose2d weight [in, out, kh, kw] -> TF conv2d_transpose kernel [kh, kw, out, in].

    Both frameworks compute the transpose of a cross-correlation with the same spatial taps (no flip):
    only the axes move.
    """
    return permuted(weight_iohw, (2, 3, 1, 0))


def conv_transpose_hwoi_to_iohw(kernel_hwoi: np.ndarray) -> np.ndarray:
    return permuted(kernel_hwoi, (3, 2, 0, 1))


# torch's gate block k holds TF's gate block TF_GATES_FOR_TORCH[k]: i<-i, f<-f (TF's 3rd), g<-j (TF's 2nd), o<-o.
TF_GATES_FOR_TORCH = (0, 2, 1, 3)


def _gate_blocks(array: np.ndarray, order, axis: int) -> np.ndarray:
    blocks = np.split(array, 4, axis=axis)
    return np.concatenate([blocks[k] for k in order], axis=axis)


def _inverse(order) -> tuple[int, ...]:
    return tuple(int(k) for k in np.argsort(order))


def lstm_kernel_part_to_port(kernel: np.ndarray, input_size: int, part: str,
                             gates=TF_GATES_FOR_TORCH) -> np.ndarray:
    """TF kernel [in + hidden, 4 hidden] (i, j, f, o) -> torch weight_ih [4 hidden, in] or weight_hh [4 hidden, hidden]."""
    rows = kernel[:input_size] if part == "input" else kernel[input_size:]
    return _gate_blocks(rows, gates, axis=1).T.copy(order="C")


def lstm_kernel_part_to_reference(weight: np.ndarray, input_size: int, part: str,
                                  gates=TF_GATES_FOR_TORCH) -> np.ndarray:
    """torch weight_ih / weight_hh -> its rows of the TF kernel, zeros in the other part's rows."""
    hidden = weight.shape[0] // 4
    kernel = np.zeros((input_size + hidden, 4 * hidden), weight.dtype)
    rows = slice(0, input_size) if part == "input" else slice(input_size, input_size + hidden)
    kernel[rows] = _gate_blocks(weight.T, _inverse(gates), axis=1)
    return kernel


def lstm_bias_to_port(bias: np.ndarray, gates=TF_GATES_FOR_TORCH) -> np.ndarray:
    return _gate_blocks(bias, gates, axis=0).copy()


def lstm_bias_to_reference(bias: np.ndarray, gates=TF_GATES_FOR_TORCH) -> np.ndarray:
    return _gate_blocks(bias, _inverse(gates), axis=0).copy()


@dataclass(frozen=True)
class Transform:
    name: str
    to_reference: Callable[..., np.ndarray]
    to_port: Callable[..., np.ndarray]
    description: str
    partial: bool = False  # the port tensor is one part of the reference variable (see the module doc)


TRANSFORMS: dict[str, Transform] = {t.name: t for t in (
    Transform("identity", identity, identity, "biases, BN gamma/beta: same layout"),
    Transform("bn_statistic", identity, identity, "BN running mean/variance buffer <-> moving_mean/moving_variance"),
    Transform("conv", conv_oihw_to_hwio, conv_hwio_to_oihw, "conv kernel OIHW <-> HWIO"),
    Transform("dense", dense_oi_to_io, dense_io_to_oi, "dense weight [out,in] <-> kernel [in,out]"),
    Transform("dense_after_flatten", dense_nchw_flatten_to_nhwc, dense_nhwc_flatten_to_nchw,
              "first dense after a conv stack: NCHW-flatten weight <-> NHWC-flatten kernel (args: C, H, W)"),
    Transform("conv_transpose", conv_transpose_iohw_to_hwoi, conv_transpose_hwoi_to_iohw,
              "transposed-conv kernel [in, out, kh, kw] <-> [kh, kw, out, in]"),
    Transform("lstm_input_kernel",
              lambda w, input_size, *gates: lstm_kernel_part_to_reference(w, input_size, "input", *gates),
              lambda k, input_size, *gates: lstm_kernel_part_to_port(k, input_size, "input", *gates),
              "LSTM weight_ih [4h, in] (i,f,g,o) <-> the first `in` rows of the kernel [in+h, 4h] (i,j,f,o) "
              "(args: in[, gate order])", partial=True),
    Transform("lstm_recurrent_kernel",
              lambda w, input_size, *gates: lstm_kernel_part_to_reference(w, input_size, "recurrent", *gates),
              lambda k, input_size, *gates: lstm_kernel_part_to_port(k, input_size, "recurrent", *gates),
              "LSTM weight_hh [4h, h] (i,f,g,o) <-> the last h rows of the kernel [in+h, 4h] (i,j,f,o) "
              "(args: in[, gate order])", partial=True),
    Transform("lstm_bias", lambda b, *gates: lstm_bias_to_reference(b, *gates),
              lambda b, *gates: lstm_bias_to_port(b, *gates),
              "LSTM bias_ih [4h] (i,f,g,o) <-> bias [4h] (i,j,f,o); torch's bias_hh holds TF's constant "
              "forget_bias and has no reference variable"),
)}
