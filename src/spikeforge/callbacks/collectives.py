"""Keep collectives in the same order on every DDP rank.

Lightning reduces a metric logged with ``sync_dist=True`` (and syncs a torchmetrics metric) lazily,
the first time its epoch value is read. At the end of a training epoch the first reader is a callback:
on rank 0 the progress bar (``on_train_epoch_end``), which is disabled on the other ranks, so there
the reduction would happen later, after other callbacks' collectives (a checkpoint's barrier, a
state gather) — two ranks waiting in two different collectives, forever.

:class:`EpochMetricsSync` is the first callback of every run (``spikeforge.run.build_trainer``): its
``on_train_epoch_end`` reads the epoch metrics on every rank, so they are reduced at the same point
everywhere, before any other callback of that hook runs.
"""

from __future__ import annotations

import lightning as L


class EpochMetricsSync(L.Callback):
    """Reduce the training epoch's ``sync_dist`` metrics on every rank, first thing at epoch end."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            _ = trainer.callback_metrics  # computes (and so reduces) every epoch-level value
