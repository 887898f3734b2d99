"""Character LSTM (original `tolstoi_char_rnn.py`): embedding, 2 x LSTM(128) with four dropout sites, softmax.

- TF1's LSTMCell keeps one kernel [in + 128, 512] (gates i, j, f, o) and one bias, and adds
  forget_bias 1.0 to f as a constant. nn.LSTM keeps weight_ih, weight_hh (gates i, f, g, o) and two
  biases: bias_ih carries the TF bias, bias_hh is frozen at the forget bias (1 on f, 0 elsewhere).
  So the model holds 285,523 numbers, 284,499 of them trainable: the original's count.
- Dropout 0.2 (keep 0.8) at four sites, elementwise and independent per step (DropoutWrapper):
  layer-1 input (the embedding), layer-1 output, layer-2 input (two masks in a row), layer-2 output.
  nn.LSTM(dropout=...) would give one site between the layers.
- The state (h, c of both layers) is carried to the next batch, detached (truncated backpropagation),
  and zeroed by reset_state() and by every switch between train and eval mode, as the original's init
  ops zero it at each phase. It is sized by the first batch after a reset.
- Initialisers: embedding, LSTM kernels and the whole softmax layer (bias too) glorot_uniform; TF
  computes a 1-D tensor's fans as (n, n), so the softmax bias is U(+-sqrt(6 / 166)) = U(+-0.19).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from deepobs.layers import Dense, Dropout

VOCAB_SIZE = 83
SEQ_LENGTH = 50
RNN_SIZE = 128
NUM_LAYERS = 2
DROPOUT = 0.2  # 1 - keep_prob 0.8
FORGET_BIAS = 1.0
TORCH_FORGET_GATE = 1  # torch's gate blocks: i, f, g, o


@torch.no_grad()
def _glorot_uniform_(tensor: torch.Tensor, fan_in: int, fan_out: int) -> torch.Tensor:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tensor.uniform_(-limit, limit)


class CharRNN(nn.Module):
    def __init__(self, vocab_size: int = VOCAB_SIZE, rnn_size: int = RNN_SIZE, num_layers: int = NUM_LAYERS):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, rnn_size)
        self.input_dropout = nn.ModuleList(Dropout(DROPOUT) for _ in range(num_layers))
        self.lstm = nn.ModuleList(nn.LSTM(rnn_size, rnn_size, batch_first=True) for _ in range(num_layers))
        self.output_dropout = nn.ModuleList(Dropout(DROPOUT) for _ in range(num_layers))
        self.state_out = nn.ModuleList(nn.Identity() for _ in range(num_layers))  # (c, h) after the batch
        self.softmax = Dense(rnn_size, vocab_size)
        _glorot_uniform_(self.embedding.weight, vocab_size, rnn_size)
        for lstm in self.lstm:
            # One TF kernel [in + 128, 4 * 128]: both torch halves share its glorot_uniform limit.
            fan_in, fan_out = lstm.input_size + rnn_size, 4 * rnn_size
            _glorot_uniform_(lstm.weight_ih_l0, fan_in, fan_out)
            _glorot_uniform_(lstm.weight_hh_l0, fan_in, fan_out)
            nn.init.zeros_(lstm.bias_ih_l0)
            with torch.no_grad():
                lstm.bias_hh_l0.zero_()
                lstm.bias_hh_l0[TORCH_FORGET_GATE * rnn_size:(TORCH_FORGET_GATE + 1) * rnn_size] = FORGET_BIAS
            lstm.bias_hh_l0.requires_grad_(False)  # TF adds forget_bias as a constant, never trained
        _glorot_uniform_(self.softmax.weight, rnn_size, vocab_size)
        _glorot_uniform_(self.softmax.bias, vocab_size, vocab_size)
        self.state: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def reset_state(self) -> None:
        self.state = None

    def train(self, mode: bool = True):
        if mode != self.training:
            self.reset_state()  # a phase switch: the original's init ops assign the zero state
        return super().train(mode)

    def _keep_state(self, layer_states) -> None:
        # Truncated backpropagation: the next batch starts from these values, not from this graph.
        self.state = [(h.detach(), c.detach()) for h, c in layer_states]

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        x = self.embedding(chars)
        new_states = []
        for layer, lstm in enumerate(self.lstm):
            x = self.input_dropout[layer](x)
            initial = None if self.state is None else self.state[layer]
            x, (h, c) = lstm(x, initial)
            self.state_out[layer](torch.stack([c[0], h[0]]))
            new_states.append((h, c))
            x = self.output_dropout[layer](x)
        self._keep_state(new_states)
        return self.softmax(x)

    def l2_parameters(self) -> list[nn.Parameter]:
        return []


def sequence_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sequence_loss(average_across_timesteps=True, average_across_batch=False) with unit weights:
    per sequence, the summed cross-entropy over its steps divided by (steps + 1e-12)."""
    crossent = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                           reduction="none").reshape(targets.shape)
    return crossent.sum(1) / (targets.shape[1] + 1e-12)
