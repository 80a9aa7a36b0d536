"""Plain spikingjelly neurons (``lif``, ``if``) and the ReLU stand-in (``relu``) used to build the ANN
of the same graph (DSR's hybrid pipeline, the BPTT-vs-ANN benchmark).

``lif``/``if`` are spikingjelly's ``LIFNode``/``IFNode`` with a float32 membrane state under autocast;
their multi-step forward is spikingjelly's fused operator (CUDA/Triton kernels on GPU, its CPU kernel
otherwise) unless ``backend=reference`` asks for spikingjelly's Python reference loop.
"""

from __future__ import annotations

from typing import Any

import torch
from spikingjelly._ops.if_.reference import multi_step as if_reference
from spikingjelly._ops.lif.reference import multi_step as lif_reference
from spikingjelly.activation_based import base, neuron
from torch import nn

from spikeforge.neurons import register_neuron
from spikeforge.neurons.backend import Float32State, check_backend
from spikeforge.neurons.surrogates import build_surrogate


class _Backend:
    """``backend`` of a spikingjelly node: ``reference`` runs spikingjelly's Python loop in multi-step
    mode, ``auto``/``fused`` its dispatched operator (always available: CPU and CUDA kernels)."""

    backend = "auto"

    def _reference(self, x_seq: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def multi_step_forward(self, x_seq: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.backend != "reference" or self.store_v_seq:  # type: ignore[attr-defined]
            return super().multi_step_forward(x_seq, *args, **kwargs)  # type: ignore[misc]
        states = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")  # type: ignore[attr-defined]
        spikes, v = self._reference(x_seq, states[0])
        self._memories["v"] = v  # type: ignore[attr-defined]
        return spikes.to(x_seq.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend}"  # type: ignore[misc]


class LIFNeuron(_Backend, Float32State, neuron.LIFNode):
    """spikingjelly ``LIFNode`` with a float32 state and ``backend``."""

    def _reference(self, x_seq: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spikes, v, _ = lif_reference(x_seq, v, self.tau, self.decay_input, self.v_threshold, self.v_reset,
                                     self.surrogate_function, self.detach_reset, False)
        return spikes, v


class IFNeuron(_Backend, Float32State, neuron.IFNode):
    """spikingjelly ``IFNode`` with a float32 state and ``backend``."""

    def _reference(self, x_seq: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spikes, v, _ = if_reference(x_seq, v, self.v_threshold, self.v_reset, self.surrogate_function,
                                    self.detach_reset, False)
        return spikes, v


@register_neuron("lif")
def lif(
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate: str = "atan",
    surrogate_alpha: float | None = None,
    detach_reset: bool = False,
    step_mode: str = "m",
    store_v_seq: bool = False,
    backend: str = "auto",
) -> LIFNeuron:
    """spikingjelly ``LIFNode``; every argument explicit (its defaults differ between versions)."""
    return lif_node(LIFNeuron, tau, decay_input, v_threshold, v_reset, surrogate, surrogate_alpha,
                    detach_reset, step_mode, store_v_seq, backend)


def lif_node(
    cls: type[neuron.BaseNode],
    tau: float,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    surrogate: str,
    surrogate_alpha: float | None,
    detach_reset: bool,
    step_mode: str,
    store_v_seq: bool,
    backend: str = "auto",
) -> neuron.BaseNode:
    """A LIF node class taking ``LIFNode``'s arguments (``LIFNode``, SLTT's) with the surrogate built by name."""
    node = cls(
        tau=tau,
        decay_input=decay_input,
        v_threshold=v_threshold,
        v_reset=v_reset,
        surrogate_function=build_surrogate(surrogate, surrogate_alpha),
        detach_reset=detach_reset,
        step_mode=step_mode,
        store_v_seq=store_v_seq,
    )
    node.backend = check_backend(backend)
    return node


@register_neuron("if")
def if_(
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate: str = "atan",
    surrogate_alpha: float | None = None,
    detach_reset: bool = False,
    step_mode: str = "m",
    store_v_seq: bool = False,
    backend: str = "auto",
) -> IFNeuron:
    """spikingjelly ``IFNode``."""
    node = IFNeuron(
        v_threshold=v_threshold,
        v_reset=v_reset,
        surrogate_function=build_surrogate(surrogate, surrogate_alpha),
        detach_reset=detach_reset,
        step_mode=step_mode,
        store_v_seq=store_v_seq,
    )
    node.backend = check_backend(backend)
    return node


class ReLUNeuron(base.StepModule, nn.ReLU):
    """ReLU in a neuron's slot: turns any model of the zoo into the ANN of the same graph."""

    def __init__(self, step_mode: str = "m") -> None:
        nn.ReLU.__init__(self)
        self.step_mode = step_mode


@register_neuron("relu")
def relu(step_mode: str = "m", backend: str = "auto") -> ReLUNeuron:
    """``backend`` is accepted (and checked) so that ``neuron.kind=relu`` works with any method's
    neuron config; a ReLU has no loop over T to fuse."""
    check_backend(backend)
    return ReLUNeuron(step_mode=step_mode)
