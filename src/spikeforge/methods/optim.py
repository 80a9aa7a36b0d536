"""Optimisers and learning-rate schedules from config (one place for every method).

Parameter groups: by default norm parameters and biases get no weight decay (standard practice,
and asgl.md/stbp_tdbn.md); ``decay_norm_and_bias: true`` puts every parameter under decay (DSR,
dsr.md "Recipes": "wd 5e-4 on all parameters", V_th included).

Schedules are one ``LambdaLR`` stepped after every optimiser step:
- ``cosine`` (to ``min_lr``), ``step`` (×``gamma`` at each epoch in ``milestones``) or ``constant``;
  ``per_epoch: true`` evaluates the cosine at whole epochs (DSR's per-epoch cosine; ASGL's
  ``CosineAnnealingLR`` stepped once an epoch) instead of every step;
- times a linear warm-up over the first W = ``warmup_epochs`` epochs plus ``warmup_steps`` iterations
  (DSR: 400): step i (from 0) runs at (i + 1)/W, so the first step is not at lr 0 and step W − 1 is at
  the full rate — DSR's ``adjust_warmup_lr``, lr·(i + 1)/W times the epoch's cosine value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from spikeforge.errors import ConfigError

_NORM_TYPES: tuple[type[nn.Module], ...] = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or bool(getattr(module, "is_norm", False))


def split_decay(
    model: nn.Module, decay_norm_and_bias: bool = False, exclude: Iterable[nn.Parameter] = ()
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed) trainable parameters of ``model``, leaving out ``exclude``."""
    skip = {id(p) for p in exclude}
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in skip or id(p) in seen:
                continue
            seen.add(id(p))
            if decay_norm_and_bias or not (is_norm(module) or name.endswith("bias")):
                decay.append(p)
            else:
                no_decay.append(p)
    return decay, no_decay


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: Sequence[float] = (0.9, 0.999)
    eps: float = 1e-8
    decay_norm_and_bias: bool = False


def build_optimizer(groups: list[dict[str, Any]], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """``groups``: ``[{"params": [...], "weight_decay": bool-or-float?, ...}]``; a group's
    ``weight_decay`` key set to False/True picks 0 or the configured value."""
    c = OptimizerConfig(**cfg)
    if c.lr <= 0:
        raise ConfigError(f"optimizer lr must be > 0 (got {c.lr}); set e.g. method.optimizer.lr=0.1")
    if c.weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0 (got {c.weight_decay})")
    resolved = []
    for g in groups:
        g = dict(g)
        wd = g.pop("decay", True)
        g.setdefault("weight_decay", c.weight_decay if wd else 0.0)
        if g["params"]:
            resolved.append(g)
    name = c.name.lower()
    if name == "sgd":
        return torch.optim.SGD(resolved, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov)
    if name == "adam":
        return torch.optim.Adam(resolved, lr=c.lr, betas=tuple(c.betas), eps=c.eps)
    if name == "adamw":
        return torch.optim.AdamW(resolved, lr=c.lr, betas=tuple(c.betas), eps=c.eps)
    raise ConfigError(f"unknown optimizer {c.name!r}; choose one of: sgd, adam, adamw")


@dataclass
class SchedulerConfig:
    name: str = "cosine"
    warmup_epochs: float = 0
    warmup_steps: int = 0
    warmup_start_factor: float = 0.0
    min_lr: float = 0.0
    per_epoch: bool = False
    milestones: Sequence[int] = field(default_factory=list)
    gamma: float = 0.1


def warmup_factor(step: int, warmup: int, start_factor: float = 0.0) -> float:
    """Linear warm-up multiplier of step ``step`` (from 0) over ``warmup`` steps: s₀ + (1 − s₀)·(step + 1)/W,
    1 from step W − 1 on (DSR ``adjust_warmup_lr``: lr·(citer + 1)/warmup)."""
    if step >= warmup - 1:
        return 1.0
    return start_factor + (1 - start_factor) * (step + 1) / warmup


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: SchedulerConfig, base_lr: float) -> float:
    """Multiplier of the base LR for optimiser step ``step`` (counted from 0): the schedule's value times
    the warm-up factor."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch) + cfg.warmup_steps
    return warmup_factor(step, warmup, cfg.warmup_start_factor) * _schedule_factor(
        step, warmup, total_steps, steps_per_epoch, cfg, base_lr)


def _schedule_factor(
    step: int, warmup: int, total_steps: int, steps_per_epoch: int, cfg: SchedulerConfig, base_lr: float
) -> float:
    epoch = step // max(steps_per_epoch, 1)
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.name == "cosine":
        if cfg.per_epoch:
            total_epochs = max(total_steps // max(steps_per_epoch, 1), 1)
            progress = min(epoch / total_epochs, 1.0)
        else:  # a per-step cosine starts after the warm-up
            progress = min(max(step - warmup, 0) / max(total_steps - warmup, 1), 1.0)
        floor = cfg.min_lr / base_lr if base_lr > 0 else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ConfigError(f"unknown scheduler {cfg.name!r}; choose one of: cosine, step, constant")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any], total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    c = SchedulerConfig(**cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    fns = [
        (lambda s, b=b: lr_factor(s, total_steps, steps_per_epoch, c, b)) for b in base_lrs
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fns)
