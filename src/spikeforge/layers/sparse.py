"""STDS weight reparametrisation (docs/methods/stds.md): w = M(θ), θ stays the trained parameter.

- ``stmod``: w = sign(θ)·max(|θ| − D, 0) with a straight-through backward (∂w/∂θ = 1 for every
  θ ≠ 0, dead zone included; 0 at θ == 0), so pruned weights keep learning and regrow once |θ| > D.
- ``identity``: w = θ (the dense baseline; the same layers are tracked so sparsity is comparable).

:func:`sparsify` registers the map on the weight of every conv / linear layer of a model through
``torch.nn.utils.parametrize``; D is a buffer of each :class:`STMod` (saved in checkpoints).
:func:`flat_width` is the gradual schedule of D, :func:`sparsity` the per-layer / total fraction of
exact zeros of w, :func:`sparse_state_dict` / :func:`export_sparse_weights` give w (not θ) for deployment.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from spikeforge.errors import ConfigError

SPARSE_FUNCTIONS = ("stmod", "identity")
SCHEDULES = ("sine", "linear", "fixed")
# Layers whose ``weight`` is reparametrised (stds.md "Which layers": every conv and the FC layers).
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class _STModFunction(torch.autograd.Function):
    """Forward sign(θ)·max(|θ| − D, 0); backward straight through wherever θ ≠ 0 (stds.md)."""

    @staticmethod
    def forward(ctx: Any, theta: torch.Tensor, d: torch.Tensor | float) -> torch.Tensor:
        ctx.save_for_backward(theta)
        return torch.sign(theta) * torch.clamp(theta.abs() - d, min=0)

    @staticmethod
    def backward(ctx: Any, grad_w: torch.Tensor) -> tuple[torch.Tensor, None]:
        (theta,) = ctx.saved_tensors
        return grad_w * (theta != 0).to(grad_w.dtype), None


def stmod(theta: torch.Tensor, d: torch.Tensor | float) -> torch.Tensor:
    """STDS weight map w = sign(θ)·max(|θ| − D, 0) with its straight-through gradient.

    ``d`` is the flat width D (a float or a 0-d tensor, not differentiated)."""
    if isinstance(d, torch.Tensor):
        d = d.detach().to(theta.dtype)
    return _STModFunction.apply(theta, d)


def stmod_inverse(w: torch.Tensor, d: torch.Tensor | float) -> torch.Tensor:
    """θ = sign(w)·(|w| + D), so that ``stmod(θ, D) == w`` (start of a fixed-D run, stds.md)."""
    return torch.sign(w) * (w.abs() + d)


def flat_width(step: int, total_steps: int, d_final: float, schedule: str = "sine") -> float:
    """D after ``step`` optimiser steps of ``total_steps``: D = f(x)·D_final, x = step/total clamped
    to [0, 1]; sine f(x) = (1 − cos πx)/2, linear f(x) = x, fixed: D_final (stds.md "Gradual schedule")."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown flat-width schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if schedule == "fixed":
        return float(d_final)
    x = min(max(step / max(total_steps, 1), 0.0), 1.0)
    f = (1.0 - math.cos(math.pi * x)) / 2.0 if schedule == "sine" else x
    return f * float(d_final)


class STMod(nn.Module):
    """Parametrization w = stmod(θ, D); D is the buffer ``d``."""

    def __init__(self, d: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("d", torch.tensor(float(d)))

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return stmod(theta, self.d)

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return stmod_inverse(w, self.d.to(w.dtype))

    def extra_repr(self) -> str:
        return f"d={float(self.d):.6g}"


class DenseMap(nn.Module):
    """Parametrization w = θ (``sparse_function=identity``, the dense baseline)."""

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return theta

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w


_MAPS = (STMod, DenseMap)


def _map_of(module: nn.Module) -> nn.Module | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, _MAPS)), None)


def sparsify(
    model: nn.Module,
    sparse_function: str = "stmod",
    d: float = 0.0,
    exclude: Sequence[str] = (),
    layer_types: tuple[type[nn.Module], ...] = PRUNABLE_TYPES,
) -> list[str]:
    """Reparametrise the ``weight`` of every ``layer_types`` module of ``model`` whose qualified name
    matches none of the ``exclude`` glob patterns (e.g. ``["fc"]``). The current weights are kept as
    w (θ₀ = sign(w₀)(|w₀| + D), so a fixed D starts from the same network). Returns the layer names."""
    if sparse_function not in SPARSE_FUNCTIONS:
        raise ConfigError(f"unknown sparse_function {sparse_function!r}; choose one of: {', '.join(SPARSE_FUNCTIONS)}")
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, layer_types) and n]
    for pattern in exclude:
        if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in candidates):
            names = ", ".join(n for n, _ in candidates)
            raise ConfigError(f"exclude pattern {pattern!r} matches no conv/linear layer; the layers are: {names}")
    names = []
    for name, module in candidates:
        if any(fnmatch.fnmatchcase(name, p) for p in exclude) or _map_of(module) is not None:
            continue
        p = STMod(d) if sparse_function == "stmod" else DenseMap()
        parametrize.register_parametrization(module, "weight", p)
        names.append(name)
    if not names:
        raise ConfigError("no conv/linear layer left to reparametrise; check method.exclude")
    return names


def sparse_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The reparametrised layers of ``model`` by qualified name."""
    return {n: m for n, m in model.named_modules() if _map_of(m) is not None}


def thetas(model: nn.Module) -> list[nn.Parameter]:
    """The trained parameters θ of the reparametrised layers."""
    return [m.parametrizations.weight.original for m in sparse_layers(model).values()]


def set_flat_width(model: nn.Module, d: float) -> None:
    """Set D of every :class:`STMod` of ``model`` (no-op for the dense map)."""
    for m in sparse_layers(model).values():
        p = _map_of(m)
        if isinstance(p, STMod):
            p.d.fill_(float(d))


def get_flat_width(model: nn.Module) -> float | None:
    """D of the first :class:`STMod` of ``model`` (one global D, stds.md); None when there is none."""
    for m in sparse_layers(model).values():
        p = _map_of(m)
        if isinstance(p, STMod):
            return float(p.d)
    return None


@torch.no_grad()
def _counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(zeros of w, numel) per reparametrised layer."""
    out = {}
    for name, m in sparse_layers(model).items():
        w = m.weight
        out[name] = (int(w.numel() - torch.count_nonzero(w)), w.numel())
    return out


def sparsity(module: nn.Module) -> tuple[dict[str, float], float]:
    """``(per_layer, total)``: zeros(w)/numel per reparametrised layer and Σzeros/Σnumel over them
    (stds.md "Sparsity"); connectivity = 1 − sparsity."""
    counts = _counts(module)
    per_layer = {n: z / k for n, (z, k) in counts.items()}
    zeros = sum(z for z, _ in counts.values())
    numel = sum(k for _, k in counts.values())
    return per_layer, (zeros / numel if numel else 0.0)


def nonzeros(module: nn.Module) -> tuple[dict[str, int], int]:
    """Non-zero weights of w per reparametrised layer and in total (the deployed size)."""
    counts = _counts(module)
    per_layer = {n: k - z for n, (z, k) in counts.items()}
    return per_layer, sum(per_layer.values())


@torch.no_grad()
def sparse_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of ``model`` with every reparametrised weight given as ``<layer>.weight`` = w = M(θ)
    (θ and D left out): it loads into the same architecture built without :func:`sparsify`."""
    layers = sparse_layers(model)
    out = {}
    for key, value in model.state_dict().items():
        layer = key.split(".parametrizations.weight.", 1)[0] if ".parametrizations.weight." in key else None
        if layer is not None and layer in layers:
            continue
        out[key] = value.detach().cpu()
    for name, m in layers.items():
        out[f"{name}.weight"] = m.weight.detach().cpu().clone()
    return out


def export_sparse_weights(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save the deployable weights w (not θ) to ``path``: ``{"state_dict", "nonzeros", "numel",
    "total_nonzeros", "total_numel", "sparsity", **extra}``; returns the same summary without the tensors."""
    counts = _counts(model)
    nnz = {n: k - z for n, (z, k) in counts.items()}
    summary: dict[str, Any] = {
        "nonzeros": nnz,
        "numel": {n: k for n, (_, k) in counts.items()},
        "total_nonzeros": sum(nnz.values()),
        "total_numel": sum(k for _, k in counts.values()),
        "sparsity": sparsity(model)[1],
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": sparse_state_dict(model), **summary}, path)
    return {**summary, "path": str(path), "file_bytes": path.stat().st_size}


def remove_sparsity(modules: Iterable[nn.Module]) -> None:
    """Bake w into the weights and drop the reparametrisation (in place)."""
    for m in modules:
        if _map_of(m) is not None:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


__all__ = [
    "PRUNABLE_TYPES",
    "SCHEDULES",
    "SPARSE_FUNCTIONS",
    "DenseMap",
    "STMod",
    "export_sparse_weights",
    "flat_width",
    "get_flat_width",
    "nonzeros",
    "remove_sparsity",
    "set_flat_width",
    "sparse_layers",
    "sparse_state_dict",
    "sparsify",
    "sparsity",
    "stmod",
    "stmod_inverse",
    "thetas",
]
