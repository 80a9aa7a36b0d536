"""Every method × every model: the method's LightningModule builds the model from its own neuron and
norm factories, runs a forward pass on a tiny batch and back-propagates its own loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONF, compose_cfg, config_options
from omegaconf import OmegaConf

from spikeforge.run import build_module

METHODS = config_options("method")
MODELS = config_options("model")
IMAGENET_STEM = ("sew_", "nf_", "spiking_resnet", "preact_spiking_resnet18_imagenet")


def _input(model: str) -> tuple[int, int]:
    if model == "vggsnn":
        return 48, 2  # exactly 48×48 DVS frames
    return (64 if model.startswith(IMAGENET_STEM) else 32), 3


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_model(method: str, model: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    size, channels = _input(model)
    overrides = [f"method={method}", f"model={model}", "T=2", f"data.image_size={size}", f"data.channels={channels}"]
    if "width" in OmegaConf.load(CONF / "model" / f"{model}.yaml") and model != "convnet":
        overrides.append("model.width=8")  # thin networks: the graph is the paper's, the widths are not
    module = build_module(compose_cfg(overrides, tmp_path / "run")).train()
    x, y = torch.rand(2, channels, size, size), torch.tensor([0, 1])
    out = module(x)
    assert out.shape[-1] == 10 and torch.isfinite(out).all()
    loss = module.compute_loss(out, y)
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
