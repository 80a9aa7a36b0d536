"""Per-layer firing rates: the fraction of non-zero outputs of every spiking neuron layer.

Outputs may be scaled spikes (θ·s in ASGL, V_th·s in DSR), so a spike is any non-zero value. The
counts are accumulated on the outputs' device and read to the host once, when recording stops (one
synchronisation per validation epoch, none per batch).
"""

from __future__ import annotations

from collections.abc import Callable

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

    def stop(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """Per-layer rates and ``mean`` (over all neuron outputs, weighted by size). ``reduce`` sums a
        tensor over DDP ranks (``trainer.strategy.reduce(t, reduce_op="sum")``): the rates are then
        those of the whole split, each rank's spikes and outputs counted once."""
        self.active = False
        names = [n for n in self._counts if self._counts[n]]
        if not names:
            return {}
        device = self._spikes[names[0]].device
        counts = torch.tensor([self._counts[n] for n in names], dtype=torch.int64, device=device)
        totals = torch.stack([torch.stack([self._spikes[n].to(device) for n in names]), counts])
        if reduce is not None:
            totals = reduce(totals)
        spikes, sizes = totals.tolist()
        rates = {n: s / c for n, s, c in zip(names, spikes, sizes)}
        rates["mean"] = sum(spikes) / sum(sizes)
        return rates

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
