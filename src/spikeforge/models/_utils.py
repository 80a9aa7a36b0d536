"""Pieces shared by the model zoo: stems, dropout over time, static-input handling, input checks.

Every helper works in both spikingjelly step modes: multi-step (``[T, N, ...]``) and single-step
(``[N, ...]``, one time step per call, as SLTT runs models).
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import base, layer
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.layers import NormFactory

STEMS = ("imagenet", "cifar")


def step_mode_of(module: nn.Module) -> str:
    """The step mode of the first spikingjelly step module inside ``module`` (``"m"`` if none)."""
    for m in module.modules():
        if isinstance(m, base.StepModule):
            return m.step_mode
    return "m"


class StepDropout(base.StepModule, nn.Dropout):
    """Dropout with a fresh mask at every time step (DSR: ``nn.Dropout`` on ``[T·N, ...]``).

    Elementwise dropout of the whole ``[T, N, ...]`` tensor draws independent masks per step, so the
    multi-step and single-step forms agree in distribution.
    """

    def __init__(self, p: float = 0.5, step_mode: str = "m") -> None:
        nn.Dropout.__init__(self, p)
        self.step_mode = step_mode


def dropout_layer(p: float, per_step: bool = False) -> nn.Module:
    """Dropout of rate ``p``: one mask shared over all T steps (spikingjelly ``layer.Dropout``, whose mask
    lives until ``reset_net`` in both step modes) or a fresh mask per step; identity when ``p == 0``."""
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"dropout must be in [0, 1) (got {p}); e.g. model.dropout=0.3")
    if p == 0.0:
        return nn.Identity()
    return StepDropout(p) if per_step else layer.Dropout(p)


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)} (got {value!r})")
    return value


def check_width(width: int) -> int:
    """The base channel width of a model (the papers' value is the default; smaller widths make quick CPU runs)."""
    if int(width) < 1 or int(width) != width:
        raise ConfigError(f"model.width must be a positive integer (got {width})")
    return int(width)


def make_stem(
    stem: str, in_channels: int, width: int, norm: NormFactory
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(conv, norm, pool)`` of a ResNet stem: ``imagenet`` = conv7×7/2 + max-pool 3×3/2 (÷4);
    ``cifar`` = conv3×3/1 and no pool (the ImageNet stem would shrink 32×32 inputs to 8×8)."""
    check_choice(stem, STEMS, "model.stem")
    if stem == "imagenet":
        conv = layer.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        pool: nn.Module = layer.MaxPool2d(kernel_size=3, stride=2, padding=1)
    else:
        conv = layer.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        pool = nn.Identity()
    return conv, norm(width), pool


def check_input_size(x: torch.Tensor, model: str, size: int | None = None, min_size: int | None = None) -> None:
    """Raise a ConfigError when the spatial size of ``x`` (last two dims) does not fit the model."""
    h, w = x.shape[-2], x.shape[-1]
    if size is not None and (h, w) != (size, size):
        raise ConfigError(f"{model} needs {size}×{size} inputs (its classifier size is fixed), got {h}×{w}; "
                          f"resize the data (e.g. data.size={size} or data.image_size={size})")
    if min_size is not None and min(h, w) < min_size:
        raise ConfigError(f"{model} needs inputs of at least {min_size}×{min_size}, got {h}×{w}; "
                          f"use larger images (e.g. data.image_size={min_size})")


class StaticInputModel(nn.Module):
    """Base of models whose first conv + norm (the stem) runs once on the static image.

    ``SpikingClassifier`` hands a model with ``static_input = True`` the image ``[N, C, H, W]``
    unrepeated; :meth:`run_stem` computes ``norm(conv(x))`` once and repeats the result over the
    ``T`` steps (STDS, "Networks": "stem conv+BN computed once and repeated"). Time-major input
    ``[T, N, C, H, W]`` (event frames) goes through the stem step by step as usual; in single-step
    mode the stem simply runs on each step's ``[N, C, H, W]``.
    """

    static_input = True

    def __init__(self, T: int | None = None) -> None:
        super().__init__()
        if T is not None and int(T) < 1:
            raise ConfigError(f"T must be a positive number of time steps (got T={T})")
        self.T = None if T is None else int(T)

    def run_stem(self, x: torch.Tensor, *stem: nn.Module) -> torch.Tensor:
        """Apply the stem modules in order (once, then repeated over T, for a static image)."""
        static = x.dim() == 4 and step_mode_of(stem[0]) == "m"
        if static:
            if self.T is None:
                raise ConfigError(f"{type(self).__name__} got a static image [N, C, H, W] but no T; build it "
                                  "with T=<time steps> (conf/model/*.yaml sets T: ${T}) or pass [T, N, C, H, W]")
            x = x.unsqueeze(0)  # [1, N, C, H, W]: one step through the stem
        for m in stem:
            x = m(x)
        return x.repeat(self.T, *([1] * (x.dim() - 1))) if static else x


def init_kaiming(module: nn.Module, zero_conv_bias: bool = True) -> None:
    """Kaiming-normal (fan_out, ReLU gain) on every conv weight, the torchvision/spikingjelly ResNet
    init used by the SEW, SLTT and DSR references; norm layers keep weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if zero_conv_bias and m.bias is not None:
                nn.init.zeros_(m.bias)

