"""Plain spikingjelly neurons (``lif``, ``if``) and the ReLU stand-in (``relu``) used to build the ANN
of the same graph (DSR's hybrid pipeline, the BPTT-vs-ANN benchmark)."""

from __future__ import annotations

from spikingjelly.activation_based import base, neuron
from torch import nn

from spikeforge.neurons import register_neuron
from spikeforge.neurons.surrogates import build_surrogate


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
) -> neuron.LIFNode:
    """spikingjelly ``LIFNode``; every argument explicit (its defaults differ between versions)."""
    return lif_node(neuron.LIFNode, tau, decay_input, v_threshold, v_reset, surrogate, surrogate_alpha,
                    detach_reset, step_mode, store_v_seq)


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
) -> neuron.BaseNode:
    """A LIF node class taking ``LIFNode``'s arguments (``LIFNode``, SLTT's) with the surrogate built by name."""
    return cls(
        tau=tau,
        decay_input=decay_input,
        v_threshold=v_threshold,
        v_reset=v_reset,
        surrogate_function=build_surrogate(surrogate, surrogate_alpha),
        detach_reset=detach_reset,
        step_mode=step_mode,
        store_v_seq=store_v_seq,
    )


@register_neuron("if")
def if_(
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate: str = "atan",
    surrogate_alpha: float | None = None,
    detach_reset: bool = False,
    step_mode: str = "m",
    store_v_seq: bool = False,
) -> neuron.IFNode:
    """spikingjelly ``IFNode``."""
    return neuron.IFNode(
        v_threshold=v_threshold,
        v_reset=v_reset,
        surrogate_function=build_surrogate(surrogate, surrogate_alpha),
        detach_reset=detach_reset,
        step_mode=step_mode,
        store_v_seq=store_v_seq,
    )


class ReLUNeuron(base.StepModule, nn.ReLU):
    """ReLU in a neuron's slot: turns any model of the zoo into the ANN of the same graph."""

    def __init__(self, step_mode: str = "m") -> None:
        nn.ReLU.__init__(self)
        self.step_mode = step_mode


@register_neuron("relu")
def relu(step_mode: str = "m") -> ReLUNeuron:
    return ReLUNeuron(step_mode=step_mode)
