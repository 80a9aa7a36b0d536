"""Every method × every model: the method's LightningModule builds the model from its own neuron and
norm factories, runs a forward pass on a tiny batch and back-propagates its own loss into every
parameter: a finite gradient each, non-zero wherever a signal reached the parameter's layer (a layer
fed only by neurons that stayed silent on this batch has an exactly zero gradient)."""

from __future__ import annotations

import re
from fnmatch import fnmatch
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

# Parameters whose gradient may be exactly zero on one batch at initialisation although a signal reached
# their layer: (method pattern, model pattern, parameter pattern) → reason.
MAY_BE_ZERO: dict[tuple[str, str, str], str] = {
    ("dsr*", "*", "*.v_threshold"): "DSR's threshold gets a gradient only where a layer's input rate exceeds V_th "
                                    "(the rate is clamped there, dsr.md); on one batch at initialisation none may",
    # NF-ResNets have no norm layers: on a raw image their membrane potentials sit far from the threshold,
    # where a surrogate or rate derivative with compact support is exactly zero
    ("*sltt*", "nf_resnet*", "*"): "SLTT's triangle surrogate max(0, 1 − |u − V_th|) (sltt.md)",
    ("stbp_tdbn", "nf_resnet*", "*"): "STBP's rectangular surrogate, width 1 around V_th (stbp_tdbn.md)",
    ("dsr*", "nf_resnet*", "*"): "DSR's derivative, zero where the input rate is outside [0, V_th] (dsr.md)",
}


def _record_signal(module: torch.nn.Module) -> dict[str, bool]:
    """Hooks that note, per module holding parameters, whether its input carried a signal: not all zeros
    (a layer fed only by silent neurons) and not the same value for every sample (a norm of a constant)."""
    seen: dict[str, bool] = {}

    def hook(name: str):
        def pre(m: torch.nn.Module, args: tuple) -> None:
            x = next((a for a in args if torch.is_tensor(a)), None)
            if x is not None and x.is_floating_point():
                rows = x.detach().reshape(-1, x.shape[-1])
                live = bool(torch.count_nonzero(rows)) and bool((rows != rows[:1]).any())
                seen[name] = seen.get(name, False) or live
        return pre

    for name, m in module.named_modules():
        if any(True for _ in m.parameters(recurse=False)) or hasattr(m, "parametrizations"):  # STDS: θ held inside
            m.register_forward_pre_hook(hook(name))
    return seen


def _no_signal(param: str, seen: dict[str, bool]) -> bool:
    """A zero gradient is exact where no signal reached: the parameter's layer saw none, or, for a
    parameter held by a block (an NF-ResNet skip-init gain scaling the residual branch), some layer
    inside the block saw none (a silent layer in the branch makes the branch output zero). A layer that
    was never called counts as having seen a signal."""
    param = re.sub(r"\.parametrizations\.(\w+)\.original$", r".\1", param)  # STDS: θ of a reparametrised w
    owner = param.rpartition(".")[0]
    inside = [live for k, live in seen.items() if k.startswith(owner + ".")]
    if inside:
        return not all(inside)
    return not seen.get(owner, True)


def _input(model: str) -> tuple[int, int]:
    if model == "vggsnn":
        return 48, 2  # exactly 48×48 DVS frames
    return (64 if model.startswith(IMAGENET_STEM) else 32), 3


def _open_zero_init(module: torch.nn.Module) -> None:
    """NF-ResNets start with a zero classifier and zero skip-init gains (sltt.md), which by design stop
    every gradient before the classifier at step 0; give them small values so the check reaches every layer."""
    for name, p in module.named_parameters():
        if name.endswith(("skipinit_gain", "fc.weight", "fc.parametrizations.weight.original")) \
                and torch.count_nonzero(p) == 0:
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
    seen = _record_signal(module)
    x, y = torch.rand(BATCH, channels, size, size), torch.arange(BATCH)
    out = module(x)
    assert out.shape[-1] == 10 and torch.isfinite(out).all()
    loss = module.compute_loss(out, y)
    loss.backward()
    may_be_zero = [p for (me, mo, p) in MAY_BE_ZERO if fnmatch(method, me) and fnmatch(model, mo)]
    missing, zero, silent = [], [], []  # silent: exactly zero, no signal reached the layer
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    for name, p in params:
        if p.grad is None:
            missing.append(name)
            continue
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
        if torch.count_nonzero(p.grad) == 0:
            # thin networks at initialisation can have layers whose neurons did not fire on this batch
            exact = _no_signal(name, seen) or any(fnmatch(name, p) for p in may_be_zero)
            (silent if exact else zero).append(name)
    assert not missing and not zero, f"no gradient: {missing}; zero gradient although a signal arrived: {zero}"
