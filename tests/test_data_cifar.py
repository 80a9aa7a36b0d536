"""CIFAR-10/100 datamodules on tiny pickle batches written in torchvision's on-disk format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR_AUG_OFF, fake_cifar_root

from spikeforge.data.cifar import CIFAR_MEAN_STD, CIFAR10DataModule, CIFAR100DataModule, Cutout
from spikeforge.data.fakes import write_cifar
from spikeforge.errors import ConfigError, DataError

OFF = CIFAR_AUG_OFF
ON = {"random_crop": True, "flip": True, "autoaugment": True}


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_cifar_root(tmp_path_factory, "cifar10", train_per_class=5, test_per_class=2)


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_cifar_root(tmp_path_factory, "cifar100", train_per_class=2, test_per_class=1, seed=1)


def _dm(root: Path, cls=CIFAR10DataModule, **kw) -> CIFAR10DataModule:
    kw = {"verify_checksums": False, "batch_size": 8, "val_fraction": 0.2, **kw}
    dm = cls(root=str(root), **kw)
    dm.setup()
    return dm


def _load(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def test_shapes_dtypes_and_split_sizes(cifar10_root: Path) -> None:
    dm = _dm(cifar10_root, augment=ON)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 10, 20)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # the validation split is held out of the training images: disjoint, one image per class here
    assert set(dm.train_set.indices).isdisjoint(dm.val_set.indices)
    assert sorted(dm.val_set.base.targets[i] for i in dm.val_set.indices) == list(range(10))


def test_labels_and_pixels_match_the_pickles(cifar10_root: Path) -> None:
    dm = _dm(cifar10_root, augment=OFF, normalize=False)
    test = _load(cifar10_root / "cifar-10-batches-py" / "test_batch")
    xs, ys = zip(*(dm.test_set[i] for i in range(len(dm.test_set))))
    assert list(ys) == test["labels"]
    first = torch.from_numpy(test["data"][0].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.allclose(xs[0], first)


def test_normalisation_uses_the_dataset_mean_std(cifar10_root: Path) -> None:
    raw = _dm(cifar10_root, augment=OFF, normalize=False).test_set[0][0]
    norm = _dm(cifar10_root, augment=OFF, normalize=True).test_set[0][0]
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in CIFAR_MEAN_STD["cifar10"])
    assert torch.allclose(norm * std + mean, raw, atol=1e-6)


def test_augmentation_on_off_and_seeded_determinism(cifar10_root: Path) -> None:
    plain = _dm(cifar10_root, augment=OFF)
    # without augmentation a training sample is the evaluation view of the same image
    i = int(plain.train_set.indices[0])
    assert torch.equal(plain.train_set[0][0], plain.eval_transform(plain.train_set.base[i][0]))
    aug = _dm(cifar10_root, augment=ON, cutout={"kind": "fixed"})
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(torch.stack([aug.train_set[k][0] for k in range(6)]))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])
    assert not torch.equal(draws[0], torch.stack([plain.train_set[k][0] for k in range(6)]))
    torch.manual_seed(3)
    b1 = next(iter(aug.train_dataloader()))
    torch.manual_seed(3)
    b2 = next(iter(aug.train_dataloader()))
    assert torch.equal(b1[0], b2[0]) and torch.equal(b1[1], b2[1])


def test_cutout_zeroes_one_square() -> None:
    torch.manual_seed(0)
    out = Cutout(1, 16)(torch.ones(3, 32, 32))
    zeros = (out == 0).all(0)
    assert 0 < int(zeros.sum()) <= 16 * 16
    rows, cols = zeros.nonzero(as_tuple=True)
    assert int(zeros.sum()) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_cifar100_fine_labels(cifar100_root: Path) -> None:
    dm = _dm(cifar100_root, cls=CIFAR100DataModule, val_fraction=0.5, augment=OFF)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (100, 100, 100)
    test = _load(cifar100_root / "cifar-100-python" / "test")
    assert [dm.test_set[i][1] for i in range(len(dm.test_set))] == test["fine_labels"]


def test_checksums_are_verified_by_default(cifar10_root: Path) -> None:
    with pytest.raises(DataError, match="verify_checksums=false"):
        CIFAR10DataModule(root=str(cifar10_root)).setup()


@pytest.mark.parametrize("cls", [CIFAR10DataModule, CIFAR100DataModule])
def test_missing_data_error(tmp_path: Path, cls) -> None:
    with pytest.raises(DataError) as e:
        cls(root=str(tmp_path / "nowhere"), verify_checksums=False).setup()
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "cs.toronto.edu" in msg and "expected" in msg


def test_malformed_batch_error(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", train_per_class=1, test_per_class=1)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="malformed"):
        CIFAR10DataModule(root=str(tmp_path), verify_checksums=False).setup()


def test_download_is_never_attempted_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    def no_network(*a, **k):
        raise AssertionError("download attempted")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)
    dm = CIFAR10DataModule(root=str(tmp_path))
    dm.prepare_data()
    with pytest.raises(DataError):
        dm.setup()


def test_bad_config_values(cifar10_root: Path) -> None:
    with pytest.raises(ConfigError, match="valid keys"):
        CIFAR10DataModule(root=str(cifar10_root), augment={"mixup": True})
    with pytest.raises(ConfigError, match="10 classes"):
        CIFAR10DataModule(root=str(cifar10_root), num_classes=100)
