"""Shared datamodule plumbing: loaders with workers / pinned memory / persistent workers, and a
seeded, stratified validation split held out from the training set."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from spikeforge.data.sharding import eval_sampler
from spikeforge.errors import ConfigError


def stratified_split(
    labels: Sequence[int] | np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): ``fraction`` of every class held out, chosen with ``seed``."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"split fraction must be in [0, 1) (got {fraction})")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = int(round(len(idx) * fraction))
        held.append(idx[:n])
        kept.append(idx[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


class SpikeDataModule(L.LightningDataModule):
    """Subclasses set ``self.train_set``, ``self.val_set``, ``self.test_set`` in ``setup``."""

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        drop_last: bool = False,
        num_classes: int = 10,
        channels: int = 3,
        name: str | None = None,
    ) -> None:
        super().__init__()
        # nothing for the loggers: the run logs its whole config (spikeforge.callbacks.hparams.RunConfigLogger)
        self.save_hyperparameters({}, logger=False)
        self.num_classes = num_classes
        self.channels = channels
        self.name = name
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1 (got {batch_size})")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.drop_last = drop_last
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, ds: Dataset | None, train: bool) -> DataLoader:
        if ds is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            # under DDP: every evaluation sample on exactly one rank, no padding (spikeforge.data.sharding)
            sampler=None if train else eval_sampler(ds),
            drop_last=self.drop_last and train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    @staticmethod
    def subset(ds: Dataset, idx: np.ndarray) -> Subset:
        return Subset(ds, idx.tolist())
