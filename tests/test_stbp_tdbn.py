"""STBP-tdBN: the numbers of docs/methods/stbp_tdbn.md (float64, rtol 1e-6), folding, the method end to end."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from infra_utils import run_cmd
from omegaconf import DictConfig, OmegaConf, open_dict
from spikingjelly.activation_based import functional, layer
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import build_norm, norm_factory
from spikeforge.layers.tdbn import ThresholdDependentBN, fold, fold_sequential
from spikeforge.methods.optim import is_norm, split_decay
from spikeforge.models import build_model
from spikeforge.neurons import build_neuron, is_neuron, neuron_factory
from spikeforge.neurons.stbp import STBPLIFNode, strict_spike

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
RTOL = 1e-6
F64 = torch.float64


def close(a: torch.Tensor, b: object, atol: float = 0.0) -> None:
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), rtol=RTOL, atol=atol)


# ---- neuron (spec "Numbers" 1) --------------------------------------------------------------
X1 = [0.25, 0.5, 0.375, 0.40625, 1.0, 0.5]
U1 = [0.25, 0.5625, 0.375, 0.5, 1.125, 0.5]
O1 = [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_spec_spike_train_multi_step() -> None:
    n = build_neuron("stbp_lif", v_threshold=0.5, decay=0.25, width=1.0, store_u_seq=True)
    o = n(torch.tensor(X1, dtype=F64).view(6, 1))
    close(n.u_seq.flatten(), U1)
    close(o.flatten(), O1)  # u = V_th exactly (steps 4 and 6) does not fire


def test_spec_spike_train_single_step() -> None:
    n = build_neuron("stbp_lif", v_threshold=0.5, decay=0.25, width=1.0, step_mode="s")
    o = torch.stack([n(torch.tensor([x], dtype=F64)) for x in X1])
    close(o.flatten(), O1)
    functional.reset_net(n)
    assert n.v == 0.0


def test_single_step_equals_multi_step_with_gradients() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3, 4, dtype=F64, requires_grad=True)
    m = build_neuron("stbp_lif")
    out_m = m(x)
    (g_m,) = torch.autograd.grad((out_m * torch.arange(60, dtype=F64).view_as(out_m)).sum(), x)
    s = build_neuron("stbp_lif")
    functional.set_step_mode(s, "s")
    out_s = torch.stack([s(x_t) for x_t in x.unbind(0)])
    (g_s,) = torch.autograd.grad((out_s * torch.arange(60, dtype=F64).view_as(out_s)).sum(), x)
    close(out_s, out_m)
    close(g_s, g_m)


# ---- surrogate (spec "Numbers" 2) -------------------------------------------------------------
U2 = [-0.25, 0.0, 0.0625, 0.5, 0.9375, 1.0, 1.25]


@pytest.mark.parametrize(("width", "expected"), [(1.0, [0, 0, 1, 1, 1, 0, 0]), (0.5, [0, 0, 0, 2, 0, 0, 0])])
def test_spec_surrogate_centred_at_threshold(width: float, expected: list[float]) -> None:
    u = torch.tensor(U2, dtype=F64, requires_grad=True)
    strict_spike(u, 0.5, width).sum().backward()
    close(u.grad, expected)


def test_surrogate_through_neuron_matches_spec() -> None:
    # one step from rest: u_1 = x, so ∂o_1/∂x is the surrogate at u = x
    n = build_neuron("stbp_lif", v_threshold=0.5, width=0.5)
    x = torch.tensor(U2, dtype=F64).view(1, -1).requires_grad_(True)
    n(x).sum().backward()
    close(x.grad.flatten(), [0, 0, 0, 2, 0, 0, 0])


@pytest.mark.parametrize(("detach_reset", "expected"), [(False, -0.15), (True, 0.0)])
def test_gradient_through_hard_reset(detach_reset: bool, expected: float) -> None:
    # x = [.6, .3], V_th .5, τ .25, a 1: u1 = .6 fires, u2 = τ·u1·(1 − o1) + x2 = .3.
    # ∂o2/∂x1 = g'(u2)·τ·[(1 − o1) − u1·g'(u1)] = 1·.25·(0 − .6) = −0.15 with the reset in the graph.
    n = build_neuron("stbp_lif", detach_reset=detach_reset)
    x = torch.tensor([[0.6], [0.3]], dtype=F64, requires_grad=True)
    o = n(x)
    close(o.flatten(), [1.0, 0.0])
    (g,) = torch.autograd.grad(o[1].sum(), x)
    close(g.flatten(), [expected, 1.0], atol=1e-12)


def test_neuron_defaults_and_validation() -> None:
    n = build_neuron("stbp_lif")
    assert isinstance(n, STBPLIFNode) and is_neuron(n) and n.step_mode == "m"
    assert (n.v_threshold, n.decay, n.width, n.detach_reset) == (0.5, 0.25, 1.0, False)
    with pytest.raises(ConfigError):
        build_neuron("stbp_lif", width=0.0)
    with pytest.raises(ConfigError):
        build_neuron("stbp_lif", decay=1.5)


# ---- tdBN (spec "Numbers" 3) --------------------------------------------------------------------
def spec_tdbn_input() -> torch.Tensor:
    x = torch.zeros(2, 2, 2, 1, 2, dtype=F64)  # [T, N, C, H, W]
    for t in range(2):
        for n in range(2):
            for w in range(2):
                x[t, n, 0, 0, w] = 1 + 4 * t + 2 * n + w
        x[t, :, 1] = 2.0 * t
    return x


def test_spec_tdbn_forward_and_running_stats() -> None:
    norm = build_norm("tdbn", 2, alpha=1.0, v_th=0.4).to(F64)
    x = spec_tdbn_input()
    y = norm(x)
    mu = x.transpose(1, 2).reshape(2, 2, -1).transpose(0, 1).reshape(2, -1)
    close(mu.mean(1), [4.5, 1.0])
    close(mu.var(1, unbiased=False), [5.25, 1.0])
    close(y[:, :, 0].flatten(), [-0.61101, -0.436435, -0.261861, -0.087287, 0.087287, 0.261861, 0.436435,
                                 0.61101])
    ch1 = y[:, :, 1].reshape(2, -1)
    close(ch1[0], [-0.399998] * 4)
    close(ch1[1], [0.399998] * 4)
    close(norm.running_mean, [0.45, 0.1])
    close(norm.running_var, [1.5, 1.0142857])


def test_tdbn_spec_values_to_rtol_1e6() -> None:
    # the spec's channel-0 numbers are rounded to 6 significant digits: check the exact formula too
    norm = build_norm("tdbn", 2, v_th=0.4).to(F64)
    y = norm(spec_tdbn_input())
    exact = 0.4 * (torch.arange(1, 9, dtype=F64) - 4.5) / math.sqrt(5.25 + 1e-5)
    close(y[:, :, 0].flatten(), exact)


def test_tdbn_alpha_scales_output_and_eval_uses_running_stats() -> None:
    x = spec_tdbn_input()
    a = 1 / math.sqrt(2)
    y1 = build_norm("tdbn", 2, v_th=0.4).to(F64)(x)
    norm = build_norm("tdbn", 2, alpha=a, v_th=0.4).to(F64)
    close(norm(x), a * y1)
    norm.eval()
    with torch.no_grad():
        norm.weight.fill_(2.0)
        norm.bias.fill_(0.25)
    y = norm(x)
    expected = 2.0 * a * 0.4 * (x - torch.tensor([0.45, 0.1], dtype=F64).view(1, 1, 2, 1, 1)) / torch.sqrt(
        torch.tensor([1.5, 1.0142857142857142], dtype=F64).view(1, 1, 2, 1, 1) + 1e-5) + 0.25
    close(y, expected)


def test_tdbn_single_step_input() -> None:
    x = spec_tdbn_input()
    norm = build_norm("tdbn", 2, v_th=0.4, step_mode="s").to(F64)
    y = norm(x[0])  # [N, C, H, W]: statistics over N·H·W of one step
    ref = torch.nn.functional.batch_norm(x[0], None, None, training=True) * 0.4
    close(y, ref)
    assert y.shape == x[0].shape


def test_tdbn_learns_lambda_not_alpha_vth_lambda() -> None:
    """Same forward as spikingjelly's ThresholdDependentBatchNorm2d; λ's gradient is α·V_th times its weight's."""
    torch.manual_seed(0)
    alpha, v_th = 1 / math.sqrt(2), 0.4
    x = torch.randn(3, 4, 5, 6, 6, dtype=F64)
    g = torch.randn_like(x)
    ours = build_norm("tdbn", 5, alpha=alpha, v_th=v_th).to(F64)
    sj = layer.ThresholdDependentBatchNorm2d(alpha=alpha, v_th=v_th, num_features=5).to(F64)
    y_ours, y_sj = ours(x), sj(x)
    close(y_ours, y_sj)
    (y_ours * g).sum().backward()
    (y_sj * g).sum().backward()
    xhat = torch.nn.functional.batch_norm(x.flatten(0, 1), None, None, training=True).view_as(x)
    close(ours.weight.grad, alpha * v_th * (xhat * g).sum(dim=(0, 1, 3, 4)))
    close(ours.weight.grad, alpha * v_th * sj.weight.grad)  # sj's weight is α·V_th·λ
    close(ours.bias.grad, sj.bias.grad)
    close(ours.running_mean, sj.running_mean)
    close(ours.running_var, sj.running_var)


def test_tdbn_defaults_and_no_weight_decay() -> None:
    norm = build_norm("tdbn", 8)
    assert isinstance(norm, ThresholdDependentBN)
    assert (norm.alpha, norm.v_th, norm.eps, norm.momentum) == (1.0, 0.5, 1e-5, 0.1)
    close(norm.weight.detach(), torch.ones(8))
    close(norm.bias.detach(), torch.zeros(8))
    assert is_norm(norm)
    net = torch.nn.Sequential(layer.Conv2d(3, 8, 3, bias=False), norm)
    decay, no_decay = split_decay(net)
    assert [p.shape for p in decay] == [net[0].weight.shape]
    assert {id(p) for p in no_decay} == {id(norm.weight), id(norm.bias)}
    with pytest.raises(ConfigError):
        build_norm("tdbn", 8, v_th=0.0)


# ---- folding ----------------------------------------------------------------------------------
def _trained_tdbn(c: int, alpha: float, seed: int) -> ThresholdDependentBN:
    torch.manual_seed(seed)
    norm = build_norm("tdbn", c, alpha=alpha, v_th=0.4).to(F64)
    for _ in range(3):  # non-trivial running statistics
        norm(torch.randn(2, 4, c, 5, 5, dtype=F64) * 3 + 1)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    return norm.eval()


@pytest.mark.parametrize("bias", [False, True])
def test_fold_conv_tdbn_equals_folded_conv(bias: bool) -> None:
    norm = _trained_tdbn(6, 1 / math.sqrt(2), seed=1)
    conv = layer.Conv2d(3, 6, 3, padding=1, stride=2, bias=bias, step_mode="m").to(F64)
    x = torch.randn(2, 4, 3, 8, 8, dtype=F64)
    folded = fold(conv, norm)
    with torch.no_grad():
        close(folded(x), norm(conv(x)), atol=1e-12)
    assert folded.step_mode == "m" and folded.bias is not None
    assert (conv.bias is not None) == bias  # the original conv is left untouched


def test_fold_linear_and_errors() -> None:
    norm = _trained_tdbn(4, 1.0, seed=2)
    lin = layer.Linear(7, 4).to(F64)
    x = torch.randn(3, 5, 7, dtype=F64)
    with torch.no_grad():
        close(fold(lin, norm)(x), norm(lin(x)), atol=1e-12)
    with pytest.raises(ValueError):
        fold(layer.Linear(7, 5).to(F64), norm)
    with pytest.raises(ValueError):
        fold(torch.nn.ReLU(), norm)


def test_fold_sequential_on_a_model() -> None:
    torch.manual_seed(3)
    net = build_model("convnet", 10, neuron=neuron_factory("stbp_lif"), norm=norm_factory("tdbn", v_th=0.5)).to(F64)
    x = torch.randn(2, 6, 3, 16, 16, dtype=F64)
    with torch.no_grad():
        for _ in range(2):
            net(x * 2 + 0.5)
            functional.reset_net(net)
        for m in net.modules():
            if isinstance(m, ThresholdDependentBN):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        net.eval()
        ref = net(x)
        functional.reset_net(net)
        fold_sequential(net)
        functional.invalidate_reset_cache(net)
        assert not any(isinstance(m, ThresholdDependentBN) for m in net.modules())
        out = net(x)
    close(out, ref, atol=1e-9)



def test_fold_sequential_across_an_average_pool_only() -> None:
    """conv → average pool → norm folds (the affine map commutes with a mean); a max pool between stops it."""
    torch.manual_seed(4)
    for pool, folds in ((nn.AvgPool2d(2), True), (nn.AdaptiveAvgPool2d(1), True), (nn.MaxPool2d(2), False),
                        (nn.AvgPool2d(3, padding=1), False)):  # zero padding counted in the mean
        norm = nn.BatchNorm2d(4).to(F64)
        with torch.no_grad():
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), pool, norm).to(F64).eval()
        x = torch.randn(2, 3, 8, 8, dtype=F64)
        ref = net(x)
        fold_sequential(net)
        assert isinstance(net[2], nn.BatchNorm2d) != folds
        close(net(x), ref, atol=1e-9)


# ---- the method ---------------------------------------------------------------------------------
def compose_cfg(overrides: list[str], output_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent)
    return cfg


def test_method_config_supplies_factories(tmp_path: Path) -> None:
    from spikeforge.run import build_module

    cfg = compose_cfg(["method=stbp_tdbn", "data=digits", "method.neuron.v_threshold=0.4"], tmp_path)
    assert cfg.method.norm.v_th == 0.4  # tdBN follows the neuron's threshold
    module = build_module(cfg)
    neurons = [m for m in module.net.modules() if is_neuron(m)]
    norms = [m for m in module.net.modules() if is_norm(m)]
    assert neurons and all(isinstance(m, STBPLIFNode) and m.v_threshold == 0.4 for m in neurons)
    assert norms and all(isinstance(m, ThresholdDependentBN) and m.v_th == 0.4 for m in norms)
    out = module(torch.rand(3, 3, 32, 32))
    assert out.shape == (cfg.T, 3, 10)
    assert not torch.equal(out, out.round())  # non-spiking last layer: real-valued logits
    decayed = {id(p) for p in module.param_groups()[0]["params"]}
    assert module.param_groups()[0]["decay"] and decayed
    assert not any(id(p) in decayed for m in norms for p in m.parameters())


def test_method_rate_readout_option(tmp_path: Path) -> None:
    from spikeforge.run import build_module

    cfg = compose_cfg(["method=stbp_tdbn", "data=digits", "method.readout=rate"], tmp_path)
    module = build_module(cfg)
    out = module(torch.rand(2, 3, 32, 32))
    assert out.shape == (cfg.T, 2, 10) and set(out.unique().tolist()) <= {0.0, 1.0}
    rate = module.readout(out)
    assert rate.min() >= 0 and rate.max() <= 1
    cfg = compose_cfg(["method=stbp_tdbn", "data=digits", "method.readout=spikes"], tmp_path)
    with pytest.raises((ConfigError, InstantiationException), match="readout must be one of mean, rate"):
        build_module(cfg)


def test_method_fast_dev_run(tmp_path: Path) -> None:
    from spikeforge.run import train

    cfg = compose_cfg(["method=stbp_tdbn", "data=digits", "debug=fdr"], tmp_path / "run")
    results = train(cfg)
    assert results["method"] == "stbp_tdbn"
    assert math.isfinite(results["test"]["test/loss"])
    assert 0.0 < results["mean_firing_rate"] < 1.0


RECIPES = sorted(p.stem for p in (CONF / "experiment").glob("stbp_tdbn_*.yaml"))


def test_recipes_present() -> None:
    assert set(RECIPES) >= {"stbp_tdbn_cifar10_t2", "stbp_tdbn_cifar10_t4", "stbp_tdbn_cifar10_t6",
                            "stbp_tdbn_dvs_gesture", "stbp_tdbn_cifar10_dvs", "stbp_tdbn_imagenet",
                            "stbp_tdbn_digits"}


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes(recipe: str, tmp_path: Path) -> None:
    raw = OmegaConf.load(CONF / "experiment" / f"{recipe}.yaml")
    needed = [(group, name) for d in raw.defaults for k, name in d.items()
              for group in [k.replace("override /", "")]]
    missing = [f"{g}/{n}" for g, n in needed if not (CONF / g / f"{n}.yaml").exists()]
    if missing:
        pytest.fail(f"the recipe names configs that do not exist: {', '.join(missing)}")
    cfg = compose_cfg([f"experiment={recipe}"], tmp_path)
    assert cfg.method.name == "stbp_tdbn"
    if recipe == "stbp_tdbn_digits":
        assert cfg.expected is None  # no paper figure on digits
    else:
        assert cfg.expected.top1 > 0 and cfg.expected.source
    OmegaConf.to_container(cfg.method, resolve=True)


# ---- accuracy target (slow) -------------------------------------------------------------------
@pytest.mark.slow
def test_default_digits_run_reaches_90_percent(tmp_path: Path) -> None:
    """``python src/train.py method=stbp_tdbn data=digits`` (the default budget) reaches ≥ 90% test top-1."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = run_cmd(
        [sys.executable, str(ROOT / "src" / "train.py"), "method=stbp_tdbn", "data=digits",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test"]["test/acc1"] >= 0.90, results["test"]
