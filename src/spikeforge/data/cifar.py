"""CIFAR-10 and CIFAR-100 through torchvision's readers (the python pickle batches).

Layout: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``<root>/cifar-100-python/{train, test, meta}``, with ``root = ${paths.data_dir}/cifar10`` (or
``cifar100``) unless ``data.root`` says otherwise.

torchvision checks every file's MD5 even without a download; that stays on for real data
(``verify_checksums: true``). ``data.verify_checksums=false`` reads re-packed copies (and the tiny
test fixtures) after checking only that the files exist.

Augmentation (training split only), in the order of the reference code (ASGL ``loadData``,
DSR/SLTT CIFAR loaders): RandomCrop(32, padding 4) → horizontal flip → AutoAugment (CIFAR10
policy) → to tensor → Cutout (1 hole, 16 px) → normalise with the per-dataset mean/std.
The validation split is held out from the 50,000 training images; the test batch is only tested.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torchvision import transforms as T
from torchvision.datasets import CIFAR10, CIFAR100

from spikeforge.data.base import SpikeDataModule, stratified_split
from spikeforge.data.common import TransformedSubset, missing_data
from spikeforge.errors import ConfigError, DataError

# Per-dataset channel mean / std used by the reference CIFAR pipelines (DSR cifar/main_*.py,
# ASGL util loadData, SLTT train_*.py): the values every recipe in docs/methods normalises with.
CIFAR_MEAN_STD: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}

AUGMENT_KEYS = ("random_crop", "flip", "cutout", "autoaugment")
CIFAR_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html (the 'python version' archive, extracted)"


class Cutout:
    """Zero ``n_holes`` squares of side ``length`` (clipped at the border) in a ``[C, H, W]`` tensor
    (DeVries & Taylor 2017; 1 hole of 16 px on CIFAR as in the ASGL recipe). Uses torch's RNG."""

    def __init__(self, n_holes: int = 1, length: int = 16) -> None:
        self.n_holes = n_holes
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        img = img.clone()
        for _ in range(self.n_holes):
            cy = int(torch.randint(h, (1,)))
            cx = int(torch.randint(w, (1,)))
            y0, y1 = max(cy - self.length // 2, 0), min(cy + self.length // 2, h)
            x0, x1 = max(cx - self.length // 2, 0), min(cx + self.length // 2, w)
            img[..., y0:y1, x0:x1] = 0
        return img

    def __repr__(self) -> str:
        return f"Cutout(n_holes={self.n_holes}, length={self.length})"


def check_augment_keys(augment: dict[str, Any] | None, valid: tuple[str, ...], name: str) -> dict[str, bool]:
    augment = dict(augment or {})
    unknown = sorted(set(augment) - set(valid))
    if unknown:
        raise ConfigError(f"unknown data.augment key(s) {unknown} for data={name}; valid keys: {list(valid)}")
    return {k: bool(augment.get(k, False)) for k in valid}


def cifar_transforms(
    name: str, augment: dict[str, bool], normalize: bool = True, cutout_length: int = 16
) -> tuple[T.Compose, T.Compose]:
    """(training transform, evaluation transform) for PIL CIFAR images → float ``[3, 32, 32]``."""
    mean, std = CIFAR_MEAN_STD[name]
    train: list[Any] = []
    if augment["random_crop"]:
        train.append(T.RandomCrop(32, padding=4))
    if augment["flip"]:
        train.append(T.RandomHorizontalFlip())
    if augment["autoaugment"]:
        train.append(T.AutoAugment(T.AutoAugmentPolicy.CIFAR10))
    train.append(T.ToTensor())
    if augment["cutout"]:
        train.append(Cutout(1, cutout_length))
    evaluation: list[Any] = [T.ToTensor()]
    if normalize:
        train.append(T.Normalize(mean, std))
        evaluation.append(T.Normalize(mean, std))
    return T.Compose(train), T.Compose(evaluation)


class _UnverifiedMixin:
    """torchvision CIFAR reader that checks the files exist instead of their MD5 sums."""

    root: str
    base_folder: str
    train_list: list[list[str]]
    test_list: list[list[str]]
    meta: dict[str, str]

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / f).is_file() for f, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        if not path.is_file():
            raise RuntimeError(f"metadata file {path} not found")
        with open(path, "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class UnverifiedCIFAR10(_UnverifiedMixin, CIFAR10):
    pass


class UnverifiedCIFAR100(_UnverifiedMixin, CIFAR100):
    pass


class CIFARDataModule(SpikeDataModule):
    """CIFAR-10/100: static images ``[N, 3, 32, 32]`` (float32), labels int64.

    Args:
        root: the folder holding ``cifar-10-batches-py`` / ``cifar-100-python``.
        augment: ``{random_crop, flip, cutout, autoaugment}`` booleans (training split only).
        normalize: subtract the per-dataset mean and divide by the std (``CIFAR_MEAN_STD``).
        download: let torchvision download the archive into ``root`` (never otherwise).
        verify_checksums: check torchvision's MD5 of every file (``false`` for re-packed copies).
        cutout_length: side of the Cutout square in pixels.
    """

    dataset: ClassVar[str] = "cifar10"
    readers: ClassVar[tuple[type[CIFAR10], type[CIFAR10]]] = (CIFAR10, UnverifiedCIFAR10)
    n_classes: ClassVar[int] = 10

    def __init__(
        self,
        root: str,
        augment: dict[str, Any] | None = None,
        normalize: bool = True,
        download: bool = False,
        verify_checksums: bool = True,
        cutout_length: int = 16,
        **kw: Any,
    ) -> None:
        kw.setdefault("num_classes", self.n_classes)
        super().__init__(**kw)
        if self.num_classes != self.n_classes:
            raise ConfigError(f"{self.dataset} has {self.n_classes} classes; got data.num_classes={self.num_classes}")
        self.root = Path(root).expanduser()
        self.augment = check_augment_keys(augment, AUGMENT_KEYS, self.dataset)
        self.normalize = normalize
        self.download = download
        self.verify_checksums = verify_checksums
        self.train_transform, self.eval_transform = cifar_transforms(
            self.dataset, self.augment, normalize, cutout_length
        )

    @property
    def folder(self) -> Path:
        return self.root / self.readers[0].base_folder

    def layout(self) -> str:
        reader = self.readers[0]
        files = [f for f, _ in reader.train_list + reader.test_list] + [reader.meta["filename"]]
        return f"{self.folder}/{{{', '.join(files)}}} (torchvision's python pickle batches)"

    def prepare_data(self) -> None:
        if self.download:
            try:
                self.readers[0](str(self.root), train=True, download=True)
            except Exception as e:  # network or disk failure
                raise DataError(
                    f"downloading {self.dataset} into {self.root} failed ({type(e).__name__}: {e}); "
                    f"download it by hand from {CIFAR_SOURCE}"
                ) from None

    def _read(self, train: bool) -> CIFAR10:
        reader = self.readers[0] if self.verify_checksums else self.readers[1]
        missing = [f for f, _ in reader.train_list + reader.test_list if not (self.folder / f).is_file()]
        if missing:
            raise missing_data(self.dataset, self.folder, self.layout(), CIFAR_SOURCE, f"missing {missing}")
        try:
            return reader(str(self.root), train=train, download=False)
        except RuntimeError as e:
            if self.verify_checksums and "corrupted" in str(e):
                raise DataError(
                    f"{self.dataset} files in {self.folder} do not match torchvision's MD5 checksums; "
                    f"re-extract the archive from {CIFAR_SOURCE}, or set data.verify_checksums=false "
                    "for a re-packed copy"
                ) from None
            raise missing_data(self.dataset, self.folder, self.layout(), CIFAR_SOURCE, str(e)) from None
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
            raise missing_data(
                self.dataset, self.folder, self.layout(), CIFAR_SOURCE, f"malformed batch file: {type(e).__name__}"
            ) from None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_base, test_base = self._read(True), self._read(False)
        targets = np.asarray(train_base.targets, dtype=np.int64)
        if targets.max(initial=-1) >= self.num_classes or np.asarray(test_base.targets).max(initial=-1) >= self.num_classes:
            raise missing_data(self.dataset, self.folder, self.layout(), CIFAR_SOURCE,
                               f"labels outside 0..{self.num_classes - 1}")
        kept, held = stratified_split(targets, self.val_fraction, self.split_seed)
        self.train_set = TransformedSubset(train_base, kept, self.train_transform)
        self.val_set = TransformedSubset(train_base, held, self.eval_transform)
        self.test_set = TransformedSubset(test_base, None, self.eval_transform)


class CIFAR10DataModule(CIFARDataModule):
    dataset = "cifar10"
    readers = (CIFAR10, UnverifiedCIFAR10)
    n_classes = 10


class CIFAR100DataModule(CIFARDataModule):
    dataset = "cifar100"
    readers = (CIFAR100, UnverifiedCIFAR100)
    n_classes = 100
