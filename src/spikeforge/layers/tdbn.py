"""Threshold-dependent batch normalisation (``tdbn``) and its folding into the preceding conv.

stbp_tdbn.md, "tdBN": per channel, mean μ and biased variance σ² over all T·N·H·W values of a
``[T, N, C, H, W]`` input, then

    y = λ·(α·V_th·(x − μ)/√(σ² + ε)) + β,   λ = 1, β = 0 at init, ε = 1e-5,

α = 1 by default and 1/√2 on the two branches summed at a residual add (models pass it as
``norm(C, alpha=...)``). Running statistics follow PyTorch BatchNorm (momentum 0.1, unbiased
variance in the running value) and are used in eval mode, so an eval-mode tdBN is an affine map per
channel and folds into the preceding conv (:func:`fold`).

The learned scale is λ itself (``weight``); spikingjelly's ``ThresholdDependentBatchNorm2d`` learns
α·V_th·λ, whose gradient differs by 1/(α·V_th). ``is_norm``: the optimiser gives λ and β no weight decay.
Single-step input ``[N, C, ...]`` is normalised over N·H·W.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize

from spikeforge.errors import ConfigError
from spikeforge.layers import register_norm
from spikeforge.layers.norm import IdentityNorm, TimeBatchNorm


class ThresholdDependentBN(TimeBatchNorm):
    """tdBN over ``[T, N, C, ...]`` (statistics shared over T) or single-step ``[N, C, ...]``."""

    is_norm = True

    def __init__(
        self,
        num_features: int,
        alpha: float = 1.0,
        v_th: float = 0.5,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        track_running_stats: bool = True,
        step_mode: str = "m",
    ) -> None:
        if alpha <= 0 or v_th <= 0:
            raise ConfigError(f"tdbn needs alpha > 0 and v_th > 0 (got alpha={alpha}, v_th={v_th})")
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True,
                         track_running_stats=track_running_stats, step_mode=step_mode)
        self.alpha = float(alpha)
        self.v_th = float(v_th)

    @property
    def scale(self) -> float:
        """α·V_th, the fixed factor in front of the normalised input."""
        return self.alpha * self.v_th

    def affine_weight(self) -> torch.Tensor:
        # weight λ·α·V_th in PyTorch's batch norm: same forward as y = λ·(α·V_th·x̂) + β, and the
        # gradient w.r.t. λ is α·V_th·Σ x̂·∂L/∂y (λ is the learned parameter)
        return self.weight * self.scale

    def extra_repr(self) -> str:
        return f"{self.num_features}, alpha={self.alpha:.6g}, v_th={self.v_th}, eps={self.eps}, " \
               f"momentum={self.momentum}, step_mode={self.step_mode}"


@register_norm("tdbn")
def tdbn(
    num_features: int,
    alpha: float = 1.0,
    v_th: float = 0.5,
    eps: float = 1e-5,
    momentum: float = 0.1,
    step_mode: str = "m",
) -> ThresholdDependentBN:
    """tdBN (stbp_tdbn.md defaults: α 1, V_th 0.5, ε 1e-5, momentum 0.1)."""
    return ThresholdDependentBN(num_features, alpha=alpha, v_th=v_th, eps=eps, momentum=momentum,
                                step_mode=step_mode)


def _affine_of(norm: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of an eval-mode BN: y = scale·x + shift."""
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("folding needs running statistics (track_running_stats=True)")
    gamma = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
    beta = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
    gamma = gamma * getattr(norm, "scale", 1.0)  # tdBN: λ·α·V_th
    scale = gamma / torch.sqrt(norm.running_var + norm.eps)
    return scale, beta - norm.running_mean * scale


@torch.no_grad()
def plain_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parametrised tensors (``torch.nn.utils.parametrize``, e.g. STDS's
    w = M(θ)) are plain parameters holding the values they compute; other modules are deep-copied.

    ``parametrize.remove_parametrizations`` on a deep copy would delete the tensor's property from the
    parametrised class, which the copy shares with ``module`` (``module.weight`` would then be gone)."""
    new = copy.deepcopy(module)
    if not parametrize.is_parametrized(module):
        return new
    values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
    new.__class__ = parametrize.type_before_parametrizations(module)
    del new.parametrizations
    for name, value in values.items():
        new.register_parameter(name, nn.Parameter(value))
    return new


def plain_weights(model: nn.Module) -> nn.Module:
    """Replace every parametrised sub-module of ``model`` by its :func:`plain_copy` (in place)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if parametrize.is_parametrized(child):
                setattr(parent, name, plain_copy(child))
    return model


@torch.no_grad()
def fold(conv: nn.Module, norm: _BatchNorm) -> nn.Module:
    """A copy of ``conv`` (``Conv1d/2d/3d`` or ``Linear``, spikingjelly's included) with the eval-mode
    ``norm`` that follows it folded in: W' = W·s, b' = (b − μ)·s + β with s = λ·α·V_th/√(σ²_run + ε).

    ``fold(conv, norm)(x)`` equals ``norm.eval()(conv(x))``; the result has a bias. A reparametrised
    weight (STDS's w = M(θ), ``torch.nn.utils.parametrize``) is folded as the weight it computes: the
    result is a plain conv.
    """
    if isinstance(conv, _ConvNd) and conv.transposed:
        raise ValueError("fold supports ordinary convolutions, not transposed ones")
    if not isinstance(conv, _ConvNd | nn.Linear):
        raise ValueError(f"fold needs a Conv or Linear before the norm, got {type(conv).__name__}")
    if conv.weight.shape[0] != norm.num_features:
        raise ValueError(f"conv has {conv.weight.shape[0]} output channels, norm has {norm.num_features}")
    scale, shift = _affine_of(norm)
    folded = plain_copy(conv)
    w = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    b = shift if conv.bias is None else conv.bias * scale + shift
    folded.weight = nn.Parameter(w.to(conv.weight.dtype))
    folded.bias = nn.Parameter(b.to(conv.weight.dtype))
    return folded


_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVG_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


def _averages(m: nn.Module) -> bool:
    """True for pools whose output is a mean of input values (weights summing to one), with which a
    per-channel affine map commutes; zero padding counted in the mean, or a divisor override, breaks that."""
    if isinstance(m, _ADAPTIVE_AVG_POOLS):
        return True
    if not isinstance(m, _AVG_POOLS) or getattr(m, "divisor_override", None) is not None:
        return False
    pads = m.padding if isinstance(m.padding, tuple) else (m.padding,)
    return not m.count_include_pad or not any(pads)


@torch.no_grad()
def fold_sequential(model: nn.Module) -> nn.Module:
    """Fold every (Conv/Linear, BN-type norm) pair of an ``nn.Sequential`` of ``model`` (in place) — adjacent,
    or with an average pool between them (``convnet``: conv → pool → norm; the norm's per-channel affine map
    commutes with averaging) — and put an identity in the norm's slot; returns ``model``. Pairs outside a
    Sequential (residual branches written as attributes) are left alone: fold them with :func:`fold`.
    Parametrised weights (STDS) become the plain weights they compute first (:func:`plain_weights`)."""
    plain_weights(model)
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for i, a in enumerate(names[:-1]):
            conv = seq._modules[a]
            j = i + 2 if i + 2 < len(names) and _averages(seq._modules[names[i + 1]]) else i + 1
            norm = seq._modules[names[j]]
            if isinstance(conv, _ConvNd | nn.Linear) and isinstance(norm, _BatchNorm) and \
                    norm.track_running_stats and conv.weight.shape[0] == norm.num_features:
                seq._modules[a] = fold(conv, norm)
                seq._modules[names[j]] = IdentityNorm(step_mode=getattr(norm, "step_mode", "m"))
    return model


__all__ = ["ThresholdDependentBN", "fold", "fold_sequential", "plain_copy", "plain_weights", "tdbn"]
