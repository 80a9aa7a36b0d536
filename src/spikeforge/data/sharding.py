"""Evaluation loaders under DDP: every sample scored exactly once.

Lightning gives a map-style loader with a plain sampler a ``DistributedSampler``, which pads the split
to a multiple of the number of ranks by repeating samples (a 143-image split on 2 ranks is scored as
144). :class:`UnpaddedDistributedSampler` deals rank ``r`` of ``W`` the indices ``r, r + W, ...`` of
the split, in order, without padding: the last shards are one sample shorter. Being a
``DistributedSampler``, Lightning keeps it as it is.

Uneven shards are exact with the way metrics are reduced: torchmetrics' states (true positives, counts)
are summed over ranks, and a loss logged with ``batch_size`` and ``sync_dist=True`` is reduced by
Lightning as a sum of per-batch sums divided by the summed batch sizes. A rank may also run one
batch fewer than another: evaluation steps hold no collective (the DDP forward synchronises nothing
without gradients), and the epoch-end reductions run on every rank in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from spikeforge.errors import ConfigError


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank ``r`` of ``W``: indices ``r, r + W, r + 2W, ...`` (every index on exactly one rank)."""

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        n = len(dataset)  # type: ignore[arg-type]
        self.num_samples = len(range(self.rank, n, self.num_replicas))
        self.total_size = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def eval_sampler(dataset: Dataset, what: str = "evaluation split") -> UnpaddedDistributedSampler | None:
    """An :class:`UnpaddedDistributedSampler` while a process group of more than one rank is up, else
    None (the loader's own sequential order)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    world = dist.get_world_size()
    if isinstance(dataset, Sized) and len(dataset) < world:
        raise ConfigError(f"the {what} has {len(dataset)} samples, fewer than the {world} ranks; use fewer "
                          "devices (trainer.devices) or a larger split")
    return UnpaddedDistributedSampler(dataset)
