"""``stds_cifarnet``: the CIFAR-10 network of STDS (stds.md, "Networks and recipes").

conv3×3 in→256 (no bias) + norm computed once on the static image and repeated over T (direct
encoding; ``static_input``) → neuron; 2 × [conv 256→256 → norm → neuron] → max-pool 2;
3 × [conv → norm → neuron] → max-pool 2; flatten 256·8·8 = 16384 → dropout 0.5 (mask shared over T)
→ fc 16384→2048 → neuron → dropout 0.5 → fc 2048→``voting``·C → neuron → average of each group of
``voting`` (10) outputs → C classes. Both fc layers are 1×1 convolutions without bias, as in the
reference, so the STDS reparametrisation (which acts on convolutions) prunes them too.
Output: the voted spikes per step ``[T, N, C]`` (their mean over T is the firing rate that the MSE
loss compares with the one-hot label); ``[N, C]`` in single-step mode. Needs 32×32 inputs.
36,718,336 parameters for C = 10. PyTorch's default initialisation, as the reference.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import NormFactory
from spikeforge.models import register_model
from spikeforge.models._utils import StaticInputModel, check_input_size, dropout_layer
from spikeforge.neurons import NeuronFactory


class STDSCifarNet(StaticInputModel):
    input_size = 32

    def __init__(self, num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory,
                 channels: int = 256, hidden: int = 2048, voting: int = 10, dropout: float = 0.5,
                 T: int | None = None) -> None:
        super().__init__(T)
        if voting < 1:
            raise ConfigError(f"model.voting must be >= 1 (got {voting})")

        def conv(c_in: int) -> layer.Conv2d:
            return layer.Conv2d(c_in, channels, kernel_size=3, padding=1, bias=False)

        self.conv1, self.bn1, self.sn1 = conv(in_channels), norm(channels), neuron(num_features=channels)
        mods: list[nn.Module] = []
        for i in range(5):
            mods += [conv(channels), norm(channels), neuron(num_features=channels)]
            if i in (1, 4):
                mods.append(layer.MaxPool2d(2, 2))
        self.features = nn.Sequential(*mods)
        side = self.input_size // 4
        self.flatten = layer.Flatten(1)
        self.dp7 = dropout_layer(dropout)
        self.fc7 = layer.Conv2d(channels * side * side, hidden, kernel_size=1, bias=False)
        self.sn7 = neuron(num_features=hidden)
        self.dp8 = dropout_layer(dropout)
        self.fc8 = layer.Conv2d(hidden, num_classes * voting, kernel_size=1, bias=False)
        self.sn8 = neuron(num_features=num_classes * voting)
        self.voting = layer.VotingLayer(voting)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, "stds_cifarnet", size=self.input_size)
        x = self.sn1(self.run_stem(x, self.conv1, self.bn1))
        x = self.dp7(self.flatten(self.features(x)))
        x = x[..., None, None]  # [..., F] → [..., F, 1, 1] for the 1×1-conv fc layers
        x = self.sn7(self.fc7(x))
        x = self.fc8(self.dp8(x)).flatten(-3)  # [..., C·voting]
        return self.voting(self.sn8(x))


@register_model("stds_cifarnet")
def stds_cifarnet(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
                  norm: NormFactory | None = None, channels: int = 256, hidden: int = 2048, voting: int = 10,
                  dropout: float = 0.5, T: int | None = None) -> STDSCifarNet:
    if neuron is None or norm is None:
        raise ConfigError("stds_cifarnet needs neuron and norm factories; use spikeforge.models.build_model")
    return STDSCifarNet(num_classes, in_channels, neuron, norm, channels=channels, hidden=hidden, voting=voting,
                        dropout=dropout, T=T)

