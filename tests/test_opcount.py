"""Inference cost (MACs, SynOps, energy) counted on a real forward pass."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import layer
from torch import nn

from spikeforge.utils.opcount import E_AC_PJ, E_MAC_PJ, inference_cost


def test_analog_input_counts_macs_and_spikes_count_synops() -> None:
    fc = layer.Linear(4, 3, bias=False)
    analog = torch.tensor([[0.5, -1.0, 2.0, 0.1], [1.0, 1.0, 1.0, 0.3]])
    cost = inference_cost(fc, analog)
    assert cost["macs_per_sample"] == 12 and cost["synops_per_sample"] == 0
    spikes = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # 3 non-zero inputs × 3 outputs
    cost = inference_cost(fc, spikes)
    assert cost["macs_per_sample"] == 0 and cost["synops_per_sample"] == pytest.approx(9 / 2)
    assert cost["energy_compute_mj_per_sample"] == pytest.approx(E_AC_PJ * 4.5e-9)


def test_module_state_is_restored() -> None:
    net = nn.Sequential(layer.Linear(4, 3), nn.Dropout(0.5)).train()
    inference_cost(net, torch.rand(2, 4))
    assert net.training
    assert E_MAC_PJ == 4.6 and E_AC_PJ == 0.9  # Horowitz 2014, 45 nm fp32
