"""Cost of inference as SNN papers report it, counted with spikingjelly's ``op_counter`` on a real
forward pass (eval mode, one validation batch):

- ``macs_per_sample``: multiply-accumulates whose input is not a binary spike tensor (the first,
  image-driven layer; layers after an average pool of spikes);
- ``synops_per_sample``: accumulates driven by binary spikes, counting only non-zero inputs (AC);
- ``energy_compute_mj_per_sample`` = E_MAC·MACs + E_AC·ACs with Horowitz (ISSCC 2014) 45 nm fp32
  costs E_MAC = 4.6 pJ, E_AC = 0.9 pJ — the constants used across the SNN literature;
- ``energy_total_mj_per_sample``: the same plus spikingjelly's memory-traffic model (weights,
  biases and neuron state at 24.96 pJ/byte), for a fuller picture.
"""

from __future__ import annotations

from typing import Any

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.op_counter import estimate_simple_energy
from torch import nn

E_MAC_PJ = 4.6
E_AC_PJ = 0.9


@torch.no_grad()
def inference_cost(module: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Per-sample MACs, SynOps and energy of ``module(x)`` (a method's LightningModule or any
    module taking the batch); the module is put in eval mode and its state restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        report = estimate_simple_energy(module, x)
    finally:
        functional.reset_net(module)
        module.train(was_training)
    n = x.shape[0]
    macs, acs = report.counts["mac"] / n, report.counts["ac"] / n
    return {
        "macs_per_sample": macs,
        "synops_per_sample": acs,
        "energy_compute_mj_per_sample": (E_MAC_PJ * macs + E_AC_PJ * acs) * 1e-9,
        "energy_total_mj_per_sample": report.energy_total_pj / n * 1e-9,
    }


def batch_inference_cost(module: nn.Module, loader: Any, max_samples: int = 16) -> dict[str, Any]:
    """:func:`inference_cost` on the first ``max_samples`` samples of ``loader``."""
    x, _ = next(iter(loader))
    x = x[:max_samples].to(next(module.parameters()).device)
    return inference_cost(module, x)
