"""Exact resume: a training sampler that can restart mid-epoch, and RNG states in checkpoints.

Lightning 2.6 restores the loop counters (epoch, batches done in the epoch, global step), optimisers,
schedulers and callback states from a checkpoint, but a plain shuffling ``DataLoader`` restarts the
epoch from a new random permutation, and the global RNGs (torch, CUDA, numpy, ``random``) are not
saved. Two pieces close the gap:

- :class:`ResumableSampler` — a ``DistributedSampler`` (so Lightning leaves it alone under DDP) whose
  permutation depends only on ``(seed, epoch)`` and which, on resume, skips the samples of the batches
  the restored loop has already counted (``skip_batches``). It shards like ``DistributedSampler``
  (padding to an equal count per rank) and is used for the training split only.
  :func:`make_resumable` wraps a datamodule's ``train_dataloader`` with it, and gives every loader of
  the datamodule its own ``torch.Generator`` so creating a loader iterator never draws from the global
  RNG (otherwise validation would shift the RNG stream of the following training batches).
- :class:`RNGStateCallback` — stores the global RNG states (and a method's per-rank generators,
  ``rank_generators()``) of every rank in every checkpoint and restores them right before the first
  training batch after a resume, i.e. at the same point of the RNG stream where the interrupted run
  saved them (the end of the previous training batch). Under DDP the states are gathered where every
  rank arrives in the same order — the end of every training batch and of every training epoch — never
  while a checkpoint is written (see ``spikeforge.callbacks.collectives``).

Lightning internals. The restart position (``fit_loop.epoch_loop.batch_progress``), the training loader
fetcher (``fit_loop._data_fetcher``, re-iterated after a mid-epoch restore) and the epoch accumulators
(``fit_loop.epoch_loop._results``) are not public API, so the Lightning versions this was checked
against are pinned (:data:`SUPPORTED_LIGHTNING`, ``pyproject.toml``); ``tests/test_resume.py`` fails
with a clear message on any other version, and a run warns once. (Lightning's stateful-dataloader
support would replace the sampler part, but not the RNG states or the accumulators.)

Together: a CPU run with a fixed seed, killed at any point and resumed from its last checkpoint,
reproduces the uninterrupted run exactly as long as loading a batch draws no random numbers (true for
``digits`` and any dataset without random augmentation; with random augmentation the resumed epoch sees
the same samples in the same order, with other random crops/flips).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import CombinedLoader
from packaging.version import Version
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

log = logging.getLogger("spikeforge")

# Lightning versions whose loop internals this module was checked against: [first, end)
SUPPORTED_LIGHTNING = ("2.6.0", "2.7.0")


def lightning_supported(version: str = L.__version__) -> bool:
    lo, hi = SUPPORTED_LIGHTNING
    return Version(lo) <= Version(version) < Version(hi)


def lightning_version_notice(version: str = L.__version__) -> str | None:
    """None inside :data:`SUPPORTED_LIGHTNING`, else what to do about it."""
    if lightning_supported(version):
        return None
    lo, hi = SUPPORTED_LIGHTNING
    return (f"lightning {version} is outside {lo} <= version < {hi}, the range the exact-resume code "
            "(spikeforge/callbacks/resume.py) reads loop internals of; install the pinned version "
            "(pip install -r requirements.txt) or re-check that module and widen SUPPORTED_LIGHTNING")

# ---- sampler ------------------------------------------------------------------------------------


class ResumableSampler(DistributedSampler):
    """Seeded (``seed``, ``epoch``) permutation, sharded over ranks, able to start mid-epoch.

    ``set_epoch`` is called by Lightning before every epoch; ``skip_batches(n, batch_size)`` is set by
    :class:`RNGStateCallback`/``spikeforge.run`` when the fit loop restarts mid-epoch and applies to the
    next iteration only.
    """

    def __init__(self, dataset: Any, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if dist.is_available() and dist.is_initialized():
            num_replicas, rank = dist.get_world_size(), dist.get_rank()
        else:
            num_replicas, rank = 1, 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self._skip = 0

    def skip_batches(self, batches: int, batch_size: int) -> None:
        self._skip = max(int(batches), 0) * int(batch_size)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:  # pad to a multiple of num_replicas (DistributedSampler semantics)
            pad = self.total_size - len(indices)
            indices += (indices * math.ceil(pad / max(len(indices), 1)))[:pad]
        else:
            indices = indices[: self.total_size]
        indices = indices[self.rank : self.total_size : self.num_replicas]
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])


def _loader_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _rebuild(dl: DataLoader, sampler: Any, generator: torch.Generator) -> DataLoader:
    return DataLoader(
        dl.dataset,
        batch_size=dl.batch_size,
        sampler=sampler,
        num_workers=dl.num_workers,
        collate_fn=dl.collate_fn,
        pin_memory=dl.pin_memory,
        drop_last=dl.drop_last,
        timeout=dl.timeout,
        worker_init_fn=dl.worker_init_fn,
        persistent_workers=dl.persistent_workers,
        prefetch_factor=dl.prefetch_factor if dl.num_workers > 0 else None,
        generator=generator,
    )


def resumable_loader(dl: Any, seed: int) -> Any:
    """``dl`` with a :class:`ResumableSampler` (training) — returned unchanged when it is not a plain
    map-style ``DataLoader`` with a random or sequential sampler and an integer batch size."""
    if not isinstance(dl, DataLoader) or dl.batch_size is None:
        return dl
    if isinstance(dl.sampler, RandomSampler):
        shuffle = True
    elif isinstance(dl.sampler, SequentialSampler):
        shuffle = False
    else:
        return dl
    sampler = ResumableSampler(dl.dataset, shuffle=shuffle, seed=seed, drop_last=dl.drop_last)
    return _rebuild(dl, sampler, _loader_generator(seed))


def _own_generator(dl: Any, seed: int) -> Any:
    """Evaluation loader whose iterator creation draws from its own generator, not the global RNG."""
    if not isinstance(dl, DataLoader) or dl.generator is not None or dl.batch_size is None:
        return dl
    if not isinstance(dl.sampler, SequentialSampler):
        return dl
    return _rebuild(dl, dl.sampler, _loader_generator(seed))


def make_resumable(datamodule: L.LightningDataModule, seed: int) -> L.LightningDataModule:
    """Wrap the datamodule's loader hooks in place (see module docstring); returns it."""
    train_fn = datamodule.train_dataloader
    datamodule.train_dataloader = lambda: resumable_loader(train_fn(), seed)  # type: ignore[method-assign]
    for i, stage in enumerate(("val_dataloader", "test_dataloader"), start=1):
        fn = getattr(datamodule, stage)
        setattr(datamodule, stage, lambda fn=fn, i=i: _own_generator(fn(), seed + 1000 * i))
    return datamodule


def find_resumable_sampler(trainer: L.Trainer) -> tuple[ResumableSampler | None, int]:
    """The training loader's :class:`ResumableSampler` and batch size, if there is one."""
    loaders = trainer.train_dataloader  # public: the iterables of the fit loop's combined loader
    if loaders is None:
        return None, 0
    for dl in CombinedLoader(loaders).flattened:
        sampler = getattr(dl, "sampler", None)
        if isinstance(sampler, ResumableSampler):
            return sampler, int(dl.batch_size or 0)
    return None, 0


# ---- RNG states ---------------------------------------------------------------------------------


def collect_rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGStateCallback(L.Callback):
    """Saves the global RNG states of every rank (and the module's ``rank_generators()``) in
    checkpoints; on resume restores them before the first training batch and makes the
    :class:`ResumableSampler` skip the batches already trained."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._module: L.LightningModule | None = None
        self._per_rank: list[Any] | None = None  # every rank's states at the last gather (DDP)
        self._group: Any = None
        notice = lightning_version_notice()
        if notice:
            log.warning("resume may not be exact: %s", notice)

    @property
    def state_key(self) -> str:
        return "RNGStateCallback"

    def _generators(self) -> dict[str, torch.Generator]:
        fn = getattr(self._module, "rank_generators", None)
        return fn() if callable(fn) else {}

    def _local_states(self) -> dict[str, Any]:
        states = collect_rng_states()
        generators = self._generators()
        if generators:
            states["generators"] = {name: g.get_state() for name, g in generators.items()}
        return states

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._module = pl_module
        # object gathers travel over gloo (CPU) even under NCCL: no device round trip per step;
        # setup runs on every rank in the same order, as new_group requires
        if trainer.world_size > 1 and dist.is_initialized() and self._group is None and \
                dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")

    def _gather(self, trainer: L.Trainer) -> None:
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self._local_states(), group=self._group)
            self._per_rank = gathered

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._gather(trainer)  # for checkpoints taken after this batch (every N steps, preemption)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._gather(trainer)  # for the epoch-end checkpoints (after validation)

    def state_dict(self) -> dict[str, Any]:
        # no collective here: Lightning builds the checkpoint on every rank, rank 0 writes it.
        # Under DDP the states of the last gather; a checkpoint taken before the first training batch
        # holds rank 0's only (the other ranks of a resume then keep their seeded states)
        if self._per_rank is not None:
            return {"per_rank": self._per_rank}
        return {"per_rank": [self._local_states()]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        per_rank = state_dict.get("per_rank", [])
        if _rank() < len(per_rank):  # a run resumed on more ranks than it had keeps the seeded states
            self._pending = per_rank[_rank()]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler, batch_size = find_resumable_sampler(trainer)
        # checkpoints are taken in on_train_batch_end, where `processed` already counts that batch
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if sampler is not None and 0 < done < trainer.num_training_batches:
            # the restored loop continues at batch `done` of this epoch: skip what was trained
            sampler.set_epoch(trainer.current_epoch)
            sampler.skip_batches(done, batch_size)
            _restart_iterator(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            generators = self._generators()
            for name, state in self._pending.get("generators", {}).items():
                if name in generators:
                    generators[name].set_state(state)
            self._pending = None


def _restart_iterator(trainer: L.Trainer) -> None:
    """Re-create the fit loop's training iterator so a changed sampler position takes effect."""
    fetcher = trainer.fit_loop._data_fetcher
    if fetcher is not None:
        iter(fetcher)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


# ---- epoch accumulators ---------------------------------------------------------------------------


def _result_collection(trainer: L.Trainer) -> Any:
    """Lightning's accumulators of the values ``self.log``-ged in training steps (Lightning 2.6 keeps
    them in the training epoch loop, outside its checkpoint state)."""
    return getattr(trainer.fit_loop.epoch_loop, "_results", None)


class EpochAccumulatorState(L.Callback):
    """Keeps the epoch means of training metrics exact across a mid-epoch resume.

    Epoch-level training logs (``train/loss_epoch``, ``train/acc1``) accumulate over the batches of an
    epoch in torchmetrics states — the module's metrics and Lightning's logged-value accumulators —
    none of which Lightning checkpoints. This callback stores them in every checkpoint and, when a run
    resumes in the middle of an epoch, merges them back: the module's metrics before the first resumed
    batch, Lightning's accumulators (created by that batch's first ``log``) right after it. On one
    process only: under DDP each rank's accumulators differ, and gathering them would need a
    collective inside checkpoint writing (rank zero), so a DDP resume's first epoch aggregates the
    batches after the resume."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "EpochAccumulatorState"

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if trainer.world_size != 1 or not trainer.training:
            return
        from torchmetrics import Metric

        module = {name: {k: _detached(v) for k, v in m.metric_state.items()}
                  for name, m in pl_module.named_modules() if isinstance(m, Metric) and m.update_count > 0}
        logged = {key: {"value": _detached(rm.value),
                        "cumulated_batch_size": _detached(getattr(rm, "cumulated_batch_size", None))}
                  for key, rm in (_result_collection(trainer) or {}).items()
                  if getattr(rm, "is_tensor", False) and rm.meta.on_epoch and rm.update_called}
        checkpoint[self.state_key] = {"module": module, "logged": logged}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(self.state_key)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if not (0 < done < trainer.num_training_batches) or trainer.world_size != 1:
            self._pending = None  # an epoch-end checkpoint: the next epoch starts from zero

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending is None:
            return
        modules = dict(pl_module.named_modules())
        for name, state in self._pending["module"].items():
            metric = modules.get(name)
            if metric is None:
                continue
            state = {k: _to(v, pl_module.device) for k, v in state.items()}
            try:
                metric.merge_state(state)
            except RuntimeError:  # a metric that cannot merge: it has seen no batch yet, so set its state
                for k, v in state.items():
                    setattr(metric, k, v)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._pending is None:
            return
        results = _result_collection(trainer) or {}
        for key, saved in self._pending["logged"].items():
            rm = results.get(key)
            if rm is None or not getattr(rm, "is_tensor", False):
                continue
            value = saved["value"].to(rm.value.device)
            if rm.meta.is_max_reduction:
                rm.value = torch.maximum(rm.value, value)
            elif rm.meta.is_min_reduction:
                rm.value = torch.minimum(rm.value, value)
            else:  # mean (value is the batch-size-weighted sum) or sum
                rm.value = rm.value + value
                if saved["cumulated_batch_size"] is not None and rm.meta.is_mean_reduction:
                    rm.cumulated_batch_size = rm.cumulated_batch_size + saved["cumulated_batch_size"].to(
                        rm.cumulated_batch_size.device)
        self._pending = None


def _detached(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().clone()
    if isinstance(v, list):
        return [_detached(x) for x in v]
    return v


def _to(v: Any, device: torch.device) -> Any:
    if isinstance(v, torch.Tensor):
        return v.to(device)
    if isinstance(v, list):
        return [_to(x, device) for x in v]
    return v
