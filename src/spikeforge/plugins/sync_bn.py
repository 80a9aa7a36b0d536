"""``trainer.sync_batchnorm=true`` for time-major norms.

Lightning's default layer sync replaces every ``_BatchNorm`` by ``torch.nn.SyncBatchNorm``, which
treats dim 1 as channels and has its own forward — wrong for our norms that take ``[T, N, C, ...]``
and reshape it themselves, and it would drop what a norm does beyond plain BN. Our norms
(``spikeforge.layers.norm.TimeBatchNorm`` and subclasses) normalise through ``_bn`` and keep their
differences in ``forward`` (bn_step: one ``_bn`` call per time step, so per-step statistics) and
``affine_weight`` (tdBN: λ·α·V_th). This plugin keeps each such module, its class and so its forward,
and replaces only ``_bn``: in training on several ranks the batch statistics are reduced over all
ranks; otherwise (eval, one process) the norm's own ``_bn`` runs unchanged. Plain ``nn.BatchNorm*d``
modules are converted to ``torch.nn.SyncBatchNorm`` as usual.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from spikeforge.errors import ConfigError
from spikeforge.layers.norm import TimeBatchNorm


class _SyncMixin:
    """Batch statistics summed over all ranks with an autograd-aware all-reduce (works with gloo on
    CPU, where ``torch.nn.SyncBatchNorm`` refuses to run, and with NCCL on GPUs)."""

    def _bn(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super()._bn(x)  # type: ignore[misc]
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([xf.numel() / c])])
        total = all_reduce(local)
        n = total[-1]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.affine_weight().view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


_SYNC_CLASSES: dict[type, type] = {}


def _sync_class(cls: type) -> type:
    if cls not in _SYNC_CLASSES:
        _SYNC_CLASSES[cls] = type(f"Sync{cls.__name__}", (_SyncMixin, cls), {"_unsync_class": cls})
    return _SYNC_CLASSES[cls]


def _convert_plain(module: nn.Module, plain: tuple[type, ...]) -> nn.Module:
    if type(module) in plain:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        setattr(module, name, _convert_plain(child, plain))
    return module


class TimeSyncBatchNorm(LayerSync):
    def apply(self, model: nn.Module) -> nn.Module:
        plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
        for name, m in list(model.named_modules()):
            if isinstance(m, (_SyncMixin, nn.SyncBatchNorm)):
                continue
            if isinstance(m, TimeBatchNorm):
                m.__class__ = _sync_class(type(m))
            elif isinstance(m, _BatchNorm) and type(m) not in plain:
                raise ConfigError(f"trainer.sync_batchnorm cannot synchronise {type(m).__name__} ({name}); "
                                  "use a spikeforge norm (method.norm.kind=bn|bn_step|...) or sync_batchnorm=false")
        return _convert_plain(model, plain)

    def revert(self, model: nn.Module) -> nn.Module:
        for m in model.modules():
            if isinstance(m, _SyncMixin):
                m.__class__ = m._unsync_class  # type: ignore[attr-defined]
        return model
