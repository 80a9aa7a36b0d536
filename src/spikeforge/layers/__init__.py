"""Time-aware layers: norms over ``[T, N, C, ...]`` (``build_norm``) and method-specific layers.

Models receive a :class:`NormFactory` and call ``norm(num_features, alpha=...)``; ``alpha`` is the
residual-branch scale that only threshold-dependent BN uses (STBP-tdBN, α = 1/√2 on the branches
summed at a residual add) and the other norms ignore.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from spikeforge.registry import Registry

NORMS = Registry("norm kind", package="spikeforge.layers")
register_norm = NORMS.register


def build_norm(kind: str, num_features: int, step_mode: str = "m", alpha: float = 1.0, **params: Any) -> nn.Module:
    """A norm layer for ``[T, N, C, ...]`` input (multi-step) or ``[N, C, ...]`` (single-step)."""
    return NORMS.build(kind, num_features, hints={"step_mode": step_mode, "alpha": alpha}, **params)


def list_norms() -> list[str]:
    return NORMS.names()


class NormFactory:
    """``factory(num_features, alpha=1.0)`` → a new norm module."""

    def __init__(self, kind: str, **params: Any) -> None:
        NORMS.get(kind)
        self.kind = kind
        self.params = params

    def __call__(self, num_features: int, alpha: float | None = None, **overrides: Any) -> nn.Module:
        """``alpha`` given by the model (residual branch) wins over one set in the config."""
        params = {**self.params, **overrides}
        if alpha is not None:
            params["alpha"] = alpha
        return build_norm(self.kind, num_features, **params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"NormFactory({self.kind!r}{', ' if args else ''}{args})"


def norm_factory(kind: str, **params: Any) -> NormFactory:
    return NormFactory(kind, **params)


__all__ = ["NORMS", "NormFactory", "build_norm", "list_norms", "norm_factory", "register_norm"]
