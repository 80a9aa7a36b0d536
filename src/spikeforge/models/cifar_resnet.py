"""``resnet18``: the BasicBlock CIFAR ResNet-18 of ASGL (asgl.md, "Networks and recipes").

Input repeated over T; stem conv3×3 in→64 → norm → neuron; BasicBlocks [2, 2, 2, 2] at 64/128/256/512,
strides 1/2/2/2, each conv-norm-neuron-conv-norm plus shortcut (conv1×1 + norm when the shape changes),
neuron after the add (the block of ``spiking_resnet``, with α = 1/√2 on the two normed branches for
tdBN); global average pool → Linear(512, C) at every step: ``[T, N, C]`` (``[N, C]`` single-step).
11,173,962 parameters for C = 10. PyTorch's default initialisation, as the reference.

:class:`CifarResNet` (stem width, stage widths and depths, optional hidden FC) also builds ``resnet19``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from spikingjelly.activation_based import layer
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import NormFactory
from spikeforge.models import register_model
from spikeforge.models._utils import check_width
from spikeforge.models.sew_resnet import conv3x3
from spikeforge.models.spiking_resnet import SpikingBasicBlock
from spikeforge.neurons import NeuronFactory


class CifarResNet(nn.Module):
    def __init__(self, widths: Sequence[int], depths: Sequence[int], num_classes: int, in_channels: int,
                 neuron: NeuronFactory | None, norm: NormFactory | None, hidden_fc: int | None = None) -> None:
        super().__init__()
        if neuron is None or norm is None:
            raise ConfigError("CIFAR ResNets need neuron and norm factories; use spikeforge.models.build_model")
        c = widths[0]
        self.conv0 = nn.Sequential(conv3x3(in_channels, c), norm(c), neuron(num_features=c))
        stages = []
        for i, (planes, n) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(n):
                blocks.append(SpikingBasicBlock(c, planes, 2 if (i > 0 and j == 0) else 1, neuron, norm))
                c = planes
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.avgpool = layer.AdaptiveAvgPool2d((1, 1))
        self.flatten = layer.Flatten(1)
        head: list[nn.Module] = []
        if hidden_fc:  # ResNet-19: FC → neuron → FC
            head += [layer.Linear(c, hidden_fc), neuron(num_features=hidden_fc)]
            c = hidden_fc
        head.append(layer.Linear(c, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.conv0(x))
        return self.classifier(self.flatten(self.avgpool(x)))


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
             norm: NormFactory | None = None, width: int = 64) -> CifarResNet:
    """ASGL's CIFAR ResNet-18 (BasicBlock); ``width`` is the first stage's (64 in the paper)."""
    w = check_width(width)
    return CifarResNet((w, 2 * w, 4 * w, 8 * w), (2, 2, 2, 2), num_classes, in_channels, neuron, norm)
