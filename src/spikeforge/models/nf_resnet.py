"""``nf_resnet34/50/101``: SLTT's normaliser-free spiking ResNets for ImageNet (sltt.md, "Networks").

No normalisation layers: the ``norm`` factory is accepted for a uniform interface and ignored. Every
conv uses scaled weight standardisation, Ŵ = gain · (W − mean) / sqrt(Var · fan_in + 1e-4) per output
channel (unbiased Var, learnable per-channel gain, with bias) — spikingjelly's ``layer.WSConv2d``
computes exactly this (checked against sltt.md item 5 in the tests).

Pre-activation residual blocks with the NF-ResNet signal-propagation scaling:

    a = 2.74 · N(x / β);  h = conv(2.74 · N(conv(a)))  (bottleneck: one more conv/neuron);
    out = α · g · h + S,  S = x or conv1×1_s(a) when the shape changes,

with α = 0.2, skip-init gain g (a learnable scalar, 0 at init) and β = sqrt of the expected variance of
x, which starts at 1 per stage, grows by α² after each block and restarts at 1 + α² after a
downsampling block. Stem: WS-conv7×7/2 (no neuron) → AvgPool 3×3/2. Head: global average pool →
Linear(C) with zero-initialised weight; convs Kaiming-normal (fan_out) with zero bias. Output per-step
logits ``[T, N, C]`` (``[N, C]`` single-step). 21,797,688 parameters for ResNet-34 at 1000 classes.
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import layer
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import NormFactory
from spikeforge.models import register_model
from spikeforge.models._utils import check_width
from spikeforge.neurons import NeuronFactory

SPIKE_GAIN = 2.74  # sltt.md: spike outputs scaled by 2.74
ALPHA = 0.2  # sltt.md: residual-branch scale α


def ws_conv(c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> layer.WSConv2d:
    return layer.WSConv2d(c_in, c_out, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2,
                          bias=True, gain=True, eps=1e-4)


class NFBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, beta: float, alpha: float,
                 neuron: NeuronFactory) -> None:
        super().__init__()
        self.beta, self.alpha = beta, alpha
        self.sn1 = neuron(num_features=c_in)
        self.conv1 = ws_conv(c_in, planes, 3, stride)
        self.sn2 = neuron(num_features=planes)
        self.conv2 = ws_conv(planes, planes, 3)
        self.downsample = ws_conv(c_in, planes, 1, stride) if stride != 1 or c_in != planes else None
        self.skipinit_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.sn1(x / self.beta) * SPIKE_GAIN
        identity = x if self.downsample is None else self.downsample(a)
        h = self.conv2(self.sn2(self.conv1(a)) * SPIKE_GAIN)
        return h * self.skipinit_gain * self.alpha + identity

    def extra_repr(self) -> str:
        return f"beta={self.beta:.4f}, alpha={self.alpha}"


class NFBottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int, beta: float, alpha: float,
                 neuron: NeuronFactory) -> None:
        super().__init__()
        self.beta, self.alpha = beta, alpha
        c_out = planes * self.expansion
        self.sn1 = neuron(num_features=c_in)
        self.conv1 = ws_conv(c_in, planes, 1)
        self.sn2 = neuron(num_features=planes)
        self.conv2 = ws_conv(planes, planes, 3, stride)
        self.sn3 = neuron(num_features=planes)
        self.conv3 = ws_conv(planes, c_out, 1)
        self.downsample = ws_conv(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else None
        self.skipinit_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.sn1(x / self.beta) * SPIKE_GAIN
        identity = x if self.downsample is None else self.downsample(a)
        h = self.sn2(self.conv1(a)) * SPIKE_GAIN
        h = self.conv3(self.sn3(self.conv2(h)) * SPIKE_GAIN)
        return h * self.skipinit_gain * self.alpha + identity

    def extra_repr(self) -> str:
        return f"beta={self.beta:.4f}, alpha={self.alpha}"


class NFResNet(nn.Module):
    def __init__(self, block: type[NFBasicBlock] | type[NFBottleneck], layers: tuple[int, int, int, int],
                 num_classes: int, in_channels: int, neuron: NeuronFactory, alpha: float = ALPHA,
                 width: int = 64) -> None:
        super().__init__()
        self.alpha = alpha
        w = check_width(width)
        self.conv1 = ws_conv(in_channels, w, 7, 2)
        self.maxpool = layer.AvgPool2d(kernel_size=3, stride=2, padding=1)  # named as in the reference
        c, var = w, 1.0
        stages = []
        for i, (planes, n) in enumerate(zip((w, 2 * w, 4 * w, 8 * w), layers)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blk = block(c, planes, stride, math.sqrt(var), alpha, neuron)
                blocks.append(blk)
                c = planes * block.expansion
                # expected variance of the next block's input (signal propagation of NF-ResNets)
                var = 1.0 + alpha**2 if blk.downsample is not None else var + alpha**2
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = layer.AdaptiveAvgPool2d((1, 1))
        self.flatten = layer.Flatten(1)
        self.fc = layer.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.fc.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def _build(block: type[NFBasicBlock] | type[NFBottleneck], layers: tuple[int, int, int, int], num_classes: int,
           in_channels: int, neuron: NeuronFactory | None, alpha: float, width: int) -> NFResNet:
    if neuron is None:
        raise ConfigError("NF-ResNet needs a neuron factory; build it with spikeforge.models.build_model")
    return NFResNet(block, layers, num_classes, in_channels, neuron, alpha=alpha, width=width)


@register_model("nf_resnet34")
def nf_resnet34(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
                norm: NormFactory | None = None, alpha: float = ALPHA, width: int = 64) -> NFResNet:
    """NF spiking ResNet-34 (BasicBlocks [3, 4, 6, 3]); ``norm`` is ignored (no normalisation layers)."""
    return _build(NFBasicBlock, (3, 4, 6, 3), num_classes, in_channels, neuron, alpha, width)


@register_model("nf_resnet50")
def nf_resnet50(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
                norm: NormFactory | None = None, alpha: float = ALPHA, width: int = 64) -> NFResNet:
    """NF spiking ResNet-50 (Bottlenecks [3, 4, 6, 3]); ``norm`` is ignored (no normalisation layers)."""
    return _build(NFBottleneck, (3, 4, 6, 3), num_classes, in_channels, neuron, alpha, width)


@register_model("nf_resnet101")
def nf_resnet101(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
                 norm: NormFactory | None = None, alpha: float = ALPHA, width: int = 64) -> NFResNet:
    """NF spiking ResNet-101 (Bottlenecks [3, 4, 23, 3]); ``norm`` is ignored (no normalisation layers)."""
    return _build(NFBottleneck, (3, 4, 23, 3), num_classes, in_channels, neuron, alpha, width)
