"""ImageNet datamodule on a tiny ImageFolder of JPEGs (train/ and val/ class folders)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from spikeforge.data.fakes import write_imagefolder
from spikeforge.data.imagenet import ImageNetDataModule
from spikeforge.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    write_imagefolder(root, classes=3, train_per_class=6, val_per_class=2, size=40)
    return root


def _dm(root: Path, **kw) -> ImageNetDataModule:
    kw = {"num_classes": 3, "batch_size": 4, "val_fraction": 1 / 6, **kw}
    dm = ImageNetDataModule(root=str(root), **kw)
    dm.setup()
    return dm


def test_shapes_labels_and_splits(imagenet_root: Path) -> None:
    dm = _dm(imagenet_root)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (15, 3, 6)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    # labels follow the sorted class folders; the test set is val/
    wnids = sorted(p.name for p in (imagenet_root / "val").iterdir())
    for i in range(len(dm.test_set)):
        path, _ = dm.test_set.base.samples[i]
        assert dm.test_set[i][1] == wnids.index(Path(path).parent.name)
        assert "/val/" in path
    assert set(dm.train_set.indices).isdisjoint(dm.val_set.indices)
    assert sorted(dm.val_set[i][1] for i in range(3)) == [0, 1, 2]


def test_augmentation_on_off_and_determinism(imagenet_root: Path) -> None:
    plain = _dm(imagenet_root, augment=False, image_size=32, resize=36)
    assert torch.equal(plain.train_set[0][0], plain.train_set[0][0])
    assert plain.train_set[0][0].shape == (3, 32, 32)
    aug = _dm(imagenet_root, augment=True, image_size=32, resize=36)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(torch.stack([aug.train_set[k][0] for k in range(4)]))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert torch.equal(aug.val_set[0][0], plain.val_set[0][0])


def test_missing_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        ImageNetDataModule(root=str(tmp_path / "nowhere")).setup()
    assert str(tmp_path / "nowhere") in str(e.value) and "image-net.org" in str(e.value)


def test_missing_val_and_empty_class_folder(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, classes=2, train_per_class=2, val_per_class=1, size=16)
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(DataError, match="val"):
        _dm(tmp_path, num_classes=2)
    write_imagefolder(tmp_path, classes=2, train_per_class=2, val_per_class=1, size=16)
    empty = next((tmp_path / "train").iterdir())
    shutil.rmtree(empty)
    empty.mkdir()
    with pytest.raises(DataError, match="train"):
        _dm(tmp_path, num_classes=2)


def test_class_count_and_download(imagenet_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.num_classes=3"):
        _dm(imagenet_root, num_classes=1000)
    with pytest.raises(DataError, match="cannot be downloaded"):
        ImageNetDataModule(root=str(imagenet_root), download=True).prepare_data()
