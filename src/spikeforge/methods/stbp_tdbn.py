"""STBP-tdBN (Wu et al. 2018; Zheng et al., AAAI 2021): BPTT with the STBP LIF neuron and
threshold-dependent batch norm (stbp_tdbn.md).

What differs from the base (plain BPTT) is supplied through the factories: every neuron of the chosen
model is ``stbp_lif`` (strict firing u > V_th, hard reset with the gradient through (1 − o_{t−1}),
rectangular surrogate centred at V_th) and every norm is ``tdbn`` (α·V_th-scaled BN over T·N·H·W;
residual models pass α = 1/√2 on the two branches summed at an add). tdBN's V_th follows the neuron's
threshold unless ``norm.v_th`` is set.

Readout (stbp_tdbn.md, "ResNet-19"): the model's last layer does not spike, the class scores are its
outputs averaged over T and the loss is softmax CE on them (``readout: mean``). ``readout: rate``
reproduces the small MNIST reference instead — a spiking neuron after the last layer and CE on the
spike rates — kept only as an option: rates lie in [0, 1], so with 10 classes CE can never go below
1.461 and the loss never stops pushing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import NormFactory
from spikeforge.methods.base import SpikingClassifier

READOUTS = ("mean", "rate")


class RateReadout(nn.Module):
    """``model`` followed by a spiking neuron on its per-step outputs: the outputs become spikes, and
    their mean over T (what ``ce_mean`` and the base readout take) is the firing rate."""

    def __init__(self, model: nn.Module, neuron: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.out_neuron = neuron
        self.static_input = getattr(model, "static_input", False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_neuron(self.model(x))


class STBPTdBN(SpikingClassifier):
    """BPTT with ``stbp_lif`` neurons and ``tdbn`` norms (``conf/method/stbp_tdbn.yaml``).

    Args (beyond :class:`SpikingClassifier`):
        readout: ``mean`` (non-spiking last layer, mean logits over T; the paper's) or ``rate``
            (spike rates of an extra output neuron as logits; the MNIST reference's, an option only).
    """

    def __init__(self, *args: Any, readout: str = "mean", **kwargs: Any) -> None:
        if readout not in READOUTS:
            raise ConfigError(f"method.readout must be one of {', '.join(READOUTS)} (got {readout!r})")
        super().__init__(*args, readout=readout, **kwargs)

    def norm_factory(self) -> NormFactory:
        cfg = dict(self.hparams.norm)
        kind = cfg.pop("kind")
        if kind == "tdbn" and cfg.get("v_th") is None:
            # tdBN normalises pre-activations to N(0, (α·V_th)²): V_th is the neuron's threshold.
            cfg["v_th"] = float(self.hparams.neuron.get("v_threshold", 0.5))
        return NormFactory(kind, **cfg)

    def build_net(self) -> nn.Module:
        net = super().build_net()
        if self.hparams.get("readout", "mean") == "rate":
            net = RateReadout(net, self.neuron_factory()(num_features=self.hparams.num_classes))
        return net
