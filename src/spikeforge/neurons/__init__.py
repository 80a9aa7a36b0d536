"""Spiking neurons and surrogate gradients.

``build_neuron(kind, **params)`` returns a spikingjelly-compatible neuron module, multi-step by
default (``[T, N, ...]`` in, spikes out); ``functional.set_step_mode(m, "s")`` switches it to
single-step. Models receive a :class:`NeuronFactory` so they never hard-code a neuron.
"""

from __future__ import annotations

from typing import Any

from spikingjelly.activation_based import neuron as sj_neuron
from torch import nn

from spikeforge.registry import Registry

NEURONS = Registry("neuron kind", package="spikeforge.neurons")
register_neuron = NEURONS.register


def build_neuron(kind: str, step_mode: str = "m", num_features: int | None = None, **params: Any) -> nn.Module:
    """Build one neuron layer. ``num_features`` (channels of the input) is used only by kinds
    with per-channel parameters and ignored by the others."""
    return NEURONS.build(kind, hints={"step_mode": step_mode, "num_features": num_features}, **params)


def list_neurons() -> list[str]:
    return NEURONS.names()


class NeuronFactory:
    """``factory(num_features=None)`` → a new neuron module; picklable and printable."""

    def __init__(self, kind: str, **params: Any) -> None:
        NEURONS.get(kind)  # fail early on unknown kinds
        self.kind = kind
        self.params = params

    def __call__(self, num_features: int | None = None, **overrides: Any) -> nn.Module:
        return build_neuron(self.kind, num_features=num_features, **{**self.params, **overrides})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"NeuronFactory({self.kind!r}{', ' if args else ''}{args})"


def neuron_factory(kind: str, **params: Any) -> NeuronFactory:
    return NeuronFactory(kind, **params)


def is_neuron(module: nn.Module) -> bool:
    """True for spiking neuron layers (spikingjelly nodes and this package's own neurons)."""
    return isinstance(module, sj_neuron.BaseNode) or bool(getattr(module, "is_spiking_neuron", False))


__all__ = [
    "NEURONS",
    "NeuronFactory",
    "build_neuron",
    "is_neuron",
    "list_neurons",
    "neuron_factory",
    "register_neuron",
]
