"""Architectures built from a neuron factory and a norm factory.

``build_model(name, num_classes, in_channels=3, neuron=..., norm=..., **kw)`` returns a module in
multi-step mode: input ``[T, N, C, H, W]``, output per-step logits ``[T, N, num_classes]`` (models
documented otherwise return ``[N, num_classes]``). ``functional.set_step_mode(model, "s")`` switches
every layer to single-step (``[N, ...]`` in, ``[N, num_classes]`` out), as SLTT needs.
"""

from __future__ import annotations

from typing import Any

from spikingjelly.activation_based import functional
from torch import nn

from spikeforge.layers import NormFactory, norm_factory
from spikeforge.neurons import NeuronFactory, neuron_factory
from spikeforge.registry import Registry

MODELS = Registry("model", package="spikeforge.models")
register_model = MODELS.register


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    neuron: NeuronFactory | None = None,
    norm: NormFactory | None = None,
    step_mode: str = "m",
    **kw: Any,
) -> nn.Module:
    """Build a registered model; ``neuron``/``norm`` default to spikingjelly LIF and shared-over-T BN."""
    neuron = neuron if neuron is not None else neuron_factory("lif")
    norm = norm if norm is not None else norm_factory("bn")
    model = MODELS.build(name, num_classes=num_classes, in_channels=in_channels, neuron=neuron, norm=norm, **kw)
    functional.set_step_mode(model, step_mode)
    return model


def list_models() -> list[str]:
    return MODELS.names()


__all__ = ["MODELS", "build_model", "list_models", "register_model"]
