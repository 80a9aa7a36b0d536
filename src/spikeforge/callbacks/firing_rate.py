"""Per-layer firing rates: the fraction of non-zero outputs of every spiking neuron layer.

Outputs may be scaled spikes (θ·s in ASGL, V_th·s in DSR), so a spike is any non-zero value.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeforge.neurons import is_neuron


class FiringRateRecorder:
    """Forward hooks on the neuron layers of ``model``; accumulate while ``active``."""

    def __init__(self, model: nn.Module) -> None:
        self.names = [name for name, m in model.named_modules() if is_neuron(m)]
        self._spikes: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self.active = False
        self._handles = [
            m.register_forward_hook(self._hook(name)) for name, m in model.named_modules() if is_neuron(m)
        ]

    def _hook(self, name: str):
        def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
            if self.active and isinstance(out, torch.Tensor):
                self._spikes[name] = self._spikes.get(name, 0.0) + float(torch.count_nonzero(out.detach()))
                self._counts[name] = self._counts.get(name, 0) + out.numel()

        return hook

    def start(self) -> None:
        self._spikes.clear()
        self._counts.clear()
        self.active = True

    def stop(self) -> dict[str, float]:
        """Per-layer rates and ``mean`` (over all neuron outputs, weighted by size)."""
        self.active = False
        rates = {n: self._spikes[n] / self._counts[n] for n in self._counts if self._counts[n]}
        total = sum(self._counts.values())
        if total:
            rates["mean"] = sum(self._spikes.values()) / total
        return rates

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
