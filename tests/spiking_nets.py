"""Untrained networks that fire, for counting tests: norm statistics taken from the batch itself."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional
from torch import nn


@torch.no_grad()
def calibrate_norms(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every norm layer's running statistics to those of ``net(x)`` (momentum 1 for one forward pass in
    training mode), so that in eval mode the pre-activations are normalised as in training and the
    neurons fire; returns ``net`` in eval mode with its state reset."""
    norms = [m for m in net.modules() if isinstance(getattr(m, "running_mean", None), torch.Tensor)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    net.train()
    net(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    functional.reset_net(net)
    return net.eval()
