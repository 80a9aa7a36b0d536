"""Batch norms over time-major input.

- ``bn``: one BatchNorm whose statistics are shared over time: multi-step input ``[T, N, C, ...]`` is
  normalised as ``[T·N, C, ...]`` (spikingjelly's ``SeqToANNContainer(BatchNorm2d)``; ASGL's "tdbn").
- ``bn_step``: the same BatchNorm called once per time step (per-step batch statistics; the running
  statistics update T times per iteration) — SLTT and its BPTT baseline (sltt.md, "BN").
- ``none``: identity.

Unlike ``nn.BatchNorm2d`` these accept any number of trailing dims (1-d features after a Linear,
2-d feature maps), so one factory serves convolutional and fully connected layers.

A subclass says what it does differently in two places only: ``forward`` (how the time steps are
fed to ``_bn``: all at once, or one step at a time) and ``affine_weight`` (the per-channel factor
after normalisation, e.g. tdBN's λ·α·V_th). ``_bn`` is the batch-statistics normalisation itself;
``spikeforge.plugins.TimeSyncBatchNorm`` replaces only that, so every norm keeps its own forward
under ``trainer.sync_batchnorm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import base
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from spikeforge.layers import register_norm


class TimeBatchNorm(base.StepModule, _BatchNorm):
    """BatchNorm over ``[T, N, C, ...]`` with statistics shared over T (multi-step) or ``[N, C, ...]``."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        step_mode: str = "m",
    ) -> None:
        _BatchNorm.__init__(self, num_features, eps, momentum, affine, track_running_stats)
        self.step_mode = step_mode

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-d input [N, C, ...], got {tuple(input.shape)}")

    def affine_weight(self) -> torch.Tensor | None:
        """The per-channel factor applied to the normalised input (``weight`` for plain BN)."""
        return self.weight

    def _bn(self, x: torch.Tensor) -> torch.Tensor:
        """``_BatchNorm.forward`` with :meth:`affine_weight` as the weight."""
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            self.affine_weight(),
            self.bias,
            use_batch,
            factor,
            self.eps,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return self._bn(x)
        return self._bn(x.flatten(0, 1)).view_as(x)

    def extra_repr(self) -> str:
        return _BatchNorm.extra_repr(self) + f", step_mode={self.step_mode}"


class StepwiseBatchNorm(TimeBatchNorm):
    """One BatchNorm applied to each time step separately (per-step batch statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return self._bn(x)
        return torch.stack([self._bn(x_t) for x_t in x.unbind(0)])


class IdentityNorm(base.StepModule, nn.Identity):
    def __init__(self, step_mode: str = "m") -> None:
        nn.Identity.__init__(self)
        self.step_mode = step_mode


@register_norm("bn")
def bn(num_features: int, eps: float = 1e-5, momentum: float = 0.1, step_mode: str = "m") -> TimeBatchNorm:
    return TimeBatchNorm(num_features, eps=eps, momentum=momentum, step_mode=step_mode)


@register_norm("bn_step")
def bn_step(
    num_features: int, eps: float = 1e-5, momentum: float = 0.1, step_mode: str = "m"
) -> StepwiseBatchNorm:
    return StepwiseBatchNorm(num_features, eps=eps, momentum=momentum, step_mode=step_mode)


@register_norm("none")
def none(num_features: int, step_mode: str = "m") -> IdentityNorm:
    return IdentityNorm(step_mode=step_mode)
