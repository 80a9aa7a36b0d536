"""ImageNet (ILSVRC-2012) through torchvision's ImageFolder.

Layout: ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG`` (the validation images
sorted into one folder per class), ``root = ${paths.data_dir}/imagenet`` unless ``data.root``.
Training: RandomResizedCrop 224 + horizontal flip; evaluation: Resize 256 + CenterCrop 224
(docs/methods/stds.md "Recipes"; the standard torchvision ImageNet recipe), then normalisation
with the ImageNet channel mean/std. The validation split used for model selection is held out
from ``train/`` (``val_fraction``); the official ``val/`` folder serves as the test set only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from spikeforge.data.base import SpikeDataModule, stratified_split
from spikeforge.data.common import TransformedSubset, missing_data
from spikeforge.errors import ConfigError, DataError

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMAGENET_SOURCE = (
    "https://image-net.org/download (ILSVRC-2012 train and validation images; sort val/ into class "
    "folders, e.g. with the widely used valprep.sh)"
)


def imagenet_transforms(augment: bool = True, image_size: int = 224, resize: int = 256) -> tuple[T.Compose, T.Compose]:
    mean, std = IMAGENET_MEAN_STD
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    if augment:
        train = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), *tail])
    else:
        train = T.Compose([T.Resize(resize), T.CenterCrop(image_size), *tail])
    return train, T.Compose([T.Resize(resize), T.CenterCrop(image_size), *tail])


class ImageNetDataModule(SpikeDataModule):
    """ImageNet: static images ``[N, 3, 224, 224]`` (float32), labels int64 (sorted wnid order).

    Args:
        root: the folder holding ``train/`` and ``val/``.
        augment: RandomResizedCrop + flip on the training split (else Resize + CenterCrop).
        image_size / resize: crop side and the shorter side before the centre crop.
        download: ImageNet cannot be downloaded automatically; ``true`` is an error.
    """

    def __init__(
        self,
        root: str,
        augment: bool = True,
        image_size: int = 224,
        resize: int = 256,
        download: bool = False,
        **kw: Any,
    ) -> None:
        kw.setdefault("num_classes", 1000)
        super().__init__(**kw)
        self.root = Path(root).expanduser()
        self.augment = augment
        self.download = download
        self.train_transform, self.eval_transform = imagenet_transforms(augment, image_size, resize)

    def layout(self) -> str:
        return f"{self.root}/train/<class>/*.JPEG and {self.root}/val/<class>/*.JPEG (one folder per class)"

    def prepare_data(self) -> None:
        if self.download:
            raise DataError(f"ImageNet cannot be downloaded automatically; get it from {IMAGENET_SOURCE} "
                            f"into {self.root} and set data.download=false")

    def _read(self, split: str) -> ImageFolder:
        folder = self.root / split
        if not folder.is_dir():
            raise missing_data("imagenet", folder, self.layout(), IMAGENET_SOURCE, "no such folder")
        try:
            return ImageFolder(str(folder))
        except (FileNotFoundError, OSError) as e:
            raise missing_data("imagenet", folder, self.layout(), IMAGENET_SOURCE, str(e)) from None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_base, test_base = self._read("train"), self._read("val")
        if train_base.classes != test_base.classes:
            raise DataError(
                f"imagenet: {self.root}/train and {self.root}/val have different class folders "
                f"({len(train_base.classes)} vs {len(test_base.classes)}); sort val/ into the same class folders"
            )
        if len(train_base.classes) != self.num_classes:
            raise ConfigError(f"{self.root}/train has {len(train_base.classes)} class folders but "
                              f"data.num_classes={self.num_classes}; set data.num_classes={len(train_base.classes)}")
        kept, held = stratified_split(train_base.targets, self.val_fraction, self.split_seed)
        self.train_set = TransformedSubset(train_base, kept, self.train_transform)
        self.val_set = TransformedSubset(train_base, held, self.eval_transform)
        self.test_set = TransformedSubset(test_base, None, self.eval_transform)
