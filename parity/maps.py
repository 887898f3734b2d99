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


# Functions a TapRow can apply to its module's output before comparing (`then=`): a port that applies
# the layer's activation as a function call (F.relu) taps the module before it. Names as
# `python -m parity describe` reports the reference's activations.
THEN_FUNCTIONS = {
    "relu": lambda x: x.clamp_min(0),
    "lrelu": lambda x: x.maximum(0.3 * x),  # the VAE's lrelu: max(x, 0.3 x)
    "sigmoid": lambda x: x.sigmoid(),
}


@dataclass(frozen=True)
class TapRow:
    reference: str  # reference layer name (its output)
    port: str  # torch module name whose forward output should equal it
    then: str | None = None  # a THEN_FUNCTIONS name applied to that output first (an activation the port calls)

    def __post_init__(self):
        if self.then is not None and self.then not in THEN_FUNCTIONS:
            raise ValueError(f"{self.reference}: unknown then={self.then!r}; known: {', '.join(THEN_FUNCTIONS)}")


@dataclass(frozen=True)
class ProblemMap:
    params: tuple[ParamRow, ...]
    taps: tuple[TapRow, ...]
    # Reference taps deliberately not compared (no port module computes them alone; a functional dropout,
    # say): reported as such instead of failing. Later layers and the outputs still compare.
    uncompared: tuple[str, ...] = ()
    inferred: bool = False  # proposed by parity.automap, not written by hand (the report says so)

    def rows_for_reference(self) -> dict[str, list[ParamRow]]:
        """Each reference variable's rows: one, or one per part (an LSTM kernel: weight_ih and weight_hh)."""
        rows: dict[str, list[ParamRow]] = {}
        for row in self.params:
            rows.setdefault(row.reference, []).append(row)
        return rows

    def port_module_for_tap(self) -> dict[str, str]:
        return {row.reference: row.port for row in self.taps}

    def then_for_tap(self) -> dict[str, str]:
        return {row.reference: row.then for row in self.taps if row.then}


# --- public map helpers: the rows of one layer, by torch module name and reference layer name ---------
# A map for your own port is a ProblemMap of these rows (`python -m parity suggest-map` writes one).

def conv_rows(port: str, reference: str, bias: bool = True) -> list[ParamRow]:
    """nn.Conv2d `port` (weight OIHW, bias) <- tf.layers.conv2d `reference` (kernel HWIO, bias)."""
    rows = [ParamRow(f"{port}.weight", f"{reference}/kernel", "conv")]
    return rows + ([ParamRow(f"{port}.bias", f"{reference}/bias", "identity")] if bias else [])


def conv_transpose_rows(port: str, reference: str) -> list[ParamRow]:
    """nn.ConvTranspose2d `port` (weight [in, out, kh, kw], bias) <- tf.layers.conv2d_transpose `reference`."""
    return [ParamRow(f"{port}.weight", f"{reference}/kernel", "conv_transpose"),
            ParamRow(f"{port}.bias", f"{reference}/bias", "identity")]


def dense_rows(port: str, reference: str, after_flatten_chw: tuple | None = None) -> list[ParamRow]:
    """nn.Linear `port` (weight [out, in], bias) <- tf.layers.dense `reference` (kernel [in, out], bias).

    after_flatten_chw=(C, H, W): the layer reads a flattened C x H x W map, which the port flattens in
    NCHW order and the reference in NHWC order; the kernel's rows are permuted accordingly."""
    kernel = (ParamRow(f"{port}.weight", f"{reference}/kernel", "dense_after_flatten", (tuple(after_flatten_chw),))
              if after_flatten_chw else ParamRow(f"{port}.weight", f"{reference}/kernel", "dense"))
    return [kernel, ParamRow(f"{port}.bias", f"{reference}/bias", "identity")]


def bn_rows(port: str, reference: str) -> list[ParamRow]:
    """nn.BatchNorm2d `port` (weight, bias, running_mean, running_var) <- tf.layers.batch_normalization
    `reference` (gamma, beta, moving_mean, moving_variance). The momentum is the port's business: torch's
    is 1 - TF's."""
    return [
        ParamRow(f"{port}.weight", f"{reference}/gamma", "identity"),
        ParamRow(f"{port}.bias", f"{reference}/beta", "identity"),
        ParamRow(f"{port}.running_mean", f"{reference}/moving_mean", "bn_statistic"),
        ParamRow(f"{port}.running_var", f"{reference}/moving_variance", "bn_statistic"),
    ]


def lstm_rows(port: str, reference_scope: str, input_size: int, layer: int = 0) -> list[ParamRow]:
    """Layer `layer` of nn.LSTM `port` <- TF1 LSTMCell variables `reference_scope`/kernel and /bias: the kernel
    [in + h, 4h] splits into weight_ih and weight_hh (gates reordered), the bias goes to bias_ih. torch's
    bias_hh has no reference variable: freeze it at the forget bias (1 on the f gate), see char_rnn_map."""
    suffix = f"l{layer}"
    return [ParamRow(f"{port}.weight_ih_{suffix}", f"{reference_scope}/kernel", "lstm_input_kernel", (input_size,)),
            ParamRow(f"{port}.weight_hh_{suffix}", f"{reference_scope}/kernel", "lstm_recurrent_kernel", (input_size,)),
            ParamRow(f"{port}.bias_ih_{suffix}", f"{reference_scope}/bias", "lstm_bias")]


def layer_name(base: str, index: int) -> str:
    """TF1's uniquified layer names within one variable scope: conv2d, conv2d_1, conv2d_2, ..."""
    return base if index == 0 else f"{base}_{index}"


def logreg_map() -> ProblemMap:
    return ProblemMap(tuple(dense_rows("dense", "dense")), (TapRow("dense", "dense"),))


def mlp_map() -> ProblemMap:
    ports = ["hidden.0", "hidden.1", "hidden.2", "output"]
    params = [row for i, port in enumerate(ports)
              for row in dense_rows(port if port == "output" else f"{port}.0", layer_name("dense", i))]
    return ProblemMap(tuple(params), tuple(TapRow(layer_name("dense", i), port) for i, port in enumerate(ports)))


def _conv_pool_dense_taps(convs: int, denses: int) -> list[TapRow]:
    """2c2d's and 3c3d's taps: conv{i} (its ReLU runs after the pool, deepobs/models/cnn_3c3d.py, so the conv's
    module output is before it), pool{i} (after that ReLU), then fc{i}."""
    taps = []
    for i in range(convs):
        taps += [TapRow(layer_name("conv2d", i), f"conv{i + 1}", then="relu"),
                 TapRow(layer_name("max_pooling2d", i), f"pool{i + 1}")]
    return taps + [TapRow(layer_name("dense", i), f"fc{i + 1}") for i in range(denses)]


def cnn_2c2d_map() -> ProblemMap:
    params = conv_rows("conv1.0", "conv2d") + conv_rows("conv2.0", "conv2d_1")
    params += dense_rows("fc1.0", "dense", after_flatten_chw=(64, 7, 7)) + dense_rows("fc2", "dense_1")
    return ProblemMap(tuple(params), tuple(_conv_pool_dense_taps(convs=2, denses=2)))


def cnn_3c3d_map() -> ProblemMap:
    params = conv_rows("conv1.0", "conv2d") + conv_rows("conv2.0", "conv2d_1") + conv_rows("conv3.0", "conv2d_2")
    params += dense_rows("fc1.0", "dense", after_flatten_chw=(128, 3, 3))
    params += dense_rows("fc2.0", "dense_1") + dense_rows("fc3", "dense_2")
    return ProblemMap(tuple(params), tuple(_conv_pool_dense_taps(convs=3, denses=3)))


def allcnnc_map() -> ProblemMap:
    # deepobs.models.allcnnc.AllCNNC.features: dropout, 3 convs, dropout, 3 convs, dropout, 3 convs.
    layout = ["dropout", "conv", "conv", "conv", "dropout", "conv", "conv", "conv", "dropout", "conv", "conv", "conv"]
    params, taps, seen = [], [], {"conv": 0, "dropout": 0}
    for index, kind in enumerate(layout):
        reference = layer_name("conv2d" if kind == "conv" else "dropout", seen[kind])
        seen[kind] += 1
        taps.append(TapRow(reference, f"features.{index}"))
        if kind == "conv":
            params += conv_rows(f"features.{index}.0", reference)
    return ProblemMap(tuple(params), tuple(taps))


def wrn_map(num_residual_units: int, widening_factor: int) -> ProblemMap:
    filters = [16, 16 * widening_factor, 32 * widening_factor, 64 * widening_factor]
    params, taps = conv_rows("stem", "conv2d", bias=False), [TapRow("conv2d", "stem")]
    for group in range(3):
        for unit in range(num_residual_units):
            port, scope = f"groups.{group}.{unit}", f"unit_{group + 1}_{unit}"
            # Reference layer creation order inside a unit (names are per scope).
            layers = [("bn1", "batch_normalization")]
            conv_index = 0
            if unit == 0 and filters[group] != filters[group + 1]:
                layers.append(("shortcut", "conv2d"))
                conv_index = 1
            layers += [("conv1", layer_name("conv2d", conv_index)), ("bn2", "batch_normalization_1"),
                       ("conv2", layer_name("conv2d", conv_index + 1))]
            for module, layer in layers:
                params += bn_rows(f"{port}.{module}", f"{scope}/{layer}") if module.startswith("bn") else \
                    conv_rows(f"{port}.{module}", f"{scope}/{layer}", bias=False)
                taps.append(TapRow(f"{scope}/{layer}", f"{port}.{module}"))
            taps.append(TapRow(scope, port))
    params += bn_rows("bn_last", "unit_last/batch_normalization") + dense_rows("dense", "fully-connected/dense")
    taps += [TapRow("unit_last/batch_normalization", "bn_last"), TapRow("fully-connected/dense", "dense")]
    return ProblemMap(tuple(params), tuple(taps))


def vae_map() -> ProblemMap:
    """deepobs.models.vae.VAE: encoder.{0,2,4} convs, mean, std_dev.0, decoder_dense.{0,1}, decoder_convs.{0,2,4}, output."""
    params = (conv_rows("encoder.0.0", "encoder/conv2d") + conv_rows("encoder.2.0", "encoder/conv2d_1")
              + conv_rows("encoder.4.0", "encoder/conv2d_2")
              + dense_rows("mean", "encoder/dense") + dense_rows("std_dev.0", "encoder/dense_1")
              + dense_rows("decoder_dense.0.0", "decoder/dense") + dense_rows("decoder_dense.1.0", "decoder/dense_1"))
    for index, layer in enumerate(("conv2d_transpose", "conv2d_transpose_1", "conv2d_transpose_2")):
        params += conv_transpose_rows(f"decoder_convs.{2 * index}.0", f"decoder/{layer}")
    params += dense_rows("output.0", "decoder/dense_2")  # the port flattens in TF's NHWC order
    taps = [("encoder/conv2d", "encoder.0"), ("encoder/dropout", "encoder.1"), ("encoder/conv2d_1", "encoder.2"),
            ("encoder/dropout_1", "encoder.3"), ("encoder/conv2d_2", "encoder.4"), ("encoder/dropout_2", "encoder.5"),
            ("encoder/dense", "mean"), ("encoder/dense_1", "std_dev.0"), ("encoder/z", "sample"),
            ("decoder/dense", "decoder_dense.0"), ("decoder/dense_1", "decoder_dense.1"),
            ("decoder/conv2d_transpose", "decoder_convs.0"), ("decoder/dropout", "decoder_convs.1"),
            ("decoder/conv2d_transpose_1", "decoder_convs.2"), ("decoder/dropout_1", "decoder_convs.3"),
            ("decoder/conv2d_transpose_2", "decoder_convs.4"), ("decoder/dense_2", "output")]
    return ProblemMap(tuple(params), tuple(TapRow(*t) for t in taps))


def char_rnn_map(num_layers: int = 2, rnn_size: int = 128) -> ProblemMap:
    """deepobs.models.char_rnn.CharRNN. Each TF kernel maps onto two torch tensors (partial transforms);
    torch's bias_hh_l0 (frozen at the forget bias 1.0, TF's constant) has no reference variable, so the
    port holds 512 more numbers per layer (285,523 in all) than the original's 284,499 trainable ones."""
    params = [ParamRow("embedding.weight", "embedding", "identity")]
    taps = [TapRow("embedding", "embedding")]
    for layer in range(num_layers):
        scope, lstm = f"rnn/multi_rnn_cell/cell_{layer}", f"lstm.{layer}"
        params += lstm_rows(lstm, f"{scope}/lstm_cell", rnn_size)
        taps += [TapRow(f"{scope}/input_dropout", f"input_dropout.{layer}"), TapRow(f"{scope}/lstm_cell", lstm),
                 TapRow(f"{scope}/state", f"state_out.{layer}"),
                 TapRow(f"{scope}/output_dropout", f"output_dropout.{layer}")]
    params += [ParamRow("softmax.weight", "rnnlm/softmax_w", "dense"),
               ParamRow("softmax.bias", "rnnlm/softmax_b", "identity")]
    return ProblemMap(tuple(params), tuple(taps))


def quadratic_map() -> ProblemMap:
    return ProblemMap((ParamRow("theta", "theta", "identity"),), (TapRow("hessian", "hessian_out"),))


def two_d_map() -> ProblemMap:
    return ProblemMap((ParamRow("u", "weight", "identity"), ParamRow("v", "bias", "identity")), ())


# Inception v3 (deepobs.models.inception_v3): each block's branches as their layers in the original's
# creation order ("conv" = conv2d_BN, "avg"/"max" = a pool); the port's branch k is a ModuleList of
# exactly these layers, the reference's is variable scope branch{k}.
_INCEPTION_BLOCK_TYPES = {
    "block5": (("conv",), ("avg", "conv"), ("conv",) * 2, ("conv",) * 3),
    "block10": (("max",), ("conv",), ("conv",) * 3),
    "block6": (("conv",), ("avg", "conv"), ("conv",) * 3, ("conv",) * 5),
    "blockD": (("max",), ("conv",) * 4, ("conv",) * 2),
    "block7": (("conv",), ("conv",) * 3, ("conv",) * 4, ("avg", "conv")),
}
_INCEPTION_BLOCKS = (  # (port module, reference scope, block type), in forward order
    ("block5a", "inception_block5a", "block5"), ("block5b_0", "inception_block5b_0", "block5"),
    ("block5b_1", "inception_block5b_1", "block5"), ("block10", "inception_block10", "block10"),
    ("block6a", "inception_block6a", "block6"), ("block6b_0", "inception_block6b_0", "block6"),
    ("block6b_1", "inception_block6b_1", "block6"), ("block6c", "inception_block6c", "block6"),
    ("blockD", "inception_blockD", "blockD"), ("block7_0", "inception_block7_0", "block7"),
    ("block7_1", "inception_block7_1", "block7"),
)
_POOL_LAYERS = {"avg": "average_pooling2d", "max": "max_pooling2d"}


def _layer_sequence(port: str, scope: str, kinds, pool_layers=_POOL_LAYERS) -> tuple[list, list]:
    """Params and taps of a run of conv2d_BN layers and pools sharing one variable scope (names per scope)."""
    params, taps, seen = [], [], {}
    for index, kind in enumerate(kinds):
        base = "conv2d" if kind == "conv" else pool_layers[kind]
        count = seen.get(base, 0)
        seen[base] = count + 1
        module = f"{port}.{index}"
        if kind == "conv":
            conv, bn = f"{scope}/{layer_name('conv2d', count)}", f"{scope}/{layer_name('batch_normalization', count)}"
            params += conv_rows(f"{module}.conv", conv, bias=False) + bn_rows(f"{module}.bn", bn)
            taps += [TapRow(conv, f"{module}.conv"), TapRow(bn, f"{module}.bn")]
        else:
            taps.append(TapRow(f"{scope}/{layer_name(base, count)}", module))
    return params, taps


def inception_v3_map() -> ProblemMap:
    sequences = [("stem", "stem", ("conv", "conv", "conv", "max", "conv", "conv", "max"), {"max": "max_pool"})]
    block_outputs = []
    for port, scope, block_type in _INCEPTION_BLOCKS:
        sequences += [(f"{port}.branch{index}", f"{scope}/branch{index}", kinds, _POOL_LAYERS)
                      for index, kinds in enumerate(_INCEPTION_BLOCK_TYPES[block_type])]
        block_outputs.append(TapRow(scope, port))
        if port == "block6c":  # the aux head reads block 6c's output
            sequences.append(("aux_head.layers", "aux_head", ("avg", "conv", "conv"), _POOL_LAYERS))
    params, taps = [], [TapRow("resize_images", "resize")]
    for port, scope, kinds, pool_layers in sequences:
        sequence_params, sequence_taps = _layer_sequence(port, scope, kinds, pool_layers)
        params += sequence_params
        taps += sequence_taps
    params += dense_rows("aux_head.dense", "aux_head/dense") + dense_rows("head.dense", "output/dense")
    taps += block_outputs + [TapRow("aux_head/dense", "aux_head"), TapRow("output/average_pooling2d", "head.pool"),
                             TapRow("output/dropout", "head.dropout"), TapRow("output/dense", "head.dense")]
    return ProblemMap(tuple(params), tuple(taps))


def vgg_map(variant: int) -> ProblemMap:
    """From the port's layer table (deepobs.models.vgg.CFGS): one row per conv or pool, then the head."""
    from deepobs.models.vgg import CFGS, FEATURE_CHW, POOL

    params, taps = [], [TapRow("resize_images", "resize")]
    convs = pools = 0
    for index, item in enumerate(CFGS[variant]):
        if item == POOL:
            taps.append(TapRow(layer_name("max_pooling2d", pools), f"features.{index}"))
            pools += 1
        else:
            reference = layer_name("conv2d", convs)
            params += conv_rows(f"features.{index}.0", reference)
            taps.append(TapRow(reference, f"features.{index}"))
            convs += 1
    params += dense_rows("classifier.0.0", "dense", after_flatten_chw=FEATURE_CHW)
    params += dense_rows("classifier.2.0", "dense_1") + dense_rows("classifier.4", "dense_2")
    taps += [TapRow("dense", "classifier.0"), TapRow("dropout", "classifier.1"), TapRow("dense_1", "classifier.2"),
             TapRow("dropout_1", "classifier.3"), TapRow("dense_2", "classifier.4")]
    return ProblemMap(tuple(params), tuple(taps))


MAPS: dict[str, ProblemMap] = {
    "mnist_logreg": logreg_map(),
    "mnist_mlp": mlp_map(),
    "mnist_2c2d": cnn_2c2d_map(),
    "mnist_vae": vae_map(),
    "fmnist_logreg": logreg_map(),
    "fmnist_mlp": mlp_map(),
    "fmnist_2c2d": cnn_2c2d_map(),
    "fmnist_vae": vae_map(),
    "cifar10_3c3d": cnn_3c3d_map(),
    "cifar100_3c3d": cnn_3c3d_map(),
    "svhn_3c3d": cnn_3c3d_map(),
    "cifar100_allcnnc": allcnnc_map(),
    "svhn_wrn164": wrn_map(2, 4),
    "tolstoi_char_rnn": char_rnn_map(),
    "quadratic_deep": quadratic_map(),
    "two_d_rosenbrock": two_d_map(),
    "two_d_beale": two_d_map(),
    "two_d_branin": two_d_map(),
    "cifar100_wrn404": wrn_map(6, 4),
    "imagenet_inception_v3": inception_v3_map(),
    **{f"{data}_vgg{variant}": vgg_map(variant) for data in ("cifar10", "cifar100", "imagenet") for variant in (16, 19)},
}
