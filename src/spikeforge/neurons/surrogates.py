"""Surrogate gradient functions by name, on top of spikingjelly's.

All act on z = u − V_th and fire at z ≥ 0 (spikingjelly's heaviside).
- ``atan``: g′ = α / (2(1 + (παz/2)²)), α = 2 by default (STDS, SEW ResNet).
- ``sigmoid``: g′ = α·σ(αz)(1 − σ(αz)), α = 4 by default (SLTT's sigmoid option).
- ``triangle``: g′ = max(0, α(1 − α|z|)), α = 1 by default — SLTT's triangle (sltt.md, "Neuron"):
  spikingjelly's ``PiecewiseQuadratic`` is exactly this function.
- ``rectangle``: g′ = α·1[|z| < 1/(2α)], α = 1 by default (spikingjelly ``Rect``).
"""

from __future__ import annotations

from spikingjelly.activation_based import surrogate

from spikeforge.errors import ConfigError

_SURROGATES = {
    "atan": (surrogate.ATan, 2.0),
    "sigmoid": (surrogate.Sigmoid, 4.0),
    "triangle": (surrogate.PiecewiseQuadratic, 1.0),
    "rectangle": (surrogate.Rect, 1.0),
}


def build_surrogate(name: str, alpha: float | None = None) -> surrogate.SurrogateFunctionBase:
    if name not in _SURROGATES:
        raise ConfigError(f"unknown surrogate {name!r}; choose one of: {', '.join(_SURROGATES)}")
    cls, default_alpha = _SURROGATES[name]
    alpha = default_alpha if alpha is None else float(alpha)
    if alpha <= 0:
        raise ConfigError(f"surrogate_alpha must be > 0 (got {alpha}); it sets the surrogate's width")
    return cls(alpha=alpha)


def list_surrogates() -> list[str]:
    return list(_SURROGATES)
