"""Event-camera datasets through spikingjelly 2.0's readers: CIFAR10-DVS and DVS128 Gesture.

Each sample is integrated once into ``frames`` frames with ``split_by='number'`` (spikingjelly's
fixed-frame-number integration: equal event counts per frame, raw counts per polarity) and cached
on disk in spikingjelly's own layout, then served as float32 ``[T, 2, size, size]`` (a batch is
``[N, T, 2, H, W]``), augmented on the training split only. What a frame holds (``frame_values``):

- ``counts``: the event counts, resized from 128×128 with a bilinear resize (``resize_antialias``:
  true = PIL-like antialiasing; false = torchvision < 0.17's tensor ``Resize``, which DSR's
  ``cifar/main_single_gpu.py`` applies to the float frames: ``transforms.Resize([48, 48])``).
- ``uint8_wrap``: what SLTT's ``train_SLTT.py`` (``utils/augmentation.py``: ``ToPILImage`` →
  ``Resize(48)`` → ``ToTensor`` per frame) and ASGL's ``util/data.py`` (``CIFAR10_DVS_Aug``) make of
  the float counts c: torchvision's ``ToPILImage`` casts ``255·c`` to uint8, which wraps on x86
  ((255·c) mod 256: 0 → 0, 1 → 255, 2 → 254, …: nearly binary); the two polarities become a PIL
  ``LA`` image, which PIL resizes with premultiplied alpha (polarity 0 scaled by polarity 1); then
  /255. Reproduced with PIL itself (:func:`uint8_wrap`, :func:`pil_resize`).
- ``binary``: 1 where a pixel had at least one event, then resized like ``counts``.

On-disk layout under ``root`` (``${paths.data_dir}/<name>`` unless ``data.root`` is set)::

    download/                         the archives as published (optional once extract/ exists)
    extract/                          the archives unpacked (raw .aedat recordings)
    events_np/...                     one npz (t, x, y, p) per sample, made by spikingjelly's reader
    frames_number_<T>_split_by_number/...   the cached frames (built on first use)

Guards against spikingjelly 2.0's traps (docs/architecture.md, "spikingjelly 2.0.0: what to watch for"):
nothing is downloaded unless ``data.download=true`` (spikingjelly would try as soon as
``events_np`` is missing, and a failed try leaves a ``.building`` marker that blocks every later
run); archives with a wrong checksum are reported, never deleted; a stale marker without data is
removed, an interrupted frame cache is rebuilt; DVS128 Gesture labels are the class-folder
numbers (torchvision's DatasetFolder sorts '10' before '2'); an empty class folder is an error
naming it, not a crash inside torchvision.

Splits: DVS128 Gesture has its official train/test trials. CIFAR10-DVS has none: a fixed 9:1 split
per class by sample number, ``split: dsr`` (default; samples 0–899 of each class train, 900–999
test, as DSR's CIFAR10-DVS reader with ``split_ratio=0.9``) or ``split: tebn`` (0–99 test, as
spikingjelly's ``CIFAR10DVSTEBNSplit``). The validation split is then held out from the training
part (``val_fraction``, stratified, ``split_seed``); the test part is never used for selection, except
under ``protocol=paper`` (no hold-out, test every epoch: ``spikeforge.protocol``).

Augmentation (per recipe, ``augment: {crop, flip, roll}``), one draw per sample shared by all its
frames, after the resize: ``crop`` = RandomCrop(size, padding 4) (DSR ``cifar/main_single_gpu.py``);
``flip`` = horizontal flip with p = 0.5; ``roll`` = a circular shift by up to ±``roll_max`` (5)
pixels along H and W, no crop (ASGL ``util/data.py`` ``CIFAR10_DVS_Aug``: flip, then
``torch.roll`` by ``randint(-5, 5)`` twice). SLTT feeds CIFAR10-DVS and DVS128 Gesture unaugmented.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from spikingjelly.datasets import utils as sj_utils
from spikingjelly.datasets.base import FrameFixedNumberBuilder, NeuromorphicDatasetFolder
from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS, CIFAR10DVS_CLASS_NAMES
from spikingjelly.datasets.dvs128_gesture import DVS128Gesture
from torchvision.datasets.utils import check_integrity, download_url, extract_archive

from spikeforge.data.base import SpikeDataModule, stratified_split
from spikeforge.data.cifar import check_augment_keys
from spikeforge.data.common import TransformedSubset, missing_data
from spikeforge.errors import ConfigError, DataError

log = logging.getLogger("spikeforge")

AUGMENT_KEYS = ("crop", "flip", "roll")
FRAME_VALUES = ("counts", "uint8_wrap", "binary")
CIFAR10_DVS_SPLITS = ("dsr", "tebn")
TEST_FRACTION = 0.1  # CIFAR10-DVS: the fixed 9:1 train:test split per class


@dataclass(frozen=True)
class DVSSpec:
    """What is needed to find, convert and label one event dataset."""

    name: str
    reader: type[NeuromorphicDatasetFolder]
    classes: tuple[str, ...]  # class folder names in label order
    splits: tuple[str, ...]  # official split folders under events_np, () when there is none
    archives: tuple[str, ...]  # files under download/ needed to rebuild extract/
    source: str

    @property
    def md5(self) -> dict[str, str]:
        return {f: m for f, _, m in self.reader.resource_url_md5()}

    @property
    def urls(self) -> dict[str, str]:
        return {f: u for f, u, _ in self.reader.resource_url_md5()}

    def class_dirs(self, top: Path) -> list[Path]:
        if self.splits:
            return [top / s / c for s in self.splits for c in self.classes]
        return [top / c for c in self.classes]

    def layout(self, root: Path) -> str:
        if self.splits:
            events = f"{root}/events_np/{{{','.join(self.splits)}}}/{{{','.join(self.classes)}}}/*.npz"
        else:
            events = f"{root}/events_np/{{{','.join(self.classes)}}}/*.npz"
        return (f"{events} (spikingjelly's event files with t, x, y, p), or the raw download as "
                f"{root}/download/{{{', '.join(self.archives)}}} or its unpacked {root}/extract/")

    def extracted(self, extract_root: Path) -> bool:
        """Whether ``extract/`` holds what spikingjelly's ``create_raw_from_extracted`` reads."""
        if self.name == "dvs_gesture":
            d = extract_root / "DvsGesture"
            return (d / "trials_to_train.txt").is_file() and (d / "trials_to_test.txt").is_file()
        return all((extract_root / c).is_dir() and any((extract_root / c).iterdir()) for c in self.classes)


CIFAR10_DVS = DVSSpec(
    name="cifar10_dvs",
    reader=CIFAR10DVS,
    classes=tuple(CIFAR10DVS_CLASS_NAMES),
    splits=(),
    archives=tuple(f"{c}.zip" for c in CIFAR10DVS_CLASS_NAMES),
    source="https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 (the ten class zips)",
)
DVS_GESTURE = DVSSpec(
    name="dvs_gesture",
    reader=DVS128Gesture,
    classes=tuple(str(i) for i in range(11)),
    splits=("train", "test"),
    archives=("DvsGesture.tar.gz",),
    source="https://research.ibm.com/interactive/dvsgesture/ (DvsGesture.tar.gz; manual download, IBM licence)",
)
DVS_SPECS: dict[str, DVSSpec] = {s.name: s for s in (CIFAR10_DVS, DVS_GESTURE)}


# ---- raw events: download/ → extract/ → events_np/ ---------------------------------------------
def _check_class_dirs(spec: DVSSpec, root: Path, top: Path, suffix: str = ".npz") -> None:
    dirs = spec.class_dirs(top)
    missing = [str(d.relative_to(root)) for d in dirs if not d.is_dir()]
    if missing:
        raise missing_data(spec.name, root, spec.layout(root), spec.source,
                           f"class folder(s) {missing[:4]}{' …' if len(missing) > 4 else ''} missing")
    empty = [str(d.relative_to(root)) for d in dirs if not any(f.suffix == suffix for f in d.iterdir())]
    if empty:
        raise DataError(
            f"{spec.name}: class folder(s) {empty} under {root} hold no {suffix} file; spikingjelly's reader "
            f"needs every class in every split: restore the missing samples (from {spec.source}) or, if the "
            f"folder is a broken conversion, delete {top} and run scripts/prepare_dvs.py again"
        )


def _extract(spec: DVSSpec, root: Path, verify_checksums: bool) -> None:
    download_root, extract_root = root / "download", root / "extract"
    md5 = spec.md5
    for name in spec.archives:
        path = download_root / name
        if verify_checksums and not check_integrity(str(path), md5[name]):
            raise DataError(
                f"{path} does not match its published MD5 ({md5[name]}); download it again from {spec.source}, "
                "or set data.verify_checksums=false for a re-packed copy (the file was left in place)"
            )
    partial = root / "extract.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for name in spec.archives:
        log.info("extracting %s", download_root / name)
        try:
            extract_archive(str(download_root / name), str(partial))
        except Exception as e:
            shutil.rmtree(partial, ignore_errors=True)
            raise DataError(f"cannot unpack {download_root / name} ({type(e).__name__}: {e}); "
                            f"download it again from {spec.source}") from None
    partial.rename(extract_root)


def _download(spec: DVSSpec, root: Path) -> None:
    if not spec.reader.downloadable():
        raise DataError(
            f"{spec.name} cannot be downloaded automatically (its licence requires a manual download): get "
            f"{', '.join(spec.archives)} from {spec.source} and put it in {root / 'download'}"
        )
    download_root = root / "download"
    download_root.mkdir(parents=True, exist_ok=True)
    urls, md5 = spec.urls, spec.md5
    for name in spec.archives:
        if check_integrity(str(download_root / name), md5[name]):
            continue
        try:
            download_url(urls[name], str(download_root), filename=name, md5=md5[name])
        except Exception as e:
            raise DataError(f"downloading {name} from {urls[name]} failed ({type(e).__name__}: {e}); "
                            f"download it by hand from {spec.source} into {download_root}") from None


def prepare_events(spec: DVSSpec, root: str | Path, download: bool = False, verify_checksums: bool = True) -> Path:
    """Make sure ``root/events_np`` holds spikingjelly's per-sample event files; return it.

    Converts ``extract/`` (or unpacks ``download/`` first) with spikingjelly's own
    ``create_raw_from_extracted``; downloads only when ``download`` is true.
    """
    root = Path(root).expanduser()
    raw_root = root / "events_np"
    marker = root / "events_np.building"
    if marker.exists():
        if not raw_root.exists():  # left by a failed download attempt: it only blocks later runs
            log.warning("removing the stale marker %s left by an interrupted download", marker)
            marker.unlink()
        else:
            raise DataError(
                f"{marker} marks an unfinished conversion into {raw_root}: delete {raw_root} and the marker to "
                f"convert again from {root / 'extract'}, or only the marker if {raw_root} is known to be complete"
            )
    if raw_root.exists():
        _check_class_dirs(spec, root, raw_root)
        return raw_root
    if not root.is_dir() and not download:
        raise missing_data(spec.name, root, spec.layout(root), spec.source, "no such folder")
    extract_root = root / "extract"
    if not spec.extracted(extract_root):
        if extract_root.exists():
            raise missing_data(spec.name, root, spec.layout(root), spec.source,
                               f"{extract_root} is incomplete; delete it to unpack download/ again")
        have = [a for a in spec.archives if (root / "download" / a).is_file()]
        if len(have) < len(spec.archives):
            if not download:
                missing = [a for a in spec.archives if a not in have]
                raise missing_data(spec.name, root, spec.layout(root), spec.source,
                                   f"no events_np/, extract/ or download/{missing[0]}; data.download=true fetches "
                                   "what can be fetched")
            _download(spec, root)
        _extract(spec, root, verify_checksums)
    log.info("converting %s into %s with spikingjelly's %s reader", extract_root, raw_root, spec.reader.__name__)
    marker.touch()
    raw_root.mkdir()
    try:
        spec.reader.create_raw_from_extracted(extract_root, raw_root)
    except Exception as e:
        shutil.rmtree(raw_root, ignore_errors=True)
        marker.unlink()
        raise missing_data(spec.name, root, spec.layout(root), spec.source,
                           f"converting {extract_root} failed: {type(e).__name__}: {e}") from None
    marker.unlink()
    _check_class_dirs(spec, root, raw_root)
    return raw_root


# ---- frames: events_np/ → frames_number_<T>_split_by_<s>/ --------------------------------------
def frames_root(root: str | Path, frames: int, split_by: str = "number") -> Path:
    """spikingjelly's cache folder for fixed-frame-number integration (``FrameFixedNumberBuilder``)."""
    return Path(root).expanduser() / f"frames_number_{frames}_split_by_{split_by}"


def _event_files(raw_root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(raw_root):
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith((".npz", ".npy")):
                yield Path(dirpath) / f


def _compact(counts: np.ndarray) -> np.ndarray:
    """Event counts as uint16 when they fit (spikingjelly stores float64): a quarter of the bytes to
    decompress, about 3× faster to read; ``load_npz_frames`` casts them back to float32."""
    return counts.astype(np.uint16) if counts.max(initial=0) < 2**16 else counts.astype(np.float32)


def prepare_frames(
    spec: DVSSpec, root: str | Path, frames: int, split_by: str = "number", progress: bool = True
) -> Path:
    """Integrate every event file into ``frames`` frames once (spikingjelly's
    ``integrate_events_by_fixed_frames_number``; same folders, file names and ``frames`` key as its
    ``FrameFixedNumberBuilder``, so its reader loads them), with a progress bar; return the cache folder.

    Only missing files are integrated; a cache whose build was interrupted (spikingjelly's
    ``.building`` marker) is deleted and rebuilt, since it is derived from ``events_np``.
    """
    if not isinstance(frames, int) or frames < 1:
        raise ConfigError(f"data.frames must be a positive integer (got {frames}); it defaults to T")
    if split_by not in ("number", "time"):
        raise ConfigError(f"data.split_by must be 'number' or 'time' (got {split_by!r})")
    root = Path(root).expanduser()
    raw_root = root / "events_np"
    out_root = frames_root(root, frames, split_by)
    marker = out_root.with_name(f"{out_root.name}.building")
    if marker.exists():
        log.warning("rebuilding the frame cache %s: a previous build was interrupted", out_root)
        shutil.rmtree(out_root, ignore_errors=True)
        marker.unlink()
    todo = [(f, out_root / f.relative_to(raw_root)) for f in _event_files(raw_root)]
    todo = [(src, dst) for src, dst in todo if not dst.exists()]
    if not todo:
        return out_root
    H, W = spec.reader.get_H_W()
    marker.touch()
    out_root.mkdir(exist_ok=True)
    from tqdm.auto import tqdm

    for src, dst in tqdm(todo, desc=f"{spec.name}: integrating {frames} frames", unit="file", disable=not progress):
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            events = FrameFixedNumberBuilder._event_loader(str(src))
            counts = sj_utils.integrate_events_by_fixed_frames_number(events, split_by, frames, H, W)
            np.savez_compressed(dst, frames=_compact(counts))
        except Exception as e:
            raise DataError(
                f"cannot integrate {src} into frames ({type(e).__name__}: {e}); the events file is malformed: "
                f"delete {raw_root} and convert again from extract/ (scripts/prepare_dvs.py)"
            ) from None
    marker.unlink()
    return out_root


def prepare_dvs(
    name: str, root: str | Path, frames: int, split_by: str = "number", download: bool = False,
    verify_checksums: bool = True, progress: bool = True,
) -> Path:
    """Raw download → ``events_np`` → cached frames for ``name`` in ``DVS_SPECS``; returns the cache."""
    if name not in DVS_SPECS:
        raise ConfigError(f"unknown event dataset {name!r}; valid: {sorted(DVS_SPECS)}")
    spec = DVS_SPECS[name]
    prepare_events(spec, root, download=download, verify_checksums=verify_checksums)
    out = prepare_frames(spec, root, frames, split_by, progress=progress)
    _check_class_dirs(spec, Path(root).expanduser(), out)
    return out


# ---- per-sample transform -----------------------------------------------------------------------
def uint8_wrap(counts: np.ndarray) -> np.ndarray:
    """The uint8 image torchvision's ``ToPILImage`` makes of float event counts ``c``
    (``pic.mul(255).byte()``): ``(255·c) mod 256`` — the float → uint8 cast wraps on x86, where the
    SLTT and ASGL runs were made (the original code casts implicitly; here it is explicit)."""
    return ((np.rint(np.asarray(counts)).astype(np.int64) * 255) % 256).astype(np.uint8)


def pil_resize(frames_u8: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[T, 2, H, W]`` → uint8 ``[T, 2, size, size]`` through PIL exactly as torchvision's
    ``Resize(size)`` on the 2-channel (``LA``) PIL image of each frame: bilinear, antialiased, with PIL's
    premultiplied alpha (channel 0 weighted by channel 1)."""
    from PIL import Image

    out = []
    for frame in frames_u8:
        img = Image.fromarray(np.ascontiguousarray(frame.transpose(1, 2, 0)))  # H×W×2 → mode "LA"
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        out.append(np.asarray(img).transpose(2, 0, 1))
    return np.stack(out)


class FrameTransform:
    """``[T, 2, 128, 128]`` numpy frames → float32 tensor ``[T, 2, size, size]``: values as
    ``values`` says (module doc), resized, and (training) augmented with one random draw per sample
    shared by all frames."""

    def __init__(
        self, size: int, crop: bool = False, flip: bool = False, roll: bool = False,
        crop_padding: int = 4, roll_max: int = 5, values: str = "counts", antialias: bool = True,
    ) -> None:
        if values not in FRAME_VALUES:
            raise ConfigError(f"data.frame_values must be one of {list(FRAME_VALUES)} (got {values!r})")
        self.size, self.crop, self.flip, self.roll = size, crop, flip, roll
        self.crop_padding, self.roll_max = crop_padding, roll_max
        self.values, self.antialias = values, antialias

    def values_and_resize(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The frame values (``values``) at ``size`` × ``size``, before any augmentation."""
        counts = np.asarray(frames, dtype=np.float32)
        if self.values == "uint8_wrap":
            return torch.from_numpy(pil_resize(uint8_wrap(counts), self.size).astype(np.float32) / 255)
        x = torch.from_numpy(counts > 0).float() if self.values == "binary" else torch.from_numpy(counts)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=self.antialias)
        return x

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = self.values_and_resize(frames)
        if self.crop and self.crop_padding > 0:
            p = self.crop_padding
            x = F.pad(x, (p, p, p, p))
            top, left = (int(v) for v in torch.randint(0, 2 * p + 1, (2,)))
            x = x[..., top:top + self.size, left:left + self.size]
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        if self.roll and self.roll_max > 0:
            dy, dx = (int(v) for v in torch.randint(-self.roll_max, self.roll_max + 1, (2,)))
            x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        return x.contiguous()


def _sample_number(path: str) -> tuple[int, str]:
    m = re.search(r"(\d+)(?=\.np[yz]$)", os.path.basename(path))
    return (int(m.group(1)) if m else -1, os.path.basename(path))


def cifar10_dvs_test_split(samples: list[tuple[str, int]], split: str = "dsr") -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of the fixed 9:1 per-class CIFAR10-DVS split (module doc)."""
    if split not in CIFAR10_DVS_SPLITS:
        raise ConfigError(f"data.split must be one of {list(CIFAR10_DVS_SPLITS)} (got {split!r})")
    targets = np.asarray([t for _, t in samples])
    train, test = [], []
    for c in np.unique(targets):
        idx = sorted(np.flatnonzero(targets == c), key=lambda i: _sample_number(samples[i][0]))
        n_test = max(1, round(len(idx) * TEST_FRACTION)) if len(idx) > 1 else 0
        n_train = len(idx) - n_test
        if split == "dsr":
            train += idx[:n_train]
            test += idx[n_train:]
        else:
            test += idx[:n_test]
            train += idx[n_test:]
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


class DVSDataModule(SpikeDataModule):
    """Event frames ``[N, T, 2, size, size]`` (float32), labels int64.

    Args:
        root: the dataset folder (module doc for its layout).
        frames: number of frames T per sample (``${T}`` in the configs).
        size: side of the served frames (48 default, 128 = the sensor resolution, no resize).
        frame_values: ``counts``, ``uint8_wrap`` or ``binary`` (module doc).
        resize_antialias: antialias the bilinear resize of ``counts``/``binary`` frames.
        augment: ``{crop, flip, roll}`` booleans (training split only).
        split_by: spikingjelly's integration mode (``number``: equal event counts per frame).
        download: allow a download (CIFAR10-DVS only; DVS128 Gesture needs a manual download).
        verify_checksums: check the MD5 of archives in ``download/`` before unpacking them.
        crop_padding / roll_max: zero padding of the random crop, largest roll shift (pixels).
        progress: show a progress bar while integrating frames.
    """

    spec: ClassVar[DVSSpec] = CIFAR10_DVS

    def __init__(
        self,
        root: str,
        frames: int = 10,
        size: int = 48,
        augment: dict[str, Any] | None = None,
        split_by: str = "number",
        download: bool = False,
        verify_checksums: bool = True,
        crop_padding: int = 4,
        roll_max: int = 5,
        progress: bool = True,
        frame_values: str = "counts",
        resize_antialias: bool = True,
        **kw: Any,
    ) -> None:
        kw.setdefault("num_classes", len(self.spec.classes))
        kw.setdefault("channels", 2)
        super().__init__(**kw)
        if self.num_classes != len(self.spec.classes):
            raise ConfigError(f"{self.spec.name} has {len(self.spec.classes)} classes; "
                              f"got data.num_classes={self.num_classes}")
        if self.channels != 2:
            raise ConfigError(f"{self.spec.name} frames have 2 polarity channels; got data.channels={self.channels}")
        if not isinstance(size, int) or not 1 <= size <= 128:
            raise ConfigError(f"data.size must be an integer in 1..128 (48 or 128 in the recipes); got {size}")
        self.root = Path(root).expanduser()
        self.frames = int(frames)
        self.size = size
        self.augment = check_augment_keys(augment, AUGMENT_KEYS, self.spec.name)
        self.split_by = split_by
        self.download = download
        self.verify_checksums = verify_checksums
        self.progress = progress
        values = {"values": frame_values, "antialias": bool(resize_antialias)}
        self.train_transform = FrameTransform(size, **self.augment, crop_padding=crop_padding, roll_max=roll_max,
                                              **values)
        self.eval_transform = FrameTransform(size, crop_padding=crop_padding, roll_max=roll_max, **values)

    def prepare_data(self) -> None:
        prepare_dvs(self.spec.name, self.root, self.frames, self.split_by, self.download, self.verify_checksums,
                    self.progress)

    def _reader(self, **kw: Any) -> NeuromorphicDatasetFolder:
        """spikingjelly's dataset class on the cached frames (``prepare_data`` made sure they exist)."""
        try:
            return self.spec.reader(str(self.root), data_type="frame", frames_number=self.frames,
                                    split_by=self.split_by, **kw)
        except (FileNotFoundError, RuntimeError, ValueError) as e:
            raise missing_data(self.spec.name, self.root, self.spec.layout(self.root), self.spec.source,
                               f"{type(e).__name__}: {e}") from None

    def label_map(self, ds: NeuromorphicDatasetFolder) -> list[int]:
        """DatasetFolder index → our label: the class's position in ``spec.classes`` (DVS128 Gesture
        folders are numbers and DatasetFolder sorts them as strings: '10' before '2')."""
        return [self.spec.classes.index(c) for c in ds.classes]

    def _split_train_val(self, base: NeuromorphicDatasetFolder, idx: np.ndarray, lmap: list[int]) -> None:
        labels = np.asarray([lmap[base.targets[i]] for i in idx])
        kept, held = stratified_split(labels, self.val_fraction, self.split_seed)
        self.train_set = TransformedSubset(base, idx[kept], self.train_transform, lmap)
        self.val_set = TransformedSubset(base, idx[held], self.eval_transform, lmap)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.prepare_data()  # cheap when the cache is complete; needed when setup() is called alone
        self._setup_splits()

    def _setup_splits(self) -> None:
        raise NotImplementedError


class CIFAR10DVSDataModule(DVSDataModule):
    """CIFAR10-DVS (10,000 recordings, 10 classes), fixed 9:1 per-class split (``split``)."""

    spec = CIFAR10_DVS

    def __init__(self, *args: Any, split: str = "dsr", **kw: Any) -> None:
        super().__init__(*args, **kw)
        if split not in CIFAR10_DVS_SPLITS:
            raise ConfigError(f"data.split must be one of {list(CIFAR10_DVS_SPLITS)} (got {split!r})")
        self.split = split

    def _setup_splits(self) -> None:
        base = self._reader()
        lmap = self.label_map(base)
        train_idx, test_idx = cifar10_dvs_test_split(base.samples, self.split)
        self._split_train_val(base, train_idx, lmap)
        self.test_set = TransformedSubset(base, test_idx, self.eval_transform, lmap)


class DVSGestureDataModule(DVSDataModule):
    """DVS128 Gesture (1,176 train / 288 test samples, 11 classes), official trial split."""

    spec = DVS_GESTURE

    def _setup_splits(self) -> None:
        train_base, test_base = self._reader(train=True), self._reader(train=False)
        lmap = self.label_map(train_base)
        self._split_train_val(train_base, np.arange(len(train_base)), lmap)
        self.test_set = TransformedSubset(test_base, None, self.eval_transform, self.label_map(test_base))


__all__: list[str] = [
    "CIFAR10_DVS", "DVS_GESTURE", "DVS_SPECS", "CIFAR10DVSDataModule", "DVSDataModule", "DVSGestureDataModule",
    "DVSSpec", "FRAME_VALUES", "FrameTransform", "cifar10_dvs_test_split", "frames_root", "pil_resize",
    "prepare_dvs", "prepare_events", "prepare_frames", "uint8_wrap",
]
