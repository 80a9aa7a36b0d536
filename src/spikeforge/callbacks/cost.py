"""Cost of training: wall time per optimiser step and peak memory, for ``results.json``.

On CUDA a step is timed by two CUDA events recorded on the stream around it, read once at the end of
every training epoch, so timing adds no host-device synchronisation to the step; on CPU by the
host clock.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any

import lightning as L
import torch


def peak_host_memory_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


class CostMonitor(L.Callback):
    """Times every training batch (forward + backward + optimiser step); the first ``warmup``
    batches are left out of the median."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = warmup
        self.step_times: list[float] = []
        self._t0 = 0.0
        # CUDA: (start, end) events of the steps not read yet (read at epoch end, one sync per epoch)
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._start: torch.cuda.Event | None = None
        self.fit_start = 0.0
        self.fit_seconds = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start = time.perf_counter()
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read_events()
        self.fit_seconds = time.perf_counter() - self.fit_start

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
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

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read_events()

    def _read_events(self) -> None:
        """Wait for the last recorded step (the epoch's one synchronisation) and convert its events."""
        if not self._events:
            return
        self._events[-1][1].synchronize()
        self.step_times.extend(start.elapsed_time(end) / 1000.0 for start, end in self._events)
        self._events.clear()

    def summary(self, device: torch.device) -> dict[str, float | int | None]:
        self._read_events()
        times = self.step_times[self.warmup :] or self.step_times
        out: dict[str, float | int | None] = {
            "time_per_step_s": statistics.median(times) if times else None,
            "train_steps_timed": len(times),
            "fit_wall_time_s": self.fit_seconds,
            "peak_host_memory_bytes": peak_host_memory_bytes(),
            "peak_gpu_memory_bytes": None,
        }
        if device.type == "cuda":
            out["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
        return out
