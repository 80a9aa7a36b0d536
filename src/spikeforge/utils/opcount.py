"""Cost of inference in the NeuroBench convention (Yik et al., *NeuroBench*, Nature Communications 2025;
the ``neurobench`` package's ``SynapticOperations``), counted by forward hooks on a real forward pass
(eval mode, one validation batch).

For every call of a synaptic layer — ``Conv1d/2d/3d`` (grouped and depthwise included) and
``Linear``, also inside ``SeqToANNContainer``, spikingjelly's multi-step ``layer.*`` and
STDS-reparametrised layers (``torch.nn.utils.parametrize``: the weight used is the mapped one) — the
*effective* operations are the (non-zero input, non-zero weight) pairs the layer multiplies, bias
excluded: the sum of the layer's own convolution (matrix product) of the input's non-zero indicator
with the weight's non-zero indicator, so edges, padding, stride, dilation and groups are exact.

- ``synops_per_sample``: effective operations of calls whose input is spikes — accumulates (ACs).
  Spikes are inputs whose non-zeros all share one magnitude: NeuroBench's {−1, 0, 1}, and also scaled
  spikes (DSR's V_th·s, ASGL's θ·s), whose scale folds into the weights; NeuroBench bills those as MACs.
- ``macs_per_sample``: effective operations of every other call (the image-driven first layer, spikes
  after an average pool, SEW's integer ADD outputs): multiply-accumulates.
- ``dense_ops_per_sample``: the same count with every input and weight non-zero (NeuroBench's
  ``Dense``: taps that fall on zero padding are not operations).
- ``energy_compute_mj_per_sample`` = e_MAC·MACs + e_AC·SynOps (:mod:`spikeforge.utils.energy`; default
  fp32 45 nm: 4.6 pJ and 0.9 pJ); ``energy_model`` records the constants used.
- ``neuron_updates_per_sample``: neuron state updates (one per neuron and time step), reported apart.
- ``activation_sparsity`` (NeuroBench): zero outputs / all outputs of the neuron layers on this batch;
  ``activation_sparsity_per_layer`` the same per neuron layer.
- ``connection_sparsity`` (NeuroBench): zero weights / all weights of the synaptic layers.
- ``footprint_bytes`` (NeuroBench): bytes of the module's parameters and buffers.
- ``inference_cost_per_layer``: name, kind, input (``spikes``/``real``/``mixed``), MACs, SynOps, dense
  operations, the non-zero fraction of its input (spike inputs) and its weight sparsity.

Totals are per sample: summed over the T time steps of a sample, divided by the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from spikingjelly.activation_based import functional
from torch import nn

from spikeforge.neurons import is_neuron
from spikeforge.utils.energy import PRESETS, EnergyCost, energy_from_config

E_MAC_PJ, E_AC_PJ = PRESETS["fp32"]
SYNAPTIC_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class LayerCost:
    name: str
    kind: str
    macs: float = 0.0
    synops: float = 0.0
    dense: float = 0.0
    spike_calls: int = 0
    real_calls: int = 0
    input_nonzero: int = 0
    input_numel: int = 0
    weight_sparsity: float = 0.0

    def per_sample(self, n: int) -> dict[str, Any]:
        kind = "spikes" if not self.real_calls else "real" if not self.spike_calls else "mixed"
        rate = self.input_nonzero / self.input_numel if self.spike_calls and self.input_numel else None
        return {"name": self.name, "kind": self.kind, "input": kind, "macs_per_sample": self.macs / n,
                "synops_per_sample": self.synops / n, "dense_ops_per_sample": self.dense / n,
                "input_firing_rate": rate, "weight_sparsity": self.weight_sparsity}


def is_spike_tensor(x: torch.Tensor) -> bool:
    """True when the non-zeros of ``x`` all share one magnitude (binary, ±1 or scaled spikes; all zeros too)."""
    a = x.detach().abs()
    return bool(((a == 0) | (a == a.amax())).all()) if a.numel() else True


def _mask(t: torch.Tensor) -> torch.Tensor:
    return (t.detach() != 0).to(torch.float32)


def synaptic_counts(layer: nn.Module, x: torch.Tensor) -> tuple[float, float, bool]:
    """``(effective operations, dense operations, x is spikes)`` of one call ``layer(x)``."""
    spikes = is_spike_tensor(x)
    w = layer.weight  # a reparametrised layer computes its mapped weight here
    if isinstance(layer, nn.Linear):
        per_input = _mask(x).reshape(-1, layer.in_features).sum(0, dtype=torch.float64)  # each input's non-zeros
        fan_out = _mask(w).sum(0, dtype=torch.float64)  # non-zero weights each input feature reaches
        return float((per_input * fan_out).sum().item()), float(x.numel() * layer.out_features), spikes
    if x.dim() == w.dim() + 1:  # multi-step [T, N, C, ...] (spikingjelly layer.Conv*d)
        x = x.flatten(0, 1)
    with torch.autocast(device_type=x.device.type, enabled=False):
        # output o of the indicator conv = (non-zero input, non-zero weight) pairs behind o; padding adds none
        effective = layer._conv_forward(_mask(x), _mask(w), None).sum(dtype=torch.float64)
        # every sample of the batch has the same dense count: one all-ones sample, times the batch
        ones = torch.ones((1, *x.shape[1:]), device=x.device)
        dense = layer._conv_forward(ones, torch.ones_like(w, dtype=torch.float32), None).sum(dtype=torch.float64)
    return float(effective.item()), float(dense.item()) * x.shape[0], spikes


class OpCounter:
    """Forward hooks that count the operations of every synaptic layer and the outputs of every neuron
    layer under ``root`` while ``with OpCounter(root) as c:`` is open."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.layers: dict[str, LayerCost] = {}
        self.neuron_updates = 0
        self.neuron_outputs: dict[str, list[int]] = {}  # name -> [non-zero, numel]
        self._handles: list[Any] = []

    def __enter__(self) -> OpCounter:
        for name, m in self.root.named_modules():
            if isinstance(m, SYNAPTIC_TYPES):
                self.layers[name] = LayerCost(name or type(m).__name__, type(m).__name__.removeprefix("Parametrized"))
                self._handles.append(m.register_forward_hook(self._synaptic_hook(name)))
            elif is_neuron(m):
                self._handles.append(m.register_forward_hook(self._neuron_hook(name or type(m).__name__)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _synaptic_hook(self, name: str) -> Any:
        def hook(layer: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            x = inputs[0]
            effective, dense, spikes = synaptic_counts(layer, x)
            rec = self.layers[name]
            rec.dense += dense
            w = layer.weight
            rec.weight_sparsity = 1.0 - int(torch.count_nonzero(w).item()) / w.numel()
            if spikes:
                rec.synops += effective
                rec.spike_calls += 1
                rec.input_nonzero += int(torch.count_nonzero(x).item())
                rec.input_numel += x.numel()
            else:
                rec.macs += effective
                rec.real_calls += 1
        return hook

    def _neuron_hook(self, name: str) -> Any:
        def hook(m: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self.neuron_updates += inputs[0].numel()
            if isinstance(output, torch.Tensor):
                counts = self.neuron_outputs.setdefault(name, [0, 0])
                counts[0] += int(torch.count_nonzero(output).item())
                counts[1] += output.numel()
        return hook

    def summary(self, n: int, energy: EnergyCost | None = None) -> dict[str, Any]:
        """Per-sample totals, energy, sparsity, footprint and the per-layer breakdown (layers that ran)."""
        energy = energy or EnergyCost()
        ran = [rec for rec in self.layers.values() if rec.spike_calls or rec.real_calls]
        macs = sum(rec.macs for rec in ran) / n
        synops = sum(rec.synops for rec in ran) / n
        nz = sum(c[0] for c in self.neuron_outputs.values())
        outs = sum(c[1] for c in self.neuron_outputs.values())
        return {
            "macs_per_sample": macs,
            "synops_per_sample": synops,
            "dense_ops_per_sample": sum(rec.dense for rec in ran) / n,
            "neuron_updates_per_sample": self.neuron_updates / n,
            "energy_compute_mj_per_sample": energy.millijoules(macs, synops),
            "energy_model": energy.as_dict(),
            "activation_sparsity": 1.0 - nz / outs if outs else None,
            "activation_sparsity_per_layer": {k: 1.0 - c[0] / c[1] for k, c in self.neuron_outputs.items() if c[1]},
            **static_figures(self.root),
            "inference_cost_samples": n,
            "inference_cost_per_layer": [rec.per_sample(n) for rec in ran],
        }


@torch.no_grad()
def static_figures(module: nn.Module) -> dict[str, Any]:
    """NeuroBench's static metrics: ``connection_sparsity`` (zero weights / weights of the synaptic
    layers, mapped weights of reparametrised ones) and ``footprint_bytes`` (parameters and buffers)."""
    zeros = total = 0
    for m in module.modules():
        if isinstance(m, SYNAPTIC_TYPES):
            w = m.weight
            zeros += w.numel() - int(torch.count_nonzero(w).item())
            total += w.numel()
    footprint = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    return {"connection_sparsity": zeros / total if total else None, "footprint_bytes": int(footprint)}


@torch.no_grad()
def inference_cost(module: nn.Module, x: torch.Tensor, num_samples: int | None = None,
                   energy: EnergyCost | str | dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-sample operations, energy, sparsity and per-layer breakdown of ``module(x)`` (a method's
    LightningModule, or any module taking the batch). ``num_samples`` defaults to ``x.shape[0]`` (pass N
    for a bare multi-step network fed ``[T, N, ...]``); ``energy``: an :class:`EnergyCost`, a preset name
    (``fp32``, ``fp16``, ``int8``) or ``{preset, e_mac_pj, e_ac_pj}`` (default fp32). The module is put in
    eval mode, and its neuron state reset and training mode restored afterwards."""
    cost = energy_from_config(energy)
    was_training = module.training
    module.eval()
    try:
        with OpCounter(module) as counter:
            module(x)
    finally:
        functional.reset_net(module)
        module.train(was_training)
    return counter.summary(num_samples or x.shape[0], cost)


def batch_inference_cost(module: nn.Module, loader: Any, max_samples: int = 16,
                         energy: EnergyCost | str | dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`inference_cost` on the first ``max_samples`` samples of ``loader``."""
    x, _ = next(iter(loader))
    x = x[:max_samples].to(next(module.parameters()).device)
    return inference_cost(module, x, energy=energy)


__all__ = ["E_AC_PJ", "E_MAC_PJ", "LayerCost", "OpCounter", "batch_inference_cost", "inference_cost",
           "is_spike_tensor", "static_figures", "synaptic_counts"]
