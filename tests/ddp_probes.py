"""A test-only callback that DDP ranks started by ``src/train.py`` import (``PYTHONPATH`` includes this
folder): what each rank trained and which random draws it made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from spikeforge.neurons.asgl import hybrid_spikes


class RecordRank(L.Callback):
    """Every rank saves ``<dirpath>/<tag>_rank<r>.pt``: the job tag it was configured with, its world
    size, final parameters, the first ASGL mask its first noisy neuron drew and every SLTT-K step choice."""

    def __init__(self, dirpath: str, tag: str) -> None:
        self.dirpath, self.tag = Path(dirpath), str(tag)
        self.masks: list[torch.Tensor] = []
        self.steps: list[list[int]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        spikes = hybrid_spikes(pl_module.net)
        if spikes:  # record what the neuron draws, without drawing anything itself
            first, draw = spikes[0], spikes[0].draw_mask

            def recording_draw(x: torch.Tensor) -> torch.Tensor | None:
                mask = draw(x)  # None when p = 0 (asgl_sg: every element in spike mode)
                if not self.masks and mask is not None:
                    self.masks.append(mask.detach().cpu().clone())
                return mask

            first.draw_mask = recording_draw  # type: ignore[method-assign]
        if hasattr(pl_module, "draw_grad_steps"):
            draw_steps = pl_module.draw_grad_steps

            def recording_steps() -> list[int]:
                steps = draw_steps()
                self.steps.append(list(steps))
                return steps

            pl_module.draw_grad_steps = recording_steps  # type: ignore[method-assign]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "tag": self.tag, "world_size": trainer.world_size, "rank": trainer.global_rank,
            # parameters only: without SyncBN the BN running statistics stay per rank
            "params": {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
            "masks": self.masks, "steps": self.steps,
        }
        torch.save(record, self.dirpath / f"{self.tag}_rank{trainer.global_rank}.pt")


class RecordLayout(L.Callback):
    """Every rank writes ``<dirpath>/layout_rank<r>.json``: its global, local and node rank, the world
    size, the cluster environment Lightning chose, the rendezvous port and the training sampler's shard
    (which rank's share of the data this process trains on), next to the ``SLURM_*`` values it was
    started with."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import json
        import os

        env = trainer.strategy.cluster_environment
        sampler = trainer.train_dataloader.sampler
        record = {
            "global_rank": trainer.global_rank, "local_rank": trainer.local_rank, "node_rank": trainer.node_rank,
            "world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
            "environment": type(env).__name__, "port": env.main_port,
            "sampler": [sampler.rank, sampler.num_replicas], "threads": torch.get_num_threads(),
            "slurm": {k: os.environ.get(k) for k in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID")},
        }
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / f"layout_rank{trainer.global_rank}.json").write_text(json.dumps(record))


class StallRank(L.Callback):
    """Rank ``rank`` stops answering after its first training batch (a stuck rank), until its parent
    process (rank 0) is gone — so the test leaves no process behind."""

    def __init__(self, rank: int = 1, seconds: float = 900) -> None:
        self.rank, self.seconds = rank, seconds

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        import os
        import time

        if trainer.global_rank != self.rank:
            return
        parent, end = os.getppid(), time.monotonic() + self.seconds
        while os.getppid() == parent and time.monotonic() < end:
            time.sleep(1)


# ---- SyncBN on two gloo ranks: ``python tests/ddp_probes.py syncbn <out.pt>`` ----------------------


def _syncbn_rank(rank: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist
    from torch import nn

    from spikeforge.layers.norm import StepwiseBatchNorm
    from spikeforge.layers.tdbn import ThresholdDependentBN
    from spikeforge.plugins import TimeSyncBatchNorm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)  # same norms and the same global batch on both ranks
    norms = nn.ModuleDict({"tdbn": ThresholdDependentBN(3, alpha=0.7, v_th=0.5), "bn_step": StepwiseBatchNorm(3)})
    for m in norms.values():
        nn.init.uniform_(m.weight, 0.5, 1.5)
        nn.init.uniform_(m.bias, -0.5, 0.5)
    x = torch.randn(4, 8, 3, 5, 5) * 2 + 1  # [T, N, C, H, W], the global batch
    w = torch.randn_like(x)
    ref = {k: v for k, v in norms.items()}
    synced = TimeSyncBatchNorm().apply(nn.ModuleDict({k: _copy(v) for k, v in norms.items()}))
    diffs: dict[str, float] = {}
    half = slice(4 * rank, 4 * rank + 4)
    for name in norms:
        xr, xs = x.clone().requires_grad_(), x[:, half].clone().requires_grad_()
        yr = ref[name](xr)  # one process, whole batch
        (yr * w).sum().backward()
        ys = synced[name](xs)  # this rank's half, statistics over both ranks
        (ys * w[:, half]).sum().backward()
        grads = [p.grad.clone() for p in synced[name].parameters()]
        for g in grads:
            dist.all_reduce(g)  # the whole-batch gradient, as DDP averages (here: sums) it
        diffs[f"{name}/train"] = float((ys - yr[:, half]).detach().abs().max())
        diffs[f"{name}/input_grad"] = float((xs.grad - xr.grad[:, half]).abs().max())
        diffs[f"{name}/param_grad"] = max(float((g - p.grad).abs().max())
                                          for g, p in zip(grads, ref[name].parameters(), strict=True))
        diffs[f"{name}/running"] = max(float((synced[name].running_mean - ref[name].running_mean).abs().max()),
                                       float((synced[name].running_var - ref[name].running_var).abs().max()))
        synced[name].eval()
        ref[name].eval()
        with torch.no_grad():
            diffs[f"{name}/eval"] = float((synced[name](x[:, half]) - ref[name](x[:, half])).abs().max())
        # the converted module is still a subclass of its own class (its forward survives)
        diffs[f"{name}/not_own_class"] = float(not isinstance(synced[name], type(ref[name])))
    if rank == 0:
        torch.save(diffs, out)
    dist.destroy_process_group()


def _copy(m: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(m)


# ---- memory=checkpoint|auto on two gloo ranks: ``python tests/ddp_probes.py recompute <out.pt>`` --------


def _recompute_rank(rank: int, port: int, out: str) -> None:
    """torch DDP over an ASGL convnet (per-rank mask streams), two SGD steps per memory mode; rank 0
    saves the largest parameter difference of each mode from memory=none and from rank 1."""
    import copy
    import os

    import torch.distributed as dist
    from spikingjelly.activation_based import functional
    from torch.nn.parallel import DistributedDataParallel as DDP

    from spikeforge.distributed import rank_generator
    from spikeforge.layers import norm_factory
    from spikeforge.models import build_model
    from spikeforge.neurons import neuron_factory
    from spikeforge.recompute import apply_memory, choose_units

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    base = build_model("convnet", 10, 3, neuron=neuron_factory("asgl_lif", p=0.5), norm=norm_factory("bn"),
                       channels=(4, 8), pool_size=1)
    g = torch.Generator().manual_seed(10 + rank)  # this rank's data
    batches = [(torch.rand(2, 4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(2)]
    params: dict[str, list[torch.Tensor]] = {}
    for mode in ("none", "checkpoint", "auto"):
        net = apply_memory(copy.deepcopy(base), mode)
        gen = rank_generator(7, "asgl/masks", rank=rank)
        for m in net.modules():
            if hasattr(m, "generator"):
                m.generator = gen
        if mode == "auto":
            choose_units(net, lambda n=net: n(batches[0][0]), None, "speed")
            functional.reset_net(net)
        ddp = DDP(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        for x, y in batches:
            opt.zero_grad()
            functional.reset_net(net)
            torch.nn.functional.cross_entropy(ddp(x).mean(0), y).backward()
            opt.step()
        params[mode] = [p.detach().clone() for p in net.parameters()]
    other = [[torch.empty_like(p) for p in params["none"]] for _ in range(2)]
    for mine, theirs in zip(params["checkpoint"], other[1], strict=True):
        dist.all_gather([torch.empty_like(mine), theirs] if rank == 0 else [theirs, torch.empty_like(mine)], mine)
    if rank == 0:
        diffs = {mode: max(float((a - b).abs().max()) for a, b in zip(ps, params["none"], strict=True))
                 for mode, ps in params.items()}
        diffs["ranks"] = max(float((a - b).abs().max()) for a, b in zip(params["checkpoint"], other[1], strict=True))
        torch.save(diffs, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    import socket
    import sys

    import torch.multiprocessing as mp

    if sys.argv[1] == "syncbn":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free_port = s.getsockname()[1]
        mp.spawn(_syncbn_rank, args=(free_port, sys.argv[2]), nprocs=2)
    if sys.argv[1] == "recompute":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free_port = s.getsockname()[1]
        mp.spawn(_recompute_rank, args=(free_port, sys.argv[2]), nprocs=2)
