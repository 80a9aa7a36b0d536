"""Inference cost (MACs, SynOps, energy) on a real forward pass, against hand-computed counts."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from conftest import compose_cfg
from spiking_nets import calibrate_norms
from spikingjelly.activation_based import functional, layer
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers.sparse import set_flat_width, sparse_state_dict, sparsify
from spikeforge.models import build_model
from spikeforge.neurons import build_neuron, is_neuron, neuron_factory
from spikeforge.utils.opcount import E_AC_PJ, E_MAC_PJ, inference_cost

# two samples, 4 inputs: 3 non-zero inputs in all
SPIKES = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
# half of the 12 weights zero; non-zero weights per input (column): 2, 1, 1, 2
HALF_ZERO = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 4.0], [5.0, 0.0, 0.0, 6.0]])


def _linear(weight: torch.Tensor) -> layer.Linear:
    fc = layer.Linear(weight.shape[1], weight.shape[0], bias=True)  # the bias is never an operation
    with torch.no_grad():
        fc.weight.copy_(weight)
    return fc


def test_binary_spikes_into_a_half_zero_linear_count_the_weights_they_reach() -> None:
    cost = inference_cost(_linear(HALF_ZERO), SPIKES)
    # sample 0: inputs 0 and 2 reach 2 + 1 non-zero weights; sample 1: input 3 reaches 2 → 5 ACs / 2 samples
    assert cost["synops_per_sample"] == 5 / 2 and cost["macs_per_sample"] == 0
    assert cost["dense_ops_per_sample"] == 4 * 3  # every input and weight non-zero
    assert cost["energy_compute_mj_per_sample"] == pytest.approx(E_AC_PJ * 2.5 * 1e-9)
    (row,) = cost["inference_cost_per_layer"]
    assert row["kind"] == "Linear" and row["input"] == "spikes" and row["weight_sparsity"] == 0.5
    assert row["input_firing_rate"] == pytest.approx(3 / 8)
    assert cost["connection_sparsity"] == 0.5
    assert cost["footprint_bytes"] == (12 + 3) * 4  # weight and bias, fp32


def test_integer_inputs_count_non_zero_pairs_as_macs() -> None:
    """SEW's ADD outputs (0, 1, 2): multiply-accumulates, one per (non-zero input, non-zero weight)."""
    x = torch.tensor([[0.0, 1.0, 2.0, 0.0], [2.0, 0.0, 0.0, 1.0]])
    cost = inference_cost(_linear(HALF_ZERO), x)
    # sample 0: inputs 1, 2 → 1 + 1 pairs; sample 1: inputs 0, 3 → 2 + 2 pairs
    assert cost["macs_per_sample"] == 6 / 2 and cost["synops_per_sample"] == 0
    assert cost["inference_cost_per_layer"][0]["input"] == "real"
    assert cost["energy_compute_mj_per_sample"] == pytest.approx(E_MAC_PJ * 3 * 1e-9)


def test_scaled_and_signed_spikes_are_accumulates() -> None:
    """θ·s (ASGL) or V_th·s (DSR): non-zeros of one magnitude are spikes (NeuroBench: only −1, 0, 1)."""
    fc = _linear(HALF_ZERO)
    assert inference_cost(fc, 0.5 * SPIKES)["synops_per_sample"] == 5 / 2
    signed = torch.tensor([[1.0, 0.0, -1.0, 0.0], [0.0, 0.0, 0.0, -1.0]])
    cost = inference_cost(fc, signed)
    assert cost["synops_per_sample"] == 5 / 2 and cost["macs_per_sample"] == 0


def test_real_valued_first_layer_counts_macs() -> None:
    fc = layer.Linear(4, 3, bias=False)
    analog = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 0.3]])
    cost = inference_cost(fc, analog)
    assert cost["macs_per_sample"] == (3 + 4) * 3 / 2 and cost["synops_per_sample"] == 0  # the zero input: none
    conv = nn.Conv2d(3, 8, 3, padding=1)
    cost = inference_cost(conv, torch.rand(2, 3, 5, 5) + 0.1)
    # along each axis the 3 taps of the 5 outputs hit 2 + 3 + 3 + 3 + 2 = 13 inputs (the rest is padding)
    assert cost["macs_per_sample"] == cost["dense_ops_per_sample"] == 8 * 3 * 13 * 13
    assert cost["energy_compute_mj_per_sample"] == pytest.approx(E_MAC_PJ * 8 * 3 * 169 * 1e-9)
    assert cost["inference_cost_per_layer"][0]["input_firing_rate"] is None
    with torch.no_grad():
        conv.weight[:, :, 1, 1] = 0  # the centre taps: each reaches all 5 × 5 inputs
    assert inference_cost(conv, torch.rand(2, 3, 5, 5) + 0.1)["macs_per_sample"] == 8 * 3 * (169 - 25)


def test_all_zero_input_counts_nothing() -> None:
    for module, x in ((_linear(HALF_ZERO), torch.zeros(2, 4)), (nn.Conv2d(3, 4, 3), torch.zeros(2, 3, 5, 5))):
        cost = inference_cost(module, x)
        assert cost["macs_per_sample"] == cost["synops_per_sample"] == cost["energy_compute_mj_per_sample"] == 0
        assert cost["dense_ops_per_sample"] > 0


def test_energy_presets_and_constants() -> None:
    """fp32/fp16/int8: Horowitz 2014 45 nm, the presets of spikingjelly's op counter; constants overridable."""
    class TwoCalls(nn.Module):  # one layer called on integers (2 MACs), then on spikes (5 ACs)
        def __init__(self) -> None:
            super().__init__()
            self.fc = _linear(HALF_ZERO)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.fc(x[0]), self.fc(x[1])

    fc = TwoCalls()
    x = torch.tensor([[[0.0, 1.0, 2.0, 0.0]], [[1.0, 0.0, 1.0, 1.0]]])
    cost = inference_cost(fc, x, num_samples=1)
    macs, acs = cost["macs_per_sample"], cost["synops_per_sample"]
    assert (macs, acs) == (2, 5) and cost["inference_cost_per_layer"][0]["input"] == "mixed"
    for preset, (mac, ac) in {"fp32": (4.6, 0.9), "fp16": (1.5, 0.4), "int8": (0.23, 0.03)}.items():
        cost = inference_cost(fc, x, num_samples=1, energy=preset)
        assert cost["energy_compute_mj_per_sample"] == pytest.approx((mac * macs + ac * acs) * 1e-9)
        assert cost["energy_model"] == {"e_mac_pj": mac, "e_ac_pj": ac, "preset": preset}
    cost = inference_cost(fc, x, num_samples=1, energy={"preset": "int8", "e_ac_pj": 0.1})
    assert cost["energy_model"] == {"e_mac_pj": 0.23, "e_ac_pj": 0.1, "preset": "custom"}
    with pytest.raises(ConfigError, match=r"energy\.preset must be one of fp32, fp16, int8"):
        inference_cost(fc, x, energy="fp8")
    with pytest.raises(ConfigError, match=r"energy\.e_mac_pj must be a non-negative"):
        inference_cost(fc, x, energy={"preset": "fp32", "e_mac_pj": -1})


def test_neuron_alone_is_neither_synops_nor_macs() -> None:
    lif = build_neuron("lif")
    x = torch.rand(4, 2, 10) * 3
    cost = inference_cost(lif, x, num_samples=2)  # [T=4, N=2, 10]
    assert cost["synops_per_sample"] == 0 and cost["macs_per_sample"] == 0
    assert cost["energy_compute_mj_per_sample"] == 0
    assert cost["neuron_updates_per_sample"] == 4 * 10  # reported on its own: T × neurons
    spikes = lif(x)
    lif.reset()
    assert cost["activation_sparsity"] == pytest.approx(1 - spikes.count_nonzero().item() / spikes.numel())
    assert cost["connection_sparsity"] is None


def brute_force_synops(x: torch.Tensor, conv: nn.Conv2d) -> int:
    """Accumulates of ``conv`` on spikes ``x`` [N, C, H, W], one weight tap at a time: the taps whose
    weight is non-zero and whose input is a non-zero (not padding)."""
    n, c_in, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    per_group_in, per_group_out = c_in // conv.groups, conv.out_channels // conv.groups
    weight = conv.weight.detach()
    total = 0
    for b, co, i, j, ci, u, v in itertools.product(range(n), range(conv.out_channels), range(oh), range(ow),
                                                   range(per_group_in), range(kh), range(kw)):
        row, col = i * sh - ph + u * dh, j * sw - pw + v * dw
        channel = (co // per_group_out) * per_group_in + ci
        if 0 <= row < h and 0 <= col < w and x[b, channel, row, col] != 0 and weight[co, ci, u, v] != 0:
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
    assert sparsify(sparse, "stmod", 0.0) == ["0"]
    set_flat_width(sparse, 0.12)  # prunes about half of the weights (uniform in ±1/√18)
    zeros = (sparse[0].weight == 0).sum().item()
    assert 0.2 < zeros / 72 < 0.8
    (row,) = inference_cost(sparse, xs[0])["inference_cost_per_layer"]
    assert row["kind"] == "Conv2d" and row["synops_per_sample"] == brute_force_synops(xs[0], sparse[0]) / 2
    assert row["weight_sparsity"] == zeros / 72

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


SMALL_RESNET19 = ("model=resnet19", "model.width=8", "model.hidden=32", "data.image_size=8", "T=2")


def _trained(method: str, *overrides: str, seed: int = 0, steps: int = 3,
             model: tuple[str, ...] = SMALL_RESNET19) -> tuple[L.LightningModule, torch.Tensor]:
    """``method``'s LightningModule after ``steps`` optimiser steps on digits, and a test batch; the model
    is a small ResNet-19 unless ``model`` gives other overrides (``()``: the default ``convnet``, T = 4)."""
    from spikeforge.run import build_datamodule, build_module

    cfg = compose_cfg([f"method={method}", *model, "data.batch_size=32", f"seed={seed}", *overrides])
    L.seed_everything(seed, verbose=False)
    dm, module = build_datamodule(cfg), build_module(cfg)
    # a bare Trainer (no logger, bar or checkpoints): this test is about counting, not the run set-up
    # a bare Trainer to train a net for the counter (not a run): the run's defaults, progress bar included,
    # are tested through src/train.py in test_train.py, test_resume.py and test_scaleout.py
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
    # the dense count does not depend on the input; the spikes, and so the SynOps, do
    for other in (3 * x, batch[8:]):
        cost = inference_cost(sltt, other)
        assert cost["dense_ops_per_sample"] == base["dense_ops_per_sample"]
        assert cost["synops_per_sample"] != base["synops_per_sample"]
    sltt_k, _ = _trained("sltt_k", "method.K=1")  # same seed and initial weights, one of the two steps
    assert inference_cost(sltt_k, x)["synops_per_sample"] != base["synops_per_sample"]
    names = [r["name"] for r in base["inference_cost_per_layer"]]
    assert names[0].startswith("net.") and len(names) == len(set(names))


def test_default_model_counts_synops_behind_the_first_layer_rising_with_the_firing_rate() -> None:
    """The default run's model (``convnet``, BPTT, T = 4): every synaptic layer but the image-driven first
    takes binary spikes and counts SynOps > 0; with the neurons' threshold lowered, each layer's SynOps
    rise with the firing rate of its input, and the energy with them. (After 4 steps the network fires
    little at V_th = 1, hence the low thresholds; tests/test_train.py checks the trained default run.)"""
    module, batch = _trained("bptt", steps=4, model=())
    x = batch[:8]
    runs = []
    for v_th in (0.3, 0.2, 0.1):
        for m in module.modules():
            if is_neuron(m):
                m.v_threshold = v_th
        runs.append(inference_cost(module, x))
    first, *rest = runs[1]["inference_cost_per_layer"]
    assert first["name"] == "net.features.0" and first["input"] == "real" and first["synops_per_sample"] == 0
    assert [r["name"] for r in rest] == ["net.features.4", "net.features.8", "net.classifier"]
    assert all(r["input"] == "spikes" and r["synops_per_sample"] > 0 and r["macs_per_sample"] == 0 for r in rest)
    for i in range(1, 4):
        rows = sorted((run["inference_cost_per_layer"][i] for run in runs), key=lambda r: r["input_firing_rate"])
        rates = [r["input_firing_rate"] for r in rows]
        assert rates[0] < rates[1] < rates[2], rates
        synops = [r["synops_per_sample"] for r in rows]
        assert synops[0] < synops[1] < synops[2], (rows[0]["name"], rates, synops)
    energies = [run["energy_compute_mj_per_sample"] for run in runs]
    assert energies[0] < energies[1] < energies[2]  # lower thresholds: more spikes, more energy
    assert runs[0]["macs_per_sample"] == runs[2]["macs_per_sample"]  # the image layer's


def test_pruned_weights_lower_the_synops_by_the_weight_sparsity() -> None:
    """STDS: the pruned network's SynOps against the same network with its pruned weights set to a
    non-zero 1e-30 (the same spikes): lower, by each layer's weight sparsity."""
    torch.manual_seed(0)

    def build() -> nn.Module:
        return build_model("convnet", 10, neuron=neuron_factory("lif", v_threshold=0.3), channels=(8, 16, 32))

    x = torch.rand(4, 8, 3, 16, 16)  # [T, N, C, H, W]
    net = build()
    sparsify(net, "stmod", 0.0, exclude=["features.0"])
    set_flat_width(net, 0.05)
    calibrate_norms(net, x)
    filled = build().eval()
    filled.load_state_dict(sparse_state_dict(net))  # w = M(θ) in a plain network
    with torch.no_grad():
        for m in filled.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight[m.weight == 0] = 1e-30
    pruned, dense = inference_cost(net, x, num_samples=8), inference_cost(filled, x, num_samples=8)
    assert pruned["activation_sparsity_per_layer"] == dense["activation_sparsity_per_layer"]  # the same spikes
    assert dense["connection_sparsity"] == 0 < pruned["connection_sparsity"]
    assert pruned["synops_per_sample"] < dense["synops_per_sample"]
    for p_row, d_row in zip(pruned["inference_cost_per_layer"][1:], dense["inference_cost_per_layer"][1:]):
        share = 1 - p_row["weight_sparsity"]
        assert 0.2 < share < 0.8, (p_row["name"], share)
        assert p_row["synops_per_sample"] == pytest.approx(share * d_row["synops_per_sample"], rel=0.1)


def test_module_state_is_restored() -> None:
    net = nn.Sequential(layer.Linear(4, 3), nn.Dropout(0.5)).train()
    inference_cost(net, torch.rand(2, 4))
    assert net.training
    assert E_MAC_PJ == 4.6 and E_AC_PJ == 0.9  # Horowitz 2014, 45 nm fp32
