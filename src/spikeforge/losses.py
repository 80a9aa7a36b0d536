"""Losses on per-step outputs ``o`` of shape ``[T, N, C]`` (a ``[N, C]`` output counts as T = 1).

- ``ce_mean``: softmax cross-entropy of the mean output over T (BPTT, STBP-tdBN, STDS ImageNet, ASGL CIFAR).
- ``tet``: L = (1/T)·Σ_t [(1 − λ)·CE(o_t, y) + λ·mean_{n,c}(o_t − Y)²], Y = 1 (``target="ones"``) or
  one_hot(y) (``target="onehot"``) — SLTT (sltt.md "Loss", λ = 0.05) and ASGL's TET (asgl.md, λ = 1e-3).
- ``mse_rate``: mean squared error between the mean output (firing rate) and one_hot(y) (STDS CIFAR).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from spikeforge.registry import Registry

LOSSES = Registry("loss")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _time_major(o: torch.Tensor) -> torch.Tensor:
    return o.unsqueeze(0) if o.dim() == 2 else o


@LOSSES.register("ce_mean")
def ce_mean(label_smoothing: float = 0.0) -> LossFn:
    def loss(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(_time_major(o).mean(0), y, label_smoothing=label_smoothing)

    return loss


@LOSSES.register("tet")
def tet(lam: float = 0.05, target: str = "ones") -> LossFn:
    if target not in ("ones", "onehot"):
        raise ValueError(f"tet target must be 'ones' or 'onehot', got {target!r}")

    def loss(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        o = _time_major(o)
        T, _, C = o.shape
        ce = F.cross_entropy(o.flatten(0, 1), y.repeat(T))  # mean over t and n
        if lam == 0:
            return ce
        Y = torch.ones_like(o) if target == "ones" else F.one_hot(y, C).to(o.dtype).expand_as(o)
        return (1 - lam) * ce + lam * F.mse_loss(o, Y)

    return loss


@LOSSES.register("mse_rate")
def mse_rate() -> LossFn:
    def loss(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rate = _time_major(o).mean(0)
        return F.mse_loss(rate, F.one_hot(y, rate.shape[-1]).to(rate.dtype))

    return loss


def build_loss(name: str, **params: object) -> LossFn:
    """``build_loss("tet", lam=0.05, target="ones")`` → ``fn(o [T, N, C], y [N]) -> scalar``."""
    return LOSSES.build(name, **params)


def list_losses() -> list[str]:
    return LOSSES.names()
