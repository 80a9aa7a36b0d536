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
        self.register_memory("v", 0.0)
        self.u_seq: torch.Tensor | None = None

    def _step(self, x: torch.Tensor, v: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u = self.decay * v + x
        o = strict_spike(u, self.v_threshold, self.width)
        keep = 1.0 - (o.detach() if self.detach_reset else o)
        return o, u, u * keep  # hard reset to 0, gradient through (1 − o)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        o, _, self.v = self._step(x, self.v)
        return o

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        v = self.v
        spikes, us = [], []
        for x in x_seq.unbind(0):
            o, u, v = self._step(x, v)
            spikes.append(o)
            us.append(u)
        self.v = v
        if self.store_u_seq:
            self.u_seq = torch.stack(us)
        return torch.stack(spikes)

    def reset(self) -> None:
        super().reset()
        self.u_seq = None

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, decay={self.decay}, width={self.width}, "
                f"detach_reset={self.detach_reset}, step_mode={self.step_mode}")


register_neuron("stbp_lif")(STBPLIFNode)  # stbp_tdbn.md defaults: V_th 0.5, τ 0.25, a 1
