"""``convnet``: the small default network for the embedded digits data.

Stages of conv3×3 (no bias) → average pool → norm → neuron: AvgPool2d(2), and in the last stage an
adaptive average pool to ``pool_size``; then flatten, dropout and a non-spiking Linear read out at every
step. Pooling before the neuron (as spikingjelly's examples pool before firing, or max-pool spikes) means
every synaptic layer after the first receives binary spikes, so its cost is accumulates
(:mod:`spikeforge.utils.opcount`); the norm after the pool keeps the neurons' input at unit scale, and
each neuron layer runs at the pooled resolution. In eval mode the norm folds into the conv across the
pool (:func:`spikeforge.layers.tdbn.fold_sequential`), so the network still maps to NIR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from spikingjelly.activation_based import layer
from torch import nn

from spikeforge.layers import NormFactory
from spikeforge.models import register_model
from spikeforge.neurons import NeuronFactory


class ConvNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        neuron: NeuronFactory,
        norm: NormFactory,
        channels: Sequence[int] = (16, 32, 64),
        pool_size: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(channels):
            last = i == len(channels) - 1
            blocks += [
                layer.Conv2d(c_in, c, 3, padding=1, bias=False),
                layer.AdaptiveAvgPool2d(pool_size) if last else layer.AvgPool2d(2),
                norm(c),
                neuron(num_features=c),
            ]
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.flatten = layer.Flatten(1)
        # spikingjelly's Dropout shares its mask over T in multi-step mode.
        self.dropout = layer.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = layer.Linear(c_in * pool_size * pool_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.flatten(self.features(x))))


@register_model("convnet")
def convnet(
    num_classes: int,
    in_channels: int = 3,
    neuron: NeuronFactory | None = None,
    norm: NormFactory | None = None,
    channels: Sequence[int] = (16, 32, 64),
    pool_size: int = 2,
    dropout: float = 0.0,
) -> ConvNet:
    return ConvNet(num_classes, in_channels, neuron, norm, channels=tuple(channels), pool_size=pool_size,
                   dropout=dropout)
