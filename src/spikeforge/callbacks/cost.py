"""Cost of training for ``results.json``: wall time per optimiser step, the run's own peak memory
(host and GPU, reset when the run starts) and the peak bytes saved for backward in one training
step (figures defined in :mod:`spikeforge.utils.memory`).

On CUDA a step is timed by two CUDA events recorded on the stream around it, read once at the end of
every training epoch, so timing adds no host-device synchronisation to the step; on CPU by the
host clock.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import lightning as L
import torch

from spikeforge.utils.memory import SavedBytesCounter, peak_host_memory_bytes, reset_peak_memory


class CostMonitor(L.Callback):
    """Times every training batch (forward + backward + optimiser step); the first ``warmup``
    batches are left out of the median. The first training batch of the fit runs under a
    :class:`SavedBytesCounter` (its hooks cost a little time; that batch is a warm-up one).
    :meth:`start_run` opens the run's memory account (call it before the run allocates)."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = warmup
        self.step_times: list[float] = []
        self._t0 = 0.0
        # CUDA: (start, end) events of the steps not read yet (read at epoch end, one sync per epoch)
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._start: torch.cuda.Event | None = None
        self.fit_start = 0.0
        self.fit_seconds = 0.0
        self.host_scope: str | None = None
        self.saved_bytes: SavedBytesCounter | None = None
        self._counting = False

    def start_run(self) -> None:
        self.host_scope = reset_peak_memory()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read_events()
        self.fit_seconds = time.perf_counter() - self.fit_start

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.saved_bytes is None:
            self.saved_bytes = SavedBytesCounter(pl_module.parameters())
            self.saved_bytes.__enter__()
            self._counting = True
        if pl_module.device.type == "cuda":
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if pl_module.device.type == "cuda":
            if self._start is not None:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                self._events.append((self._start, end))
                self._start = None
        else:
            self.step_times.append(time.perf_counter() - self._t0)
        self._stop_counting()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop_counting()

    def _stop_counting(self) -> None:
        if self._counting and self.saved_bytes is not None:
            self.saved_bytes.__exit__(None, None, None)
            self._counting = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read_events()

    def _read_events(self) -> None:
        """Wait for the last recorded step (the epoch's one synchronisation) and convert its events."""
        if not self._events:
            return
        self._events[-1][1].synchronize()
        self.step_times.extend(start.elapsed_time(end) / 1000.0 for start, end in self._events)
        self._events.clear()

    def summary(self, device: torch.device) -> dict[str, Any]:
        self._read_events()
        times = self.step_times[self.warmup :] or self.step_times
        host, scope = peak_host_memory_bytes(self.host_scope)
        counted = self.saved_bytes is not None and not self._counting
        out: dict[str, Any] = {
            "time_per_step_s": statistics.median(times) if times else None,
            "train_steps_timed": len(times),
            "fit_wall_time_s": self.fit_seconds,
            "peak_host_memory_bytes": host,
            "peak_host_memory_scope": scope,
            "peak_gpu_memory_bytes": None,
            # peak of the bytes autograd holds for backward during one training step (incl. parameters)
            "saved_for_backward_peak_bytes": self.saved_bytes.peak if counted else None,
            "saved_for_backward_param_bytes": self.saved_bytes.peak_param_bytes if counted else None,
        }
        if device.type == "cuda":
            out["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
        return out
