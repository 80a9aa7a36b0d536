"""VGG-11 networks for DVS frames (48×48, 2 polarity channels).

``spiking_vgg11_bn`` (SLTT and DSR, sltt.md / dsr.md "Networks"): stages [64, M] [128, M] [256, 256, M]
[512, 512, M] [512, 512, M], each conv3×3 (bias) → norm → neuron → dropout, M = AvgPool2d(2); then
AdaptiveAvgPool(7×7) → flatten → Linear(25088, C). 9,476,298 parameters for C = 10, 2 input channels.
- ``head: linear`` (SLTT): per-step logits ``[T, N, C]``.
- ``head: dsr`` (DSR): Linear → norm(C) (BatchNorm1d) → neuron; output the per-step spikes ``[T, N, C]``
  whose (weighted) rate the DSR method reads out (+2·C parameters).
- ``dropout`` after every neuron: mask shared over T (SLTT, spikingjelly Dropout) or, with
  ``dropout_per_step``, a fresh mask per step (DSR's Dropout(0.1) on ``[T·N, ...]``).
- Init (both references): Kaiming-normal (fan_out) convs with zero bias, Linear N(0, 0.01) with zero bias.
- Needs inputs of at least 32×32 (five 2×2 pools).

``vggsnn`` (ASGL ``VGGSNN2``, asgl.md "Networks and recipes"): c64 c128 AP c256 c256 AP c512 c512 AP c512
c512 AP, conv3×3 without bias → norm → neuron, AP = AvgPool2d(2) on spikes; flatten 512·3·3 = 4608 →
Linear(4608, C, no bias); every conv and Linear weight drawn from N(0, 0.5) as in the reference.
9,268,736 parameters for C = 10 (2 input channels). Needs exactly 48×48 inputs.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import NormFactory
from spikeforge.models import register_model
from spikeforge.models._utils import check_choice, check_input_size, check_width, dropout_layer
from spikeforge.neurons import NeuronFactory

VGG11_STAGES: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (512, 512), (512, 512))
VGGSNN_CFG: tuple[int | str, ...] = (64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A")
HEADS = ("linear", "dsr")


class SpikingVGG11BN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory,
                 dropout: float = 0.0, dropout_per_step: bool = False, head: str = "linear",
                 width: int = 64) -> None:
        super().__init__()
        self.head = check_choice(head, HEADS, "model.head")
        scale = check_width(width) / 64
        c = in_channels
        stages = []
        for widths in VGG11_STAGES:
            mods: list[nn.Module] = []
            for w in (int(v * scale) for v in widths):
                mods += [layer.Conv2d(c, w, kernel_size=3, padding=1, bias=True), norm(w),
                         neuron(num_features=w), dropout_layer(dropout, dropout_per_step)]
                c = w
            mods.append(layer.AvgPool2d(kernel_size=2, stride=2))
            stages.append(nn.Sequential(*mods))
        self.features = nn.Sequential(*stages)
        self.avgpool = layer.AdaptiveAvgPool2d((7, 7))
        self.flatten = layer.Flatten(1)
        self.fc = layer.Linear(c * 7 * 7, num_classes)
        if self.head == "dsr":
            self.bn_out = norm(num_classes)
            self.sn_out = neuron(num_features=num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, "spiking_vgg11_bn", min_size=32)
        x = self.fc(self.flatten(self.avgpool(self.features(x))))
        if self.head == "dsr":
            x = self.sn_out(self.bn_out(x))
        return x


class VGGSNN(nn.Module):
    input_size = 48

    def __init__(self, num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory,
                 width: int = 64) -> None:
        super().__init__()
        scale = check_width(width) / 64
        mods: list[nn.Module] = []
        c = in_channels
        for item in VGGSNN_CFG:
            if item == "A":
                mods.append(layer.AvgPool2d(kernel_size=2, stride=2))
            else:
                w = int(int(item) * scale)
                mods += [layer.Conv2d(c, w, kernel_size=3, padding=1, bias=False), norm(w), neuron(num_features=w)]
                c = w
        self.features = nn.Sequential(*mods)
        self.flatten = layer.Flatten(1)
        side = self.input_size // 16
        self.classifier = layer.Linear(c * side * side, num_classes, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.5)  # asgl.md: weights N(0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, "vggsnn", size=self.input_size)
        return self.classifier(self.flatten(self.features(x)))


@register_model("spiking_vgg11_bn")
def spiking_vgg11_bn(num_classes: int, in_channels: int = 2, neuron: NeuronFactory | None = None,
                     norm: NormFactory | None = None, dropout: float = 0.0, dropout_per_step: bool = False,
                     head: str = "linear", width: int = 64) -> SpikingVGG11BN:
    if neuron is None or norm is None:
        raise ConfigError("spiking_vgg11_bn needs neuron and norm factories; use spikeforge.models.build_model")
    return SpikingVGG11BN(num_classes, in_channels, neuron, norm, dropout=dropout,
                          dropout_per_step=dropout_per_step, head=head, width=width)


@register_model("vggsnn")
def vggsnn(num_classes: int, in_channels: int = 2, neuron: NeuronFactory | None = None,
           norm: NormFactory | None = None, width: int = 64) -> VGGSNN:
    if neuron is None or norm is None:
        raise ConfigError("vggsnn needs neuron and norm factories; use spikeforge.models.build_model")
    return VGGSNN(num_classes, in_channels, neuron, norm, width=width)
