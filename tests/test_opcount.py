"""Inference cost (MACs, SynOps, energy) on a real forward pass, against hand-computed counts."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from conftest import compose_cfg
from spikingjelly.activation_based import functional, layer
from torch import nn

from spikeforge.layers.sparse import sparsify
from spikeforge.neurons import build_neuron
from spikeforge.utils.opcount import E_AC_PJ, E_MAC_PJ, inference_cost

# two samples, 4 inputs: 3 non-zero inputs in all
SPIKES = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def test_linear_on_binary_spikes_counts_synops() -> None:
    fc = layer.Linear(4, 3, bias=False)
    cost = inference_cost(fc, SPIKES)
    # every non-zero input reaches out_features = 3 weights: 3 × 3 accumulates over 2 samples
    assert cost["synops_per_sample"] == pytest.approx(3 * 3 / 2)
    assert cost["macs_per_sample"] == 0
    assert cost["energy_compute_mj_per_sample"] == pytest.approx(E_AC_PJ * 4.5 * 1e-9)
    (row,) = cost["inference_cost_per_layer"]
    assert row["kind"] == "Linear" and row["input"] == "spikes"
    assert row["input_firing_rate"] == pytest.approx(3 / 8)


def test_scaled_spikes_are_still_synops() -> None:
    """θ·s (ASGL) or V_th·s (DSR): non-zeros sharing one value are spikes."""
    fc = layer.Linear(4, 3, bias=False)
    cost = inference_cost(fc, 0.5 * SPIKES)
    assert cost["synops_per_sample"] == pytest.approx(4.5) and cost["macs_per_sample"] == 0


def test_real_valued_input_counts_dense_macs() -> None:
    fc = layer.Linear(4, 3, bias=False)
    analog = torch.tensor([[0.5, -1.0, 2.0, 0.1], [1.0, 1.0, 1.0, 0.3]])
    cost = inference_cost(fc, analog)
    assert cost["macs_per_sample"] == 4 * 3 and cost["synops_per_sample"] == 0
    conv = nn.Conv2d(3, 8, 3, padding=1)
    cost = inference_cost(conv, torch.rand(2, 3, 5, 5))
    assert cost["macs_per_sample"] == 8 * 5 * 5 * (3 * 3 * 3)  # output elements × fan-in
    assert cost["energy_compute_mj_per_sample"] == pytest.approx(E_MAC_PJ * 5400 * 1e-9)
    assert cost["inference_cost_per_layer"][0]["input_firing_rate"] is None


def test_neuron_alone_is_neither_synops_nor_macs() -> None:
    lif = build_neuron("lif")
    cost = inference_cost(lif, torch.rand(4, 2, 10) * 3, num_samples=2)  # [T=4, N=2, 10]
    assert cost["synops_per_sample"] == 0 and cost["macs_per_sample"] == 0
    assert cost["energy_compute_mj_per_sample"] == 0
    assert cost["neuron_updates_per_sample"] == 4 * 10  # reported on its own: T × neurons


def brute_force_synops(x: torch.Tensor, conv: nn.Conv2d) -> int:
    """Accumulates of ``conv`` on spikes ``x`` [N, C, H, W], one weight tap at a time."""
    n, c_in, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    per_group_in, per_group_out = c_in // conv.groups, conv.out_channels // conv.groups
    total = 0
    for b, co, i, j, ci, u, v in itertools.product(range(n), range(conv.out_channels), range(oh), range(ow),
                                                   range(per_group_in), range(kh), range(kw)):
        row, col = i * sh - ph + u * dh, j * sw - pw + v * dw
        channel = (co // per_group_out) * per_group_in + ci
        if 0 <= row < h and 0 <= col < w and x[b, channel, row, col] != 0:
            total += 1
    return total


@pytest.mark.parametrize(("groups", "stride", "padding", "dilation"), [(1, 1, 1, 1), (2, 2, 1, 1), (4, 1, 2, 2)])
def test_conv_synops_match_a_brute_force_count(groups: int, stride: int, padding: int, dilation: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)  # 4: depthwise
    x = (torch.rand(2, 4, 6, 7) < 0.3).float()
    expected = brute_force_synops(x, conv)
    assert inference_cost(conv, x)["synops_per_sample"] == expected / 2
    # the same layer inside spikingjelly's multi-step wrapper, fed [T=3, N=2, ...] (×0.7: scaled spikes)
    xs = (torch.rand(3, 2, 4, 6, 7) < 0.3).float() * 0.7
    wrapped = nn.Sequential(layer.SeqToANNContainer(conv))
    expected = sum(brute_force_synops(xs[t], conv) for t in range(3))
    assert inference_cost(wrapped, xs, num_samples=2)["synops_per_sample"] == expected / 2


def test_multistep_conv_reparametrised_conv_and_a_network() -> None:
    """layer.Conv2d in multi-step mode, an STDS-reparametrised conv, and real → neuron → spikes."""
    torch.manual_seed(0)
    ms = layer.Conv2d(2, 4, 3, padding=1, step_mode="m")
    xs = (torch.rand(3, 2, 2, 5, 5) < 0.4).float()
    flat = nn.Conv2d(2, 4, 3, padding=1)
    expected = sum(brute_force_synops(xs[t], flat) for t in range(3))
    assert inference_cost(ms, xs, num_samples=2)["synops_per_sample"] == expected / 2
    sparse = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1))
    assert sparsify(sparse, "stmod", 0.05) == ["0"]
    (row,) = inference_cost(sparse, xs[0])["inference_cost_per_layer"]
    assert row["kind"] == "Conv2d" and row["synops_per_sample"] == brute_force_synops(xs[0], flat) / 2

    net = nn.Sequential(layer.Linear(5, 6, bias=False), build_neuron("lif", v_threshold=0.5),
                        layer.Linear(6, 2, bias=False))
    x = torch.rand(4, 3, 5)  # [T, N, 5], real valued
    cost = inference_cost(net, x, num_samples=3)
    first, second = cost["inference_cost_per_layer"]
    assert first["input"] == "real" and first["macs_per_sample"] == 4 * 5 * 6
    functional.reset_net(net)
    with torch.no_grad():
        spikes = net[1](net[0](x))
    functional.reset_net(net)
    assert second["input"] == "spikes" and second["synops_per_sample"] == spikes.count_nonzero().item() * 2 / 3
    assert cost["energy_compute_mj_per_sample"] == pytest.approx(
        (E_MAC_PJ * cost["macs_per_sample"] + E_AC_PJ * cost["synops_per_sample"]) * 1e-9)


def _trained(method: str, *overrides: str, seed: int = 0, steps: int = 3) -> tuple[L.LightningModule, torch.Tensor]:
    """``method``'s LightningModule after ``steps`` optimiser steps on digits, and a test batch; the model
    is a small ResNet-19, whose convs take spikes (``convnet`` average-pools them first: MACs)."""
    from spikeforge.run import build_datamodule, build_module

    cfg = compose_cfg([f"method={method}", "model=resnet19", "model.width=8", "model.hidden=32", "data.image_size=8",
                       "data.batch_size=32", "T=2", f"seed={seed}",
                       *overrides])
    L.seed_everything(seed, verbose=False)
    dm, module = build_datamodule(cfg), build_module(cfg)
    # a bare Trainer (no logger, bar or checkpoints): this test is about counting, not the run set-up
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    dm.setup("test")
    x, _ = next(iter(dm.test_dataloader()))
    return module, x[:16]


def test_synops_of_trained_nets_follow_their_spikes() -> None:
    sltt, batch = _trained("sltt")
    x = batch[:8]
    base = inference_cost(sltt, x)
    assert base["synops_per_sample"] > 0
    # the image layer's MACs do not depend on the input; the spikes behind it do
    for other in (3 * x, batch[8:]):
        cost = inference_cost(sltt, other)
        assert cost["macs_per_sample"] == base["macs_per_sample"]
        assert cost["synops_per_sample"] != base["synops_per_sample"]
    sltt_k, _ = _trained("sltt_k", "method.K=1")  # same seed and initial weights, one of the two steps
    assert inference_cost(sltt_k, x)["synops_per_sample"] != base["synops_per_sample"]
    names = [r["name"] for r in base["inference_cost_per_layer"]]
    assert names[0].startswith("net.") and len(names) == len(set(names))


def test_module_state_is_restored() -> None:
    net = nn.Sequential(layer.Linear(4, 3), nn.Dropout(0.5)).train()
    inference_cost(net, torch.rand(2, 4))
    assert net.training
    assert E_MAC_PJ == 4.6 and E_AC_PJ == 0.9  # Horowitz 2014, 45 nm fp32
