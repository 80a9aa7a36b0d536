"""``sltt_lif``: the LIF neuron of SLTT (Meng et al., ICCV 2023) with the temporal gradient cut.

sltt.md, "Neuron" and "The SLTT cut": soft-reset LIF, τ = 1.1, decay_input = False, V_th = 1,
v_reset = None (subtract V_th), reset not detached, and the charge reads **v_{t−1}.detach()**:

    u_t = λ·v_{t−1}.detach() + x_t,   λ = 1 − 1/τ   (decay_input = False, soft reset)
    s_t = H(u_t − V_th),  H(0) = 1,    v_t = u_t − s_t·V_th

The cut is applied in both step modes (spikingjelly 2.0's ``SLTTLIFNode`` runs full BPTT in
multi-step mode and has other defaults, docs/architecture.md "spikingjelly 2.0.0"), so a multi-step forward
followed by one backward gives exactly the gradient of SLTT's per-step loop. Without the detach
the forward is spikingjelly's ``LIFNode`` with the same arguments: the BPTT twin is
``build_neuron("lif", tau=1.1, decay_input=False, v_reset=None, surrogate="triangle")``.

Every argument of spikingjelly's LIF is accepted (and passed explicitly by the method config) so
the charge/reset formulas stay those of ``LIFNode``; τ = 1 (no leak, λ = 0) is allowed here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from spikingjelly.activation_based import neuron
from spikingjelly.activation_based import surrogate as sj_surrogate

from spikeforge.errors import ConfigError
from spikeforge.neurons import register_neuron
from spikeforge.neurons.backend import Float32State, check_backend, run_multi_step, use_fused
from spikeforge.neurons.basic import lif_node
from spikeforge.neurons.surrogates import build_surrogate


def sltt_step(
    x: torch.Tensor, v: torch.Tensor, tau: float, decay_input: bool, v_threshold: float, v_reset: float | None,
    spike_fn: Callable[..., torch.Tensor], sg_params: dict[str, Any], detach_reset: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step from the previous potential ``v``; returns (spike, next potential)."""
    v = v.detach()  # the SLTT cut (sltt.md "The SLTT cut")
    x = x.to(v.dtype)
    v_rest = 0.0 if v_reset is None else v_reset
    # spikingjelly LIFNode charge, both input conventions (sltt.md uses decay_input = False)
    u = v + (x - (v - v_rest)) / tau if decay_input else v - (v - v_rest) / tau + x
    spike = spike_fn(u - v_threshold, **sg_params)
    s_reset = spike.detach() if detach_reset else spike
    v_next = u - s_reset * v_threshold if v_reset is None else (1.0 - s_reset) * u + s_reset * v_reset
    # The next step reads v_next.detach(), so the state is kept without its graph: the reset's
    # gradient path ends at the cut either way, and no step's graph outlives its backward.
    return spike, v_next.detach()


def sltt_multi_step(
    x_seq: torch.Tensor, v: torch.Tensor, tau: float, decay_input: bool, v_threshold: float,
    v_reset: float | None, spike_fn: Callable[..., torch.Tensor], sg_params: dict[str, Any], detach_reset: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sltt_step`` over ``[T, ...]`` (v_{t−1} detached at every step): (spikes in ``x_seq``'s dtype,
    last potential). Pure: the reference and, compiled, the fused path."""
    spikes = []
    for x_t in x_seq.unbind(0):
        s_t, v = sltt_step(x_t, v, tau, decay_input, v_threshold, v_reset, spike_fn, sg_params, detach_reset)
        spikes.append(s_t)
    return torch.stack(spikes).to(x_seq.dtype), v


class SLTTLIFNeuron(Float32State, neuron.BaseNode):
    """LIF whose membrane potential enters the next step detached (no gradient through time)."""

    def __init__(
        self,
        tau: float = 1.1,
        decay_input: bool = False,
        v_threshold: float = 1.0,
        v_reset: float | None = None,
        surrogate_function: torch.nn.Module | None = None,
        detach_reset: bool = False,
        step_mode: str = "m",
        store_v_seq: bool = False,
        backend: str = "auto",
    ) -> None:
        if surrogate_function is None:
            surrogate_function = build_surrogate("triangle")
        super().__init__(
            v_threshold=float(v_threshold),
            v_reset=None if v_reset is None else float(v_reset),
            surrogate_function=surrogate_function,
            detach_reset=bool(detach_reset),
            step_mode=step_mode,
            store_v_seq=store_v_seq,
        )
        self.tau = float(tau)
        self.decay_input = bool(decay_input)
        self.backend = check_backend(backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}, decay_input={self.decay_input}, detach_v=True, " \
            f"backend={self.backend}"

    def _spike_fn(self, fused: bool) -> tuple[Callable[..., torch.Tensor], dict[str, Any]]:
        """The surrogate as (function, keyword parameters): its module in the reference; for the
        compiled path spikingjelly's pure ``spiking_function`` with the module's parameters."""
        sf = self.surrogate_function
        if not fused:
            return sf, {}
        if not (isinstance(sf, sj_surrogate.SurrogateFunctionBase) and sf.spiking):
            raise ConfigError(f"neuron.backend=fused needs a spikingjelly surrogate in spiking mode, got {sf!r}; "
                              "use neuron.backend=auto (or reference)")
        return type(sf).spiking_function, sf._sg_params

    def _fused(self, x: torch.Tensor) -> bool:
        sf = self.surrogate_function
        if self.backend == "auto" and not (isinstance(sf, sj_surrogate.SurrogateFunctionBase) and sf.spiking):
            return False
        return use_fused(self.backend, x.device)

    def single_step_functional_forward(
        self, inputs: tuple[torch.Tensor, ...], states: tuple[object, ...], **kwargs: object
    ) -> tuple[tuple[torch.Tensor, ...], tuple[object, ...]]:
        spike_fn, params = self._spike_fn(False)
        spike, v = sltt_step(inputs[0], states[0], self.tau, self.decay_input, self.v_threshold,  # type: ignore[arg-type]
                             self.v_reset, spike_fn, params, self.detach_reset)
        return (spike.to(inputs[0].dtype),), (v, *states[1:])

    def multi_step_functional_forward(
        self, inputs: tuple[torch.Tensor, ...], states: tuple[object, ...], **kwargs: object
    ) -> tuple[tuple[torch.Tensor, ...], tuple[object, ...]]:
        x_seq = inputs[0]
        fused = self._fused(x_seq)
        spike_fn, params = self._spike_fn(fused)
        spikes, v = run_multi_step("fused" if fused else "reference", sltt_multi_step, x_seq, states[0], self.tau,
                                   self.decay_input, self.v_threshold, self.v_reset, spike_fn, params,
                                   self.detach_reset)
        return (spikes,), (v, *states[1:])


@register_neuron("sltt_lif")
def sltt_lif(
    tau: float = 1.1,
    decay_input: bool = False,
    v_threshold: float = 1.0,
    v_reset: float | None = None,
    surrogate: str = "triangle",
    surrogate_alpha: float | None = None,
    detach_reset: bool = False,
    step_mode: str = "m",
    store_v_seq: bool = False,
    backend: str = "auto",
) -> SLTTLIFNeuron:
    """SLTT's LIF (defaults from sltt.md "Neuron"); v_{t−1} detached in both step modes."""
    if tau < 1:
        raise ConfigError(f"sltt_lif needs tau >= 1 (got tau={tau}); the leak is 1 - 1/tau, e.g. tau=1.1")
    return lif_node(SLTTLIFNeuron, tau, decay_input, v_threshold, v_reset, surrogate, surrogate_alpha,
                    detach_reset, step_mode, store_v_seq, backend)
