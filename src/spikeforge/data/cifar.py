"""CIFAR-10 and CIFAR-100 through torchvision's readers (the python pickle batches).

Layout: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``<root>/cifar-100-python/{train, test, meta}``, with ``root = ${paths.data_dir}/cifar10`` (or
``cifar100``) unless ``data.root`` says otherwise.

torchvision checks every file's MD5 even without a download; that stays on for real data
(``verify_checksums: true``). ``data.verify_checksums=false`` reads re-packed copies (and the tiny
test fixtures) after checking only that the files exist.

Augmentation (training split only), in the order of the reference code: RandomCrop(32, padding 4)
→ ``random_erasing_like`` Cutout on the PIL image (SLTT ``train_SLTT.py``/``train_BPTT.py``:
torchtoolbox's ``Cutout()`` between the crop and the flip) → horizontal flip → AutoAugment (CIFAR10
policy; ASGL ``experiment/development/main.py`` ``loadData``) → to tensor → ``fixed`` Cutout (ASGL:
one 16-px zero square after ``ToTensor``) → normalise with the per-dataset mean/std. DSR
(``cifar/main_single_gpu.py``) and STDS (``CIFAR10/train.py``) use the crop and the flip only.
The validation split is held out from the 50,000 training images (``val_fraction``; 0 under
``protocol=paper``); the test batch is only tested.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
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

AUGMENT_KEYS = ("random_crop", "flip", "autoaugment")
CUTOUT_KINDS = ("none", "fixed", "random_erasing_like")
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


class RandomErasingCutout:
    """torchtoolbox's ``transform.Cutout()`` (torchtoolbox 0.1.8.2 defaults), the Cutout of SLTT's
    ``train_SLTT.py``/``train_BPTT.py``/``train_SLTTK.py`` (applied to the PIL image after the crop,
    before the flip).

    With probability ``p``: an area fraction ``s ~ U(scale)`` and aspect ratio ``r ~ U(ratio)`` give a
    hole of ``h = int(sqrt(s·H·W·r))`` rows and ``w = int(sqrt(s·H·W / r))`` columns at a uniform
    position, filled with one value ``v ~ U{fill[0]..fill[1]}`` by PIL's ``paste(v, box)``; for an RGB
    image PIL reads the integer as a packed colour, so the hole becomes ``(v, 0, 0)``, as in the
    original. (torchtoolbox names the PIL size ``(h, w)`` the other way round; CIFAR is square.) Uses
    torch's RNG, like every other spikeforge transform, so seeded loader workers reproduce a draw.
    """

    def __init__(
        self, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.4), ratio: tuple[float, float] = (0.4, 1 / 0.4),
        fill: tuple[int, int] = (0, 255),
    ) -> None:
        if not 0 <= p <= 1:
            raise ConfigError(f"data.cutout.p must be a probability in [0, 1] (got {p})")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"data.cutout.scale must be [min, max] with 0 < min <= max <= 1 (got {list(scale)})")
        if not 0 < ratio[0] <= ratio[1]:
            raise ConfigError(f"data.cutout.ratio must be [min, max] with 0 < min <= max (got {list(ratio)})")
        if not 0 <= fill[0] <= fill[1] <= 255:
            raise ConfigError(f"data.cutout.fill must be [min, max] within 0..255 (got {list(fill)})")
        self.p, self.scale, self.ratio, self.fill = float(p), tuple(scale), tuple(ratio), tuple(fill)

    @staticmethod
    def _uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(()))

    def params(self, width: int, height: int) -> tuple[int, int, int, int, int] | None:
        """``(left, top, w, h, v)`` of this draw's hole, or None when the image is left alone."""
        if float(torch.rand(())) >= self.p:
            return None
        s = self._uniform(*self.scale) * height * width
        r = self._uniform(*self.ratio)
        w = min(int(math.sqrt(s / r)), width)
        h = min(int(math.sqrt(s * r)), height)
        left = int(torch.randint(0, width - w + 1, ()))
        top = int(torch.randint(0, height - h + 1, ()))
        v = int(torch.randint(self.fill[0], self.fill[1] + 1, ()))
        return left, top, w, h, v

    def __call__(self, img: Image.Image) -> Image.Image:
        drawn = self.params(*img.size)
        if drawn is None:
            return img
        left, top, w, h, v = drawn
        img = img.copy()
        img.paste(v, (left, top, left + w, top + h))
        return img

    def __repr__(self) -> str:
        return f"RandomErasingCutout(p={self.p}, scale={self.scale}, ratio={self.ratio}, fill={self.fill})"


def check_cutout(cutout: dict[str, Any] | None) -> dict[str, Any]:
    """``data.cutout`` with its defaults filled in; one sentence for an unknown kind or key."""
    spec = {"kind": "none", "n_holes": 1, "length": 16, "p": 0.5, "scale": [0.02, 0.4], "ratio": [0.4, 2.5],
            "fill": [0, 255]}
    given = dict(cutout or {})
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ConfigError(f"unknown data.cutout key(s) {unknown}; valid keys: {list(spec)}")
    spec.update(given)
    if spec["kind"] not in CUTOUT_KINDS:
        raise ConfigError(f"data.cutout.kind must be one of {list(CUTOUT_KINDS)} (got {spec['kind']!r})")
    return spec


def check_augment_keys(augment: dict[str, Any] | None, valid: tuple[str, ...], name: str) -> dict[str, bool]:
    augment = dict(augment or {})
    if "cutout" in augment and "cutout" not in valid:
        raise ConfigError("data.augment.cutout is now data.cutout.kind (none | fixed | random_erasing_like); "
                          "e.g. data.cutout.kind=fixed replaces data.augment.cutout=true")
    unknown = sorted(set(augment) - set(valid))
    if unknown:
        raise ConfigError(f"unknown data.augment key(s) {unknown} for data={name}; valid keys: {list(valid)}")
    return {k: bool(augment.get(k, False)) for k in valid}


def cifar_transforms(
    name: str, augment: dict[str, bool], normalize: bool = True, cutout: dict[str, Any] | None = None
) -> tuple[T.Compose, T.Compose]:
    """(training transform, evaluation transform) for PIL CIFAR images → float ``[3, 32, 32]``."""
    mean, std = CIFAR_MEAN_STD[name]
    cut = check_cutout(cutout)
    train: list[Any] = []
    if augment["random_crop"]:
        train.append(T.RandomCrop(32, padding=4))
    if cut["kind"] == "random_erasing_like":  # SLTT: Crop → Cutout → Flip on the PIL image
        train.append(RandomErasingCutout(cut["p"], tuple(cut["scale"]), tuple(cut["ratio"]), tuple(cut["fill"])))
    if augment["flip"]:
        train.append(T.RandomHorizontalFlip())
    if augment["autoaugment"]:
        train.append(T.AutoAugment(T.AutoAugmentPolicy.CIFAR10))
    train.append(T.ToTensor())
    if cut["kind"] == "fixed":  # ASGL: ToTensor → Cutout → Normalize
        train.append(Cutout(int(cut["n_holes"]), int(cut["length"])))
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
        augment: ``{random_crop, flip, autoaugment}`` booleans (training split only).
        cutout: ``{kind: none | fixed | random_erasing_like, ...}`` (``check_cutout``; module doc).
        normalize: subtract the per-dataset mean and divide by the std (``CIFAR_MEAN_STD``).
        download: let torchvision download the archive into ``root`` (never otherwise).
        verify_checksums: check torchvision's MD5 of every file (``false`` for re-packed copies).
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
        cutout: dict[str, Any] | None = None,
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
            self.dataset, self.augment, normalize, cutout
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
