"""Paper recipes as the original code runs them (README "Reproducing the papers", differences table):
DSR's ImageNet threshold-gradient scale, its calibration split and warm-up, ASGL's per-epoch cosine and
the θ-only optimiser of STDS's Grad R; each recipe's composed config carries its setting."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, compose_cfg
from infra_utils import run_cmd
from omegaconf import OmegaConf

from spikeforge.config_schema import validate
from spikeforge.errors import ConfigError
from spikeforge.methods.optim import SchedulerConfig, is_norm, lr_factor
from spikeforge.neurons import build_neuron


# ---- DSR: threshold-gradient scale (DSR imagenet/neuron.py multiplies ∂L/∂V_th by 0.001) ------------
def _if_input() -> tuple[torch.Tensor, torch.Tensor]:
    """T = 50 (the ImageNet recipe), 64 neurons: input rates from −0.5 to 2.5 around V_th = 1.5."""
    T, N = 50, 64
    t = torch.arange(T, dtype=torch.float32)[:, None]
    i = torch.arange(N, dtype=torch.float32)[None, :]
    x = torch.linspace(-0.5, 2.5, N)[None, :] + 0.3 * torch.sin(0.7 * t + i)
    g = 0.01 * torch.cos(0.3 * t + 0.5 * i) + 0.002 * (i % 7)
    return x, g


def _if_grads(scale: float) -> tuple[float, torch.Tensor]:
    x, g = _if_input()
    x.requires_grad_(True)
    n = build_neuron("dsr_if", v_threshold=1.5, alpha=0.5, v_threshold_bound=0.01, v_threshold_grad_scale=scale)
    n(x).backward(g)
    return n.v_threshold.grad.item(), x.grad


def test_dsr_threshold_gradient_scale_matches_the_original_imagenet_neuron() -> None:
    """On this input and upstream gradient, DSR's imagenet/neuron.py IFFunction (run in float32) gives
    ∂L/∂V_th = 0.006465614307671785 and its cifar/modules/neuron.py 6.465613842010498."""
    scaled, grad_x = _if_grads(0.001)
    plain, grad_x_plain = _if_grads(1.0)
    assert scaled == pytest.approx(0.006465614307671785, rel=1e-6)
    assert plain == pytest.approx(6.465613842010498, rel=1e-6)
    assert scaled == pytest.approx(0.001 * plain, rel=1e-6)
    torch.testing.assert_close(grad_x, grad_x_plain, rtol=0, atol=0)  # only the threshold's gradient scales


def test_spec_number_2_with_the_imagenet_scale() -> None:
    """docs/methods/dsr.md number 5: number 2's ∂L/∂V_th = 1.0 becomes 0.001."""
    n = build_neuron("dsr_if", v_threshold=1.0, alpha=0.5, v_threshold_bound=0.01, v_threshold_grad_scale=0.001)
    x = torch.tensor([-0.3, 0.0, 0.26, 0.5, 0.6, 1.0, 1.7], dtype=torch.float64).expand(4, 7).clone()
    g = torch.tensor([0.1 * (t + 1) for t in range(4)], dtype=torch.float64)[:, None].expand(4, 7)
    n.double()(x).backward(g)
    assert n.v_threshold.grad.item() == pytest.approx(0.001, abs=1e-9)


def test_dsr_lif_threshold_gradient_scales_too() -> None:
    grads = []
    for scale in (1.0, 0.001):
        x, g = _if_input()
        n = build_neuron("dsr_lif", v_threshold=0.05, tau=1.0, delta_t=0.05, alpha=0.3, v_threshold_bound=5e-4,
                         v_threshold_grad_scale=scale)
        n(x).backward(g)
        grads.append(n.v_threshold.grad.item())
    assert grads[0] != 0 and grads[1] == pytest.approx(0.001 * grads[0], rel=1e-6)


def test_bad_threshold_gradient_scale_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^method\.neuron\.v_threshold_grad_scale must be a number > 0 \(got -1"):
        validate(compose_cfg(["method=dsr", "method.neuron.v_threshold_grad_scale=-1"], tmp_path))
    with pytest.raises(ConfigError, match="v_threshold_grad_scale must be a number > 0"):
        build_neuron("dsr_if", v_threshold_grad_scale=0.0)


# ---- DSR: warm-up (step+1)/W times the epoch's cosine, as adjust_warmup_lr ---------------------------
def test_dsr_warmup_factor_at_step_0_and_w_minus_1() -> None:
    c = SchedulerConfig(name="cosine", per_epoch=True, warmup_steps=400)
    spe, total = 391, 391 * 200  # CIFAR-10 at batch 128, 200 epochs
    assert lr_factor(0, total, spe, c, 0.1) == pytest.approx(1 / 400)  # the first step is not at lr 0
    assert lr_factor(399, total, spe, c, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 200)))  # full rate
    # the warm-up runs into epoch 1 (400 > 391): the original's lr·cos-factor(epoch)·(i + 1)/W, to the step
    assert lr_factor(395, total, spe, c, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 200)) * 396 / 400)
    cfg = compose_cfg(["experiment=dsr_imagenet"])
    imagenet = SchedulerConfig(**OmegaConf.to_container(cfg.method.scheduler))
    spe = 1_281_167 // 144
    assert [lr_factor(s, spe * 90, spe, imagenet, 1e-3) for s in (0, 4999, 5000)] == pytest.approx(
        [1 / 5000, 1.0, 1.0])


# ---- DSR: calibration split -------------------------------------------------------------------------
def test_dsr_imagenet_calibration_split_follows_the_protocol(tmp_path: Path) -> None:
    assert compose_cfg(["experiment=dsr_imagenet_ann"], tmp_path).method.calibration_split == "test"
    assert compose_cfg(["experiment=dsr_imagenet_ann", "protocol=clean"], tmp_path).method.calibration_split == "train"
    assert compose_cfg(["method=dsr_ann", "protocol=paper"], tmp_path).method.calibration_split == "train"
    with pytest.raises(ConfigError, match="calibration_split=test calibrates on the test set, which protocol=clean"):
        validate(compose_cfg(["method=dsr_ann", "method.calibration_split=test"], tmp_path))
    with pytest.raises(ConfigError, match=r"calibration_split='val' is not valid; choose one of: train, test"):
        validate(compose_cfg(["method=dsr", "method.calibration_split=val"], tmp_path))


def test_calibrate_checkpoint_on_the_test_split_under_protocol_paper(tmp_path: Path) -> None:
    from spikeforge.calibration import calibrate_checkpoint
    from spikeforge.methods.dsr import calibrate_thresholds
    from spikeforge.run import build_datamodule, build_module

    cfg = compose_cfg(["method=dsr_ann", "T=1", "protocol=paper", "method.calibration_split=test",
                       "model.channels=[4,8]"], tmp_path / "run")
    validate(cfg)
    ann = build_module(cfg)
    ckpt = tmp_path / "ann.ckpt"
    torch.save({"state_dict": ann.state_dict(), "spikeforge_config": OmegaConf.to_container(cfg)}, ckpt)
    th = calibrate_checkpoint(ckpt, tmp_path / "th.json", num_batches=2)
    assert json.loads((tmp_path / "th.json").read_text())["split"] == "test"
    dm = build_datamodule(cfg)
    dm.setup("test")
    expected = calibrate_thresholds(ann.net, (ann.encode(x) for x, _ in dm.test_dataloader()), num_batches=2)
    assert th == pytest.approx(expected)
    assert calibrate_checkpoint(ckpt, tmp_path / "tr.json", num_batches=2, split="train") != th
    clean = compose_cfg(["method=dsr_ann", "T=1", "model.channels=[4,8]"], tmp_path / "clean")
    torch.save({"state_dict": ann.state_dict(), "spikeforge_config": OmegaConf.to_container(clean)}, ckpt)
    with pytest.raises(ConfigError, match="which protocol=clean keeps out of training"):
        calibrate_checkpoint(ckpt, tmp_path / "x.json", num_batches=2, split="test")


# ---- ASGL: the cosine is stepped once per epoch (main.py: scheduler.step() after each epoch) -----------
def test_asgl_paper_recipe_lr_is_constant_within_an_epoch(tmp_path: Path) -> None:
    from spikeforge.run import build_module

    module = build_module(compose_cfg(["experiment=asgl_cifar100"], tmp_path))
    spe, epochs = 391, 300  # CIFAR-100 at batch 128
    module.trainer = SimpleNamespace(estimated_stepping_batches=spe * epochs, max_epochs=epochs)
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the scheduler steps without optimiser steps here
        for _ in range(2 * spe + 1):
            lrs.append(sched.get_last_lr())
            sched.step()
    main = [lr[0] for lr in lrs]
    assert len(set(main[:spe])) == 1 and main[0] == pytest.approx(0.1)  # one value per epoch
    assert len(set(main[spe: 2 * spe])) == 1
    assert main[spe] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / epochs)))  # CosineAnnealingLR(T_max=300)
    assert main[2 * spe] == pytest.approx(0.1 * 0.5 * (1 + math.cos(2 * math.pi / epochs)))
    assert len({lr[-1] for lr in lrs}) == 1 and lrs[0][-1] == pytest.approx(3e-4)  # the width's Adam: constant


# ---- STDS Grad R: the optimiser holds only θ ----------------------------------------------------------
def _gradr_step(tmp_path: Path, *extra: str):
    from spikeforge.run import build_module

    # the recipe as it is (optimiser, Grad R, IF neurons, SEW-ResNet-18 graph) at a quarter of the widths
    cfg = compose_cfg(["experiment=stds_imagenet_gradr", "method.alpha_gr=1e-3", "method.flat_width=0.01",
                       "model.width=16", *extra], tmp_path)
    torch.manual_seed(0)
    module = build_module(cfg)
    module.trainer = SimpleNamespace(estimated_stepping_batches=10, max_epochs=1)
    opt = module.configure_optimizers()["optimizer"]
    # BN weights and biases, every bias, and the dense classifier (exclude: [fc]) are not θ
    fixed = {n: p.detach().clone() for n, p in module.net.named_parameters()
             if n.endswith("bias") or n.startswith("fc.") or is_norm(module.net.get_submodule(n.rsplit(".", 1)[0]))}
    theta = {n: p.detach().clone() for n, p in module.net.named_parameters() if n.endswith("original")}
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 7])
    opt.zero_grad()
    module.compute_loss(module(x), y).backward()
    opt.step()
    params = dict(module.net.named_parameters())
    changed = {n for n, v in fixed.items() if not torch.equal(params[n].detach(), v)}
    theta_changed = {n for n, v in theta.items() if not torch.equal(params[n].detach(), v)}
    return module, fixed, changed, theta_changed


def test_grad_r_paper_recipe_step_leaves_batchnorm_and_biases_unchanged(tmp_path: Path) -> None:
    module, fixed, changed, theta_changed = _gradr_step(tmp_path / "theta")
    assert module.grad_r_params == "theta"
    assert any(n.startswith("fc.") for n in fixed) and any(".bn" in n or "bn1" in n for n in fixed)
    assert {"fc.weight", "fc.bias"} <= set(fixed)
    assert changed == set()  # BN weights/biases and the dense fc (weight and bias) keep their values
    assert theta_changed  # θ trains
    # the clean default trains them in a second group
    _, _, changed_all, _ = _gradr_step(tmp_path / "all", "method.grad_r_params=all")
    assert changed_all and any(n.startswith("fc.") for n in changed_all)


def test_grad_r_params_needs_grad_r(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"grad_r_params=theta keeps only θ .* set method.alpha_gr > 0"):
        validate(compose_cfg(["method=stds", "method.grad_r_params=theta"], tmp_path))
    with pytest.raises(ConfigError, match=r"grad_r_params='bn' is not valid; choose one of: all, theta"):
        validate(compose_cfg(["method=stds", "method.grad_r_params=bn"], tmp_path))


# ---- each recipe's composed config carries its setting ---------------------------------------------
SETTINGS = {
    "dsr_imagenet": ("method.neuron.v_threshold_grad_scale", 0.001),
    "dsr_imagenet_ann": ("method.calibration_split", "test"),
    "asgl_cifar10": ("method.scheduler.per_epoch", True),
    "asgl_cifar100": ("method.scheduler.per_epoch", True),
    "asgl_cifar10_dvs": ("method.scheduler.per_epoch", True),
    "stds_imagenet_gradr": ("method.grad_r_params", "theta"),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_recipe_composes_with_its_setting(name: str, tmp_path: Path) -> None:
    key, value = SETTINGS[name]
    assert OmegaConf.select(compose_cfg([f"experiment={name}"], tmp_path), key) == value


@pytest.mark.parametrize("name", ["stds_imagenet_dense", "stds_imagenet_sine", "stds_imagenet_linear",
                                  "stds_imagenet_gradr"])
def test_stds_imagenet_recipes_drop_the_last_incomplete_batch(name: str, tmp_path: Path) -> None:
    """STDS ImageNet/train.py: DataLoader(..., drop_last=True) for training."""
    assert compose_cfg([f"experiment={name}"], tmp_path).data.drop_last is True


def test_other_recipes_keep_the_defaults(tmp_path: Path) -> None:
    assert compose_cfg(["experiment=dsr_cifar10_if"], tmp_path).method.neuron.v_threshold_grad_scale == 1.0
    assert compose_cfg(["experiment=stds_imagenet_sine"], tmp_path).method.grad_r_params == "all"


@pytest.mark.parametrize("name", ["dsr_imagenet", "dsr_imagenet_ann", "asgl_cifar10_dvs", "stds_imagenet_gradr"])
def test_cfg_job_prints_the_recipe_setting(name: str) -> None:
    key, value = SETTINGS[name]
    line = f"{key.rsplit('.', 1)[1]}: {str(value).lower() if isinstance(value, bool) else value}"
    proc = run_cmd([sys.executable, "src/train.py", f"experiment={name}", "--cfg", "job", "--resolve"], cwd=ROOT,
                   timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert line in [ln.strip() for ln in proc.stdout.splitlines()]
