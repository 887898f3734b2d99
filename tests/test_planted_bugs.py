"""Real porting bugs, planted in a copy of the port: each must fail its check at the right layer."""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from deepobs import losses
from deepobs.models.quadratic import DIM, Quadratic, _rotation
from deepobs.problems import PROBLEMS
from parity.audit import audit_problem
from parity.maps import MAPS, ParamRow, ProblemMap
from parity.port import deepobs_port

pytestmark = pytest.mark.parity


def port_with(model_edit=None, **changes):
    port = deepobs_port()
    if model_edit:
        def build_model(problem, base=port.build_model):
            model = base(problem)
            model_edit(model)
            return model
        changes["build_model"] = build_model
    return dataclasses.replace(port, **changes)


def failing(port, problem, check, dtype="float64"):
    results = {r.check: r for r in audit_problem(port, problem, dtype, checks=[check.split(" (")[0]])}
    result = results[check]
    assert not result.passed, f"{check} passed with the planted bug"
    assert not result.error, result.error
    return result.first_divergence


def test_symmetric_padding_on_stride2_same_conv():
    def edit(model):
        model.features[3][0] = nn.Conv2d(96, 96, 3, 2, padding=1)  # PyTorch 1/1 instead of TF's 0/1
    assert failing(port_with(edit), "cifar100_allcnnc", "forward").item == "conv2d_2"


def test_symmetric_padding_on_stride2_same_max_pool():
    def edit(model):
        model.pool1 = nn.MaxPool2d(3, 2, padding=1)
    first = failing(port_with(edit), "cifar10_3c3d", "forward")
    assert first.item == "max_pooling2d" and first.max_abs > 1e-3


def test_nchw_flatten_order():
    # The port flattens NCHW but its weights were ported with a plain transpose.
    rows = tuple(dataclasses.replace(r, transform="dense", args=()) if r.transform == "dense_after_flatten" else r
                 for r in MAPS["mnist_2c2d"].params)
    maps = dict(MAPS, mnist_2c2d=ProblemMap(rows, MAPS["mnist_2c2d"].taps))
    assert failing(port_with(weight_maps=maps), "mnist_2c2d", "forward").item == "dense"


def _set_bn(model, **attributes):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for name, value in attributes.items():
                setattr(module, name, value)


def test_bn_momentum_not_inverted():
    first = failing(port_with(lambda m: _set_bn(m, momentum=0.9)), "svhn_wrn164", "train_mode")
    assert first.item == "unit_1_0/batch_normalization/moving_mean"


def test_bn_epsilon_1e3_instead_of_1e5():
    first = failing(port_with(lambda m: _set_bn(m, eps=1e-3)), "svhn_wrn164", "forward")
    assert first.item == "unit_1_0/batch_normalization"


def test_bn_epsilon_caught_in_float32_too():
    first = failing(port_with(lambda m: _set_bn(m, eps=1e-3)), "svhn_wrn164", "forward", dtype="float32")
    assert first.item == "unit_1_0/batch_normalization"


def test_dropout2d_instead_of_elementwise():
    def edit(model):
        model.features[4] = nn.Dropout2d(0.5)
    assert failing(port_with(edit), "cifar100_allcnnc", "train_mode").item == "dropout_1"


def test_l2_applied_to_biases():
    def loss_terms(problem, model, logits, labels):
        data_loss = losses.softmax_cross_entropy(logits, labels).mean()
        return data_loss, losses.l2_regularizer(list(model.parameters()), PROBLEMS[problem].weight_decay)
    port = port_with(loss_terms=loss_terms)
    assert failing(port, "cifar10_3c3d", "loss").item == "regularizer"
    # Backward order: the regularized bias closest to the loss first.
    assert failing(port, "cifar10_3c3d", "gradients").item == "dense_2/bias"


def test_stock_torch_adam_instead_of_tf1_adam():
    optimizers = dict(deepobs_port().optimizers, adam=lambda params, lr: torch.optim.Adam(params, lr=lr))
    port = port_with(optimizers=optimizers)
    first = failing(port, "cifar10_3c3d", "step/adam (reference gradients)")
    assert first.item == "step1 conv2d/kernel (update)"
    assert failing(port, "cifar10_3c3d", "step/adam").item.startswith("step1 ")


def test_all_cnn_c_final_relu_missing():
    def edit(model):
        model.features[11][1] = nn.Identity()  # the last 1x1 conv without its ReLU
    assert failing(port_with(edit), "cifar100_allcnnc", "forward").item == "conv2d_8"


def test_weight_map_shape_mismatch_names_both_sides():
    port = port_with(build_model=lambda problem: PROBLEMS["cifar100_3c3d"].build_model())  # 100 outputs, not 10
    [result] = audit_problem(port, "cifar10_3c3d", "float64")
    assert result.check == "setup" and not result.passed
    assert "dense_2/kernel (256, 10)" in result.error and "fc3.weight is (100, 256)" in result.error


def test_nan_in_the_port_is_a_failed_check_not_a_crash():
    def edit(model):
        model.fc2.register_forward_hook(lambda module, args, output: output * float("nan"))
    first = failing(port_with(edit), "mnist_2c2d", "forward")
    assert first.item == "dense_1" and "non-finite" in first.note


# --- the character LSTM ---------------------------------------------------------------------------

def _lstm_rows_with_gates(gates):
    rows = tuple(dataclasses.replace(r, args=(r.args[0], gates)) if r.transform.startswith("lstm_") and r.args else
                 dataclasses.replace(r, args=(gates,)) if r.transform == "lstm_bias" else r
                 for r in MAPS["tolstoi_char_rnn"].params)
    return dict(MAPS, tolstoi_char_rnn=ProblemMap(rows, MAPS["tolstoi_char_rnn"].taps))


def test_lstm_tf_gate_order_left_unpermuted():
    port = port_with(weight_maps=_lstm_rows_with_gates((0, 1, 2, 3)))  # TF's i, j, f, o read as torch's i, f, g, o
    first = failing(port, "tolstoi_char_rnn", "forward")
    assert first.item == "rnn/multi_rnn_cell/cell_0/lstm_cell" and first.max_rel > 1e-2


def test_lstm_forget_bias_dropped():
    def edit(model):
        with torch.no_grad():
            for lstm in model.lstm:
                lstm.bias_hh_l0.zero_()
    assert failing(port_with(edit), "tolstoi_char_rnn", "forward").item == "rnn/multi_rnn_cell/cell_0/lstm_cell"


def test_nn_lstm_dropout_instead_of_the_four_dropout_sites():
    # nn.LSTM(num_layers=2, dropout=0.2) masks only between the layers, once: keep that site alone.
    def edit(model):
        model.input_dropout[0] = nn.Identity()
        model.input_dropout[1] = nn.Identity()
        model.output_dropout[1] = nn.Identity()
    first = failing(port_with(edit), "tolstoi_char_rnn", "train_mode")
    assert first.item == "rnn/multi_rnn_cell/cell_0/input_dropout"


def test_lstm_state_not_carried_between_batches():
    def edit(model):
        forward = model.forward

        def forward_from_zero_state(chars):
            model.reset_state()
            return forward(chars)
        model.forward = forward_from_zero_state
    port = port_with(edit)
    first = failing(port, "tolstoi_char_rnn", "carried_state")
    assert first.item == "batch1 rnn/multi_rnn_cell/cell_0/lstm_cell"
    [gradients] = [r for r in audit_problem(port, "tolstoi_char_rnn", "float64", checks=["gradients"])]
    assert gradients.passed  # one batch from the zero state cannot see it: the carried-state check does


def test_lstm_state_not_detached():
    def edit(model):
        model._keep_state = lambda states: setattr(model, "state", list(states))  # no .detach()
    first = failing(port_with(edit), "tolstoi_char_rnn", "carried_state")
    assert first.item == "batch1 gradients" and "backward" in first.note


# --- the VAE --------------------------------------------------------------------------------------

def test_vae_encoder_stride1_conv_padded_1_1():
    def edit(model):
        model.encoder[4][0] = nn.Conv2d(64, 64, 4, 1, padding=1)  # TF 'SAME' pads k4 s1 as 1 before, 2 after
    first = failing(port_with(edit), "mnist_vae", "forward")
    assert first.item == "encoder/conv2d_2" and "shape mismatch" in first.note


def test_vae_transposed_conv_output_15_instead_of_14():
    def edit(model):
        model.decoder_convs[2][0] = nn.ConvTranspose2d(64, 64, 4, 1, padding=1)  # 14 -> 15 (then 16)
    first = failing(port_with(edit), "mnist_vae", "forward")
    assert first.item == "decoder/conv2d_transpose_1" and "shape mismatch" in first.note


def test_vae_decoder_activation_missing():
    def edit(model):
        model.decoder_convs[4][1] = nn.Identity()  # the last transposed conv without its ReLU
    assert failing(port_with(edit), "mnist_vae", "forward").item == "decoder/conv2d_transpose_2"


def test_vae_std_dev_without_the_half():
    def edit(model):
        model.std_dev[1] = nn.Identity()
    assert failing(port_with(edit), "mnist_vae", "forward").item == "encoder/z"


# --- quadratic_deep -------------------------------------------------------------------------------

def test_quadratic_hessian_from_another_draw_order():
    def rotation_first_hessian():
        rng = np.random.RandomState(42)
        rotation = _rotation(DIM, rng)  # drawn before the eigenvalues
        eigenvalues = np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)))
        return rotation.T @ (np.diag(eigenvalues) @ rotation)

    port = port_with(build_model=lambda problem: Quadratic(rotation_first_hessian()))
    assert failing(port, "quadratic_deep", "forward").item == "hessian"


# --- Inception v3 (each audit of it takes a minute or two on 2 cores) --------------------------

INCEPTION = "imagenet_inception_v3"


def _inception_loss(aux_weight=0.4, label_smoothing=0.1):
    """The problem's loss with a planted slip in its aux weight or label smoothing."""
    def loss_terms(problem, model, outputs, labels):
        logits, aux_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
        per_example = losses.softmax_cross_entropy(logits, labels, label_smoothing=label_smoothing)
        if aux_logits is not None:
            per_example = per_example + aux_weight * losses.softmax_cross_entropy(
                aux_logits, labels, label_smoothing=label_smoothing)
        return per_example.mean(), losses.l2_regularizer(model.l2_parameters(), PROBLEMS[problem].weight_decay)
    return loss_terms


@pytest.mark.deep
def test_inception_bn_momentum_0_9997_passed_to_torch_as_is():
    first = failing(port_with(lambda m: _set_bn(m, momentum=0.9997)), INCEPTION, "train_mode")
    assert first.item == "stem/batch_normalization/moving_mean"


@pytest.mark.deep
def test_inception_bn_epsilon_1e5_instead_of_the_tf_layers_default():
    first = failing(port_with(lambda m: _set_bn(m, eps=1e-5)), INCEPTION, "forward")
    assert first.item == "stem/batch_normalization"


@pytest.mark.deep
def test_inception_average_pool_counting_the_padding():
    def edit(model):
        for block in (model.block5a, model.block5b_0, model.block5b_1, model.block6a, model.block6b_0,
                      model.block6b_1, model.block6c):
            block.branch1[0] = nn.AvgPool2d(3, 1, 1)  # count_include_pad=True, torch's default
        for block in (model.block7_0, model.block7_1):
            block.branch3[0] = nn.AvgPool2d(3, 1, 1)
    assert failing(port_with(edit), INCEPTION, "forward").item == "inception_block5a/branch1/average_pooling2d"


@pytest.mark.deep
def test_inception_output_dropout_active():
    # The original's output dropout never runs; a port with slim's keep 0.8 (p = 0.2) drops in train mode.
    def edit(model):
        model.head.dropout = nn.Dropout(0.2)
    port = port_with(edit)
    assert next(r for r in audit_problem(port, INCEPTION, "float64", checks=["forward"])).passed  # inert in eval
    [result] = audit_problem(port, INCEPTION, "float64", checks=["train_mode"])
    assert not result.passed
    assert "more dropout layers than the reference (an extra one on a (2, 2048, 1, 1) input)" in result.error


@pytest.mark.deep
def test_inception_aux_weight_0_3():
    port = port_with(loss_terms=_inception_loss(aux_weight=0.3))
    assert failing(port, INCEPTION, "train_mode").item == "train data_loss"  # the inference loss has no aux term


@pytest.mark.deep
def test_inception_label_smoothing_missing():
    port = port_with(loss_terms=_inception_loss(label_smoothing=0.0))
    assert failing(port, INCEPTION, "loss").item == "data_loss"
    assert failing(port, INCEPTION, "train_mode").item == "train data_loss"


# --- VGG (224x224: each audit builds a 134M-parameter pair, so these are slow) ------------------

class InterpolateResize(nn.Module):
    """The usual PyTorch port of tf.image.resize_images: F.interpolate, which samples other points."""

    def __init__(self, align_corners: bool):
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x):
        return torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=self.align_corners)


@pytest.mark.deep
@pytest.mark.parametrize("align_corners", [False, True], ids=["half_pixel", "align_corners"])
def test_interpolate_resize_instead_of_tf1_resize_images(align_corners):
    def edit(model):
        model.resize = InterpolateResize(align_corners)
    first = failing(port_with(edit), "cifar10_vgg16", "forward")
    assert first.item == "resize_images" and first.max_rel > 1e-3


@pytest.mark.deep
def test_l2_on_vgg_dense_layers():
    def loss_terms(problem, model, logits, labels):
        data_loss = losses.softmax_cross_entropy(logits, labels).mean()
        kernels = [p for name, p in model.named_parameters() if name.endswith("weight")]  # convs and denses
        return data_loss, losses.l2_regularizer(kernels, PROBLEMS[problem].weight_decay)
    results = {r.check: r for r in audit_problem(port_with(loss_terms=loss_terms), "cifar10_vgg16", "float64",
                                                 checks=["loss", "gradients"])}  # one model pair for both
    assert not results["loss"].passed and results["loss"].first_divergence.item == "regularizer"
    assert not results["gradients"].passed and results["gradients"].first_divergence.item == "dense_2/kernel"


@pytest.mark.deep
def test_vgg_conv_without_bias():
    # The porter drops one conv's bias and, consistently, its row from the weight map.
    from deepobs.layers import Conv2dSame

    def edit(model):
        model.features[6][0] = Conv2dSame(128, 256, 3, bias=False)  # conv3_1, the original's conv2d_4
    rows = tuple(r for r in MAPS["cifar10_vgg16"].params if r.port != "features.6.0.bias")
    maps = dict(MAPS, cifar10_vgg16=ProblemMap(rows, MAPS["cifar10_vgg16"].taps))
    [result] = audit_problem(port_with(edit, weight_maps=maps), "cifar10_vgg16", "float64", checks=["forward"])
    assert result.check == "setup" and not result.passed
    assert "reference variables not in the weight map: conv2d_4/bias" in result.error
