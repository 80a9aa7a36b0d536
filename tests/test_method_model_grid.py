"""Every method × every model: the method's LightningModule builds the model from its own neuron and
norm factories, runs a forward pass on a tiny batch and back-propagates its own loss into every
parameter (a finite, non-zero gradient each, or a listed reason why not)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import torch
from conftest import CONF, compose_cfg, config_options
from omegaconf import OmegaConf

from spikeforge.run import build_module

METHODS = config_options("method")
MODELS = config_options("model")
IMAGENET_STEM = ("sew_", "nf_", "spiking_resnet", "preact_spiking_resnet18_imagenet")
BATCH = 4  # > 2: with two samples a BatchNorm1d head normalises every feature to ±1 and passes no gradient

# Parameters that legitimately get no (or a zero) gradient from one backward pass at initialisation:
# (method pattern, model pattern, parameter-name pattern) → reason.
NO_GRADIENT: dict[tuple[str, str, str], str] = {}


def _input(model: str) -> tuple[int, int]:
    if model == "vggsnn":
        return 48, 2  # exactly 48×48 DVS frames
    return (64 if model.startswith(IMAGENET_STEM) else 32), 3


def _open_zero_init(module: torch.nn.Module) -> None:
    """NF-ResNets start with a zero classifier and zero skip-init gains (sltt.md), which by design stop
    every gradient before the classifier at step 0; give them small values so the check reaches every layer."""
    for name, p in module.named_parameters():
        if name.endswith(("skipinit_gain", "fc.weight")) and torch.count_nonzero(p) == 0:
            with torch.no_grad():
                p.normal_(0.0, 0.1)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_model(method: str, model: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    size, channels = _input(model)
    overrides = [f"method={method}", f"model={model}", "T=2", f"data.image_size={size}", f"data.channels={channels}"]
    if "width" in OmegaConf.load(CONF / "model" / f"{model}.yaml") and model != "convnet":
        overrides.append("model.width=8")  # thin networks: the graph is the paper's, the widths are not
    module = build_module(compose_cfg(overrides, tmp_path / "run")).train()
    _open_zero_init(module)
    x, y = torch.rand(BATCH, channels, size, size), torch.arange(BATCH)
    out = module(x)
    assert out.shape[-1] == 10 and torch.isfinite(out).all()
    loss = module.compute_loss(out, y)
    loss.backward()
    exempt = [p for (me, mo, p) in NO_GRADIENT if fnmatch.fnmatch(method, me) and fnmatch.fnmatch(model, mo)]
    missing, zero = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad or any(fnmatch.fnmatch(name, pattern) for pattern in exempt):
            continue
        if p.grad is None:
            missing.append(name)
        else:
            assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
            if torch.count_nonzero(p.grad) == 0:
                zero.append(name)
    assert not missing and not zero, f"no gradient: {missing}; zero gradient: {zero}"
