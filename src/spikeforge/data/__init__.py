"""One LightningDataModule per dataset family. Static images come as ``[N, C, H, W]``; event data as
frames ``[N, T, C, H, W]``. Every datamodule holds out a validation split from the training data
(model selection never sees the test set)."""

from spikeforge.data.base import SpikeDataModule
from spikeforge.data.digits import DigitsDataModule

__all__ = ["DigitsDataModule", "SpikeDataModule"]
