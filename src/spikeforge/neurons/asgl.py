"""ASGL: hybrid noisy spikes with a learnable surrogate width (Wang et al., ICML 2023; asgl.md).

``HybridSpike`` is the spike function; ``asgl_lif`` the LIF neuron that uses it.

Width parametrisation (asgl.md, "Surrogates"), the parameter registered at construction (the
reference creates it lazily at the first forward) and learned as in the reference:
- ``sigmoid``: parameter ``a`` = 1/w, H(x) = sigmoid(|a|·x). The reference uses a itself, which
  Adam can push through 0 and flip H; the slope |a| keeps H increasing (the spec's "keep a
  positive" decision) with the reference's update size while a > 0 (Adam moves a, not log a).
- ``rectangle``: parameter ``beta`` = β = −log w, H(x) = clamp(e^β·x + 0.5, 0, 1), so h = 1/w
  inside |x| ≤ w/2.

Granularity of the width: ``layer`` (one scalar, default), ``channel`` (one per channel, needs
``num_features``; channel is dim 1 of the per-step input ``[N, C, ...]``) or ``neuron`` (one per
element of a sample, needs the per-sample feature ``shape``, e.g. ``(C, H, W)``). Models of the zoo
only pass ``num_features`` to the neuron factory, so ``neuron`` granularity is for networks that
build the neuron themselves with a ``shape``; it is never created lazily.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from spikingjelly.activation_based import base
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.neurons import register_neuron
from spikeforge.neurons.backend import check_backend, run_multi_step, state_dtype

SURROGATES = ("sigmoid", "rectangle")
GRANULARITIES = ("layer", "channel", "neuron")


def hybrid_spike(
    z: torch.Tensor, slope: torch.Tensor, mask: torch.Tensor | None, surrogate: str, training: bool
) -> torch.Tensor:
    """The hybrid spike of ``HybridSpike`` on z = v − θ with slope 1/w (``HybridSpike._slope``) and
    the spike-mode mask (None: every element in spike mode)."""
    spike = (z >= 0).to(z.dtype)
    if not training:
        return spike
    h = torch.sigmoid(slope * z) if surrogate == "sigmoid" else torch.clamp(slope * z + 0.5, 0.0, 1.0)
    value = spike if mask is None else torch.where(mask.to(torch.bool), spike, h.detach())
    # value exactly; gradient ∂H_a everywhere (h − h.detach() is 0 in value).
    return value + (h - h.detach())


class HybridSpike(nn.Module):
    """ASGL's spike function (asgl.md, "Hybrid noisy spike").

    Training: forward value m·1[x ≥ 0] + (1 − m)·H_a(x) with m ~ Bernoulli(1 − p) per element (a
    new mask at every call, from ``generator``: ASGL's per-rank stream, set by
    ``ASGLClassifier.on_fit_start``, or torch's global RNG when None); the backward is ∂H_a for every
    element — spike-mode ones included — to the input and to the width. ``forward(x, mask)`` uses the given
    mask instead of drawing one. Eval: the pure Heaviside 1[x ≥ 0].

    Args:
        surrogate: ``sigmoid`` or ``rectangle``.
        width: w > 0 (the reference's ``alpha``).
        p: the fraction of analog (H_a) elements in training, 0 ≤ p ≤ 1.
        learnable: train the width (``train_width``); when False it is a frozen parameter.
        granularity: ``layer``, ``channel`` (needs ``num_features``) or ``neuron`` (needs ``shape``).
    """

    def __init__(
        self,
        surrogate: str = "sigmoid",
        width: float = 5.0,
        p: float = 0.2,
        learnable: bool = True,
        granularity: str = "layer",
        num_features: int | None = None,
        shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if surrogate not in SURROGATES:
            raise ConfigError(f"unknown ASGL surrogate {surrogate!r}; choose one of: {', '.join(SURROGATES)}")
        if not width > 0:
            raise ConfigError(f"ASGL width must be > 0 (got {width}); e.g. method.width=5")
        if granularity not in GRANULARITIES:
            raise ConfigError(
                f"unknown ASGL width granularity {granularity!r}; choose one of: {', '.join(GRANULARITIES)}"
            )
        if granularity == "channel" and not num_features:
            raise ConfigError("granularity=channel needs num_features (the number of channels of the input)")
        if granularity == "neuron" and not shape:
            raise ConfigError(
                "granularity=neuron needs shape (the per-sample feature shape, e.g. (C, H, W)); "
                "the model zoo passes only num_features, so use granularity=layer or channel there"
            )
        self.surrogate = surrogate
        self.granularity = granularity
        self.p = p
        self.generator: torch.Generator | None = None  # mask stream (on the device of the input)
        param_shape: tuple[int, ...] = {
            "layer": (),
            "channel": (int(num_features or 0),),
            "neuron": tuple(int(s) for s in (shape or ())),
        }[granularity]
        # a = 1/w or β = −log w (asgl.md, "Surrogates"); a frozen Parameter when not learnable, so
        # the state dict is the same for ASGL and its SG baseline.
        init = 1.0 / width if surrogate == "sigmoid" else -math.log(width)
        self._param_name = "a" if surrogate == "sigmoid" else "beta"
        self.register_parameter(self._param_name, nn.Parameter(torch.full(param_shape, init), requires_grad=learnable))

    @property
    def width_param(self) -> nn.Parameter:
        """The learnable width parameter: ``a`` (sigmoid) or ``beta`` (rectangle)."""
        return getattr(self, self._param_name)

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"ASGL noise rate p must lie in [0, 1] (got {value})")
        self._p = float(value)

    @property
    def width(self) -> torch.Tensor:
        """Current width w = e^(−β) (detached)."""
        return 1.0 / self._slope_raw().detach()

    def _slope_raw(self) -> torch.Tensor:
        """|a| (sigmoid) or e^β (rectangle): the slope of H_a at 0 (times 4 for sigmoid), = 1/w."""
        if self.surrogate == "sigmoid":
            return self.a.abs()
        return torch.exp(self.beta)

    def _slope(self, x: torch.Tensor) -> torch.Tensor:
        """1/w broadcast against ``x`` (``[N, C, ...]`` or a sample shape for ``neuron``)."""
        k = self._slope_raw()
        if self.granularity == "channel":
            k = k.view(-1, *([1] * (x.dim() - 2)))
        return k

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        """H_a(x), differentiable in x and β."""
        k = self._slope(x)
        if self.surrogate == "sigmoid":
            return torch.sigmoid(k * x)
        return torch.clamp(k * x + 0.5, 0.0, 1.0)

    def draw_mask(self, like: torch.Tensor) -> torch.Tensor | None:
        """m ~ Bernoulli(1 − p) per element of ``like`` (1: spike mode, 0: analog mode; None when p = 0:
        all spike mode), drawn from :attr:`generator` (the per-rank stream) when one is set."""
        if self._p == 0.0:
            return None
        return torch.bernoulli(torch.full_like(like, 1.0 - self._p), generator=self.generator)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None and self.training:
            mask = self.draw_mask(x)
        return hybrid_spike(x, self._slope(x), mask, self.surrogate, self.training)

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate}, granularity={self.granularity}, p={self._p}, " \
               f"learnable={self.width_param.requires_grad}"


class ASGLLIF(base.MemoryModule):
    """ASGL's LIF neuron (asgl.md, "Neuron"): v ← σ(d)·v + I; s = S(v − θ) with S = ``HybridSpike``;
    hard reset v ← v·(1 − s), not detached (an analog s resets partially); output θ·s.

    v starts at 0 (``functional.reset_net`` between batches). d is the logit of the leak
    (decay 0.5 → d = 0), a per-layer scalar, learnable with ``train_decay``. θ is fixed.
    """

    is_spiking_neuron = True

    def __init__(
        self,
        decay: float = 0.5,
        v_threshold: float = 1.0,
        surrogate: str = "sigmoid",
        width: float = 5.0,
        p: float = 0.2,
        train_width: bool = True,
        train_decay: bool = False,
        granularity: str = "layer",
        num_features: int | None = None,
        shape: Sequence[int] | None = None,
        step_mode: str = "m",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ASGL decay must lie strictly between 0 and 1 (got {decay}); e.g. decay=0.5")
        if not v_threshold > 0:
            raise ConfigError(f"v_threshold must be > 0 (got {v_threshold})")
        self.step_mode = step_mode
        self.v_threshold = float(v_threshold)
        self.decay_logit = nn.Parameter(torch.tensor(math.log(decay / (1.0 - decay))), requires_grad=train_decay)
        self.spike = HybridSpike(surrogate, width, p, train_width, granularity, num_features, shape)
        self.backend = check_backend(backend)
        self.register_memory("v", 0.0)

    @property
    def decay(self) -> torch.Tensor:
        return torch.sigmoid(self.decay_logit.detach())

    def _state(self, x: torch.Tensor) -> torch.Tensor:
        """The state as a tensor of ``x``'s shape, float32 at least (membrane state under autocast)."""
        v = self.v
        if isinstance(v, torch.Tensor) and v.shape == x.shape:
            return v.to(device=x.device, dtype=state_dtype(x))
        return torch.zeros_like(x, dtype=state_dtype(x))  # the reset state (``register_memory("v", 0.0)``)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.sigmoid(self.decay_logit) * self._state(x) + x
        s = self.spike(v - self.v_threshold)
        self.v = v * (1.0 - s)  # hard reset to 0, not detached
        return (self.v_threshold * s).to(x.dtype)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        # the masks of all T steps drawn at once (a fresh one per step, as in single-step mode)
        mask = self.spike.draw_mask(x_seq) if self.training else None
        slope = self.spike._slope(x_seq[0])
        slope = slope if slope.dim() == 0 else slope.expand_as(x_seq[0])  # element-wise (see run_multi_step)
        out, self.v = run_multi_step(
            self.backend, asgl_multi_step, x_seq, self._state(x_seq[0]), self.decay_logit, slope, mask,
            self.v_threshold, self.spike.surrogate, self.training,
        )
        return out

    def extra_repr(self) -> str:
        return f"v_threshold={self.v_threshold}, decay={float(self.decay):.4g}, " \
               f"train_decay={self.decay_logit.requires_grad}, step_mode={self.step_mode}, backend={self.backend}"


def asgl_multi_step(
    x_seq: torch.Tensor, v: torch.Tensor, decay_logit: torch.Tensor, slope: torch.Tensor,
    mask: torch.Tensor | None, v_threshold: float, surrogate: str, training: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ASGLLIF`` over ``[T, ...]`` from state ``v`` (float32 or wider): (outputs θ·s in ``x_seq``'s
    dtype, last state). Pure: the reference and, compiled, the fused path."""
    decay = torch.sigmoid(decay_logit)
    outs = []
    for t, x in enumerate(x_seq.unbind(0)):
        u = decay * v + x.to(v.dtype)
        s = hybrid_spike(u - v_threshold, slope, None if mask is None else mask[t], surrogate, training)
        v = u * (1.0 - s)  # hard reset to 0, not detached
        outs.append(v_threshold * s)
    return torch.stack(outs).to(x_seq.dtype), v


register_neuron("asgl_lif")(ASGLLIF)  # defaults from asgl.md ("Building blocks")


def hybrid_spikes(module: nn.Module) -> list[HybridSpike]:
    """Every ``HybridSpike`` inside ``module``."""
    return [m for m in module.modules() if isinstance(m, HybridSpike)]


def set_noise_rate(module: nn.Module, p: float) -> None:
    """Set the analog fraction p of every ``HybridSpike`` in ``module``."""
    for m in hybrid_spikes(module):
        m.p = p
