"""Callbacks that keep a run recoverable (declared in ``conf/run_callbacks/default.yaml``, set by ``reliability.*``).

- :class:`LastCheckpoint` — writes ``checkpoints/last.ckpt`` at every epoch end and every N optimiser
  steps (mid-epoch), so a killed run loses at most N steps; with :mod:`spikeforge.callbacks.resume` the resume is exact.
- :class:`PreemptionHandler` — on SIGTERM, SIGUSR1 or SIGUSR2 (SLURM preemption / time limit; sbatch
  ``--signal`` sends SIGUSR1, Hydra's submitit launcher SIGUSR2) finishes the
  current training batch, writes ``last.ckpt`` on every rank's behalf, requeues the SLURM job when
  running under SLURM (``reliability.requeue``) and stops the run with :class:`TrainingInterrupted`.
  The signal only sets a flag: the checkpoint is always taken between two optimiser steps.
- :class:`NonFiniteLossGuard` — a NaN/inf training loss either stops the run with
  :class:`NonFiniteLossError` naming the step (before the optimiser applies it, so the last checkpoint
  on disk stays the last good one), or skips the batch (``reliability.nonfinite_loss=skip``: the
  gradients are dropped, the optimiser leaves every parameter unchanged). It decides once per optimiser
  step (SLTT runs T backward passes per step): the losses of the step are summed on the device, the
  gradients reduced to one max-abs norm per tensor (``torch._foreach_norm``), and the two flags read
  once, after one all-reduce under DDP so all ranks act alike.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint

from spikeforge.errors import SpikeforgeError

log = logging.getLogger("spikeforge")


class TrainingInterrupted(SpikeforgeError):
    """A signal asked the run to stop; a checkpoint was written. Not an error: exit code 0."""

    exit_code = 0


class NonFiniteLossError(SpikeforgeError):
    """The training loss became NaN or infinite."""

    exit_code = 3


def last_checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.ckpt"


class LastCheckpoint(Checkpoint):
    """Owns ``checkpoints/last.ckpt``: written at the end of every training epoch and every
    ``every_n_steps`` optimiser steps (0: epoch ends only). Lightning 2.6's
    ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` only when it also saves a new best, which
    would leave a stale ``last.ckpt`` for resume and eval (so the configs leave ``save_last`` off).

    A ``Checkpoint`` subclass, so Lightning runs its epoch-end hook after every other callback's and
    the module's, and after ``ModelCheckpoint`` (configured first): the best-checkpoint state inside
    ``last.ckpt`` names the best file that exists once the epoch is over, never one it has replaced."""

    def __init__(self, dirpath: str | Path, every_n_steps: int = 0) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = int(every_n_steps)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps <= 0 or trainer.fast_dev_run or trainer.sanity_checking:
            return
        if trainer.global_step > 0 and trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path)


PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class PreemptionHandler(L.Callback):
    """See module docstring. ``signals`` default: :data:`PREEMPTION_SIGNALS`; ``enabled=False``
    (``reliability.handle_signals=false``) leaves the signal handlers alone."""

    def __init__(self, dirpath: str | Path, requeue: bool = True,
                 signals: tuple[int, ...] = PREEMPTION_SIGNALS, enabled: bool = True) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.requeue = requeue
        self.enabled = bool(enabled)
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # installed after Lightning's own handlers (registered when fit starts), replacing them for
        # the training phase: we checkpoint between steps instead of inside the signal handler
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            return
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handler)

    def _restore(self) -> None:
        for s, h in self._previous.items():
            if h is not None:
                signal.signal(s, h)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.enabled:
            return
        stop = trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)
        if not stop:
            return
        name = signal.Signals(self.received).name if self.received is not None else "a signal on another rank"
        trainer.save_checkpoint(self.path)
        requeued = False
        if self.requeue and trainer.is_global_zero and "SLURM_JOB_ID" in os.environ:
            job = os.environ.get("SLURM_ARRAY_JOB_ID")
            job_id = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ["SLURM_JOB_ID"]
            try:
                requeued = subprocess.call(["scontrol", "requeue", job_id]) == 0
            except OSError:
                requeued = False
        raise TrainingInterrupted(
            f"stopped by {name} after step {trainer.global_step}: checkpoint saved to {self.path}"
            + ("; SLURM job requeued" if requeued else "")
            + f"; continue with: resume=auto run_dir={self.path.parent.parent}"
        )


class NonFiniteLossGuard(L.Callback):
    """See module docstring. ``action``: ``stop`` or ``skip``."""

    def __init__(self, action: str = "stop", last_checkpoint: str | Path | None = None) -> None:
        if action not in ("stop", "skip"):
            raise ValueError(f"action must be 'stop' or 'skip', got {action!r}")
        self.action = action
        self.last_checkpoint = Path(last_checkpoint) if last_checkpoint else None
        self._skip = False
        self._loss_sum: torch.Tensor | None = None
        self.skipped = 0

    @property
    def state_key(self) -> str:
        return "NonFiniteLossGuard"

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        # device-side only: a NaN/inf in any loss of the step makes the sum non-finite
        loss = loss.detach().float().sum()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss

    def _fault(self, trainer: L.Trainer, what: str, value: str) -> None:
        where = (f"global step {trainer.global_step} (epoch {trainer.current_epoch}, "
                 f"batch {trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1})")
        if self.action == "skip":
            if not self._skip:
                self.skipped += 1
                log.warning("non-finite training %s at %s: batch skipped (%d so far)", what, where, self.skipped)
            self._skip = True
            return
        keep = (f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint
                and self.last_checkpoint.exists() else "no checkpoint was written before it")
        raise NonFiniteLossError(
            f"training {what} became {value} at {where}; {keep}; "
            "lower method.optimizer.lr, or set reliability.nonfinite_loss=skip to skip such batches"
        )

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        loss, self._loss_sum = self._loss_sum, None
        # a finite loss can still give non-finite gradients (a NaN input is silenced by the spike
        # threshold in the forward pass but not in the surrogate backward); 16-mixed is left to its
        # GradScaler, for which inf gradients are routine
        grads = [] if str(trainer.precision) == "16-mixed" else [
            p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        device = pl_module.device if loss is None else loss.device
        bad_loss = ~torch.isfinite(loss) if loss is not None else torch.zeros((), dtype=torch.bool, device=device)
        bad_grad = torch.zeros((), dtype=torch.bool, device=device)
        if grads:  # the max-abs norm of a tensor is non-finite iff one of its elements is (never overflows)
            norms = torch._foreach_norm(grads, float("inf"))
            bad_grad = ~torch.isfinite(torch.stack([n.float().to(device) for n in norms])).all()
        flags = torch.stack([bad_loss, bad_grad]).float()
        if trainer.world_size > 1:  # every rank reaches this hook once per optimiser step
            flags = trainer.strategy.reduce(flags, reduce_op="sum")
        n_bad_loss, n_bad_grad = flags.tolist()  # the one host read per step
        if n_bad_loss:
            value = str(loss.item()) if loss is not None and not torch.isfinite(loss) else "non-finite on another rank"
            self._fault(trainer, "loss", value)
        elif n_bad_grad:
            self._fault(trainer, "gradient", "non-finite")
        if self._skip:  # parameters without a gradient are left untouched by torch optimisers
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._skip = False
