"""Memory figures of a run, one implementation for ``results.json`` and ``scripts/bench.py``:

- the run's own peak: on CUDA ``torch.cuda.max_memory_allocated`` after a reset at the start of the
  run; on the host the resident-set high-water mark (``VmHWM``), reset at the start of the run by
  writing ``5`` to ``/proc/self/clear_refs`` (Linux ≥ 4.0), so that jobs of one process — a Hydra
  sweep under the default launcher — each report their own peak. Where that is unavailable the
  figure is the process's peak since it started (``ru_maxrss``) and its scope says so;
- the peak bytes saved for backward during one training step (:class:`SavedBytesCounter`): the
  figure the SLTT paper compares (sltt.md: SLTT's per-step backward keeps one step's graph).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
import sys
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

SCOPE_RUN = "run (VmHWM, reset at the start of the run)"
SCOPE_PROCESS = "process since start (ru_maxrss; /proc/self/clear_refs unavailable)"


# ---- host and GPU peaks -------------------------------------------------------------------------
def _vm_hwm_bytes() -> int | None:
    try:
        m = re.search(r"^VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def reset_peak_memory() -> str:
    """Start a run's memory account: release what earlier jobs of this process freed, reset the
    host high-water mark and the CUDA peaks. Returns the scope of the host figure that follows."""
    gc.collect()  # earlier jobs' reference cycles (trainer, module) still hold tensors
    if sys.platform.startswith("linux"):
        # hand freed heap pages back to the OS, so the new mark starts from live memory
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS (proc(5), clear_refs)
    except OSError:
        return SCOPE_PROCESS
    return SCOPE_RUN if _vm_hwm_bytes() is not None else SCOPE_PROCESS


def peak_host_memory_bytes(scope: str | None = None) -> tuple[int, str]:
    """``(bytes, scope)``: VmHWM when the mark could be reset (``scope`` from
    :func:`reset_peak_memory`), else the process's ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    hwm = _vm_hwm_bytes()
    if hwm is not None and scope != SCOPE_PROCESS:
        return hwm, scope or "process since start or last reset (VmHWM)"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), SCOPE_PROCESS


# ---- saved-for-backward bytes -------------------------------------------------------------------
class SavedBytesCounter:
    """Live and peak bytes of the tensors autograd saves for backward, inside ``with counter:``.

    Every saved tensor is counted once per storage (a storage saved by several nodes, or a view of
    it, counts once) for as long as some graph node holds it: the pack hook wraps the tensor in a
    handle whose release (graph freed after backward, or dropped) decrements the count.
    ``peak_param_bytes`` is the part of the peak held by parameter storages (resident anyway).
    """

    def __init__(self, params: Iterable[torch.Tensor] = ()) -> None:
        self.param_ptrs = {p.untyped_storage().data_ptr() for p in params}
        self.live = 0
        self.live_params = 0
        self.peak = 0
        self.peak_param_bytes = 0
        self.saved_calls = 0
        self._refs: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> Any:
        self.saved_calls += 1
        storage = t.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0:
            return t
        n = self._refs.get(key, 0)
        self._refs[key] = n + 1
        if n == 0:
            self.live += nbytes
            if key in self.param_ptrs:
                self.live_params += nbytes
            if self.live > self.peak:
                self.peak, self.peak_param_bytes = self.live, self.live_params
        handle = _Saved(t.detach())  # detached: no reference cycle through a saved output's grad_fn
        weakref.finalize(handle, self._release, key, nbytes)
        return handle

    @staticmethod
    def _unpack(handle: Any) -> torch.Tensor:
        return handle.tensor if isinstance(handle, _Saved) else handle

    def _release(self, key: int, nbytes: int) -> None:
        n = self._refs.get(key, 0) - 1
        if n > 0:
            self._refs[key] = n
            return
        self._refs.pop(key, None)
        self.live -= nbytes
        if key in self.param_ptrs:
            self.live_params -= nbytes

    def __enter__(self) -> SavedBytesCounter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)


class _Saved:
    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
