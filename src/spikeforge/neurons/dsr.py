"""DSR neurons (Meng et al., CVPR 2022): ``dsr_if`` and ``dsr_lif``.

The forward pass simulates IF / LIF neurons with a soft reset by V_th and firing at α·V_th; the backward
pass differentiates the (weighted) firing-rate *representation* instead of the spikes (dsr.md "Neurons"):

- IF:  r = clamp(x̄, 0, V_th) with x̄ = mean_t x_t; the spike outputs are o_t ∈ {0, V_th}.
- LIF: â(o) ≈ clamp(â(x)/τ, 0, V_th/Δt) with the weighted rate â (weights w_i = exp(−(T − i)·Δt/τ));
  o_t ∈ {0, V_th/Δt}.

V_th is one trainable scalar per layer, lower-bounded by ``v_threshold_bound``; its gradient is multiplied by
``v_threshold_grad_scale`` (1 by default; DSR's ImageNet neuron, ``imagenet/neuron.py``, multiplies the IF
threshold gradient by 0.001, its CIFAR neuron does not). Bound decision (dsr.md
"V_th"): the parameter is clamped in place to the bound before every forward and then used as it is, so
its gradient is never stopped (spikingjelly's ``DSRIFNode``/``DSRLIFNode`` clamp out of place, which
gives a threshold below its bound zero gradient; they also fix T at construction). These modules take T
from the input's first dimension and need the whole sequence: single-step mode is refused.

Only the rate of the input (``[N, ...]``, not ``[T, N, ...]``) is kept for the backward pass.
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import base
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.neurons import register_neuron
from spikeforge.neurons.backend import check_backend, run_multi_step, use_fused


# ---- representations -------------------------------------------------------------------------------
def dsr_weights(
    T: int, tau: float, delta_t: float, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """LIF representation weights w_i = exp(−(T − i)·Δt/τ), i = 1…T; the last step has weight 1
    (dsr.md "LIF forward")."""
    i = torch.arange(1, T + 1, dtype=torch.float64)
    return torch.exp(-(T - i) * delta_t / tau).to(device=device, dtype=dtype or torch.get_default_dtype())


def weighted_rate(x: torch.Tensor, tau: float, delta_t: float) -> torch.Tensor:
    """â(x) = Σ_i w_i x_i / Σ_i w_i over the first (time) dimension of ``x`` ``[T, ...]``."""
    w = dsr_weights(x.shape[0], tau, delta_t, x.device, x.dtype)
    return torch.tensordot(w, x, dims=1) / w.sum()


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    # Membrane potentials are integrated in float32 at least (half-precision sums over T = 50 drift).
    return torch.promote_types(x.dtype, torch.float32)


# ---- forward simulations (pure: the reference and, compiled, the fused path) ------------------------
def dsr_if_integrate(xw: torch.Tensor, vth: torch.Tensor, alpha: float) -> torch.Tensor:
    """IF with soft reset by V_th from u = 0: s_t = V_th·1[u_t ≥ α·V_th] (dsr.md "IF forward")."""
    u = torch.zeros_like(xw[0])
    out = []
    for x_t in xw.unbind(0):
        u = u + x_t
        s = (u >= alpha * vth).to(xw.dtype) * vth
        u = u - s  # soft reset by V_th
        out.append(s)
    return torch.stack(out)


def dsr_lif_integrate(xw: torch.Tensor, vth: torch.Tensor, beta: float, alpha: float, delta_t: float) -> torch.Tensor:
    """LIF u_t = β·u_{t−1} + (1 − β)·x_t, soft reset by V_th, o_t = s_t/Δt (dsr.md "LIF forward")."""
    u = torch.zeros_like(xw[0])
    out = []
    for x_t in xw.unbind(0):
        u = beta * u + (1 - beta) * x_t
        s = (u >= alpha * vth).to(xw.dtype) * vth
        u = u - s
        out.append(s / delta_t)  # o_t = s_t/Δt
    return torch.stack(out)


# ---- autograd functions ----------------------------------------------------------------------------
class DSRIFFunction(torch.autograd.Function):
    """IF forward / derivative of clamp(x̄, 0, V_th) backward (dsr.md "IF forward", "IF backward")."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: torch.Tensor, v_th: torch.Tensor, alpha: float, fused: bool = False, grad_scale: float = 1.0
    ) -> torch.Tensor:
        T = x.shape[0]
        xw = x.to(_work_dtype(x))
        vth = v_th.detach().to(xw.dtype)
        out = run_multi_step("fused" if fused else "reference", dsr_if_integrate, xw, vth, alpha)
        ctx.save_for_backward(xw.mean(0), v_th.detach().clone())  # a copy: V_th is clamped in place later
        ctx.T = T
        ctx.x_dtype = x.dtype
        ctx.grad_scale = grad_scale
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x_bar, v_th = ctx.saved_tensors
        vth = v_th.to(x_bar.dtype)
        G = grad_out.to(x_bar.dtype).sum(0)  # G = Σ_t ∂L/∂o_t
        grad_x = grad_vth = None
        if ctx.needs_input_grad[0]:
            inside = (x_bar >= 0) & (x_bar <= vth)
            g = torch.where(inside, G / ctx.T, torch.zeros_like(G))
            grad_x = g.unsqueeze(0).expand(ctx.T, *g.shape).to(ctx.x_dtype).contiguous()
        if ctx.needs_input_grad[1]:
            # ∂L/∂V_th = s·Σ G·1[x̄ > V_th], s = v_threshold_grad_scale (0.001 in DSR's ImageNet neuron)
            grad_vth = ctx.grad_scale * torch.where(x_bar > vth, G, torch.zeros_like(G)).sum()
            grad_vth = grad_vth.to(v_th.dtype).reshape(v_th.shape)
        return grad_x, grad_vth, None, None, None


class DSRLIFFunction(torch.autograd.Function):
    """LIF forward / weighted-rate backward (dsr.md "LIF forward", "LIF backward")."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: torch.Tensor,
        v_th: torch.Tensor,
        tau: float,
        delta_t: float,
        alpha: float,
        fused: bool = False,
        grad_scale: float = 1.0,
    ) -> torch.Tensor:
        T = x.shape[0]
        xw = x.to(_work_dtype(x))
        vth = v_th.detach().to(xw.dtype)
        beta = math.exp(-delta_t / tau)
        out = run_multi_step("fused" if fused else "reference", dsr_lif_integrate, xw, vth, beta, alpha, delta_t)
        ctx.save_for_backward(weighted_rate(xw, tau, delta_t), v_th.detach().clone())
        ctx.T, ctx.tau, ctx.delta_t, ctx.x_dtype, ctx.grad_scale = T, tau, delta_t, x.dtype, grad_scale
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x_hat, v_th = ctx.saved_tensors
        T, tau, dt = ctx.T, ctx.tau, ctx.delta_t
        vth = v_th.to(x_hat.dtype)
        G = T * weighted_rate(grad_out.to(x_hat.dtype), tau, dt)  # G = T·â(∂L/∂o)
        upper = vth * tau / dt  # the representation saturates at x̂ = V_th·τ/Δt
        grad_x = grad_vth = None
        if ctx.needs_input_grad[0]:
            # ∂L/∂x_t = (G/τ)/T·1[0 < x̂ < V_th·τ/Δt], spread uniformly over t (as the reference does)
            g = torch.where((x_hat > 0) & (x_hat < upper), G / tau / T, torch.zeros_like(G))
            grad_x = g.unsqueeze(0).expand(T, *g.shape).to(ctx.x_dtype).contiguous()
        if ctx.needs_input_grad[1]:
            # ∂L/∂V_th = s·Δt·Σ G·1[x̂ > V_th·τ/Δt], s = v_threshold_grad_scale
            grad_vth = (ctx.grad_scale * dt * torch.where(x_hat > upper, G, torch.zeros_like(G)).sum()).to(v_th.dtype)
            grad_vth = grad_vth.reshape(v_th.shape)
        return grad_x, grad_vth, None, None, None, None, None


# ---- modules ---------------------------------------------------------------------------------------
class DSRNeuron(base.MemoryModule):
    """Common part of the DSR neurons: the bounded trainable threshold and multi-step-only semantics.

    State starts at 0 in every forward (the whole sequence is processed at once), so there is no memory
    to reset; ``functional.reset_net`` is a no-op on these modules.
    """

    is_spiking_neuron = True

    def __init__(
        self,
        v_threshold: float,
        alpha: float,
        v_threshold_bound: float,
        v_threshold_training: bool = True,
        T: int | None = None,
        step_mode: str = "m",
        backend: str = "auto",
        v_threshold_grad_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.backend = check_backend(backend)
        scale = v_threshold_grad_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < float(scale) < math.inf:
            raise ConfigError(f"DSR v_threshold_grad_scale must be a number > 0 (got {scale!r}); 1.0 keeps the "
                              "threshold gradient as it is, 0.001 is DSR's ImageNet neuron")
        self.v_threshold_grad_scale = float(scale)
        if not 0.0 < float(alpha) <= 1.0:
            raise ConfigError(f"DSR alpha (firing at alpha·V_th) must be in (0, 1], got {alpha}")
        if float(v_threshold_bound) <= 0:
            raise ConfigError(f"DSR v_threshold_bound must be > 0, got {v_threshold_bound}")
        if float(v_threshold) < float(v_threshold_bound):
            raise ConfigError(
                f"DSR v_threshold ({v_threshold}) is below its lower bound v_threshold_bound ({v_threshold_bound})"
            )
        self.step_mode = step_mode
        self.alpha = float(alpha)
        self.v_threshold_bound = float(v_threshold_bound)
        # T is informational: the forward takes T from the input's first dimension.
        self.T = None if T is None else int(T)
        v = torch.tensor(float(v_threshold))
        if v_threshold_training:
            self.v_threshold = nn.Parameter(v)
        else:
            self.register_buffer("v_threshold", v)

    # spikingjelly step-mode protocol: multi-step only
    def supported_step_mode(self) -> tuple[str, ...]:
        return ("m",)

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value != "m":
            raise ConfigError(
                f"{type(self).__name__} needs the whole time sequence [T, N, ...] (its backward differentiates the "
                f"firing rate over T), so single-step mode ('{value}') is not supported; use it with a multi-step "
                "method (e.g. method=dsr or bptt), not a per-step one such as SLTT"
            )
        self._step_mode = value

    def bounded_threshold(self) -> torch.Tensor:
        """Clamp V_th in place to its bound (no gradient stop: dsr.md "V_th" decision) and return it."""
        with torch.no_grad():
            self.v_threshold.clamp_(min=self.v_threshold_bound)
        return self.v_threshold

    def single_step_forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        self.step_mode = "s"  # raises the explanatory error
        raise AssertionError("unreachable")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x_seq.dim() < 2:
            raise ValueError(f"{type(self).__name__} expects a sequence [T, N, ...], got shape {tuple(x_seq.shape)}")
        return self.multi_step_forward(x_seq)

    def multi_step_forward(self, x_seq: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        raise NotImplementedError

    def representation(self, out: torch.Tensor) -> torch.Tensor:
        """The spike representation of an output sequence of this layer (rate or weighted rate)."""
        raise NotImplementedError


class DSRIFNeuron(DSRNeuron):
    """IF neuron of DSR: o_t ∈ {0, V_th}; representation r = mean_t o_t ∈ [0, V_th]."""

    def multi_step_forward(self, x_seq: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return DSRIFFunction.apply(x_seq, self.bounded_threshold(), self.alpha, use_fused(self.backend, x_seq.device),
                                   self.v_threshold_grad_scale)

    def representation(self, out: torch.Tensor) -> torch.Tensor:
        return out.mean(0)

    def extra_repr(self) -> str:
        return (f"v_threshold={float(self.v_threshold.detach()):.4g}, alpha={self.alpha}, "
                f"v_threshold_bound={self.v_threshold_bound}, v_threshold_grad_scale={self.v_threshold_grad_scale}, "
                f"T={self.T}, step_mode={self.step_mode}")


class DSRLIFNeuron(DSRNeuron):
    """LIF neuron of DSR: β = exp(−Δt/τ), o_t ∈ {0, V_th/Δt}; representation = weighted rate â."""

    def __init__(
        self,
        v_threshold: float,
        tau: float,
        delta_t: float,
        alpha: float,
        v_threshold_bound: float,
        v_threshold_training: bool = True,
        T: int | None = None,
        step_mode: str = "m",
        backend: str = "auto",
        v_threshold_grad_scale: float = 1.0,
    ) -> None:
        if float(tau) <= 0 or float(delta_t) <= 0:
            raise ConfigError(f"DSR LIF needs tau > 0 and delta_t > 0, got tau={tau}, delta_t={delta_t}")
        super().__init__(v_threshold, alpha, v_threshold_bound, v_threshold_training, T, step_mode, backend,
                         v_threshold_grad_scale)
        self.tau = float(tau)
        self.delta_t = float(delta_t)

    def multi_step_forward(self, x_seq: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return DSRLIFFunction.apply(x_seq, self.bounded_threshold(), self.tau, self.delta_t, self.alpha,
                                    use_fused(self.backend, x_seq.device), self.v_threshold_grad_scale)

    def representation(self, out: torch.Tensor) -> torch.Tensor:
        return weighted_rate(out, self.tau, self.delta_t)

    def extra_repr(self) -> str:
        return (f"v_threshold={float(self.v_threshold.detach()):.4g}, tau={self.tau}, delta_t={self.delta_t}, "
                f"alpha={self.alpha}, v_threshold_bound={self.v_threshold_bound}, "
                f"v_threshold_grad_scale={self.v_threshold_grad_scale}, T={self.T}, step_mode={self.step_mode}")


# Defaults: the paper's CIFAR recipes (dsr.md "Recipes": IF row and LIF row).
@register_neuron("dsr_if")
def dsr_if(
    T: int | None = None,
    v_threshold: float = 6.0,
    alpha: float = 0.5,
    v_threshold_bound: float = 0.01,
    v_threshold_training: bool = True,
    step_mode: str = "m",
    backend: str = "auto",
    v_threshold_grad_scale: float = 1.0,
) -> DSRIFNeuron:
    """DSR IF neuron; ``T`` is optional (the input's first dimension is used). ``v_threshold_grad_scale``
    multiplies ∂L/∂V_th (0.001 as DSR's ImageNet neuron)."""
    return DSRIFNeuron(v_threshold, alpha, v_threshold_bound, v_threshold_training, T, step_mode, backend,
                       v_threshold_grad_scale)


@register_neuron("dsr_lif")
def dsr_lif(
    T: int | None = None,
    v_threshold: float = 0.3,
    tau: float = 1.0,
    delta_t: float = 0.05,
    alpha: float = 0.3,
    v_threshold_bound: float = 5e-4,
    v_threshold_training: bool = True,
    step_mode: str = "m",
    backend: str = "auto",
    v_threshold_grad_scale: float = 1.0,
) -> DSRLIFNeuron:
    """DSR LIF neuron; ``T`` is optional (the input's first dimension is used). ``v_threshold_grad_scale``
    multiplies ∂L/∂V_th."""
    return DSRLIFNeuron(v_threshold, tau, delta_t, alpha, v_threshold_bound, v_threshold_training, T, step_mode,
                        backend, v_threshold_grad_scale)
