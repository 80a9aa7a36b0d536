"""DSR: neuron numerics of docs/methods/dsr.md, the bounded threshold, the method's readout/loss/optimiser,
the hybrid pipeline (calibration, ANN → SNN initialisation) and training on the embedded digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import CONF, compose_cfg
from omegaconf import DictConfig, OmegaConf
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import DSRIFNode, DSRLIFNode
from torch import nn

from spikeforge.errors import CheckpointError, ConfigError
from spikeforge.methods.dsr import (
    apply_thresholds,
    calibrate_thresholds,
    current_thresholds,
    load_ann_weights,
    load_thresholds,
    percentile,
    save_thresholds,
)
from spikeforge.methods.optim import SchedulerConfig, lr_factor
from spikeforge.models import build_model
from spikeforge.neurons import build_neuron, is_neuron, list_neurons, neuron_factory
from spikeforge.neurons.basic import ReLUNeuron
from spikeforge.neurons.dsr import DSRIFNeuron, DSRLIFNeuron, dsr_weights, weighted_rate


def dsr_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    return compose_cfg(list(overrides), tmp_path / "run")


def const(values: list[float], T: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).expand(T, len(values)).clone()


# ---- numbers of dsr.md "Numbers a reimplementation must reproduce" ---------------------------------
X1 = [-0.3, 0.0, 0.26, 0.5, 0.6, 1.0, 1.7]


def test_if_forward_numbers():  # number 1
    n = build_neuron("dsr_if", v_threshold=1.0, alpha=0.5, v_threshold_bound=0.01).double()
    out = n(const(X1, 4))
    torch.testing.assert_close(out.mean(0), torch.tensor([0, 0, 0.25, 0.5, 0.5, 1, 1], dtype=torch.float64))
    assert set(out.unique().tolist()) <= {0.0, 1.0}  # o_t ∈ {0, V_th}
    assert out[:, 2].nonzero().flatten().tolist() == [1]  # 0.26 fires at step 1
    assert out[:, 3].nonzero().flatten().tolist() == [0, 2]  # 0.5 and 0.6 at steps 0 and 2
    assert out[:, 4].nonzero().flatten().tolist() == [0, 2]


def test_if_gradient_numbers():  # number 2
    n = build_neuron("dsr_if", v_threshold=1.0, alpha=0.5, v_threshold_bound=0.01).double()
    x = const(X1, 4).requires_grad_(True)
    g = torch.tensor([0.1 * (t + 1) for t in range(4)], dtype=torch.float64)[:, None].expand(4, 7)
    n(x).backward(g)
    expected = torch.tensor([0, 0.25, 0.25, 0.25, 0.25, 0.25, 0], dtype=torch.float64).expand(4, 7)
    torch.testing.assert_close(x.grad, expected)
    assert n.v_threshold.grad.item() == pytest.approx(1.0, abs=1e-6)


def test_lif_weights_numbers():  # number 3
    w = dsr_weights(5, tau=1.0, delta_t=0.1, dtype=torch.float64)
    torch.testing.assert_close(w, torch.tensor([0.670320, 0.740818, 0.818731, 0.904837, 1.0], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    a = weighted_rate(torch.tensor([1.0, 0, 2, 0, 3], dtype=torch.float64), 1.0, 0.1)
    assert a.item() == pytest.approx(1.283714, abs=1e-6)


X4 = [-1.0, 1, 3, 5, 7, 20, 80]


def test_lif_forward_numbers():  # number 4
    n = build_neuron("dsr_lif", v_threshold=0.6, tau=1.0, delta_t=0.1, alpha=0.5, v_threshold_bound=1e-3).double()
    out = n(const(X4, 5))
    assert ((out == 0) | ((out - 6.0).abs() < 1e-5)).all()  # o_t = s_t/Δt ∈ {0, V_th/Δt}
    expected = torch.tensor([0, 1.313038, 2.388062, 4.811915, 6, 6, 6], dtype=torch.float64)
    torch.testing.assert_close(n.representation(out), expected, atol=1e-6, rtol=0)


def test_lif_gradients_follow_the_formula():
    """dsr.md "LIF backward", evaluated by hand: G = T·â(g); ∂L/∂x_t = (G/τ)/T inside (0, V_th·τ/Δt);
    ∂L/∂V_th = Δt·Σ G over x̂ > V_th·τ/Δt (here τ = 2 so the τ factors are visible)."""
    T, tau, dt, vth = 5, 2.0, 0.1, 0.6
    n = build_neuron("dsr_lif", v_threshold=vth, tau=tau, delta_t=dt, alpha=0.5, v_threshold_bound=1e-3).double()
    xs = [-1.0, 0.5, 5.0, 11.9, 12.1, 30.0]  # V_th·τ/Δt = 12
    x = const(xs, T).requires_grad_(True)
    g_t = [0.1 * (t + 1) for t in range(T)]
    n(x).backward(torch.tensor(g_t, dtype=torch.float64)[:, None].expand(T, len(xs)))
    w = [math.exp(-(T - i) * dt / tau) for i in range(1, T + 1)]
    G = T * sum(wi * gi for wi, gi in zip(w, g_t)) / sum(w)
    inside = [1.0 if 0 < v < vth * tau / dt else 0.0 for v in xs]
    expected = torch.tensor([G / tau / T * m for m in inside], dtype=torch.float64).expand(T, len(xs))
    torch.testing.assert_close(x.grad, expected)
    assert n.v_threshold.grad.item() == pytest.approx(dt * G * 2, rel=1e-9)  # 12.1 and 30 are above


@pytest.mark.parametrize("seed", range(3))
def test_if_constant_input_spike_count(seed):
    """Constant input: spike count = clip(⌊T·x/V_th + 1 − α⌋, 0, T) (dsr.md "IF forward")."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        T = int(torch.randint(1, 30, (1,), generator=g))
        vth = float(torch.rand(1, generator=g)) * 5 + 0.05
        alpha = float(torch.rand(1, generator=g)) * 0.9 + 0.1
        x = (torch.rand(200, generator=g, dtype=torch.float64) * 1.6 - 0.3) * vth
        z = T * x / vth + 1 - alpha
        x = x[(z - z.round()).abs() > 1e-6]  # away from ties in float arithmetic
        n = build_neuron("dsr_if", v_threshold=vth, alpha=alpha, v_threshold_bound=0.01).double()
        with torch.no_grad():
            count = (n(x.expand(T, -1).clone()) != 0).sum(0)
        expected = torch.clamp(torch.floor(T * x / n.v_threshold.double() + 1 - alpha), 0, T).long()
        assert torch.equal(count, expected)


def test_matches_spikingjelly_above_the_bound():
    """Above its bound our nodes equal spikingjelly's DSR nodes (forward and both gradients)."""
    torch.manual_seed(0)
    x = torch.randn(6, 3, 5) * 4
    for ours, theirs in [
        (build_neuron("dsr_if", v_threshold=2.0, alpha=0.5, v_threshold_bound=0.01),
         DSRIFNode(T=6, v_threshold=2.0, alpha=0.5, v_threshold_lower_bound=0.01)),
        (build_neuron("dsr_lif", v_threshold=0.3, tau=1.0, delta_t=0.05, alpha=0.3, v_threshold_bound=5e-4),
         DSRLIFNode(T=6, v_threshold=0.3, tau=1.0, delta_t=0.05, alpha=0.3, v_threshold_lower_bound=5e-4)),
    ]:
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        oa, ob = ours(a), theirs(b)
        torch.testing.assert_close(oa, ob)
        g = torch.randn_like(oa)
        oa.backward(g)
        ob.backward(g)
        torch.testing.assert_close(a.grad, b.grad)
        torch.testing.assert_close(ours.v_threshold.grad, theirs.v_threshold.grad)


def test_threshold_lower_bound_clamps_in_place_without_stopping_the_gradient():
    bound = 0.01
    n = build_neuron("dsr_if", v_threshold=1.0, alpha=0.5, v_threshold_bound=bound)
    with torch.no_grad():
        n.v_threshold.fill_(-0.5)  # e.g. after an SGD step
    x = torch.full((4, 3), 1.0)
    n(x).sum().backward()
    assert n.v_threshold.item() == pytest.approx(bound)  # clamped in place before the forward
    assert n.v_threshold.grad.item() == pytest.approx(4 * 3)  # x̄ > V_th everywhere: Σ G = 12, not stopped
    # spikingjelly's out-of-place clamp gives zero gradient there (why the neuron is replaced)
    sj = DSRIFNode(T=4, v_threshold=1.0, alpha=0.5, v_threshold_lower_bound=bound)
    with torch.no_grad():
        sj.v_threshold.fill_(-0.5)
    sj(x).sum().backward()
    assert sj.v_threshold.grad.item() == 0.0
    # two forwards before one backward still work (the saved threshold is a copy)
    n.zero_grad()
    (n(x).sum() + n(x).sum()).backward()
    assert n.v_threshold.grad.item() == pytest.approx(24)


def test_threshold_above_bound_is_untouched_and_bound_validated():
    n = build_neuron("dsr_lif")
    n(torch.rand(3, 2))
    assert n.v_threshold.item() == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="below its lower bound"):
        build_neuron("dsr_if", v_threshold=0.001, v_threshold_bound=0.01)
    with pytest.raises(ConfigError, match="alpha"):
        build_neuron("dsr_if", alpha=0.0)


def test_build_defaults_T_from_input_and_protocol():
    assert {"dsr_if", "dsr_lif"} <= set(list_neurons())
    a = build_neuron("dsr_if")
    assert (a.v_threshold.item(), a.alpha, a.v_threshold_bound) == (6.0, 0.5, 0.01)  # dsr.md IF row
    b = build_neuron("dsr_lif")
    assert (b.v_threshold.item(), b.tau, b.delta_t, b.alpha, b.v_threshold_bound) == pytest.approx(
        (0.3, 1.0, 0.05, 0.3, 5e-4))  # LIF row
    n = build_neuron("dsr_if", T=20, v_threshold=1.0, alpha=0.5, v_threshold_bound=0.01).double()
    assert n(const(X1, 4)).shape == (4, 7)  # T from the input, not the constructor
    assert n(torch.zeros(3, 2, 4, 5, 5, dtype=torch.float64)).shape == (3, 2, 4, 5, 5)
    assert is_neuron(a) and a.is_spiking_neuron and a.step_mode == "m"
    functional.reset_net(nn.Sequential(a))  # stateless: reset is a no-op
    assert isinstance(neuron_factory("dsr_lif", v_threshold=0.6)(num_features=8), DSRLIFNeuron)


def test_single_step_mode_is_refused():
    with pytest.raises(ConfigError, match="single-step"):
        build_neuron("dsr_if", step_mode="s")
    net = nn.Sequential(nn.Linear(2, 2), build_neuron("dsr_lif"))
    with pytest.raises(ConfigError, match="whole time sequence"):
        functional.set_step_mode(net, "s")


def test_mixed_precision_input_keeps_dtype():
    n = build_neuron("dsr_if", v_threshold=1.0)
    x = (torch.rand(5, 4) * 2).to(torch.bfloat16).requires_grad_(True)
    out = n(x)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16


# ---- the method ----------------------------------------------------------------------------------------
def _module(tmp_path: Path, *overrides: str):
    from spikeforge.run import build_module

    return build_module(dsr_cfg(tmp_path, *overrides))


def test_method_readout_loss_and_weight_decay(tmp_path):
    if_mod = _module(tmp_path, "method=dsr", "T=5")
    assert isinstance(next(m for m in if_mod.net.modules() if is_neuron(m)), DSRIFNeuron)
    out = torch.randn(5, 3, 10)
    y = torch.tensor([1, 2, 3])
    torch.testing.assert_close(if_mod.readout(out), out.mean(0))
    torch.testing.assert_close(if_mod.compute_loss(out, y), F.cross_entropy(out.mean(0), y))

    lif = _module(tmp_path, "method=dsr_lif", "T=5")
    assert lif.readout_kind == "weighted_rate" and (lif.tau, lif.delta_t) == (1.0, 0.05)
    w = torch.tensor([math.exp(-(5 - i) * 0.05) for i in range(1, 6)])
    scores = (w[:, None, None] * out).sum(0) / w.sum()
    torch.testing.assert_close(lif.readout(out), scores)
    torch.testing.assert_close(lif.compute_loss(out, y), F.cross_entropy(scores, y))

    # weight decay on every parameter, thresholds included (dsr.md "Recipes")
    groups = lif.param_groups()
    decayed = {id(p) for g in groups if g["decay"] for p in g["params"]}
    assert all(id(p) in decayed for p in lif.parameters())
    assert any(n.endswith("v_threshold") for n, _ in lif.named_parameters())
    with pytest.raises(Exception, match="'bogus' is not valid"):  # Hydra wraps the ConfigError
        _module(tmp_path, "method=dsr", "method.readout=bogus")


def test_recipe_schedule_is_per_epoch_cosine_with_iteration_warmup():
    c = SchedulerConfig(name="cosine", per_epoch=True, warmup_steps=400)
    spe, total = 391, 391 * 200
    assert lr_factor(199, total, spe, c, 0.1) == pytest.approx(0.5)  # warm-up step i at (i + 1)/400
    assert lr_factor(400, total, spe, c, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 1 / 200)))
    assert lr_factor(spe * 100 + 7, total, spe, c, 0.1) == pytest.approx(0.5)  # constant within an epoch


# ---- hybrid pipeline: calibration ------------------------------------------------------------------
class Scale(nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k * x


def test_percentile_nearest_rank():
    v = torch.arange(1.0, 1001.0)
    assert percentile(v, 99.9) == 999.0
    assert percentile(v, 100) == 1000.0
    assert percentile(torch.tensor([3.0]), 50) == 3.0


def test_calibration_on_known_activations(tmp_path):
    """Layer 1 sees x (1000 negatives, 1..1000), layer 2 sees 2·relu(x): nearest-rank 99.9th percentiles
    of the ReLU'd values (1000 zeros + 1..1000) are 998 and 1996; the third batch is not used."""
    net = nn.Sequential(ReLUNeuron(), Scale(2.0), ReLUNeuron())
    net.train()
    g = torch.Generator().manual_seed(0)
    x = torch.cat([-torch.arange(1.0, 1001.0), torch.arange(1.0, 1001.0)])[torch.randperm(2000, generator=g)]
    batches = [x[:1000].view(1, 10, 100), x[1000:].view(1, 10, 100), torch.full((1, 10, 100), 1e6)]
    th = calibrate_thresholds(net, batches, q=99.9, num_batches=2)
    assert th == {"0": 998.0, "2": 1996.0}
    assert net.training  # mode restored

    path = save_thresholds(tmp_path / "th.json", th, percentile=99.9)
    assert load_thresholds(path) == th
    snn = nn.Sequential(build_neuron("dsr_if"), Scale(2.0), build_neuron("dsr_lif", delta_t=0.05, tau=1.0))
    set_ = apply_thresholds(snn, load_thresholds(path))
    assert current_thresholds(snn) == pytest.approx({"0": 998.0, "2": 1996.0 * 0.05})  # LIF: ×Δt/τ
    assert set_ == pytest.approx(current_thresholds(snn))

    with pytest.raises(ConfigError, match="does not match the model"):
        apply_thresholds(snn, {"0": 1.0})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"thresholds": {"0": 1}}))
    with pytest.raises(ConfigError, match="not a DSR threshold file"):
        load_thresholds(bad)


def test_calibrate_checkpoint_end_to_end(tmp_path):
    """Step 2 on an ANN checkpoint in the format src/train.py writes; the training split is used."""
    from spikeforge.calibration import calibrate_checkpoint
    from spikeforge.run import build_module

    cfg = dsr_cfg(tmp_path, "method=dsr_ann", "T=1")
    ann = build_module(cfg)
    ckpt = tmp_path / "ann.ckpt"
    torch.save({"state_dict": ann.state_dict(), "spikeforge_config": OmegaConf.to_container(cfg, resolve=True)}, ckpt)
    th = calibrate_checkpoint(ckpt, tmp_path / "th.json", num_batches=2)
    names = [n for n, m in ann.net.named_modules() if isinstance(m, ReLUNeuron)]
    assert list(th) == names and all(v > 0 for v in th.values())
    data = json.loads((tmp_path / "th.json").read_text())
    assert data["split"] == "train" and data["percentile"] == 99.9 and data["thresholds"] == th


# ---- hybrid pipeline: ANN → SNN ------------------------------------------------------------------------
def _nets(channels=(4, 8)):
    def make(kind, **p):
        return build_model("convnet", num_classes=10, neuron=neuron_factory(kind, **p), channels=channels)

    return make("relu"), make("dsr_if")


def test_init_from_ann_loads_every_tensor(tmp_path):
    torch.manual_seed(0)
    ann, snn = _nets()
    ckpt = tmp_path / "ann.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in ann.state_dict().items()}}, ckpt)
    n = load_ann_weights(snn, ckpt)
    assert n == len(ann.state_dict())
    for k, v in ann.state_dict().items():
        assert torch.equal(snn.state_dict()[k], v)
    # plain state dicts work too
    torch.save(ann.state_dict(), tmp_path / "plain.pt")
    assert load_ann_weights(_nets()[1], tmp_path / "plain.pt") == n


def test_init_from_ann_fails_loudly(tmp_path):
    ann_other, _ = _nets(channels=(4, 16))
    _, snn = _nets()
    torch.save({"state_dict": ann_other.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_ann_weights(snn, tmp_path / "other.pt")
    ann, _ = _nets()
    sd = ann.state_dict()
    sd.pop(next(iter(sd)))
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing 1"):
        load_ann_weights(snn, tmp_path / "partial.pt")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, tmp_path / "unrelated.pt")
    with pytest.raises(CheckpointError, match="0/"):
        load_ann_weights(snn, tmp_path / "unrelated.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_ann_weights(snn, tmp_path / "nope.ckpt")


def test_method_initialises_from_ann_and_thresholds_on_fit_setup(tmp_path):
    from spikeforge.run import build_module

    ann = build_module(dsr_cfg(tmp_path, "method=dsr_ann", "T=1"))
    torch.save({"state_dict": ann.state_dict()}, tmp_path / "ann.ckpt")
    names = [n for n, m in ann.net.named_modules() if isinstance(m, ReLUNeuron)]
    save_thresholds(tmp_path / "th.json", {n: 1.5 + i for i, n in enumerate(names)})
    snn = build_module(dsr_cfg(tmp_path, "method=dsr", "T=5", f"method.init_from={tmp_path / 'ann.ckpt'}",
                               f"method.thresholds={tmp_path / 'th.json'}"))
    snn.setup("test")  # evaluation never reads the hybrid files
    assert current_thresholds(snn.net) == pytest.approx(dict.fromkeys(names, 6.0))
    snn.setup("fit")
    assert current_thresholds(snn.net) == pytest.approx({n: 1.5 + i for i, n in enumerate(names)})
    for k, v in ann.net.state_dict().items():
        assert torch.equal(snn.net.state_dict()[k], v)

    broken = build_module(dsr_cfg(tmp_path, "method=dsr", "method.init_from=/nonexistent/ann.ckpt"))
    with pytest.raises(CheckpointError):
        broken.setup("fit")
    resumed = build_module(dsr_cfg(tmp_path, "method=dsr", "method.init_from=/nonexistent/ann.ckpt",
                                   f"ckpt_path={tmp_path / 'last.ckpt'}"))
    resumed.setup("fit")  # resuming: the run's own checkpoint is restored instead


def test_imagenet_graph_ann_to_snn_pipeline(tmp_path):
    """The ImageNet hybrid graph: the ANN calibrates one threshold per SNN neuron layer and its weights
    fill every SNN tensor but the thresholds (small width and input to stay fast)."""
    torch.manual_seed(0)

    def make(kind, **p):
        return build_model("preact_spiking_resnet18_imagenet", num_classes=10, neuron=neuron_factory(kind, **p),
                           width=8)

    ann, snn = make("relu"), make("dsr_if", v_threshold=1.0)
    x = torch.randn(2, 2, 3, 32, 32)
    assert ann(x[:1]).shape == (1, 2, 10)
    th = calibrate_thresholds(ann, [x[:1]])
    assert len(th) == 4 + 2 * 8  # stem, two head neurons and the output neuron; two per block
    assert set(apply_thresholds(snn, th)) == set(th)
    torch.save(ann.state_dict(), tmp_path / "ann.pt")
    assert load_ann_weights(snn, tmp_path / "ann.pt") == len(ann.state_dict())
    out = snn(x)
    assert out.shape == (2, 2, 10) and ((out == 0) | (out > 0)).all()


# ---- training on the embedded digits ---------------------------------------------------------------
@pytest.mark.parametrize("method", ["dsr", "dsr_lif", "dsr_ann"])
def test_fast_dev_run(tmp_path, method):
    from spikeforge.run import train

    res = train(dsr_cfg(tmp_path, f"method={method}", "data=digits", "T=1" if method == "dsr_ann" else "T=5",
                        "debug=fdr"))
    assert res["method"] == method and math.isfinite(res["test"]["test/loss"])
    if method != "dsr_ann":
        assert res["dsr_thresholds"] and all(v >= 0.0005 for v in res["dsr_thresholds"].values())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dsr", "dsr_lif"])
def test_digits_accuracy(tmp_path, method):
    """``python src/train.py method=dsr|dsr_lif data=digits T=5`` reaches ≥ 90% test accuracy."""
    from spikeforge.run import train

    res = train(dsr_cfg(tmp_path, f"method={method}", "data=digits", "T=5"))
    assert res["test"]["test/acc1"] >= 0.90


# ---- recipes -------------------------------------------------------------------------------------------
RECIPES = sorted(p.stem for p in (CONF / "experiment").glob("dsr_*.yaml"))


def test_recipes_exist():
    assert {"dsr_cifar10_lif", "dsr_cifar10_if", "dsr_cifar100_lif", "dsr_cifar100_if", "dsr_cifar10_t5_lif",
            "dsr_cifar10_t5_if", "dsr_cifar10_dvs", "dsr_imagenet_ann", "dsr_imagenet"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_composes(tmp_path, name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    needs = [line.split(":")[1].strip() for line in text.splitlines() if "override /" in line]
    groups = [line.split("override /")[1].split(":")[0] for line in text.splitlines() if "override /" in line]
    absent = [f"{g}/{n}" for g, n in zip(groups, needs) if not (CONF / g / f"{n}.yaml").exists()]
    if absent:
        pytest.fail(f"the recipe names configs that do not exist: {absent}")
    cfg = dsr_cfg(tmp_path, f"experiment={name}")
    assert cfg.expected.top1 > 0 and cfg.expected.source
    assert cfg.method.name in ("dsr", "dsr_lif", "dsr_ann")
    assert cfg.method.optimizer.decay_norm_and_bias is True
    assert cfg.method.scheduler.per_epoch is True
