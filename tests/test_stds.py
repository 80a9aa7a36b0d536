"""STDS (docs/methods/stds.md): every number of the spec, regrowth, the D schedule, resume, Grad R."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF, ROOT
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers.sparse import (
    export_sparse_weights,
    flat_width,
    get_flat_width,
    nonzeros,
    sparse_layers,
    sparse_state_dict,
    sparsify,
    sparsity,
    stmod,
    thetas,
)
from spikeforge.methods.stds import STDSClassifier, grad_r_adam, grad_r_sgd
from spikeforge.models import build_model

TOL = dict(atol=1e-6, rtol=0)


# ---- spec numbers ---------------------------------------------------------------------------------
def test_stmod_values_and_straight_through_gradient() -> None:
    """stds.md number 1."""
    theta = torch.tensor([-1.5, -0.3, -0.05, 0.0, 0.05, 0.3, 0.7, 2.0], requires_grad=True)
    w = stmod(theta, 0.5)
    torch.testing.assert_close(w.detach(), torch.tensor([-1.0, 0, 0, 0, 0, 0, 0.2, 1.5]), **TOL)
    w.backward(torch.arange(1.0, 9.0))
    torch.testing.assert_close(theta.grad, torch.tensor([1.0, 2, 3, 0, 5, 6, 7, 8]), **TOL)


def test_stmod_tensor_d_is_not_differentiated() -> None:
    theta = torch.tensor([0.7, -0.2], requires_grad=True)
    d = torch.tensor(0.5, requires_grad=True)
    stmod(theta, d).sum().backward()
    assert d.grad is None
    torch.testing.assert_close(theta.grad, torch.ones(2), **TOL)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("sine", [0.0, 0.146446609, 0.5, 0.853553391, 1.0]), ("linear", [0.0, 0.25, 0.5, 0.75, 1.0])],
)
def test_flat_width_schedule_values(schedule: str, expected: list[float]) -> None:
    """stds.md number 2: f at x = 0, .25, .5, .75, 1 (D_final = 1)."""
    got = torch.tensor([flat_width(s, 4, 1.0, schedule) for s in range(5)], dtype=torch.float32)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32), **TOL)


def test_flat_width_clamps_and_reaches_d_final_exactly() -> None:
    for schedule in ("sine", "linear"):
        assert flat_width(1000, 1000, 2.5, schedule) == 2.5  # exactly D_final at the last step
        assert flat_width(1700, 1000, 2.5, schedule) == 2.5  # x clamped to 1: no overshoot
        assert flat_width(-3, 1000, 2.5, schedule) == 0.0
        assert 0 < flat_width(999, 1000, 2.5, schedule) < 2.5
    assert flat_width(0, 1000, 2.5, "fixed") == 2.5
    with pytest.raises(ConfigError, match="sine, linear, fixed"):
        flat_width(0, 10, 1.0, "cosine")


def _two_layer_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(3, 2, bias=False))


def test_sparsity_per_layer_total_and_connectivity() -> None:
    """stds.md number 3."""
    net = _two_layer_net()
    assert sparsify(net, "stmod", d=0.5) == ["0", "1"]
    with torch.no_grad():
        net[0].parametrizations.weight.original.copy_(torch.tensor([0.1, -0.6, 0.7, 0.2]).view(2, 2))
        net[1].parametrizations.weight.original.copy_(torch.tensor([1.0, 2, -0.4, 0, 0.55, -3]).view(2, 3))
    per_layer, total = sparsity(net)
    assert per_layer["0"] == pytest.approx(0.5, abs=1e-6)
    assert per_layer["1"] == pytest.approx(1 / 3, abs=1e-4)
    assert total == pytest.approx(0.4, abs=1e-6)
    assert 1 - total == pytest.approx(0.6, abs=1e-6)
    assert nonzeros(net) == ({"0": 2, "1": 4}, 6)


# ---- reparametrisation ----------------------------------------------------------------------------
def test_fixed_d_starts_from_the_same_network() -> None:
    """θ₀ = sign(w₀)(|w₀| + D) so that M(θ₀) = w₀ (stds.md "Gradual schedule")."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.Linear(3, 2, bias=False))
    w0 = [m.weight.detach().clone() for m in net]
    x = torch.randn(5, 2)
    y0 = net(x).detach()
    sparsify(net, "stmod", d=0.3)
    for m, w in zip(net, w0):
        torch.testing.assert_close(m.parametrizations.weight.original.detach(), torch.sign(w) * (w.abs() + 0.3), **TOL)
        torch.testing.assert_close(m.weight.detach(), w, **TOL)
    torch.testing.assert_close(net(x).detach(), y0, **TOL)
    assert get_flat_width(net) == pytest.approx(0.3)


def test_theta_is_the_trained_parameter_and_d_a_buffer() -> None:
    net = _two_layer_net()
    sparsify(net, "stmod", d=0.2)
    names = dict(net.named_parameters())
    assert set(names) == {"0.parametrizations.weight.original", "1.parametrizations.weight.original"}
    state = net.state_dict()
    assert float(state["0.parametrizations.weight.0.d"]) == pytest.approx(0.2)
    assert len(thetas(net)) == 2


def test_regrowth_of_a_pruned_weight() -> None:
    """A weight in the dead zone (w = 0) keeps receiving gradient and returns once |θ| > D."""
    lin = nn.Linear(2, 1, bias=False)
    sparsify(nn.Sequential(lin), "stmod", d=0.5)
    theta = lin.parametrizations.weight.original
    with torch.no_grad():
        theta.copy_(torch.tensor([[0.2, 1.0]]))
    assert lin.weight[0, 0].item() == 0.0  # pruned
    opt = torch.optim.SGD([theta], lr=0.1)
    x = torch.tensor([[1.0, 0.0]])
    steps = 0
    while lin.weight[0, 0].item() == 0.0:
        opt.zero_grad()
        (-lin(x).sum()).backward()  # the loss wants a larger first weight
        assert theta.grad[0, 0].item() == pytest.approx(-1.0)  # gradient flows through the dead zone
        opt.step()
        steps += 1
        assert steps < 10
    assert steps == 4  # 0.2 → 0.6 in four steps of 0.1
    assert lin.weight[0, 0].item() == pytest.approx(0.1, abs=1e-6)


def test_zero_theta_gets_no_gradient() -> None:
    lin = nn.Linear(2, 1, bias=False)
    sparsify(nn.Sequential(lin), "stmod", d=0.5)
    with torch.no_grad():
        lin.parametrizations.weight.original.copy_(torch.tensor([[0.0, 0.3]]))
    lin(torch.ones(1, 2)).sum().backward()
    torch.testing.assert_close(lin.parametrizations.weight.original.grad, torch.tensor([[0.0, 1.0]]), **TOL)


def test_identity_map_is_dense() -> None:
    net = _two_layer_net()
    w0 = [m.weight.detach().clone() for m in net]
    sparsify(net, "identity")
    for m, w in zip(net, w0):
        torch.testing.assert_close(m.weight.detach(), w, **TOL)
    assert sparsity(net)[1] == 0.0
    assert get_flat_width(net) is None


def test_exclude_and_layer_selection() -> None:
    net = build_model("convnet", 10, channels=(4, 8))
    names = sparsify(net, "stmod", d=0.1, exclude=["classifier"])
    assert names == ["features.0", "features.4"]  # every conv incl. the first; no BN
    assert "classifier" not in sparse_layers(net)
    with pytest.raises(ConfigError, match="matches no conv/linear layer"):
        sparsify(build_model("convnet", 10, channels=(4,)), "stmod", exclude=["fc"])
    with pytest.raises(ConfigError, match="stmod, identity"):
        sparsify(build_model("convnet", 10, channels=(4,)), "soft")


def test_sparse_state_dict_loads_into_the_plain_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_model("convnet", 10, channels=(4, 8))
    sparsify(net, "stmod", d=0.0)
    with torch.no_grad():
        for th in thetas(net):
            th.copy_(torch.randn_like(th) * 0.1)
    from spikeforge.layers.sparse import set_flat_width

    set_flat_width(net, 0.08)
    net.eval()
    x = torch.randn(2, 3, 3, 16, 16)
    y = net(x).detach()
    plain = build_model("convnet", 10, channels=(4, 8)).eval()
    plain.load_state_dict(sparse_state_dict(net))
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    torch.testing.assert_close(plain(x).detach(), y, **TOL)
    info = export_sparse_weights(net, tmp_path / "w.pt")
    saved = torch.load(tmp_path / "w.pt", weights_only=False)
    assert info["total_nonzeros"] == nonzeros(net)[1] == saved["total_nonzeros"]
    assert saved["state_dict"]["features.0.weight"].count_nonzero() == info["nonzeros"]["features.0"]
    assert not any("parametrizations" in k for k in saved["state_dict"])


# ---- Grad R ---------------------------------------------------------------------------------------
def test_grad_r_adam_and_sgd_variants() -> None:
    """stds.md "Grad R": lr·α = 0.001; Adam variant cannot flip signs, θ = 0 absorbing; SGD no clamp."""
    after = torch.tensor([0.5, -0.5, 0.0005, -0.0005, 0.3, 0.2])
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 0.0])  # sign(θ) before the step
    t = after.clone()
    grad_r_adam(t, sign, lr=0.1, alpha=0.01)
    torch.testing.assert_close(t, torch.tensor([0.499, -0.499, 0.0, 0.0, 0.0, 0.0]), **TOL)
    t = after.clone()
    grad_r_sgd(t, sign, lr=0.1, alpha=0.01)
    torch.testing.assert_close(t, torch.tensor([0.499, -0.499, -0.0005, 0.0005, 0.301, 0.2]), **TOL)


def _module(**kw: object) -> STDSClassifier:
    cfg = dict(
        model={"name": "convnet", "channels": [4, 8]},
        neuron={"kind": "lif", "tau": 2.0, "detach_reset": True},
        norm={"kind": "bn"},
        loss={"name": "ce_mean"},
        optimizer={"name": "adam", "lr": 0.01},
        scheduler={"name": "constant"},
        T=2,
        num_classes=10,
        in_channels=3,
    )
    cfg.update(kw)
    return STDSClassifier(**cfg)


@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_grad_r_step_in_the_module(opt_name: str) -> None:
    """One optimiser step of the module equals the plain optimiser step followed by the prior on θ;
    BN and biases train in a second group without the prior."""
    torch.manual_seed(0)
    mod = _module(optimizer={"name": opt_name, "lr": 0.01, "momentum": 0.9}, alpha_gr=0.5, schedule="fixed",
                  flat_width=0.05)
    groups = mod.param_groups()
    assert groups[0]["alpha_gr"] == 0.5 and all("alpha_gr" not in g for g in groups[1:])
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in thetas(mod.net)}
    from spikeforge.methods.optim import build_optimizer

    opt = build_optimizer(groups, mod.hparams.optimizer)
    ref_mod = _module(optimizer={"name": opt_name, "lr": 0.01, "momentum": 0.9}, alpha_gr=0.5, schedule="fixed",
                      flat_width=0.05)
    ref_mod.load_state_dict(mod.state_dict())
    ref_opt = build_optimizer(ref_mod.param_groups(), mod.hparams.optimizer)  # no hooks: plain step
    mod.attach(opt, total_steps=10)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    for m, o in ((mod, opt), (ref_mod, ref_opt)):
        o.zero_grad()
        m.compute_loss(m(x), y).backward()
    before = [p.detach().clone() for p in thetas(ref_mod.net)]
    bn_before = ref_mod.net.features[2].weight.detach().clone()  # convnet: conv, pool, norm, neuron
    opt.step()
    ref_opt.step()
    prior = grad_r_adam if opt_name == "adam" else grad_r_sgd
    for p_ref, s in zip(thetas(ref_mod.net), before):
        prior(p_ref.data, torch.sign(s), 0.01, 0.5)
    for p, p_ref in zip(thetas(mod.net), thetas(ref_mod.net)):
        torch.testing.assert_close(p.detach(), p_ref.detach(), **TOL)
    torch.testing.assert_close(mod.net.features[2].weight.detach(), ref_mod.net.features[2].weight.detach(), **TOL)
    assert not torch.equal(mod.net.features[2].weight.detach(), bn_before)  # BN keeps training
    if opt_name == "adam":  # sign-preserving
        for p, s in zip(thetas(mod.net), before):
            assert bool(((torch.sign(p) == torch.sign(s)) | (p == 0)).all())
    assert int(mod.stds_step) == 1


def test_module_schedule_reaches_d_final_at_the_last_step() -> None:
    mod = _module(flat_width=0.3, schedule="sine")
    assert mod.flat_width == 0.0
    opt = torch.optim.SGD(mod.parameters(), lr=0.0)
    mod.attach(opt, total_steps=7)
    seen = []
    for _ in range(7):
        opt.step()
        seen.append(mod.flat_width)
    assert seen == pytest.approx([flat_width(n, 7, 0.3, "sine") for n in range(1, 8)], abs=1e-7)
    assert seen[-1] == pytest.approx(0.3, abs=1e-7) and int(mod.stds_step) == 7


def test_fixed_schedule_module_starts_at_d_final() -> None:
    mod = _module(flat_width=0.2, schedule="fixed")
    assert mod.flat_width == pytest.approx(0.2)
    assert sparsity(mod.net)[1] < 0.01  # θ₀ = sign(w₀)(|w₀| + D): same network as at initialisation


def test_bad_configs_fail_with_one_sentence() -> None:
    with pytest.raises(ConfigError, match="sine, linear, fixed"):
        _module(schedule="cosine")
    with pytest.raises(ConfigError, match="schedule=fixed"):
        _module(alpha_gr=1e-3, schedule="sine")
    with pytest.raises(ConfigError, match="stmod, identity"):
        _module(sparse_function="soft")
    with pytest.raises(ConfigError, match=">= 0"):
        _module(flat_width=-1.0)
    with pytest.raises(ConfigError, match=r"method\.alpha_gr must be a number"):
        _module(alpha_gr=None, schedule="fixed")
    with pytest.raises(ConfigError, match="adam, adamw, sgd"):
        _module(alpha_gr=1e-3, schedule="fixed", optimizer={"name": "rmsprop", "lr": 0.1})


# ---- Hydra configs, resume, end-to-end ------------------------------------------------------------
def _compose(tmp_path: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.root_dir = str(ROOT)
    return cfg


TINY = [
    "method=stds", "model.channels=[4,8]", "data.image_size=8", "data.batch_size=64", "T=2",
    "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
    "method.flat_width=0.2", "method.schedule=linear",
]


class _Killed(RuntimeError):
    pass


class _Record(L.Callback):
    """Records (stds_step, D) after every training batch; optionally dies (like a killed job) when
    epoch ``stop_after`` starts, after the checkpoint of the previous epoch was written."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.seen: list[tuple[int, float]] = []
        self.stop_after = stop_after

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: STDSClassifier, *args: object) -> None:
        self.seen.append((int(pl_module.stds_step), pl_module.flat_width))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: STDSClassifier) -> None:
        if self.stop_after is not None and trainer.current_epoch >= self.stop_after:
            raise _Killed


def _fit(cfg: DictConfig, record: _Record, ckpt_path: str | None = None) -> STDSClassifier:
    from spikeforge.run import build_datamodule, build_module, build_trainer

    L.seed_everything(0)
    module = build_module(cfg)
    trainer = build_trainer(cfg, [record])  # with the run's own callbacks (conf/run_callbacks)
    trainer.fit(module, datamodule=build_datamodule(cfg), ckpt_path=ckpt_path, weights_only=False)
    return module


def test_resume_continues_the_schedule(tmp_path: Path) -> None:
    """Stop after 2 of 4 epochs, resume from last.ckpt: D and the step counter come from the checkpoint."""
    cfg = _compose(tmp_path, [*TINY, "trainer.max_epochs=4"])
    first = _Record(stop_after=2)
    with pytest.raises(_Killed):
        _fit(cfg, first)
    total = 4 * 3
    assert [s for s, _ in first.seen] == list(range(1, 7))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert int(ckpt["state_dict"]["stds_step"]) == 6
    assert float(ckpt["state_dict"]["net.features.0.parametrizations.weight.0.d"]) == pytest.approx(
        flat_width(6, total, 0.2, "linear"), abs=1e-7)
    second = _Record()
    module = _fit(cfg, second, ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"))
    assert [s for s, _ in second.seen] == list(range(7, 13))
    for step, d in second.seen:
        assert d == pytest.approx(flat_width(step, total, 0.2, "linear"), abs=1e-7)
    assert module.flat_width == pytest.approx(0.2, abs=1e-7)


def test_train_writes_sparsity_and_sparse_weights(tmp_path: Path) -> None:
    from spikeforge.run import train

    cfg = _compose(tmp_path, [*TINY, "trainer.max_epochs=2", "++trainer.limit_test_batches=1"])
    results = train(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == "stds" and saved["test_checkpoint"] == "last-weights"
    assert saved["flat_width"] == pytest.approx(0.2, abs=1e-6) and saved["stds_steps"] == 6
    assert set(saved["sparsity_per_layer"]) == {"features.0", "features.4", "classifier"}
    assert 0 < saved["sparsity"] < 1 and saved["connectivity"] == pytest.approx(1 - saved["sparsity"])
    exported = torch.load(tmp_path / "sparse_weights.pt", weights_only=False)
    assert exported["total_nonzeros"] == saved["nonzeros"] == saved["sparse_weights"]["total_nonzeros"]
    assert results["sparsity"] == saved["sparsity"]
    metrics = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"sparsity/total", "connectivity", "flat_width", "sparsity/features.0"} <= set(metrics)


def _experiments() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("stds_*.yaml"))


@pytest.mark.parametrize("name", _experiments())
def test_recipes_compose(name: str, tmp_path: Path) -> None:
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    model = next(line.split(":")[-1].strip() for line in text.splitlines() if "override /model" in line)
    data = next(line.split(":")[-1].strip() for line in text.splitlines() if "override /data" in line)
    missing = [f"{g}/{n}" for g, n in (("model", model), ("data", data)) if not (CONF / g / f"{n}.yaml").exists()]
    if missing:
        pytest.fail(f"the recipe names configs that do not exist: {', '.join(missing)}")
    overrides = [f"experiment={name}"]
    if name == "stds_imagenet_gradr":  # α and μ are left open by the recipe
        overrides += ["method.alpha_gr=1e-5", "method.flat_width=0.1"]
    cfg = _compose(tmp_path, overrides)
    assert cfg.method.name == "stds" and "source" in cfg.expected
    if name not in ("stds_cifar10_d1", "stds_imagenet_sine", "stds_imagenet_gradr"):
        return  # building the (large) networks once per kind is enough
    from spikeforge.run import build_module

    module = build_module(cfg)
    names = module.sparse_layer_names
    convs = [n for n, m in module.net.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(convs) <= set(names)  # every conv, the first included
    if name.startswith("stds_imagenet"):
        assert "fc" not in names and module.hparams.neuron["kind"] == "if"  # the classifier stays dense
    else:
        assert {"fc7", "fc8"} <= set(names)  # both FC layers of the CIFAR net


# ---- digits accuracy target (slow) ----------------------------------------------------------------
@pytest.mark.slow
def test_digits_sparsity_and_accuracy_vs_dense(tmp_path: Path) -> None:
    """method=stds prunes >= 90% of the weights and stays within 3 points of the dense run."""
    from spikeforge.run import train

    common = ["experiment=stds_digits"]
    sparse = train(_compose(tmp_path / "sparse", common))
    dense = train(_compose(tmp_path / "dense", [*common, "method.sparse_function=identity"]))
    assert sparse["sparsity"] >= 0.9
    assert dense["sparsity"] < 0.01
    assert sparse["test"]["test/acc1"] >= dense["test"]["test/acc1"] - 0.03
    assert math.isfinite(sparse["test"]["test/loss"])


def test_plot_sparsity_script(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("plot_sparsity", ROOT / "scripts" / "plot_sparsity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    runs = [("identity", "sine", 0.1, 0.0, 0.97), ("stmod", "sine", 0.2, 0.9, 0.96), ("stmod", "sine", 0.4, 0.95, 0.93)]
    for i, (fn, schedule, d, sp, acc) in enumerate(runs):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps({
            "sparse_function": fn, "schedule": schedule, "flat_width_final": d, "alpha_gr": 0.0,
            "connectivity": 1 - sp, "sparsity": sp, "nonzeros": round(1000 * (1 - sp)), "test": {"test/acc1": acc},
            "best_val_acc1": acc, "model": "convnet", "data": "digits"}))
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "results.json").write_text(json.dumps({"method": "bptt", "test": {}}))  # not STDS: ignored
    assert mod.main([str(tmp_path)]) == 0
    table = (tmp_path / "sparsity.md").read_text().splitlines()
    assert len(table) == 2 + 3
    assert "| 1 | stmod | sine | 0.200 | – | 10.00 | 100 | 96.00 |" in table
    assert (tmp_path / "sparsity.png").stat().st_size > 1000
    assert mod.main([str(tmp_path / "nothing")]) == 2
