"""``preact_spiking_resnet18``: the pre-activation spiking ResNet-18 of SLTT and DSR (CIFAR).

sltt.md and dsr.md, "Networks": stem conv3×3 in→64 (no bias, no norm or neuron); PreAct blocks

    a = N(norm(x));  h = conv3×3(stride, bias)(a);  h = conv3×3(bias)(dropout(N(norm(h))));  out = h + S(a)

with S = identity or conv1×1(stride, bias) on the spikes a; stages 64/128/256/512 × 2 blocks, strides
1/2/2/2. The residual add sums two conv outputs (no norm on either branch), so no α is used.

Heads (``head``):
- ``linear`` (SLTT): N(norm) → global average pool → flatten → dropout → Linear(512, C);
  output per-step logits ``[T, N, C]``. 11,176,906 parameters for C = 10.
- ``dsr`` (DSR): N(norm) → global average pool → N → flatten → dropout → Linear(512, C) → norm(C)
  (BatchNorm1d) → N; output the last neuron's per-step spikes ``[T, N, C]``, whose (weighted) rate the
  DSR method reads out. 11,176,926 parameters for C = 10.

The papers' AvgPool(4) is the global average pool at 32×32 input; an adaptive pool keeps the model
usable at other sizes (DVS 48×48). ``dropout`` applies in every block and before the Linear; its mask is
shared over T (SLTT: spikingjelly Dropout) or drawn afresh per step with ``dropout_per_step`` (DSR:
``nn.Dropout`` on ``[T·N, ...]``). Init: Kaiming-normal (fan_out) convs, Linear bias 0 (both references).
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import NormFactory
from spikeforge.models import register_model
from spikeforge.models._utils import check_choice, check_width, dropout_layer, init_kaiming
from spikeforge.neurons import NeuronFactory

HEADS = ("linear", "dsr")


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, neuron: NeuronFactory, norm: NormFactory,
                 dropout: float, dropout_per_step: bool) -> None:
        super().__init__()
        self.bn1 = norm(c_in)
        self.sn1 = neuron(num_features=c_in)
        self.conv1 = layer.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=True)
        self.bn2 = norm(c_out)
        self.sn2 = neuron(num_features=c_out)
        self.dropout = dropout_layer(dropout, dropout_per_step)
        self.conv2 = layer.Conv2d(c_out, c_out, kernel_size=3, stride=1, padding=1, bias=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = layer.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.sn1(self.bn1(x))
        h = self.conv2(self.dropout(self.sn2(self.bn2(self.conv1(a)))))
        return h + self.shortcut(a)


class PreActSpikingResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...], num_classes: int, in_channels: int, neuron: NeuronFactory,
                 norm: NormFactory, head: str = "linear", dropout: float = 0.0,
                 dropout_per_step: bool = False, width: int = 64) -> None:
        super().__init__()
        self.head = check_choice(head, HEADS, "model.head")
        w = check_width(width)
        self.conv1 = layer.Conv2d(in_channels, w, kernel_size=3, stride=1, padding=1, bias=False)
        c = w
        stages = []
        for i, (planes, n) in enumerate(zip((w, 2 * w, 4 * w, 8 * w), layers)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(PreActBlock(c, planes, stride, neuron, norm, dropout, dropout_per_step))
                c = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn1 = norm(c)
        self.sn1 = neuron(num_features=c)
        self.pool = layer.AdaptiveAvgPool2d((1, 1))
        self.sn_pool = neuron(num_features=c) if self.head == "dsr" else nn.Identity()
        self.flatten = layer.Flatten(1)
        self.drop = dropout_layer(dropout, dropout_per_step)
        self.linear = layer.Linear(c, num_classes)
        if self.head == "dsr":
            self.bn_out = norm(num_classes)
            self.sn_out = neuron(num_features=num_classes)
        init_kaiming(self, zero_conv_bias=False)  # the references leave conv biases at PyTorch's default
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.sn_pool(self.pool(self.sn1(self.bn1(x))))
        x = self.linear(self.drop(self.flatten(x)))
        if self.head == "dsr":
            x = self.sn_out(self.bn_out(x))
        return x


@register_model("preact_spiking_resnet18")
def preact_spiking_resnet18(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
                            norm: NormFactory | None = None, head: str = "linear", dropout: float = 0.0,
                            dropout_per_step: bool = False, width: int = 64) -> PreActSpikingResNet:
    """Pre-activation spiking ResNet-18 (SLTT ``spiking_resnet18``, DSR ``resnet18_if/lif``)."""
    if neuron is None or norm is None:
        raise ConfigError("preact_spiking_resnet18 needs neuron and norm factories; use spikeforge.models.build_model")
    return PreActSpikingResNet((2, 2, 2, 2), num_classes, in_channels, neuron, norm, head=head, dropout=dropout,
                               dropout_per_step=dropout_per_step, width=width)
