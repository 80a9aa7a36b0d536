"""One LightningDataModule per dataset family. Static images come as ``[N, C, H, W]``; event data as
frames ``[N, T, C, H, W]``. Every datamodule holds out a validation split from the training data
(``val_fraction``: model selection never sees the test set), except under ``protocol=paper``
(``spikeforge.protocol``), which trains on the whole training split and tests every epoch."""

from spikeforge.data.base import SpikeDataModule
from spikeforge.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from spikeforge.data.digits import DigitsDataModule
from spikeforge.data.dvs import CIFAR10DVSDataModule, DVSGestureDataModule, prepare_dvs
from spikeforge.data.imagenet import ImageNetDataModule

__all__ = [
    "CIFAR10DVSDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DVSGestureDataModule",
    "DigitsDataModule",
    "ImageNetDataModule",
    "SpikeDataModule",
    "prepare_dvs",
]
