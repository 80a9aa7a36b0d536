"""The embedded default dataset: scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes),
installed with scikit-learn, so every command runs with no download.

Split with a fixed seed: ``test_fraction`` of each class for test, then ``val_fraction`` of the rest
for validation. Served CIFAR-shaped by default (``image_size=32``, ``channels=3``: bilinear upscaling,
grey value repeated over channels) so every CIFAR model runs on it unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from spikeforge.data.base import SpikeDataModule, stratified_split
from spikeforge.errors import ConfigError


def digits_tensors(image_size: int = 32, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as float images in [0, 1], ``[N, channels, image_size, image_size]``, and labels."""
    if image_size < 1 or channels < 1:
        raise ConfigError(f"data.image_size and data.channels must be >= 1 (got {image_size}, {channels})")
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # [N, 1, 8, 8]
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = x.clamp_(0, 1).repeat(1, channels, 1, 1)
    return x, torch.from_numpy(d.target.astype(np.int64))


class DigitsDataModule(SpikeDataModule):
    def __init__(
        self,
        image_size: int = 32,
        test_fraction: float = 0.2,
        normalize: bool = True,
        **kw: object,
    ) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        if self.num_classes != 10:
            raise ConfigError(f"digits has 10 classes; got data.num_classes={self.num_classes}")
        self.image_size = image_size
        self.test_fraction = test_fraction
        self.normalize = normalize

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = digits_tensors(self.image_size, self.channels)
        rest, test = stratified_split(y.numpy(), self.test_fraction, self.split_seed)
        train_rel, val_rel = stratified_split(y[rest].numpy(), self.val_fraction, self.split_seed + 1)
        train, val = rest[train_rel], rest[val_rel]
        if self.normalize:  # statistics of the training split only
            mean = x[train].mean(dim=(0, 2, 3), keepdim=True)
            std = x[train].std(dim=(0, 2, 3), keepdim=True)
            x = (x - mean) / std
        self.train_set = TensorDataset(x[train], y[train])
        self.val_set = TensorDataset(x[val], y[val])
        self.test_set = TensorDataset(x[test], y[test])
