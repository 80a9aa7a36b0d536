"""Weight averaging (``callbacks=[default,ema]`` / ``callbacks=[default,swa]``) on Lightning's ``WeightAveraging``.

- :class:`EMA`: exponential moving average of the weights, updated after every optimiser step
  (Lightning's ``EMAWeightAveraging``, w̄ ← decay·w̄ + (1 − decay)·w).
- :class:`SWA`: stochastic weight averaging (Izmailov et al., UAI 2018): the equal average of the weights
  at the end of every epoch from ``start`` on (a fraction of ``trainer.max_epochs`` when < 1). Unlike
  Lightning's ``StochasticWeightAveraging`` it keeps the method's own LR schedule and works with several
  optimisers (ASGL's width optimiser) and manual optimisation (SLTT).

Both average the buffers too (BatchNorm running statistics: ``use_buffers``); validation and the saved
checkpoints' ``state_dict`` use the averaged weights, so the best checkpoint is chosen, tested and
exported with them. Two changes to Lightning's behaviour, both for that reason:
- validation uses the average only once it holds at least one update (SWA before ``start`` validates the
  trained weights, not the initial ones);
- loading a checkpoint outside fitting (``trainer.test(ckpt_path=best)``) keeps the averaged weights of
  its ``state_dict``; Lightning would restore the un-averaged ones.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class _AveragedForEvaluation(WeightAveraging):
    def _has_average(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swapped = self._has_average()
        if self._swapped:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(self, "_swapped", False):
            self._swap_models(pl_module)
            self._swapped = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._has_average():
            self._copy_average_to_current(pl_module)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: restore both the average and the trained weights
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class EMA(_AveragedForEvaluation, EMAWeightAveraging):
    """Exponential moving average of the weights (``decay`` per optimiser step)."""


class SWA(_AveragedForEvaluation):
    """Equal average of the end-of-epoch weights from epoch ``start`` (a fraction of max_epochs if < 1)."""

    def __init__(self, start: float = 0.75, device: str | None = None, use_buffers: bool = True) -> None:
        super().__init__(device=device, use_buffers=use_buffers)
        if start < 0:
            raise ValueError(f"SWA start must be >= 0 (an epoch, or a fraction of max_epochs), got {start}")
        self.start = start
        self.start_epoch = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        max_epochs = max(int(trainer.max_epochs or 1), 1)
        self.start_epoch = int(self.start * max_epochs) if self.start < 1 else int(self.start)
        self.start_epoch = min(self.start_epoch, max_epochs - 1)  # at least the last epoch is averaged
        super().setup(trainer, pl_module, stage)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return epoch_idx is not None and epoch_idx >= self.start_epoch
