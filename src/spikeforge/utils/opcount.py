"""Cost of inference as SNN papers define it, counted by forward hooks on a real forward pass (eval
mode, one validation batch):

- ``synops_per_sample``: synaptic operations — accumulates driven by non-zero spike inputs. A
  synaptic layer (``Conv1d/2d/3d`` incl. grouped and depthwise, ``Linear``; also inside
  ``SeqToANNContainer``, spikingjelly's multi-step ``layer.*`` and STDS-reparametrised layers) whose
  input's non-zeros all share one value (binary spikes, or scaled spikes V_th·s / θ·s) performs, for
  every non-zero input element, one accumulate per weight that element reaches: Σ_nz fan-out. For a
  convolution this is counted exactly — edges, padding, stride, dilation and groups included — as the
  sum of the layer's own convolution of the non-zero indicator with an all-ones kernel.
- ``macs_per_sample``: multiply-accumulates of synaptic layers fed anything else (the image-driven
  first layer, layers after an average pool of spikes): the dense count, output elements × fan-in.
- ``neuron_updates_per_sample``: neuron state updates (one per neuron and time step); neither MACs
  nor SynOps, reported on their own and not in the energy.
- ``energy_compute_mj_per_sample`` = 4.6 pJ·MACs + 0.9 pJ·SynOps: Horowitz (ISSCC 2014) 45 nm fp32
  multiply-add and add, the constants used across the SNN literature.
- ``inference_cost_per_layer``: name, kind, input (``spikes``/``real``), MACs, SynOps and the firing
  rate of the input (non-zero fraction of a spike input) of every synaptic layer.

Totals are per sample: summed over the T time steps of a sample, divided by the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based import neuron as sj_neuron
from torch import nn

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
SYNAPTIC_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _neuron_types() -> tuple[type, ...]:
    from spikeforge.neurons.asgl import ASGLLIF
    from spikeforge.neurons.dsr import DSRNeuron
    from spikeforge.neurons.stbp import STBPLIFNode

    return sj_neuron.BaseNode, ASGLLIF, DSRNeuron, STBPLIFNode


@dataclass
class LayerCost:
    name: str
    kind: str
    macs: float = 0.0
    synops: float = 0.0
    spike_calls: int = 0
    real_calls: int = 0
    input_nonzero: int = 0
    input_numel: int = 0

    def per_sample(self, n: int) -> dict[str, Any]:
        kind = "spikes" if not self.real_calls else "real" if not self.spike_calls else "mixed"
        rate = self.input_nonzero / self.input_numel if self.spike_calls and self.input_numel else None
        return {"name": self.name, "kind": self.kind, "input": kind, "macs_per_sample": self.macs / n,
                "synops_per_sample": self.synops / n, "input_firing_rate": rate}


def is_spike_tensor(x: torch.Tensor) -> bool:
    """True when the non-zeros of ``x`` all share one value (binary or scaled spikes; all zeros too)."""
    values = x[x != 0]
    return values.numel() == 0 or bool((values == values[0]).all())


def synaptic_counts(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, bool]:
    """``(dense MACs, SynOps if x were spikes, x is spikes)`` of one call ``y = layer(x)``."""
    spikes = is_spike_tensor(x)
    if isinstance(layer, nn.Linear):
        dense = float(x.numel() * layer.out_features)
        synops = float(torch.count_nonzero(x).item() * layer.out_features) if spikes else 0.0
        return dense, synops, spikes
    kernel = tuple(layer.kernel_size)
    fan_in = layer.in_channels // layer.groups * math.prod(kernel)
    dense = float(y.numel() * fan_in)
    if not spikes:
        return dense, 0.0, False
    if x.dim() == len(kernel) + 3:  # multi-step [T, N, C, ...] (spikingjelly layer.Conv*d)
        x = x.flatten(0, 1)
    mask = (x != 0).to(torch.float32)
    ones = torch.ones(layer.out_channels, layer.in_channels // layer.groups, *kernel, device=x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        # output o of the ones-kernel conv = non-zero inputs in o's receptive field, so the sum over
        # outputs is Σ over non-zero inputs of the weights they reach (padding contributes nothing)
        reached = layer._conv_forward(mask, ones, None)
    return dense, float(reached.sum(dtype=torch.float64).item()), True


class OpCounter:
    """Forward hooks that count MACs, SynOps and neuron updates of every synaptic layer and neuron
    under ``root`` while ``with OpCounter(root) as c:`` is open."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.layers: dict[str, LayerCost] = {}
        self.neuron_updates = 0
        self._handles: list[Any] = []

    def __enter__(self) -> OpCounter:
        neurons = _neuron_types()
        for name, m in self.root.named_modules():
            if isinstance(m, SYNAPTIC_TYPES):
                self.layers[name] = LayerCost(name or type(m).__name__, type(m).__name__.removeprefix("Parametrized"))
                self._handles.append(m.register_forward_hook(self._synaptic_hook(name)))
            elif isinstance(m, neurons):
                self._handles.append(m.register_forward_hook(self._neuron_hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _synaptic_hook(self, name: str) -> Any:
        def hook(layer: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            x = inputs[0]
            dense, synops, spikes = synaptic_counts(layer, x, output)
            rec = self.layers[name]
            if spikes:
                rec.synops += synops
                rec.spike_calls += 1
                rec.input_nonzero += int(torch.count_nonzero(x).item())
                rec.input_numel += x.numel()
            else:
                rec.macs += dense
                rec.real_calls += 1
        return hook

    def _neuron_hook(self, m: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        self.neuron_updates += inputs[0].numel()

    def summary(self, n: int) -> dict[str, Any]:
        """Per-sample totals, energy and the per-layer breakdown (layers that ran)."""
        ran = [rec for rec in self.layers.values() if rec.spike_calls or rec.real_calls]
        macs = sum(rec.macs for rec in ran) / n
        synops = sum(rec.synops for rec in ran) / n
        return {
            "macs_per_sample": macs,
            "synops_per_sample": synops,
            "neuron_updates_per_sample": self.neuron_updates / n,
            "energy_compute_mj_per_sample": (E_MAC_PJ * macs + E_AC_PJ * synops) * 1e-9,
            "inference_cost_samples": n,
            "inference_cost_per_layer": [rec.per_sample(n) for rec in ran],
        }


@torch.no_grad()
def inference_cost(module: nn.Module, x: torch.Tensor, num_samples: int | None = None) -> dict[str, Any]:
    """Per-sample MACs, SynOps, neuron updates, energy and per-layer breakdown of ``module(x)`` (a
    method's LightningModule, or any module taking the batch). ``num_samples`` defaults to
    ``x.shape[0]`` (pass N for a bare multi-step network fed ``[T, N, ...]``). The module is put in
    eval mode, and its neuron state reset and training mode restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        with OpCounter(module) as counter:
            module(x)
    finally:
        functional.reset_net(module)
        module.train(was_training)
    return counter.summary(num_samples or x.shape[0])


def batch_inference_cost(module: nn.Module, loader: Any, max_samples: int = 16) -> dict[str, Any]:
    """:func:`inference_cost` on the first ``max_samples`` samples of ``loader``."""
    x, _ = next(iter(loader))
    x = x[:max_samples].to(next(module.parameters()).device)
    return inference_cost(module, x)


__all__ = ["E_AC_PJ", "E_MAC_PJ", "LayerCost", "OpCounter", "batch_inference_cost", "inference_cost",
           "is_spike_tensor", "synaptic_counts"]
