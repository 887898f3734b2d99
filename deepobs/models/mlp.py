"""Four-layer MLP 784-1000-500-100-out (original `_mlp.py`)."""
from __future__ import annotations

import torch
from torch import nn

from deepobs.layers import Dense, tf_truncated_normal_

HIDDEN_WIDTHS = (1000, 500, 100)


class MLP(nn.Module):
    def __init__(self, num_outputs: int = 10, num_inputs: int = 784):
        super().__init__()
        self.flatten = nn.Flatten()
        widths = (num_inputs, *HIDDEN_WIDTHS)
        self.hidden = nn.ModuleList(
            nn.Sequential(Dense(w_in, w_out), nn.ReLU()) for w_in, w_out in zip(widths, widths[1:])
        )
        self.output = Dense(widths[-1], num_outputs)
        for linear in self._linears():
            tf_truncated_normal_(linear.weight, stddev=0.03)
            nn.init.zeros_(linear.bias)

    def _linears(self) -> list[nn.Linear]:
        return [block[0] for block in self.hidden] + [self.output]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for block in self.hidden:
            x = block(x)
        return self.output(x)

    def l2_parameters(self) -> list[nn.Parameter]:
        return []
