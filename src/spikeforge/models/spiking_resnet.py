"""``spiking_resnet18/34``: the plain spiking ResNet (spikingjelly's ``SpikingResNet`` layout, the
ImageNet baseline of the SEW-ResNet paper): torchvision's BasicBlock with every ReLU replaced by a
neuron, the second neuron after the residual add:

    out = sn2(norm_α(conv2(sn1(norm(conv1(x))))) + sc(x)),  sc = identity or norm_α(conv1×1(x))

with α = 1/√2 on the two normed branches summed at the add (used by threshold-dependent BN, ignored
by the other norms; stbp_tdbn.md, "tdBN"). Layer names follow spikingjelly's model.

Stem ``imagenet`` (conv7×7/2 + norm + neuron + max-pool 3×3/2) or ``cifar`` (conv3×3/1, no pool); global
average pool → Linear read out at every step: ``[T, N, num_classes]`` (``[N, num_classes]`` single-step).
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import layer
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import NormFactory
from spikeforge.models import register_model
from spikeforge.models._utils import check_width, init_kaiming, make_stem
from spikeforge.models.sew_resnet import conv1x1, conv3x3
from spikeforge.neurons import NeuronFactory

RESIDUAL_ALPHA = 1 / math.sqrt(2)


class SpikingBasicBlock(nn.Module):
    def __init__(self, c_in: int, planes: int, stride: int, neuron: NeuronFactory, norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, planes, stride)
        self.bn1 = norm(planes)
        self.sn1 = neuron(num_features=planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes, alpha=RESIDUAL_ALPHA)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != planes:
            self.downsample = nn.Sequential(conv1x1(c_in, planes, stride), norm(planes, alpha=RESIDUAL_ALPHA))
        self.sn2 = neuron(num_features=planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.sn2(out + identity)


class SpikingResNet(nn.Module):
    def __init__(self, layers: tuple[int, int, int, int], num_classes: int, in_channels: int,
                 neuron: NeuronFactory, norm: NormFactory, stem: str = "imagenet", width: int = 64) -> None:
        super().__init__()
        w = check_width(width)
        self.conv1, self.bn1, self.maxpool = make_stem(stem, in_channels, w, norm)
        self.sn1 = neuron(num_features=w)
        c = w
        stages = []
        for i, (planes, n) in enumerate(zip((w, 2 * w, 4 * w, 8 * w), layers)):
            blocks = []
            for j in range(n):
                blocks.append(SpikingBasicBlock(c, planes, 2 if (i > 0 and j == 0) else 1, neuron, norm))
                c = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = layer.AdaptiveAvgPool2d((1, 1))
        self.flatten = layer.Flatten(1)
        self.fc = layer.Linear(c, num_classes)
        init_kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.sn1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def _build(layers: tuple[int, int, int, int], num_classes: int, in_channels: int, neuron: NeuronFactory | None,
           norm: NormFactory | None, stem: str, width: int) -> SpikingResNet:
    if neuron is None or norm is None:
        raise ConfigError("spiking ResNet needs neuron and norm factories; build it with spikeforge.models.build_model")
    return SpikingResNet(layers, num_classes, in_channels, neuron, norm, stem=stem, width=width)


@register_model("spiking_resnet18")
def spiking_resnet18(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
                     norm: NormFactory | None = None, stem: str = "imagenet", width: int = 64) -> SpikingResNet:
    """Spiking ResNet-18, BasicBlocks [2, 2, 2, 2] (11,689,512 parameters at 1000 classes, as torchvision)."""
    return _build((2, 2, 2, 2), num_classes, in_channels, neuron, norm, stem, width)


@register_model("spiking_resnet34")
def spiking_resnet34(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
                     norm: NormFactory | None = None, stem: str = "imagenet", width: int = 64) -> SpikingResNet:
    """Spiking ResNet-34, BasicBlocks [3, 4, 6, 3] (21,797,672 parameters at 1000 classes)."""
    return _build((3, 4, 6, 3), num_classes, in_channels, neuron, norm, stem, width)
