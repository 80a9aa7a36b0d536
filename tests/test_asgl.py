"""ASGL: the numbers of asgl.md ("Numbers a reimplementation must reproduce", float32, tol 1e-5),
mask statistics, eval mode, the p schedule, width gradients, the optimisers and checkpoint/resume."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf, open_dict
from spikingjelly.activation_based import functional

from spikeforge.errors import ConfigError
from spikeforge.methods.asgl import NoiseRateSchedule, OptimizerPair, noise_milestones
from spikeforge.neurons import build_neuron, is_neuron, list_neurons
from spikeforge.neurons.asgl import ASGLLIF, HybridSpike, hybrid_spikes
from spikeforge.run import build_module, train

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
TOL = dict(atol=1e-5, rtol=0)


def t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


def analog(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


# ---- asgl.md numbers 1-3 ------------------------------------------------------------------------
@pytest.mark.parametrize("mask_value", [0.0, 1.0])  # the backward is ∂H_a in both modes
def test_sigmoid_surrogate_w1(mask_value: float) -> None:
    x = t(-2, -0.5, 0, 0.5, 2).requires_grad_()
    hs = HybridSpike("sigmoid", width=1.0, p=0.0)
    y = hs(x, mask=torch.full_like(x, mask_value))
    y.sum().backward()
    H = t(0.119203, 0.377541, 0.5, 0.622459, 0.880797)
    if mask_value == 0.0:
        torch.testing.assert_close(y.detach(), H, **TOL)
    else:
        torch.testing.assert_close(y.detach(), t(0, 0, 1, 1, 1), **TOL)
    torch.testing.assert_close(x.grad, t(0.104994, 0.235004, 0.25, 0.235004, 0.104994), **TOL)
    torch.testing.assert_close(hs.smooth(x).detach(), H, **TOL)


def test_sigmoid_surrogate_w5() -> None:
    x = t(-2, -0.5, 0, 0.5, 2)
    hs = HybridSpike("sigmoid", width=5.0, p=0.0)
    torch.testing.assert_close(hs(x, mask=analog(x)), t(0.401312, 0.475021, 0.5, 0.524979, 0.598688), **TOL)
    assert math.isclose(float(hs.width), 5.0, rel_tol=1e-6)
    assert math.isclose(float(hs.a.detach()), 0.2, rel_tol=1e-6)  # a = 1/w


def test_sigmoid_slope_kept_positive() -> None:
    """a pushed below 0 acts as |a|: H stays increasing (asgl.md "keep a positive")."""
    x = t(-2, -0.5, 0, 0.5, 2)
    hs = HybridSpike("sigmoid", width=1.0, p=0.0)
    with torch.no_grad():
        hs.a.fill_(-1.0)
    torch.testing.assert_close(hs(x, mask=analog(x)), t(0.119203, 0.377541, 0.5, 0.622459, 0.880797), **TOL)
    assert float(hs.width) == pytest.approx(1.0)


def test_rectangle_surrogate() -> None:
    x = t(-0.6, -0.25, 0, 0.1, 0.3, 0.6)
    hs = HybridSpike("rectangle", width=0.5, p=0.0)
    torch.testing.assert_close(hs(x, mask=analog(x)), t(0, 0, 0.5, 0.7, 1, 1), **TOL)


def test_hybrid_spike_forward_backward_and_eval() -> None:
    x = t(-1, -0.2, 0, 0.3, 1.5).requires_grad_()
    hs = HybridSpike("rectangle", width=1.0, p=0.5)
    y = hs(x, mask=t(1, 0, 1, 0, 1))
    (y * t(1, 2, 3, 4, 5)).sum().backward()
    torch.testing.assert_close(y.detach(), t(0, 0.3, 1, 0.8, 1), **TOL)
    torch.testing.assert_close(x.grad, t(0, 2, 3, 4, 0), **TOL)
    torch.testing.assert_close(hs.beta.grad, torch.tensor(0.8), **TOL)
    hs.eval()
    torch.testing.assert_close(hs(x.detach()), t(0, 0, 1, 1, 1), atol=0, rtol=0)


def test_spike_mode_values_are_exact() -> None:
    """m = 1 elements are exactly 0 or 1 (no H − H rounding)."""
    x = torch.randn(10_000)
    y = HybridSpike("sigmoid", 5.0, 0.0)(x)
    assert torch.equal(y, (x >= 0).float())


# ---- mask --------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_mask_statistics(p: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(200_000) * 0.5  # sigmoid H is never 0 or 1 here, so m = 1 ⇔ y is binary
    hs = HybridSpike("sigmoid", 1.0, p)
    m = (hs(x) == (x >= 0).float()).float()
    assert abs(m.mean().item() - (1 - p)) < 0.005


def test_mask_redrawn_each_call_and_seeded() -> None:
    x = torch.randn(5_000) * 0.5
    hs = HybridSpike("sigmoid", 1.0, 0.5)
    torch.manual_seed(3)
    a, b = hs(x), hs(x)
    assert not torch.equal(a, b)  # a new mask per call (per time step)
    torch.manual_seed(3)
    assert torch.equal(hs(x), a)  # from torch's global (Lightning-seeded) RNG


def test_mask_per_step_and_per_layer_in_neurons() -> None:
    torch.manual_seed(0)
    n1, n2 = build_neuron("asgl_lif", p=0.5, width=1.0), build_neuron("asgl_lif", p=0.5, width=1.0)
    x = torch.full((2, 4000), 0.8)  # same input at both steps and both layers
    # θ = 1: an element is in spike mode iff its output is binary (the sigmoid H is never 0 or 1 here)
    spikes = [(out == 0) | (out == 1) for out in (n1(x), n2(x))]
    steps_l1, layer2 = spikes[0].unbind(0), spikes[1][0]
    assert not torch.equal(steps_l1[0], steps_l1[1])
    assert not torch.equal(steps_l1[0], layer2)


def test_eval_is_purely_binary() -> None:
    torch.manual_seed(0)
    n = build_neuron("asgl_lif", v_threshold=0.5, p=1.0, width=10.0).eval()
    out = n(torch.randn(6, 8, 16) * 2)
    assert set(out.unique().tolist()) <= {0.0, 0.5}
    assert (out == 0.5).any()
    n.train()
    functional.reset_net(n)
    assert not set(n(torch.randn(6, 8, 16) * 2).unique().tolist()) <= {0.0, 0.5}  # analog in training


# ---- p schedule (asgl.md number 4) ---------------------------------------------------------------
def test_p_schedule_over_epochs() -> None:
    module = torch.nn.Sequential(build_neuron("asgl_lif", p=0.2), build_neuron("asgl_lif", p=0.2))
    module.log = lambda *a, **k: None
    cb = NoiseRateSchedule(p=0.2, gamma=0.5)
    assert noise_milestones(cb.milestones, 300) == {0, 60, 120, 180, 240, 285}
    used = {}
    for epoch in range(300):
        trainer = SimpleNamespace(current_epoch=epoch, max_epochs=300)
        cb.on_train_epoch_start(trainer, module)
        used[epoch] = {s.p for s in hybrid_spikes(module)}
        cb.on_train_epoch_end(trainer, module)
    expected = {0: 0.2, 1: 0.1, 60: 0.1, 61: 0.05, 121: 0.025}
    for epoch, p in expected.items():
        (got,) = used[epoch]
        assert math.isclose(got, p, rel_tol=1e-9), (epoch, got, p)
    assert cb.state_dict() == {"p": pytest.approx(0.2 * 0.5**6)}


def test_p_schedule_gamma_one_is_constant() -> None:
    cb = NoiseRateSchedule(p=0.1, gamma=1.0)
    m = torch.nn.Sequential(build_neuron("asgl_lif"))
    m.log = lambda *a, **k: None
    for epoch in range(10):
        cb.on_train_epoch_end(SimpleNamespace(current_epoch=epoch, max_epochs=10), m)
    assert cb.p == 0.1


# ---- neuron -------------------------------------------------------------------------------------
def test_neuron_registered_and_default_build() -> None:
    assert "asgl_lif" in list_neurons()
    n = build_neuron("asgl_lif")
    assert isinstance(n, ASGLLIF) and is_neuron(n) and ASGLLIF.is_spiking_neuron
    assert n.spike.surrogate == "sigmoid" and math.isclose(float(n.spike.width), 5.0, rel_tol=1e-6)
    assert n.spike.p == 0.2 and n.spike.width_param.requires_grad and not n.decay_logit.requires_grad
    assert float(n.decay_logit) == 0.0  # decay 0.5 → d = 0
    assert n(torch.randn(4, 3, 2, 5, 5)).shape == (4, 3, 2, 5, 5)


def test_neuron_dynamics_and_threshold_scaling() -> None:
    # p = 0 → plain spikes; v ← 0.5·v + I; fire at v ≥ θ; hard reset; output θ·s
    n = build_neuron("asgl_lif", p=0.0, v_threshold=0.5)
    x = t(0.3, 0.1, 0.45, 0.2, 0.4).view(5, 1)
    # v: .3 → .25 → .575 (spike, reset) → .2 → .5 (spike)
    torch.testing.assert_close(n(x).view(-1), t(0, 0, 0.5, 0, 0.5), **TOL)


def test_single_step_equals_multi_step() -> None:
    x = torch.randn(4, 3, 7)
    n = build_neuron("asgl_lif", p=0.3, width=2.0)
    torch.manual_seed(1)
    multi = n(x)
    functional.reset_net(n)
    functional.set_step_mode(n, "s")
    torch.manual_seed(1)
    single = torch.stack([n(x_t) for x_t in x])
    torch.testing.assert_close(single, multi, atol=0, rtol=0)


def test_reset_is_not_detached() -> None:
    """Gradient through the reset v·(1 − s): compare with the formula written out (p = 1, all analog)."""
    x = (torch.randn(3, 6) + 0.8).requires_grad_()
    n = build_neuron("asgl_lif", p=1.0, width=2.0, surrogate="sigmoid", train_decay=True)
    n(x).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    v, out = torch.zeros(6), []
    for x_t in x2:
        v = 0.5 * v + x_t
        s = torch.sigmoid(0.5 * (v - 1.0))
        v = v * (1 - s)
        out.append(s)
    torch.stack(out).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-6, rtol=1e-5)
    assert n.decay_logit.grad is not None and n.decay_logit.grad.abs() > 0


@pytest.mark.parametrize("train_width", [True, False])
def test_width_gradient_at_p0(train_width: bool) -> None:
    n = build_neuron("asgl_lif", p=0.0, width=1.0, train_width=train_width)
    x = (torch.randn(4, 8, 16) + 1.0).requires_grad_()
    out = n(x)
    assert set(out.unique().tolist()) <= {0.0, 1.0}  # p = 0: pure spikes forward
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if train_width:
        assert n.spike.width_param.grad is not None and n.spike.width_param.grad.abs() > 0
    else:
        assert not n.spike.width_param.requires_grad and n.spike.width_param.grad is None


def test_granularity_channel_and_neuron() -> None:
    n = build_neuron("asgl_lif", granularity="channel", num_features=3, surrogate="rectangle", width=1.0)
    assert n.spike.width_param.shape == (3,)
    x = torch.randn(2, 4, 3, 5, 5)
    n(x).sum().backward()
    assert n.spike.width_param.grad.shape == (3,)
    functional.reset_net(n)
    assert n(torch.randn(2, 4, 3)).shape == (2, 4, 3)  # after a Linear: [T, N, C]
    # per-channel widths act per channel
    hs = HybridSpike("rectangle", 1.0, 0.0, granularity="channel", num_features=2)
    with torch.no_grad():
        hs.beta.copy_(-torch.log(t(1.0, 0.5)))
    z = torch.full((1, 2, 1, 1), 0.2)
    torch.testing.assert_close(hs(z, mask=analog(z)).view(-1), t(0.7, 0.9), **TOL)
    nn_ = build_neuron("asgl_lif", granularity="neuron", shape=(3, 5, 5))
    assert nn_.spike.width_param.shape == (3, 5, 5)
    assert nn_(x).shape == x.shape


def test_bad_parameters_fail_at_construction() -> None:
    for kw in ({"surrogate": "atan"}, {"width": 0.0}, {"p": 1.5}, {"granularity": "channel"},
               {"granularity": "neuron"}, {"granularity": "group"}, {"decay": 1.0}):
        with pytest.raises(ConfigError):
            build_neuron("asgl_lif", **kw)


# ---- method: configs and optimisers -----------------------------------------------------------
TINY = ["model.channels=[4,8]", "data.image_size=16", "data.batch_size=32", "T=2",
        "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=2", "++trainer.limit_test_batches=2",
        "trainer.num_sanity_val_steps=0"]


def test_sg_baseline_config(tmp_path: Path) -> None:
    cfg = compose_cfg(["method=asgl_sg", "method.width=2.5"], tmp_path)
    assert cfg.method.name == "asgl_sg" and cfg.method.p == 0.0 and cfg.method.train_width is False
    module = build_module(cfg)
    spikes = hybrid_spikes(module.net)
    assert spikes and all(s.p == 0.0 and not s.width_param.requires_grad for s in spikes)
    assert all(math.isclose(float(s.width), 2.5, rel_tol=1e-6) for s in spikes)


def test_sg_baseline_trains_and_state_dict_matches_fresh_module(tmp_path: Path) -> None:
    """Nothing learnable in the width optimiser: the placeholder never enters the state dict (eval.py
    loads checkpoints strictly into a fresh module)."""
    cfg = compose_cfg(["method=asgl_sg", *TINY], tmp_path)
    trainer = _fit(cfg, 1)
    assert trainer.optimizers[0].width.param_groups[0]["params"]  # a placeholder group
    fresh = build_module(cfg)
    assert set(trainer.lightning_module.state_dict()) == set(fresh.state_dict())
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    fresh.load_state_dict(ckpt["state_dict"])


def test_method_rejects_other_neurons(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="asgl_lif"):  # ConfigError (Hydra may wrap it)
        build_module(compose_cfg(["method=asgl", "method.neuron.kind=lif"], tmp_path))


def _fit(cfg, max_epochs: int, ckpt: str | None = None, callbacks=()) -> L.Trainer:
    L.seed_everything(0)
    from spikeforge.run import build_datamodule, build_trainer

    with open_dict(cfg):
        cfg.trainer.max_epochs = max_epochs
    module, dm = build_module(cfg), build_datamodule(cfg)
    # with the run's own callbacks (conf/run_callbacks): last_checkpoint writes checkpoints/last.ckpt, which the
    # tests read
    trainer = build_trainer(cfg, list(callbacks))
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=False)  # our own checkpoints (RNG states)
    return trainer


def test_optimiser_groups(tmp_path: Path) -> None:
    cfg = compose_cfg(["method=asgl", "method.train_decay=true", *TINY], tmp_path)
    trainer = _fit(cfg, 1)
    module = trainer.lightning_module
    opt = trainer.optimizers[0]
    assert isinstance(opt, OptimizerPair)
    assert isinstance(opt.main, torch.optim.SGD) and isinstance(opt.width, torch.optim.Adam)
    width_ids = {id(p) for g in opt.width.param_groups for p in g["params"]}
    neurons = [m for m in module.net.modules() if isinstance(m, ASGLLIF)]
    assert width_ids == {id(p) for n in neurons for p in (n.spike.width_param, n.decay_logit)}
    (g_width,) = opt.width.param_groups
    assert g_width["lr"] == pytest.approx(3e-4) and g_width["weight_decay"] == 0.0
    decayed = {id(p) for g in opt.main.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    convlin = {id(m.weight) for m in module.net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}
    assert decayed == convlin
    main_ids = {id(p) for g in opt.main.param_groups for p in g["params"]}
    assert main_ids | width_ids == {id(p) for p in module.parameters() if p.requires_grad}
    assert not main_ids & width_ids
    # each optimiser stepped once per batch; the width moved, global_step counts batches
    assert trainer.global_step == 3
    assert opt.width.state[neurons[0].spike.width_param]["step"] == 3
    assert not math.isclose(float(neurons[0].spike.width), 5.0, rel_tol=1e-7)


class _Capture(L.Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # deep copies: training goes on updating the buffers in place
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.scheduler = copy.deepcopy(trainer.lr_scheduler_configs[0].scheduler.state_dict())
        self.epoch = trainer.current_epoch
        self.p: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if not self.p:  # p used in the first resumed batch
            self.p = [s.p for s in hybrid_spikes(pl_module)]


def test_checkpoint_resume_restores_both_optimisers(tmp_path: Path) -> None:
    over = ["method=asgl", "method.gamma=0.5", "method.milestones=[0.0]", *TINY]
    cfg = compose_cfg(over, tmp_path / "a")
    _fit(cfg, 1)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    states = ckpt["optimizer_states"][0]
    assert set(states) == {"main", "width"}
    assert states["main"]["state"] and states["width"]["state"]  # momentum buffers and Adam moments
    assert ckpt["callbacks"]["NoiseRateSchedule"] == {"p": pytest.approx(0.1)}  # decayed after epoch 0

    cap = _Capture()
    cfg2 = compose_cfg(over, tmp_path / "b")
    trainer = _fit(cfg2, 2, ckpt=str(last), callbacks=[cap])
    assert cap.epoch == 1
    for part in ("main", "width"):
        saved, loaded = states[part]["state"], cap.optimizer[part]["state"]
        assert saved.keys() == loaded.keys()
        for k in saved:
            for name, v in saved[k].items():
                torch.testing.assert_close(loaded[k][name], v)
    assert cap.scheduler["last_epoch"] == ckpt["lr_schedulers"][0]["last_epoch"] == 3
    assert cap.p and all(p == pytest.approx(0.1) for p in cap.p)  # p schedule state restored
    width = trainer.optimizers[0].width
    beta = hybrid_spikes(trainer.lightning_module)[0].width_param
    assert width.state[beta]["step"] == 6  # Adam went on from its restored step count


def test_train_writes_asgl_results(tmp_path: Path) -> None:
    cfg = compose_cfg(["method=asgl", "method.surrogate=rectangle", "method.width=1.0", *TINY], tmp_path)
    with open_dict(cfg):
        cfg.trainer.max_epochs = 1
    results = train(cfg)
    assert results["method"] == "asgl" and results["asgl"]["surrogate"] == "rectangle"
    assert results["asgl"]["final_width_mean"] != pytest.approx(1.0, abs=1e-7)
    assert 0 <= results["test"]["test/acc1"] <= 1


@pytest.mark.parametrize("recipe", ["asgl_cifar10", "asgl_cifar100", "asgl_cifar10_dvs"])
def test_recipes_compose(recipe: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"experiment={recipe}"], tmp_path / "run")
    assert cfg.method.name == "asgl" and cfg.expected.top1 > 0
    OmegaConf.resolve(cfg)


# ---- digits: ASGL vs SG at width 5 (docs/methods/asgl.md table) --------------------------------------
# the width sweep's budget (docs/methods/asgl.md): 16×16 digits, T = 2, batch 16, 12 epochs
SWEEP = ["data.image_size=16", "data.batch_size=16", "T=2", "trainer.max_epochs=12"]


@pytest.mark.slow
def test_digits_asgl_close_to_sg_at_width5(tmp_path: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    acc = {}
    for method in ("asgl", "asgl_sg"):
        cfg = compose_cfg([f"method={method}", "method.width=5", "seed=0", *SWEEP], tmp_path / method)
        acc[method] = train(cfg)["test"]["test/acc1"]
    assert acc["asgl"] >= 0.90, acc
    assert acc["asgl"] >= acc["asgl_sg"] - 0.02, acc


@pytest.mark.parametrize(("recipe", "surrogate", "width", "p", "theta", "loss"), [
    ("asgl_cifar10", "sigmoid", 5.0, 0.2, 1.0, "ce_mean"),
    ("asgl_cifar100", "sigmoid", 5.0, 0.2, 1.0, "ce_mean"),
    ("asgl_cifar10_dvs", "rectangle", 1.0, 0.1, 0.5, "tet"),
])
def test_recipe_method_settings(tmp_path: Path, recipe: str, surrogate: str, width: float, p: float,
                                theta: float, loss: str) -> None:
    """The recipes' method part, built on the embedded data and the small model (asgl.md recipes)."""
    cfg = compose_cfg([f"experiment={recipe}", "model=convnet", "data=digits", "model.channels=[4]"], tmp_path)
    m = cfg.method
    assert (m.surrogate, m.width, m.p, m.gamma, m.train_width) == (surrogate, width, p, 1.0, True)
    assert m.neuron.v_threshold == theta and m.loss.name == loss
    assert m.optimizer.name == "sgd" and m.optimizer.lr == 0.1 and m.optimizer.momentum == 0.9
    assert m.optimizer.weight_decay == (1e-3 if "dvs" in recipe else 5e-4)
    if loss == "tet":
        assert m.loss.lam == pytest.approx(1e-3)
    with open_dict(cfg):
        cfg.data.pop("augment", None)
    module = build_module(cfg)
    (n,) = [x for x in module.net.modules() if isinstance(x, ASGLLIF)]
    assert n.spike.surrogate == surrogate and n.v_threshold == theta and n.spike.p == p


def test_width_table_script(tmp_path: Path) -> None:
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("asgl_width_table", ROOT / "scripts" / "asgl_width_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for i, (method, width, acc) in enumerate([("asgl", 5.0, 0.9), ("asgl", 5.0, 0.8), ("asgl_sg", 5.0, 0.7)]):
        run = tmp_path / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(f"method:\n  name: {method}\n  width: {width}\n")
        res = {"test": {"test/acc1": acc}, "asgl": {"final_width_mean": 4.0}}
        (run / "results.json").write_text(json.dumps(res))
    assert mod.table(mod.collect(tmp_path)).splitlines()[-1] == "| 5 | 70.00 ± 0.00 | 85.00 ± 7.07 | 4.00 | 1/2 |"
