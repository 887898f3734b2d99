"""Optimizers the runner tests load by import path (`runner_optimizers.RecordingSGD`)."""
import torch


class RecordingSGD(torch.optim.SGD):
    """torch.optim.SGD that records the learning rate of every step it takes."""

    learning_rates: list = []

    def step(self, closure=None):
        RecordingSGD.learning_rates.append(self.param_groups[0]["lr"])
        return super().step(closure)


class NotAnOptimizer:
    def __init__(self, params, lr):
        pass
