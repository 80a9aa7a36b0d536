"""Per-layer firing rates: the fraction of non-zero outputs of every spiking neuron layer.

Outputs may be scaled spikes (θ·s in ASGL, V_th·s in DSR), so a spike is any non-zero value. The
counts are accumulated on the outputs' device and read to the host once, when recording stops (one
synchronisation per validation epoch, none per batch).
"""

from __future__ import annotations

import torch
from torch import nn

from spikeforge.neurons import is_neuron


class FiringRateRecorder:
    """Forward hooks on the neuron layers of ``model``; accumulate while ``active``."""

    def __init__(self, model: nn.Module) -> None:
        self.names = [name for name, m in model.named_modules() if is_neuron(m)]
        self._spikes: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self.active = False
        self._handles = [
            m.register_forward_hook(self._hook(name)) for name, m in model.named_modules() if is_neuron(m)
        ]

    def _hook(self, name: str):
        def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
            if self.active and isinstance(out, torch.Tensor):
                n = torch.count_nonzero(out.detach())
                self._spikes[name] = self._spikes[name] + n if name in self._spikes else n
                self._counts[name] = self._counts.get(name, 0) + out.numel()

        return hook

    def start(self) -> None:
        self._spikes.clear()
        self._counts.clear()
        self.active = True

    def stop(self) -> dict[str, float]:
        """Per-layer rates and ``mean`` (over all neuron outputs, weighted by size)."""
        self.active = False
        names = [n for n in self._counts if self._counts[n]]
        if not names:
            return {}
        spikes = torch.stack([self._spikes[n].to(self._spikes[names[0]].device) for n in names]).tolist()
        rates = {n: s / self._counts[n] for n, s in zip(names, spikes)}
        rates["mean"] = sum(spikes) / sum(self._counts[n] for n in names)
        return rates

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
