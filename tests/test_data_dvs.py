"""CIFAR10-DVS and DVS128 Gesture datamodules on tiny datasets in the genuine formats: raw AEDAT
recordings converted by spikingjelly's readers, and spikingjelly's ``events_np`` trees."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import spikeforge.data.dvs as dvs
from spikeforge.data.dvs import (
    CIFAR10_DVS,
    CIFAR10DVSDataModule,
    DVSGestureDataModule,
    FrameTransform,
    frames_root,
    prepare_events,
)
from spikeforge.data.fakes import (
    aedat2_bytes,
    write_cifar10_dvs_aedat,
    write_cifar10_dvs_events,
    write_dvs_gesture_aedat,
    write_dvs_gesture_events,
)
from spikeforge.errors import ConfigError, DataError

OFF = {"crop": False, "flip": False, "roll": False}
ON = {"crop": True, "flip": True, "roll": True}


@pytest.fixture(autouse=True)
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt fails the test (nothing may be fetched unless data.download=true)."""

    def fail(*a, **k):
        raise AssertionError("download attempted")

    monkeypatch.setattr(dvs, "download_url", fail)
    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tv_utils, "download_url", fail)


@pytest.fixture(scope="module")
def c10dvs_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR10-DVS from raw .aedat recordings, converted once for the module's tests."""
    root = tmp_path_factory.mktemp("c10dvs_raw")
    write_cifar10_dvs_aedat(root, per_class=10, events=150, seed=0)
    return root


@pytest.fixture(scope="module")
def gesture_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gesture_raw")
    write_dvs_gesture_aedat(root, train_users=(1, 2), test_users=(24,), events_per_gesture=100, seed=0)
    return root


def _c10(root: Path, **kw) -> CIFAR10DVSDataModule:
    kw = {"frames": 4, "batch_size": 5, "val_fraction": 0.2, "augment": OFF, "progress": False, **kw}
    dm = CIFAR10DVSDataModule(root=str(root), **kw)
    dm.prepare_data()
    dm.setup()
    return dm


def test_cifar10_dvs_from_raw_aedat(c10dvs_raw: Path) -> None:
    dm = _c10(c10dvs_raw)
    # spikingjelly's reader converted extract/<class>/*.aedat into events_np/<class>/*.npz
    for c in CIFAR10_DVS.classes:
        assert len(list((c10dvs_raw / "events_np" / c).glob("*.npz"))) == 10
    assert (frames_root(c10dvs_raw, 4) / "airplane" / "cifar10_airplane_0.npz").is_file()
    # fixed 9:1 split per class, then 20% of the training part held out for validation
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (70, 20, 10)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 4, 2, 48, 48) and x.dtype == torch.float32 and y.dtype == torch.int64
    # "dsr" split: the highest sample numbers of each class are the test set
    test_files = sorted(Path(dm.test_set.base.samples[i][0]).name for i in dm.test_set.indices)
    assert test_files == sorted(f"cifar10_{c}_9.npz" for c in CIFAR10_DVS.classes)
    assert {dm.test_set[i][1] for i in range(10)} == set(range(10))
    for i in range(10):
        path, _ = dm.test_set.base.samples[int(dm.test_set.indices[i])]
        assert CIFAR10_DVS.classes[dm.test_set[i][1]] in Path(path).name


def test_tebn_split_and_native_size(c10dvs_raw: Path) -> None:
    dm = _c10(c10dvs_raw, split="tebn", size=128)
    test_files = sorted(Path(dm.test_set.base.samples[i][0]).name for i in dm.test_set.indices)
    assert test_files == sorted(f"cifar10_{c}_0.npz" for c in CIFAR10_DVS.classes)
    x, _ = dm.test_set[0]
    assert x.shape == (4, 2, 128, 128)
    # every event lands in exactly one frame and one polarity channel (split_by='number')
    assert float(x.sum()) == 150.0


def test_aedat_events_decoded_by_spikingjelly(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ev = {"t": np.arange(0, 4000, 10), "x": rng.integers(0, 128, 400), "y": rng.integers(0, 128, 400),
          "p": rng.integers(0, 2, 400)}
    for c in CIFAR10_DVS.classes:
        (tmp_path / "extract" / c).mkdir(parents=True)
        (tmp_path / "extract" / c / f"cifar10_{c}_0.aedat").write_bytes(aedat2_bytes(ev))
    raw = prepare_events(CIFAR10_DVS, tmp_path)
    with np.load(raw / "bird" / "cifar10_bird_0.npz") as got:
        # spikingjelly 2.0's CIFAR10-DVS reader: x = 127 - y_raw, y = 127 - x_raw, p = 1 - p_raw
        assert np.array_equal(got["t"], ev["t"])
        assert np.array_equal(got["x"], 127 - ev["y"]) and np.array_equal(got["y"], 127 - ev["x"])
        assert np.array_equal(got["p"], 1 - ev["p"])


def test_augmentation_on_off_and_seeded_determinism(c10dvs_raw: Path) -> None:
    plain = _c10(c10dvs_raw)
    assert torch.equal(plain.train_set[0][0], plain.train_set[0][0])
    aug = _c10(c10dvs_raw, augment=ON)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(torch.stack([aug.train_set[k][0] for k in range(6)]))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])
    assert not torch.equal(draws[0], torch.stack([plain.train_set[k][0] for k in range(6)]))
    # evaluation splits are never augmented
    assert torch.equal(aug.test_set[0][0], plain.test_set[0][0])


@pytest.mark.parametrize("kind", ["crop", "flip", "roll"])
def test_augmentation_is_shared_over_frames(kind: str) -> None:
    frame = torch.rand(2, 48, 48)
    x = frame.expand(5, 2, 48, 48).numpy()
    t = FrameTransform(48, **{kind: True})
    for seed in range(4):
        torch.manual_seed(seed)
        out = t(x)
        assert out.shape == (5, 2, 48, 48)
        assert all(torch.equal(out[0], out[k]) for k in range(1, 5))


def test_dvs_gesture_from_raw_aedat_label_order(gesture_raw: Path) -> None:
    dm = DVSGestureDataModule(root=str(gesture_raw), frames=4, batch_size=4, val_fraction=0.5, augment=OFF,
                              progress=False)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (11, 11, 11)
    # DatasetFolder sorts class folders as strings ('10' before '2'); labels must be the folder numbers
    assert dm.test_set.base.classes[:3] == ["0", "1", "10"]
    for i in range(len(dm.test_set)):
        path, _ = dm.test_set.base.samples[i]
        assert dm.test_set[i][1] == int(Path(path).parent.name)
    assert sorted(dm.val_set[i][1] for i in range(11)) == list(range(11))
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 4, 2, 48, 48) and y.dtype == torch.int64
    with np.load(gesture_raw / "events_np" / "test" / "10" / "user24_led_0.npz") as ev:
        assert len(ev["t"]) == 100 and ev["x"].max() < 128 and ev["y"].max() < 128


def test_dvs_gesture_from_events_np_tree(tmp_path: Path) -> None:
    write_dvs_gesture_events(tmp_path, train_per_class=4, test_per_class=2, events=60)
    dm = DVSGestureDataModule(root=str(tmp_path), frames=3, size=32, batch_size=8, val_fraction=0.25,
                              augment=ON, progress=False)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (33, 11, 22)
    x, _ = dm.train_set[0]
    assert x.shape == (3, 2, 32, 32)


def test_cifar10_dvs_from_events_np_tree(tmp_path: Path) -> None:
    write_cifar10_dvs_events(tmp_path, per_class=3, events=50)
    dm = _c10(tmp_path, frames=2, val_fraction=0.5)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (10, 10, 10)


def test_download_archives_are_checked_and_never_deleted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_cifar10_dvs_aedat(src, per_class=2, events=40)
    root = tmp_path / "c10"
    (root / "download").mkdir(parents=True)
    for c in CIFAR10_DVS.classes:
        with zipfile.ZipFile(root / "download" / f"{c}.zip", "w") as z:
            for f in sorted((src / "extract" / c).iterdir()):
                z.write(f, f"{c}/{f.name}")
    with pytest.raises(DataError, match="MD5") as e:
        _c10(root)
    assert "verify_checksums=false" in str(e.value)
    assert all((root / "download" / f"{c}.zip").is_file() for c in CIFAR10_DVS.classes)
    assert not (root / "events_np.building").exists()
    # a re-packed copy is accepted with the documented switch and unpacked + converted
    dm = _c10(root, verify_checksums=False, val_fraction=0.0)
    assert len(dm.train_set) + len(dm.test_set) == 20


@pytest.mark.parametrize("cls", [CIFAR10DVSDataModule, DVSGestureDataModule])
def test_missing_data_error(tmp_path: Path, cls) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        cls(root=str(root), frames=4, progress=False).setup()
    msg = str(e.value)
    assert str(root) in msg and "events_np" in msg and "http" in msg
    assert not root.exists()  # nothing created, no marker left behind
    root.mkdir()
    with pytest.raises(DataError):
        cls(root=str(root), frames=4, progress=False).setup()
    assert list(root.iterdir()) == []


def test_gesture_cannot_be_downloaded(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manual download"):
        DVSGestureDataModule(root=str(tmp_path), frames=4, download=True, progress=False).setup()


def test_stale_download_marker_is_cleared(tmp_path: Path) -> None:
    # a failed download attempt by spikingjelly leaves events_np.building and no events_np
    write_cifar10_dvs_aedat(tmp_path, per_class=2, events=40)
    (tmp_path / "events_np.building").touch()
    dm = _c10(tmp_path, val_fraction=0.0)
    assert len(dm.train_set) == 10 and not (tmp_path / "events_np.building").exists()


def test_unfinished_conversion_is_reported(tmp_path: Path) -> None:
    write_cifar10_dvs_events(tmp_path, per_class=2, events=40)
    (tmp_path / "events_np.building").touch()
    with pytest.raises(DataError, match="unfinished conversion"):
        _c10(tmp_path)


def test_interrupted_frame_cache_is_rebuilt(tmp_path: Path) -> None:
    write_cifar10_dvs_events(tmp_path, per_class=2, events=40)
    cache = frames_root(tmp_path, 4)
    (cache / "airplane").mkdir(parents=True)
    (cache / "airplane" / "cifar10_airplane_0.npz").write_bytes(b"truncated")
    cache.with_name(cache.name + ".building").touch()
    dm = _c10(tmp_path, val_fraction=0.0)
    assert not cache.with_name(cache.name + ".building").exists()
    assert dm.train_set[0][0].shape == (4, 2, 48, 48)
    assert len(list(cache.rglob("*.npz"))) == 20


def test_empty_class_folder_is_a_clear_error(tmp_path: Path) -> None:
    write_dvs_gesture_events(tmp_path, train_per_class=1, test_per_class=1, events=30)
    shutil.rmtree(tmp_path / "events_np" / "test" / "7")
    (tmp_path / "events_np" / "test" / "7").mkdir()
    with pytest.raises(DataError, match=r"test/7"):
        DVSGestureDataModule(root=str(tmp_path), frames=2, progress=False).setup()


def test_bad_config_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid keys"):
        CIFAR10DVSDataModule(root=str(tmp_path), augment={"rotate": True})
    with pytest.raises(ConfigError, match=r"data\.split"):
        CIFAR10DVSDataModule(root=str(tmp_path), split="random")
    with pytest.raises(ConfigError, match="11 classes"):
        DVSGestureDataModule(root=str(tmp_path), num_classes=10)


def _script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_dvs_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare = _script("prepare_dvs")
    write_dvs_gesture_aedat(tmp_path / "dvs_gesture", train_users=(1,), test_users=(24,), events_per_gesture=30)
    assert prepare.main(["--dataset", "dvs_gesture", "--frames", "2", "3", "--data-dir", str(tmp_path)]) == 0
    for t in (2, 3):
        assert len(list(frames_root(tmp_path / "dvs_gesture", t).rglob("*.npz"))) == 22
    assert "22 samples with 3 frames" in capsys.readouterr().out
    assert prepare.main(["--dataset", "cifar10_dvs", "--frames", "2", "--root", str(tmp_path / "none")]) == 2
    assert "figshare" in capsys.readouterr().err
