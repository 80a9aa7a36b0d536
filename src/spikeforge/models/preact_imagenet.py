"""``preact_spiking_resnet18_imagenet``: the pre-activation ResNet-18 of DSR's ImageNet hybrid training
(dsr.md "Networks", ImageNet; the same graph serves the ReLU ANN and the IF SNN).

Stem conv7×7/2 (no bias) → norm → N → AvgPool(3, 2, 1); PreAct basic blocks a = N(norm(x)),
h = conv3×3(stride)(a), h = conv3×3(N(norm(h))), out = h + S(a) with S = identity or conv1×1(stride) → norm
on the spikes a (convs without bias); stages 64/128/256/512 × 2, strides 1/2/2/2. Head N(norm) →
AdaptiveAvgPool(1) → N → flatten → Linear(512, C) → norm (BN1d) → N. Output: per-step ``[T, N, C]`` of
the last neuron layer (the method reads out its rate). Convs are initialised N(0, 2/(k²·C_out)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from spikingjelly.activation_based import layer
from torch import nn

from spikeforge.layers import NormFactory
from spikeforge.models import register_model
from spikeforge.neurons import NeuronFactory


class PreActBasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, neuron: NeuronFactory, norm: NormFactory) -> None:
        super().__init__()
        self.bn1 = norm(c_in)
        self.sn1 = neuron(num_features=c_in)
        self.conv1 = layer.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.sn2 = neuron(num_features=c_out)
        self.conv2 = layer.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(layer.Conv2d(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.sn1(self.bn1(x))
        h = self.conv2(self.sn2(self.bn2(self.conv1(a))))
        return h + self.shortcut(a)


class PreActResNetImageNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        neuron: NeuronFactory,
        norm: NormFactory,
        layers: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
    ) -> None:
        super().__init__()
        self.conv1 = layer.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(width)
        self.sn1 = neuron(num_features=width)
        self.pool1 = layer.AvgPool2d(3, stride=2, padding=1)
        blocks: list[nn.Module] = []
        c_in = width
        for i, n in enumerate(layers):
            c_out = width * 2**i
            for j in range(n):
                blocks.append(PreActBasicBlock(c_in, c_out, 2 if (i > 0 and j == 0) else 1, neuron, norm))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn2 = norm(c_in)
        self.sn2 = neuron(num_features=c_in)
        self.pool2 = layer.AdaptiveAvgPool2d(1)
        self.sn3 = neuron(num_features=c_in)
        self.flatten = layer.Flatten(1)
        self.fc = layer.Linear(c_in, num_classes)
        self.bn3 = norm(num_classes)
        self.sn4 = neuron(num_features=num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.sn1(self.bn1(self.conv1(x))))
        x = self.blocks(x)
        x = self.sn3(self.pool2(self.sn2(self.bn2(x))))
        return self.sn4(self.bn3(self.fc(self.flatten(x))))


@register_model("preact_spiking_resnet18_imagenet")
def preact_spiking_resnet18_imagenet(
    num_classes: int,
    in_channels: int = 3,
    neuron: NeuronFactory | None = None,
    norm: NormFactory | None = None,
    width: int = 64,
) -> PreActResNetImageNet:
    return PreActResNetImageNet(num_classes, in_channels, neuron, norm, layers=(2, 2, 2, 2), width=width)
