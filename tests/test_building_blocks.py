"""Factories against spikingjelly's own modules; norms, losses, optimiser groups and LR schedules."""

from __future__ import annotations

import math

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import build_norm, list_norms, norm_factory
from spikeforge.losses import build_loss
from spikeforge.methods.optim import SchedulerConfig, build_optimizer, lr_factor, split_decay
from spikeforge.models import build_model, list_models
from spikeforge.neurons import build_neuron, is_neuron, list_neurons, neuron_factory
from spikeforge.neurons.surrogates import build_surrogate


def _run(node: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = node(x)
    (out * torch.arange(1, out.numel() + 1, dtype=out.dtype).view_as(out)).sum().backward()
    functional.reset_net(node)
    return out.detach(), x.grad


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_lif_matches_spikingjelly(step_mode: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3, 4) * 2
    ours = build_neuron("lif", tau=1.5, decay_input=False, v_reset=None, surrogate="sigmoid",
                        surrogate_alpha=4.0, step_mode=step_mode)
    ref = neuron.LIFNode(tau=1.5, decay_input=False, v_reset=None, surrogate_function=surrogate.Sigmoid(alpha=4.0),
                         step_mode=step_mode)
    if step_mode == "m":
        a, b = _run(ours, x), _run(ref, x)
    else:
        a, b = _run(ours, x[0]), _run(ref, x[0])
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_if_matches_spikingjelly() -> None:
    x = torch.randn(6, 2, 3)
    ours = build_neuron("if", v_threshold=0.7, surrogate="atan", surrogate_alpha=2.0, detach_reset=True)
    ref = neuron.IFNode(v_threshold=0.7, surrogate_function=surrogate.ATan(alpha=2.0), detach_reset=True,
                        step_mode="m")
    for a, b in zip(_run(ours, x), _run(ref, x)):
        torch.testing.assert_close(a, b)


def test_every_neuron_kind_builds_with_defaults() -> None:
    for kind in list_neurons():
        node = build_neuron(kind, num_features=3)
        assert node.step_mode == "m"


def test_is_neuron() -> None:
    assert is_neuron(build_neuron("lif")) and is_neuron(build_neuron("if"))
    assert not is_neuron(build_neuron("relu"))


def test_triangle_surrogate_values() -> None:
    # sltt.md, "Numbers" item 1
    z = torch.tensor([-1.5, -1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.9, 1], requires_grad=True)
    build_surrogate("triangle")(z).sum().backward()
    expected = torch.tensor([0, 0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.1, 0])
    torch.testing.assert_close(z.grad, expected, atol=1e-6, rtol=0)


def test_unknown_kinds_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown neuron kind 'lfi'"):
        build_neuron("lfi")
    with pytest.raises(ConfigError, match="unknown surrogate"):
        build_surrogate("erfx")
    with pytest.raises(ConfigError, match="bad parameters for neuron kind 'lif'"):
        build_neuron("lif", taux=2.0)
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("resnet9000", 10)


def test_bn_shares_statistics_over_time() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6, 6)
    ours, ref = build_norm("bn", 5), nn.BatchNorm2d(5)
    torch.testing.assert_close(ours(x), ref(x.flatten(0, 1)).view_as(x))
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x.flatten(0, 1)).view_as(x))
    # 1-d features after a Linear: [T, N, C]
    y = torch.randn(3, 4, 5)
    torch.testing.assert_close(build_norm("bn", 5)(y), nn.BatchNorm1d(5)(y.flatten(0, 1)).view_as(y))


def test_bn_step_uses_per_step_statistics() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 2, 2) + torch.arange(3.0).view(3, 1, 1, 1, 1)
    ours, ref = build_norm("bn_step", 5), nn.BatchNorm2d(5)
    expected = torch.stack([ref(x_t) for x_t in x])
    torch.testing.assert_close(ours(x), expected)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)  # updated T times, as the reference
    single = build_norm("bn_step", 5, step_mode="s")
    torch.testing.assert_close(single(x[0]), nn.BatchNorm2d(5)(x[0]))


def test_every_norm_kind_builds() -> None:
    for kind in list_norms():
        out = build_norm(kind, 4, alpha=1 / math.sqrt(2))(torch.randn(2, 3, 4, 2, 2))
        assert out.shape == (2, 3, 4, 2, 2)


def test_losses_match_sltt_spec() -> None:
    # sltt.md, "Numbers" item 3
    o = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    y = torch.tensor([0, 2])
    assert build_loss("ce_mean")(o, y).item() == pytest.approx(0.621627, abs=1e-6)
    assert build_loss("tet", lam=0.0)(o, y).item() == pytest.approx(0.621627, abs=1e-6)
    assert build_loss("tet", lam=0.05, target="ones")(o, y).item() == pytest.approx(0.650462, abs=1e-6)
    assert build_loss("tet", lam=0.05, target="onehot")(o, y).item() == pytest.approx(0.613796, abs=1e-6)


def test_tet_is_mean_of_per_step_losses() -> None:
    torch.manual_seed(0)
    o, y = torch.randn(4, 3, 5), torch.randint(0, 5, (3,))
    tet = build_loss("tet", lam=0.05)
    per_step = torch.stack([tet(o_t, y) for o_t in o]).mean()
    torch.testing.assert_close(tet(o, y), per_step)
    rate = o.mean(0)
    expected = nn.functional.mse_loss(rate, nn.functional.one_hot(y, 5).float())
    torch.testing.assert_close(build_loss("mse_rate")(o, y), expected)


def test_no_weight_decay_on_norms_and_biases() -> None:
    net = build_model("convnet", 10, neuron=neuron_factory("lif"), norm=norm_factory("bn"))
    decay, no_decay = split_decay(net)
    assert all(p.dim() > 1 for p in decay)  # conv and linear weights only
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    expected = {id(p) for m in norms for p in m.parameters()} | {id(net.classifier.bias)}
    assert {id(p) for p in no_decay} == expected
    opt = build_optimizer([{"params": decay, "decay": True}, {"params": no_decay, "decay": False}],
                          {"name": "sgd", "lr": 0.1, "weight_decay": 5e-4})
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    all_decay, none = split_decay(net, decay_norm_and_bias=True)
    assert not none and len(all_decay) == len(list(net.parameters()))


def test_bad_optimizer_values() -> None:
    with pytest.raises(ConfigError, match="lr must be > 0"):
        build_optimizer([{"params": [nn.Parameter(torch.zeros(1))]}], {"lr": -1})
    with pytest.raises(ConfigError, match="unknown optimizer"):
        build_optimizer([{"params": [nn.Parameter(torch.zeros(1))]}], {"name": "lamb"})


def test_lr_schedule_warmup_cosine_step() -> None:
    cfg = SchedulerConfig(name="cosine", warmup_steps=10)
    assert lr_factor(0, 110, 10, cfg, 0.1) == pytest.approx(0.1)  # warm-up step i runs at (i + 1)/W
    assert lr_factor(4, 110, 10, cfg, 0.1) == pytest.approx(0.5)
    assert lr_factor(9, 110, 10, cfg, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 110, 10, cfg, 0.1) == pytest.approx(1.0)
    assert lr_factor(60, 110, 10, cfg, 0.1) == pytest.approx(0.5)
    assert lr_factor(110, 110, 10, cfg, 0.1) == pytest.approx(0.0, abs=1e-12)
    per_epoch = SchedulerConfig(name="cosine", per_epoch=True)
    assert lr_factor(15, 100, 10, per_epoch, 0.1) == lr_factor(10, 100, 10, per_epoch, 0.1)
    step = SchedulerConfig(name="step", milestones=[2, 4], gamma=0.1)
    assert [lr_factor(s, 60, 10, step, 0.1) for s in (0, 19, 20, 45)] == pytest.approx([1, 1, 0.1, 0.01])


def test_convnet_runs_in_both_step_modes() -> None:
    net = build_model("convnet", 10)
    assert net(torch.rand(3, 2, 3, 32, 32)).shape == (3, 2, 10)
    functional.reset_net(net)
    functional.set_step_mode(net, "s")
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert "convnet" in list_models()
