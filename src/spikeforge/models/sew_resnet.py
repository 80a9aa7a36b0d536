"""``sew_resnet18/34/50``: Spike-Element-Wise ResNet (Fang et al., NeurIPS 2021), the STDS ImageNet net.

Block: ``out = sn(norm(conv(...)))`` twice (three times in the bottleneck), then
``g(out, identity)`` with the connect function g (stds.md, "Networks"; SEW reference):
``ADD``: out + identity, ``AND``: out · identity, ``IAND``: identity · (1 − out). The downsample
branch is conv1×1 → norm → neuron, so both inputs of g are spikes.

Layer names and shapes follow spikingjelly's ``SEWResNet`` (so its state dicts load), but the net is
built here because spikingjelly's builders call the neuron without a channel count, hard-code a
3-channel ImageNet stem, and its bottleneck computes IAND as out · (1 − identity).

Stem: ``imagenet`` (conv7×7/2 + norm + neuron + max-pool 3×3/2) or ``cifar`` (conv3×3/1, no pool). As in
STDS the stem conv + norm runs once on a static image and is repeated over T (``static_input``).
Output: per-step logits ``[T, N, num_classes]`` (``fc`` is linear, so their mean over T equals the
reference's ``fc(mean_t)``); ``[N, num_classes]`` in single-step mode.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import NormFactory
from spikeforge.models import register_model
from spikeforge.models._utils import StaticInputModel, check_choice, check_width, init_kaiming, make_stem
from spikeforge.neurons import NeuronFactory

CONNECT_FUNCTIONS = ("ADD", "AND", "IAND")


def connect(out: torch.Tensor, identity: torch.Tensor, connect_f: str) -> torch.Tensor:
    """The SEW connect function g(A = out, S = identity)."""
    if connect_f == "ADD":
        return out + identity
    if connect_f == "AND":
        return out * identity
    return identity * (1.0 - out)  # IAND


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> layer.Conv2d:
    return layer.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> layer.Conv2d:
    return layer.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class SEWBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, neuron: NeuronFactory, norm: NormFactory,
                 connect_f: str) -> None:
        super().__init__()
        self.connect_f = connect_f
        self.conv1 = conv3x3(c_in, planes, stride)
        self.bn1 = norm(planes)
        self.sn1 = neuron(num_features=planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.sn2 = neuron(num_features=planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != planes:
            self.downsample = nn.Sequential(conv1x1(c_in, planes, stride), norm(planes))
            self.downsample_sn = neuron(num_features=planes)

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)))
        identity = x if self.downsample is None else self.downsample_sn(self.downsample(x))
        return connect(out, identity, self.connect_f)

    def extra_repr(self) -> str:
        return f"connect_f={self.connect_f}"


class SEWBottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int, neuron: NeuronFactory, norm: NormFactory,
                 connect_f: str) -> None:
        super().__init__()
        self.connect_f = connect_f
        c_out = planes * self.expansion
        self.conv1 = conv1x1(c_in, planes)
        self.bn1 = norm(planes)
        self.sn1 = neuron(num_features=planes)
        self.conv2 = conv3x3(planes, planes, stride)  # stride on the 3×3 (ResNet v1.5, as torchvision)
        self.bn2 = norm(planes)
        self.sn2 = neuron(num_features=planes)
        self.conv3 = conv1x1(planes, c_out)
        self.bn3 = norm(c_out)
        self.sn3 = neuron(num_features=c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(conv1x1(c_in, c_out, stride), norm(c_out))
            self.downsample_sn = neuron(num_features=c_out)

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)))
        out = self.sn3(self.bn3(self.conv3(out)))
        identity = x if self.downsample is None else self.downsample_sn(self.downsample(x))
        return connect(out, identity, self.connect_f)

    def extra_repr(self) -> str:
        return f"connect_f={self.connect_f}"


class SEWResNet(StaticInputModel):
    def __init__(
        self,
        block: type[SEWBasicBlock] | type[SEWBottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int,
        neuron: NeuronFactory,
        norm: NormFactory,
        connect_f: str = "ADD",
        stem: str = "imagenet",
        zero_init_residual: bool = False,
        T: int | None = None,
        width: int = 64,
    ) -> None:
        super().__init__(T)
        self.connect_f = check_choice(str(connect_f).upper(), CONNECT_FUNCTIONS, "model.connect_f")
        w = check_width(width)
        self.conv1, self.bn1, self.maxpool = make_stem(stem, in_channels, w, norm)
        self.sn1 = neuron(num_features=w)
        self.inplanes = w
        self.layer1 = self._make_layer(block, w, layers[0], 1, neuron, norm)
        self.layer2 = self._make_layer(block, 2 * w, layers[1], 2, neuron, norm)
        self.layer3 = self._make_layer(block, 4 * w, layers[2], 2, neuron, norm)
        self.layer4 = self._make_layer(block, 8 * w, layers[3], 2, neuron, norm)
        self.avgpool = layer.AdaptiveAvgPool2d((1, 1))
        self.flatten = layer.Flatten(1)
        self.fc = layer.Linear(8 * w * block.expansion, num_classes)
        init_kaiming(self)
        if zero_init_residual:
            # SEW reference: the last norm of each block starts at 0 (bias 1 for AND so the block passes
            # the identity through); norms without an affine weight are left as they are.
            for m in self.modules():
                if isinstance(m, (SEWBasicBlock, SEWBottleneck)):
                    bn = m.last_norm()
                    if getattr(bn, "weight", None) is not None:
                        nn.init.zeros_(bn.weight)
                        if self.connect_f == "AND" and getattr(bn, "bias", None) is not None:
                            nn.init.ones_(bn.bias)

    def _make_layer(self, block: type[SEWBasicBlock] | type[SEWBottleneck], planes: int, blocks: int,
                    stride: int, neuron: NeuronFactory, norm: NormFactory) -> nn.Sequential:
        mods = [block(self.inplanes, planes, stride, neuron, norm, self.connect_f)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes, 1, neuron, norm, self.connect_f) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.run_stem(x, self.conv1, self.bn1)
        x = self.maxpool(self.sn1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def _build(block: type[SEWBasicBlock] | type[SEWBottleneck], layers: tuple[int, int, int, int], num_classes: int,
           in_channels: int, neuron: NeuronFactory | None, norm: NormFactory | None, connect_f: str, stem: str,
           zero_init_residual: bool, T: int | None, width: int) -> SEWResNet:
    if neuron is None or norm is None:
        raise ConfigError("SEW-ResNet needs neuron and norm factories; build it with spikeforge.models.build_model")
    return SEWResNet(block, layers, num_classes, in_channels, neuron, norm, connect_f=connect_f, stem=stem,
                     zero_init_residual=zero_init_residual, T=T, width=width)


@register_model("sew_resnet18")
def sew_resnet18(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
                 norm: NormFactory | None = None, connect_f: str = "ADD", stem: str = "imagenet",
                 zero_init_residual: bool = False, T: int | None = None, width: int = 64) -> SEWResNet:
    """SEW-ResNet-18: BasicBlocks [2, 2, 2, 2]; 11,689,512 parameters at 1000 classes."""
    return _build(SEWBasicBlock, (2, 2, 2, 2), num_classes, in_channels, neuron, norm, connect_f, stem,
                  zero_init_residual, T, width)


@register_model("sew_resnet34")
def sew_resnet34(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
                 norm: NormFactory | None = None, connect_f: str = "ADD", stem: str = "imagenet",
                 zero_init_residual: bool = False, T: int | None = None, width: int = 64) -> SEWResNet:
    """SEW-ResNet-34: BasicBlocks [3, 4, 6, 3]."""
    return _build(SEWBasicBlock, (3, 4, 6, 3), num_classes, in_channels, neuron, norm, connect_f, stem,
                  zero_init_residual, T, width)


@register_model("sew_resnet50")
def sew_resnet50(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
                 norm: NormFactory | None = None, connect_f: str = "ADD", stem: str = "imagenet",
                 zero_init_residual: bool = False, T: int | None = None, width: int = 64) -> SEWResNet:
    """SEW-ResNet-50: Bottlenecks [3, 4, 6, 3]."""
    return _build(SEWBottleneck, (3, 4, 6, 3), num_classes, in_channels, neuron, norm, connect_f, stem,
                  zero_init_residual, T, width)
