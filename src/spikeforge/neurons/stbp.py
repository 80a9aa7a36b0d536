"""STBP leaky integrate-and-fire neuron (``stbp_lif``) with the rectangular surrogate gradient.

stbp_tdbn.md, "Neuron and surrogate":
- u_t = τ·u_{t−1}·(1 − o_{t−1}) + x_t, o_t = 1[u_t > V_th] — a **strict** comparison (u = V_th does not
  fire), hard reset to 0, the gradient flows through (1 − o_{t−1}) (the reset is not detached).
  τ is a decay multiplier (0.25), not a time constant.
- ∂o/∂u ≈ (1/a)·1[|u − V_th| < a/2]: a rectangle of width a and area 1 centred at V_th.

spikingjelly's ``LIFNode(tau=1/(1 − τ), decay_input=False, v_reset=0, surrogate=Rect(1/a))`` has the
same dynamics but fires at u ≥ V_th, so the firing rule is written here instead of wrapping it.
"""

from __future__ import annotations

from typing import Any

import torch
from spikingjelly.activation_based import base

from spikeforge.errors import ConfigError
from spikeforge.neurons import register_neuron
from spikeforge.neurons.backend import check_backend, run_multi_step, state_dtype


class StrictSpike(torch.autograd.Function):
    """o = 1[u > V_th]; backward ∂o/∂u = (1/a)·1[|u − V_th| < a/2] (stbp_tdbn.md, "Neuron and surrogate")."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, v_threshold: float, width: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.v_threshold = v_threshold
        ctx.width = width
        return (u > v_threshold).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (u,) = ctx.saved_tensors
        window = ((u - ctx.v_threshold).abs() < ctx.width / 2).to(grad_out.dtype)
        return grad_out * window / ctx.width, None, None


def strict_spike(u: torch.Tensor, v_threshold: float = 0.5, width: float = 1.0) -> torch.Tensor:
    """Heaviside 1[u > V_th] with the rectangular surrogate of width ``width`` centred at V_th."""
    return StrictSpike.apply(u, v_threshold, width)


def stbp_step(
    x: torch.Tensor, v: torch.Tensor | float, v_threshold: float, decay: float, width: float, detach_reset: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step: (spike o_t, pre-reset potential u_t, state u_t·(1 − o_t)); hard reset to 0, gradient
    through (1 − o)."""
    u = decay * v + x
    o = strict_spike(u, v_threshold, width)
    keep = 1.0 - (o.detach() if detach_reset else o)
    return o, u, u * keep


def stbp_multi_step(
    x_seq: torch.Tensor, v: torch.Tensor, v_threshold: float, decay: float, width: float, detach_reset: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole sequence from state ``v`` (float32 or wider): (spikes in ``x_seq``'s dtype, last state,
    pre-reset potentials ``[T, ...]``). Pure: the reference and, compiled, the fused path."""
    spikes, us = [], []
    for x in x_seq.unbind(0):
        o, u, v = stbp_step(x.to(v.dtype), v, v_threshold, decay, width, detach_reset)
        spikes.append(o)
        us.append(u)
    return torch.stack(spikes).to(x_seq.dtype), v, torch.stack(us)


class STBPLIFNode(base.MemoryModule):
    """STBP LIF layer; multi-step ``[T, N, ...]`` or single-step ``[N, ...]`` (spikingjelly ``step_mode``).

    State ``v`` is the membrane potential after the hard reset, u_{t−1}·(1 − o_{t−1}). With
    ``store_u_seq=True`` a multi-step call keeps the pre-reset potentials u_t in ``u_seq``.
    """

    is_spiking_neuron = True

    def __init__(
        self,
        v_threshold: float = 0.5,
        decay: float = 0.25,
        width: float = 1.0,
        detach_reset: bool = False,
        step_mode: str = "m",
        store_u_seq: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ConfigError(f"stbp_lif width must be > 0 (got {width}); it is the surrogate's window a")
        if not 0.0 <= decay <= 1.0:
            raise ConfigError(f"stbp_lif decay must be in [0, 1] (got {decay}); it multiplies u each step")
        self.v_threshold = float(v_threshold)
        self.decay = float(decay)
        self.width = float(width)
        self.detach_reset = bool(detach_reset)
        self.step_mode = step_mode
        self.store_u_seq = store_u_seq
        self.backend = check_backend(backend)
        self.register_memory("v", 0.0)
        self.u_seq: torch.Tensor | None = None

    def _state(self, x: torch.Tensor) -> torch.Tensor:
        """The state as a tensor of ``x``'s shape, float32 at least (membrane state under autocast)."""
        v = self.v
        if isinstance(v, torch.Tensor) and v.shape == x.shape:
            return v.to(device=x.device, dtype=state_dtype(x))
        return torch.zeros_like(x, dtype=state_dtype(x))  # the reset state (``register_memory("v", 0.0)``)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        o, _, self.v = stbp_step(x.to(state_dtype(x)), self._state(x), self.v_threshold, self.decay, self.width,
                                 self.detach_reset)
        return o.to(x.dtype)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        spikes, self.v, u_seq = run_multi_step(self.backend, stbp_multi_step, x_seq, self._state(x_seq[0]),
                                               self.v_threshold, self.decay, self.width, self.detach_reset)
        if self.store_u_seq:
            self.u_seq = u_seq
        return spikes

    def reset(self) -> None:
        super().reset()
        self.u_seq = None

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, decay={self.decay}, width={self.width}, "
                f"detach_reset={self.detach_reset}, step_mode={self.step_mode}, backend={self.backend}")


register_neuron("stbp_lif")(STBPLIFNode)  # stbp_tdbn.md defaults: V_th 0.5, τ 0.25, a 1
