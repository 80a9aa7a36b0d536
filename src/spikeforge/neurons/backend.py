"""Which implementation a neuron's multi-step forward runs: ``neuron.backend=auto|reference|fused``.

- ``reference``: the Python loop over T (eager PyTorch, one small kernel per operation and step).
- ``fused``: the same pure multi-step function compiled by ``torch.compile`` (Inductor: Triton kernels on
  CUDA, C++ on CPU), so the loop over T runs as a few fused kernels. The function is the reference's own
  code, autograd included (custom ``autograd.Function`` surrogates keep their exact backward), so outputs
  and gradients agree to rounding. spikingjelly's ``lif``/``if`` use spikingjelly's own fused kernels.
- ``auto`` (default): ``fused`` on CUDA where it can run, else ``reference`` (CPU, tests).

Inside an enclosing ``torch.compile`` (``model.compile=true``) the reference function is traced
instead: the outer compilation fuses it with its neighbours.

The membrane state of every neuron is kept in float32 (at least) under autocast; inputs may be half
(:func:`state_dtype`).
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from typing import Any

import torch

from spikeforge.errors import ConfigError

BACKENDS = ("auto", "reference", "fused")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown neuron.backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return backend


def state_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of the membrane state for input ``x``: float32 at least (half inputs under autocast)."""
    return torch.promote_types(x.dtype, torch.float32)


@functools.cache
def fused_unavailable_reason(device_type: str) -> str | None:
    """Why ``torch.compile`` cannot fuse a neuron on ``device_type`` here, or None when it can."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python/platform"
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed (pip install triton)"
    if device_type == "cpu":
        cxx = os.environ.get("CXX") or "g++"
        return None if shutil.which(cxx) or shutil.which("c++") else "no C++ compiler (g++) for torch.compile on CPU"
    return f"no fused implementation for device type {device_type!r}"


def use_fused(backend: str, device: torch.device) -> bool:
    """True when the compiled multi-step function should run for an input on ``device``."""
    if backend == "reference" or torch.compiler.is_compiling():
        return False
    reason = fused_unavailable_reason(device.type)
    if backend == "fused":
        if reason is not None:
            raise ConfigError(f"neuron.backend=fused cannot run on {device.type}: {reason}; "
                              "use neuron.backend=auto (or reference)")
        return True
    return reason is None and device.type == "cuda"


_COMPILED: dict[Callable[..., Any], Callable[..., Any]] = {}
# torch.compile arguments of the fused path. Not fullgraph, so that a run that exceeds Dynamo's
# recompilation limit falls back to eager instead of failing; the tests compile with fullgraph=True
# (the whole loop is one graph) and may swap in backend="aot_eager" to skip code generation.
COMPILE_OPTIONS: dict[str, Any] = {}


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)``, created once per function (shared by every layer)."""
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, **COMPILE_OPTIONS)
    return _COMPILED[fn]


def run_multi_step(backend: str, fn: Callable[..., Any], x_seq: torch.Tensor, *args: Any) -> Any:
    """``fn(x_seq, *args)``, compiled when ``backend`` selects the fused path for ``x_seq``'s device.

    ``fn`` acts element-wise on the non-time dimensions, so the fused path runs it on ``[T, M]``
    (tensor arguments shaped like ``x_seq`` or like one step are flattened the same way; outputs are
    shaped back): one compiled graph, dynamic in M, serves every layer of a network."""
    if not use_fused(backend, x_seq.device):
        return fn(x_seq, *args)
    seq, step = x_seq.shape, x_seq.shape[1:]

    def flat(a: Any) -> Any:
        if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape in (seq, step):
            a = a.reshape(seq[0], -1) if a.shape == seq else a.reshape(-1)
            torch._dynamo.maybe_mark_dynamic(a, a.dim() - 1)  # M varies between layers: no recompilation
        return a

    x_flat = flat(x_seq)
    out = compiled(fn)(x_flat, *(flat(a) for a in args))

    def unflat(a: Any) -> Any:
        if isinstance(a, torch.Tensor) and a.dim() == 2 and a.shape == x_flat.shape:
            return a.view(seq)
        if isinstance(a, torch.Tensor) and a.dim() == 1 and a.shape[0] == x_flat.shape[1]:
            return a.view(step)
        return a

    return tuple(unflat(a) for a in out) if isinstance(out, tuple) else unflat(out)


class Float32State:
    """Mixin for spikingjelly ``BaseNode`` subclasses: the membrane state ``v`` materialises in float32
    (at least) whatever the input dtype, in both step modes (spikingjelly uses the input's dtype)."""

    def materialize_states(
        self, inputs: tuple[Any, ...], states: tuple[Any, ...], step_mode: str
    ) -> tuple[Any, ...]:
        x = inputs[0][0] if step_mode == "m" else inputs[0]
        dtype = state_dtype(x)
        v = states[0]
        if not isinstance(v, torch.Tensor):
            v = torch.full_like(x, float(v), dtype=dtype)
        elif v.shape != x.shape:
            reset = getattr(self, "v_reset", None)
            v = torch.full(x.shape, 0.0 if reset is None else reset, dtype=dtype, device=x.device)
        elif v.dtype != dtype or v.device != x.device:
            v = v.to(dtype=dtype, device=x.device)
        return (v, *states[1:])
