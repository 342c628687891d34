"""Exponential moving average of a network's weights while it trains (Polyak averaging).

After every optimiser step each averaged tensor moves a fraction of the way towards the
network's current value::

    average <- average + (1 - d_n) * (current - average),   d_n = min(decay, (1 + n) / (10 + n))

with ``n`` the number of updates so far: the short ramp lets the average forget the random
start in the first few dozen steps instead of the first ``1 / (1 - decay)``. The average is
the network the run evaluates and exports (``TrainConfig`` keeps the optimiser's own weights
besides it, for ``--resume``); it smooths the last steps' noise, which with small batches on
a CPU moves a run's real-data numbers as much as a recipe change does.

What is averaged: the trainable parameters and the floating-point buffers (BatchNorm running
statistics) of every module that is not frozen. Frozen modules and integer buffers (BatchNorm
batch counts) are taken from the network as they are, so a stage that freezes the LiDAR path
still exports those modules bit for bit.
"""

from typing import Dict, Sequence

import torch
from torch import nn


class WeightAverage:
    """The averaged copy of a network's trainable state.

    Args:
        model: the network being trained (its current state starts the average).
        decay: ``d`` above, in (0, 1); 0.999 averages over about the last thousand steps.
        frozen: names of the top-level modules held fixed (``TrainConfig.freeze``).
    """

    def __init__(self, model: nn.Module, decay: float, frozen: Sequence[str] = ()) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f'the weight average decay must be in (0, 1), got {decay}')
        self.decay = decay
        self.updates = 0
        parameters = dict(model.named_parameters())
        self.average: Dict[str, torch.Tensor] = {  # parameters that train, and buffers
            name: value.detach().clone() for name, value in model.state_dict().items()
            if value.is_floating_point() and name.split('.')[0] not in frozen
            and (name not in parameters or parameters[name].requires_grad)}

    def decay_at(self, updates: int) -> float:
        """Return the decay the update after ``updates`` earlier ones uses (module docstring)."""
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the network's current state (after an optimiser step)."""
        weight = 1.0 - self.decay_at(self.updates)
        state = model.state_dict()
        for name, average in self.average.items():
            average.lerp_(state[name].detach(), weight)
        self.updates += 1

    def state_dict(self, model: nn.Module) -> Dict[str, torch.Tensor]:
        """Return the network's state dict with the averaged tensors in place of its own."""
        return {name: self.average.get(name, value).detach().clone()
                for name, value in model.state_dict().items()}

    def load(self, averaged: Dict[str, torch.Tensor], updates: int) -> None:
        """Restore the average from a ``state_dict`` result and its update count (resume)."""
        missing = sorted(set(self.average) - set(averaged))
        if missing:
            raise ValueError(f'the saved weight average lacks {missing[:3]}')
        for name, average in self.average.items():
            average.copy_(averaged[name])
        self.updates = updates
