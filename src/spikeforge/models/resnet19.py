"""``resnet19``: the CIFAR ResNet-19 of STBP-tdBN (stbp_tdbn.md, "ResNet-19").

Stem conv3×3 in→128 → norm → neuron; stages of 3 × 128, 3 × 256 (stride 2 first), 2 × 512 (stride 2
first) BasicBlocks, out = N(norm_α(conv(N(norm(conv_s(x))))) + sc(x)), sc = identity or
norm_α(conv1×1_s(x)), α = 1/√2 (threshold-dependent BN uses it, other norms ignore it); convs without
bias; global average pool → FC 512→256 → neuron → FC 256→C, which does not spike. Output per-step
logits ``[T, N, C]`` (``[N, C]`` single-step), their mean over T is the prediction.
12,697,994 parameters for C = 10.
"""

from __future__ import annotations

from spikeforge.layers import NormFactory
from spikeforge.models import register_model
from spikeforge.models._utils import check_width
from spikeforge.models.cifar_resnet import CifarResNet
from spikeforge.neurons import NeuronFactory


@register_model("resnet19")
def resnet19(num_classes: int, in_channels: int = 3, neuron: NeuronFactory | None = None,
             norm: NormFactory | None = None, width: int = 128, hidden: int = 256) -> CifarResNet:
    """ResNet-19; ``width`` is the first stage's (128 in the paper), ``hidden`` the hidden FC (256)."""
    w = check_width(width)
    return CifarResNet((w, 2 * w, 4 * w), (3, 3, 2), num_classes, in_channels, neuron, norm, hidden_fc=hidden)
