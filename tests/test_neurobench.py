"""Our operation counts against the ``neurobench`` package's own ``SynapticOperations`` (and its
``Footprint`` and ``ConnectionSparsity``) on the same inputs: on binary-spike networks the two
conventions coincide, so effective ACs, effective MACs and dense operations must be equal."""

from __future__ import annotations

import pytest
import torch
from neurobench.metrics.static import ConnectionSparsity, Footprint
from neurobench.metrics.workload import SynapticOperations
from neurobench.models import TorchModel
from spiking_nets import calibrate_norms
from spikingjelly.activation_based import functional, layer
from torch import nn

from spikeforge.layers.sparse import set_flat_width, sparse_state_dict, sparsify
from spikeforge.models import build_model
from spikeforge.neurons import build_neuron, neuron_factory
from spikeforge.utils.opcount import inference_cost

N = 2  # samples


@torch.no_grad()
def neurobench_counts(net: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """NeuroBench's figures for ``net(x)``: its model wrapper hooks every Linear/Conv (forward pre-hooks),
    ``SynapticOperations`` counts their recorded inputs per sample (``data[0].size(0)`` samples)."""
    functional.reset_net(net)
    model = TorchModel(net)
    model.register_hooks()
    try:
        preds = model(x)
        ops = SynapticOperations()(model, preds, (torch.zeros(N), torch.zeros(N)))
    finally:
        model.cleanup_hooks()
        functional.reset_net(net)
    return {**ops, "footprint": Footprint()(model), "connection_sparsity": ConnectionSparsity()(model)}


def ours(net: nn.Module, x: torch.Tensor) -> dict[str, float]:
    cost = inference_cost(net, x, num_samples=N)
    return {"Effective_MACs": cost["macs_per_sample"], "Effective_ACs": cost["synops_per_sample"],
            "Dense": cost["dense_ops_per_sample"], "footprint": cost["footprint_bytes"],
            "connection_sparsity": cost["connection_sparsity"]}


def assert_same(mine: dict[str, float], theirs: dict[str, float], spikes_behind_first: bool = True) -> None:
    for key in ("Effective_MACs", "Effective_ACs", "Dense", "footprint"):
        assert mine[key] == theirs[key], (key, mine, theirs)
    assert mine["connection_sparsity"] == pytest.approx(theirs["connection_sparsity"], abs=1e-4)  # theirs: 4 decimals
    assert mine["Effective_MACs"] > 0 and (mine["Effective_ACs"] > 0) == spikes_behind_first


def _model(name: str, **kw) -> nn.Module:
    return build_model(name, 10, neuron=neuron_factory("lif", v_threshold=0.3), **kw)


def test_linear_lif_net() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(12, 16), build_neuron("lif", v_threshold=0.3), layer.Linear(16, 8, bias=False),
                        build_neuron("lif", v_threshold=0.3), layer.Linear(8, 3)).eval()
    x = torch.rand(4, N, 12)  # [T, N, features]
    with torch.no_grad():
        net[2].weight[:, ::2] = 0  # zero weights are no operations
    assert_same(ours(net, x), neurobench_counts(net, x))


@pytest.mark.parametrize(("name", "kw", "static"), [
    ("convnet", {}, False),
    ("spiking_resnet18", {"width": 8, "stem": "cifar"}, False),
    ("sew_resnet18", {"width": 8, "stem": "cifar", "T": 2}, True),  # ADD: block outputs 0, 1, 2 → MACs in both
])
def test_model_zoo(name: str, kw: dict, static: bool) -> None:
    torch.manual_seed(0)
    x = torch.rand(N, 3, 16, 16) if static else torch.rand(2, N, 3, 16, 16)
    net = calibrate_norms(_model(name, **kw), x)
    assert_same(ours(net, x), neurobench_counts(net, x))


def test_pruned_stds_network() -> None:
    """Ours counts the reparametrised network (weights mapped on the fly); NeuroBench, which copies each
    layer's ``weight``, counts the same weights in a plain network (``sparse_state_dict``)."""
    torch.manual_seed(0)
    x = torch.rand(2, N, 3, 16, 16)
    net = _model("convnet", channels=(8, 16, 32))
    sparsify(net, "stmod", 0.0, exclude=["features.0"])
    set_flat_width(net, 0.05)
    calibrate_norms(net, x)
    plain = _model("convnet", channels=(8, 16, 32)).eval()
    plain.load_state_dict(sparse_state_dict(net))
    mine, theirs = ours(net, x), neurobench_counts(plain, x)
    for key in ("Effective_MACs", "Effective_ACs", "Dense"):
        assert mine[key] == theirs[key], (key, mine, theirs)
    assert mine["Effective_ACs"] > 0 and 0.3 < mine["connection_sparsity"] == pytest.approx(
        theirs["connection_sparsity"], abs=1e-4)
