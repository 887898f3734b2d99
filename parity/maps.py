"""Declarative weight and activation maps from this repository's port to the reference.

A ProblemMap pairs every reference variable with a port parameter or buffer and a named
transform, and every reference layer output (tap) with the port module whose output
should equal it. Regular nets build their tables with a small function.
"""
from __future__ import annotations

from dataclasses import dataclass

from parity.transforms import TRANSFORMS


@dataclass(frozen=True)
class ParamRow:
    port: str  # torch parameter or buffer name (model.state_dict() key)
    reference: str  # reference variable name, as in the original graph
    transform: str  # key of parity.transforms.TRANSFORMS
    args: tuple = ()  # extra transform arguments: ((C, H, W),) for dense_after_flatten

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(f"{self.reference}: unknown transform {self.transform!r}; known: {', '.join(TRANSFORMS)}")


@dataclass(frozen=True)
class TapRow:
    reference: str  # reference layer name (its output)
    port: str  # torch module name whose forward output should equal it


@dataclass(frozen=True)
class ProblemMap:
    params: tuple[ParamRow, ...]
    taps: tuple[TapRow, ...]

    def param_for_reference(self) -> dict[str, ParamRow]:
        return {row.reference: row for row in self.params}

    def port_module_for_tap(self) -> dict[str, str]:
        return {row.reference: row.port for row in self.taps}


def _conv(port: str, reference: str, bias: bool = True) -> list[ParamRow]:
    rows = [ParamRow(f"{port}.weight", f"{reference}/kernel", "conv")]
    return rows + ([ParamRow(f"{port}.bias", f"{reference}/bias", "identity")] if bias else [])


def _dense(port: str, reference: str, after_flatten_chw: tuple | None = None) -> list[ParamRow]:
    kernel = (ParamRow(f"{port}.weight", f"{reference}/kernel", "dense_after_flatten", (after_flatten_chw,))
              if after_flatten_chw else ParamRow(f"{port}.weight", f"{reference}/kernel", "dense"))
    return [kernel, ParamRow(f"{port}.bias", f"{reference}/bias", "identity")]


def _bn(port: str, reference: str) -> list[ParamRow]:
    return [
        ParamRow(f"{port}.weight", f"{reference}/gamma", "identity"),
        ParamRow(f"{port}.bias", f"{reference}/beta", "identity"),
        ParamRow(f"{port}.running_mean", f"{reference}/moving_mean", "bn_statistic"),
        ParamRow(f"{port}.running_var", f"{reference}/moving_variance", "bn_statistic"),
    ]


def _layer_name(base: str, index: int) -> str:
    return base if index == 0 else f"{base}_{index}"


def logreg_map() -> ProblemMap:
    return ProblemMap(tuple(_dense("dense", "dense")), (TapRow("dense", "dense"),))


def mlp_map() -> ProblemMap:
    ports = ["hidden.0", "hidden.1", "hidden.2", "output"]
    params = [row for i, port in enumerate(ports)
              for row in _dense(port if port == "output" else f"{port}.0", _layer_name("dense", i))]
    return ProblemMap(tuple(params), tuple(TapRow(_layer_name("dense", i), port) for i, port in enumerate(ports)))


def cnn_2c2d_map() -> ProblemMap:
    params = _conv("conv1.0", "conv2d") + _conv("conv2.0", "conv2d_1")
    params += _dense("fc1.0", "dense", after_flatten_chw=(64, 7, 7)) + _dense("fc2", "dense_1")
    taps = [("conv2d", "conv1"), ("max_pooling2d", "pool1"), ("conv2d_1", "conv2"),
            ("max_pooling2d_1", "pool2"), ("dense", "fc1"), ("dense_1", "fc2")]
    return ProblemMap(tuple(params), tuple(TapRow(*t) for t in taps))


def cnn_3c3d_map() -> ProblemMap:
    params = _conv("conv1.0", "conv2d") + _conv("conv2.0", "conv2d_1") + _conv("conv3.0", "conv2d_2")
    params += _dense("fc1.0", "dense", after_flatten_chw=(128, 3, 3))
    params += _dense("fc2.0", "dense_1") + _dense("fc3", "dense_2")
    taps = [("conv2d", "conv1"), ("max_pooling2d", "pool1"), ("conv2d_1", "conv2"), ("max_pooling2d_1", "pool2"),
            ("conv2d_2", "conv3"), ("max_pooling2d_2", "pool3"), ("dense", "fc1"), ("dense_1", "fc2"),
            ("dense_2", "fc3")]
    return ProblemMap(tuple(params), tuple(TapRow(*t) for t in taps))


def allcnnc_map() -> ProblemMap:
    # deepobs.models.allcnnc.AllCNNC.features: dropout, 3 convs, dropout, 3 convs, dropout, 3 convs.
    layout = ["dropout", "conv", "conv", "conv", "dropout", "conv", "conv", "conv", "dropout", "conv", "conv", "conv"]
    params, taps, seen = [], [], {"conv": 0, "dropout": 0}
    for index, kind in enumerate(layout):
        reference = _layer_name("conv2d" if kind == "conv" else "dropout", seen[kind])
        seen[kind] += 1
        taps.append(TapRow(reference, f"features.{index}"))
        if kind == "conv":
            params += _conv(f"features.{index}.0", reference)
    return ProblemMap(tuple(params), tuple(taps))


def wrn_map(num_residual_units: int, widening_factor: int) -> ProblemMap:
    filters = [16, 16 * widening_factor, 32 * widening_factor, 64 * widening_factor]
    params, taps = _conv("stem", "conv2d", bias=False), [TapRow("conv2d", "stem")]
    for group in range(3):
        for unit in range(num_residual_units):
            port, scope = f"groups.{group}.{unit}", f"unit_{group + 1}_{unit}"
            # Reference layer creation order inside a unit (names are per scope).
            layers = [("bn1", "batch_normalization")]
            conv_index = 0
            if unit == 0 and filters[group] != filters[group + 1]:
                layers.append(("shortcut", "conv2d"))
                conv_index = 1
            layers += [("conv1", _layer_name("conv2d", conv_index)), ("bn2", "batch_normalization_1"),
                       ("conv2", _layer_name("conv2d", conv_index + 1))]
            for module, layer in layers:
                params += _bn(f"{port}.{module}", f"{scope}/{layer}") if module.startswith("bn") else \
                    _conv(f"{port}.{module}", f"{scope}/{layer}", bias=False)
                taps.append(TapRow(f"{scope}/{layer}", f"{port}.{module}"))
            taps.append(TapRow(scope, port))
    params += _bn("bn_last", "unit_last/batch_normalization") + _dense("dense", "fully-connected/dense")
    taps += [TapRow("unit_last/batch_normalization", "bn_last"), TapRow("fully-connected/dense", "dense")]
    return ProblemMap(tuple(params), tuple(taps))


def vgg_map(variant: int) -> ProblemMap:
    """From the port's layer table (deepobs.models.vgg.CFGS): one row per conv or pool, then the head."""
    from deepobs.models.vgg import CFGS, FEATURE_CHW, POOL

    params, taps = [], [TapRow("resize_images", "resize")]
    convs = pools = 0
    for index, item in enumerate(CFGS[variant]):
        if item == POOL:
            taps.append(TapRow(_layer_name("max_pooling2d", pools), f"features.{index}"))
            pools += 1
        else:
            reference = _layer_name("conv2d", convs)
            params += _conv(f"features.{index}.0", reference)
            taps.append(TapRow(reference, f"features.{index}"))
            convs += 1
    params += _dense("classifier.0.0", "dense", after_flatten_chw=FEATURE_CHW)
    params += _dense("classifier.2.0", "dense_1") + _dense("classifier.4", "dense_2")
    taps += [TapRow("dense", "classifier.0"), TapRow("dropout", "classifier.1"), TapRow("dense_1", "classifier.2"),
             TapRow("dropout_1", "classifier.3"), TapRow("dense_2", "classifier.4")]
    return ProblemMap(tuple(params), tuple(taps))


MAPS: dict[str, ProblemMap] = {
    "mnist_logreg": logreg_map(),
    "mnist_mlp": mlp_map(),
    "mnist_2c2d": cnn_2c2d_map(),
    "fmnist_logreg": logreg_map(),
    "fmnist_mlp": mlp_map(),
    "fmnist_2c2d": cnn_2c2d_map(),
    "cifar10_3c3d": cnn_3c3d_map(),
    "cifar100_3c3d": cnn_3c3d_map(),
    "svhn_3c3d": cnn_3c3d_map(),
    "cifar100_allcnnc": allcnnc_map(),
    "svhn_wrn164": wrn_map(2, 4),
    **{f"{data}_vgg{variant}": vgg_map(variant) for data in ("cifar10", "cifar100", "imagenet") for variant in (16, 19)},
}
