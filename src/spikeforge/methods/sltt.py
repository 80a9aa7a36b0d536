"""SLTT and SLTT-K (Meng et al., ICCV 2023): online per-step backpropagation, memory O(1) in T.

sltt.md, "The SLTT cut": the network runs one time step at a time (spikingjelly single-step
mode) with ``sltt_lif`` neurons whose charge reads v_{t−1}.detach(), so each step's graph is
complete in itself. Per batch: zero_grad once; for t = 0..T−1 a single-step forward of x_t,
loss_t / T and a backward (gradients accumulate); **one** optimiser step; neuron state reset.
SLTT-K back-propagates a uniform random K-subset of the steps (drawn per batch, without
replacement, from ``spikeforge.distributed.shared_generator(seed, "sltt_k/steps")``, saved in
checkpoints, so every DDP rank draws the same steps and a resumed run continues the same sequence:
gradients of different steps on different ranks would be averaged into an update of no K-subset);
the other steps
run under ``no_grad`` (state and BN statistics still advance) and the loss keeps its 1/T scale.

Lightning plumbing (manual optimisation):
- ``manual_backward`` per step, so AMP loss scaling comes from the precision plugin;
- under DDP the first backward calls of a batch run inside ``strategy.block_backward_sync()``
  (``DistributedDataParallel.no_sync``): one gradient all-reduce per batch, not T;
- LR schedulers are stepped as automatic optimisation steps them (per interval and frequency);
- gradient clipping: ``method.gradient_clip_val`` (Lightning forbids ``trainer.gradient_clip_val``
  with manual optimisation), applied in ``on_before_optimizer_step`` where AMP gradients are
  already unscaled.
Validation and test use the base class's multi-step forward (same outputs as the per-step loop).

``init_from`` (both SLTT and its BPTT twin) loads the network weights of an earlier run before
fitting — ImageNet stage 2 (T = 6) starts from stage 1 (T = 1), sltt.md "Networks and recipes".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ParallelStrategy
from spikingjelly.activation_based import functional
from torch import nn

from spikeforge.distributed import shared_generator
from spikeforge.errors import ConfigError
from spikeforge.losses import LossFn
from spikeforge.methods.base import SpikingClassifier
from spikeforge.utils.checkpoints import load_matching, read_net_state_dict

# Losses that are a mean of per-step terms, so that Σ_t loss(o_t)/T is the loss of the sequence.
PER_STEP_LOSSES = ("tet",)

log = logging.getLogger("spikeforge")


# ---- the per-step loop --------------------------------------------------------------------------
def step_input(x: torch.Tensor, t: int, T: int) -> torch.Tensor:
    """Input of step t: a static image ``[N, C, H, W]`` is the same at every step (direct encoding);
    event frames ``[N, T, C, H, W]`` give ``x[:, t]``."""
    if x.dim() == 5:
        if x.shape[1] != T:
            raise ValueError(f"event frames have {x.shape[1]} steps but T={T}; set data.frames to T")
        return x[:, t]
    if x.dim() == 4:
        return x
    raise ValueError(f"expected images [N, C, H, W] or frames [N, T, C, H, W], got {tuple(x.shape)}")


def online_backward(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: LossFn,
    T: int,
    grad_steps: Sequence[int] | None = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    skip_sync: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SLTT's per-step loop on one batch: accumulates the gradients of Σ_t loss(o_t, y)/T into
    ``.grad`` (no optimiser step, no zero_grad).

    ``net`` is a multi-step model; it runs in single-step mode here and is reset before and after.
    ``grad_steps``: steps whose loss is back-propagated (all when None: SLTT; a K-subset: SLTT-K);
    the others run under ``no_grad``. ``backward`` defaults to ``Tensor.backward``; every backward
    but the last runs inside ``skip_sync()`` (DDP: no gradient all-reduce).
    Returns the detached per-step outputs ``[T, N, C]`` and the loss value (over all T steps).
    """
    grad_set = set(range(T)) if grad_steps is None else {int(t) for t in grad_steps}
    if not grad_set or not grad_set <= set(range(T)):
        raise ValueError(f"grad_steps must be a non-empty subset of 0..{T - 1}, got {sorted(grad_set)}")
    last = max(grad_set)
    backward = backward or torch.Tensor.backward
    outs, total = [], torch.zeros(())
    functional.reset_net(net)
    functional.set_step_mode(net, "s")
    try:
        for t in range(T):
            x_t = step_input(x, t, T)
            if t in grad_set:
                o_t = net(x_t)
                loss_t = criterion(o_t, y) / T  # sltt.md "The SLTT cut": loss_t / T, K-subset too
                with nullcontext() if t == last else skip_sync():
                    backward(loss_t)
            else:
                with torch.no_grad():
                    o_t = net(x_t)
                    loss_t = criterion(o_t, y) / T
            outs.append(o_t.detach())
            total = total.to(loss_t.device) + loss_t.detach().float()
    finally:
        functional.set_step_mode(net, "m")
        functional.reset_net(net)
    return torch.stack(outs), total


# ---- weights from an earlier run ----------------------------------------------------------------
def load_net_weights(net: nn.Module, path: str | Path) -> None:
    """Load the network weights of ``path`` into ``net`` (strict): a spikeforge/Lightning checkpoint
    (keys ``net.*`` of its ``state_dict``) or a bare state dict of the network. Optimiser, schedule
    and epoch are not taken over. Any missing, unexpected or mis-shaped key is an error."""
    load_matching(net, read_net_state_dict(path, "method.init_from"), f"method.init_from={path}")
    log.info("network weights initialised from %s", path)


class _InitFrom:
    """``init_from``: load network weights once, when fitting starts (not when evaluating), before
    Lightning restores a resumed checkpoint (which then wins). ``init_required`` (stage-2 recipes)
    makes fitting without ``init_from`` an error."""

    def setup(self, stage: str) -> None:
        super().setup(stage)  # type: ignore[misc]
        path = self.hparams.get("init_from")  # type: ignore[attr-defined]
        if stage == "fit" and not path and self.hparams.get("init_required"):  # type: ignore[attr-defined]
            raise ConfigError("this recipe fine-tunes a stage-1 model: pass init_from=<stage-1 run dir>/checkpoints/"
                              "last.ckpt (train it first with the matching *_t1 recipe)")
        if stage == "fit" and path and not getattr(self, "_initialised_from", None):
            load_net_weights(self.net, path)  # type: ignore[attr-defined]
            self._initialised_from = str(path)


# ---- the methods ------------------------------------------------------------------------------
class SLTT(_InitFrom, SpikingClassifier):
    """SLTT (``K=None`` or ``K=T``) and SLTT-K (``1 <= K < T``), manual optimisation.

    Args (besides :class:`SpikingClassifier`'s):
        K: steps back-propagated per batch; None means all T (SLTT).
        seed: seed of SLTT-K's step generator (the run's global seed; same on every DDP rank).
        init_from: checkpoint whose network weights initialise the model before fitting.
        init_required: fitting without ``init_from`` is an error (ImageNet stage 2).
        gradient_clip_val / gradient_clip_algorithm: clipping of the accumulated gradient before
            the optimiser step (``norm`` or ``value``; None: no clipping).
    """

    memory_modes = ("none",)  # per-step backward: memory=checkpoint does not apply

    def __init__(
        self,
        *args: Any,
        K: int | None = None,
        seed: int | None = None,
        init_from: str | None = None,
        init_required: bool = False,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        loss_name = self.hparams.loss.get("name")
        if loss_name not in PER_STEP_LOSSES:
            raise ConfigError(f"SLTT back-propagates one loss per time step, so method.loss.name must be "
                              f"one of {', '.join(PER_STEP_LOSSES)} (got {loss_name!r})")
        self.K = self.T if K is None else int(K)
        if not 1 <= self.K <= self.T:
            raise ConfigError(f"method.K must be between 1 and T={self.T} (got K={K}); K=T is plain SLTT")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ConfigError(f"method.gradient_clip_algorithm must be 'norm' or 'value' "
                              f"(got {gradient_clip_algorithm!r})")
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.step_generator = shared_generator(int(seed), "sltt_k/steps")
        self.last_grad_steps: list[int] = []

    # ---- SLTT-K step choice ---------------------------------------------------------------------
    def draw_grad_steps(self) -> list[int]:
        """The steps back-propagated in this batch: all for SLTT, a uniform random K-subset for SLTT-K."""
        if self.K == self.T:
            return list(range(self.T))
        return sorted(torch.randperm(self.T, generator=self.step_generator)[: self.K].tolist())

    # ---- training -------------------------------------------------------------------------------
    def _skip_sync(self) -> AbstractContextManager[Any]:
        strategy = self.trainer.strategy
        return strategy.block_backward_sync() if isinstance(strategy, ParallelStrategy) else nullcontext()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        opt = self.optimizers()
        self.last_grad_steps = self.draw_grad_steps()
        opt.zero_grad()
        out, loss = online_backward(
            self.net, x, y, self.criterion, self.T, self.last_grad_steps,
            backward=self.manual_backward, skip_sync=self._skip_sync,
        )
        opt.step()
        self._step_lr_schedulers("step", batch_idx)
        self.log_step("train", loss, self.readout(out), y)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=float(self.hparams.gradient_clip_val),
                                gradient_clip_algorithm=self.hparams.gradient_clip_algorithm)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self._step_lr_schedulers("epoch", self.current_epoch)

    def _step_lr_schedulers(self, interval: str, index: int) -> None:
        """What automatic optimisation does after an optimiser step / at the end of an epoch."""
        for config in self.trainer.lr_scheduler_configs:
            if config.reduce_on_plateau:
                raise ConfigError("SLTT does not support ReduceLROnPlateau; use scheduler cosine, step or constant")
            if config.interval == interval and (index + 1) % config.frequency == 0:
                self.lr_scheduler_step(config.scheduler, None)

    # ---- checkpoints / results ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["sltt_step_generator"] = self.step_generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "sltt_step_generator" in checkpoint:
            self.step_generator.set_state(checkpoint["sltt_step_generator"])

    def extra_results(self) -> dict[str, Any]:
        return {**super().extra_results(), "sltt_K": self.K}


class SLTTBaselineBPTT(_InitFrom, SpikingClassifier):
    """The BPTT baseline of the SLTT paper: the base multi-step BPTT (same per-step BN and TET loss,
    ``lif`` without the detach, conf/method/bptt_sltt.yaml), plus ``init_from`` for ImageNet stage 2."""

    def __init__(
        self, *args: Any, init_from: str | None = None, init_required: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
