"""Tiny datasets written in each dataset's genuine on-disk format, for tests, smoke runs and the
data-loading benchmark on a machine without the real data.

- CIFAR-10/100: python pickle batches as torchvision reads them (their MD5 sums differ from the
  published ones: read them with ``verify_checksums=False``).
- CIFAR10-DVS: AEDAT 2.0 recordings (``extract/<class>/cifar10_<class>_<i>.aedat``: ``#`` header
  lines, then big-endian uint32 (address, timestamp) pairs with x in bits 1–7, y in bits 8–14,
  polarity in bit 0) or spikingjelly's ``events_np`` tree (npz with t, x, y, p).
- DVS128 Gesture: AEDAT 3.1 recordings with their ``*_labels.csv`` and ``trials_to_{train,test}.txt``
  (``extract/DvsGesture/``: header ending in ``#!END-HEADER``, then packets of a 28-byte
  little-endian header and 8-byte polarity events, x in bits 17–31, y in bits 2–16, polarity in bit
  1) or the ``events_np/{train,test}/<label>/`` tree.
- ImageNet: an ImageFolder of small JPEGs under ``train/`` and ``val/``.

Every writer is seeded, so the same call writes the same bytes.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spikeforge.data.dvs import CIFAR10_DVS, DVS_GESTURE

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ---- CIFAR ----------------------------------------------------------------------------------------
def _cifar_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 rows of 3072 values (R, G, B planes of 32×32), brightness depending on the label."""
    base = (labels[:, None] * 23 % 256).astype(np.int64)
    noise = rng.integers(0, 64, size=(len(labels), 3072))
    return ((base + noise) % 256).astype(np.uint8)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(
    root: str | Path, name: str = "cifar10", train_per_class: int = 5, test_per_class: int = 2, seed: int = 0
) -> Path:
    """Write ``<root>/cifar-10-batches-py`` (5 training batches) or ``<root>/cifar-100-python``."""
    rng = np.random.default_rng(seed)
    n_classes = 10 if name == "cifar10" else 100
    train_labels = rng.permutation(np.repeat(np.arange(n_classes), train_per_class))
    test_labels = rng.permutation(np.repeat(np.arange(n_classes), test_per_class))
    if name == "cifar10":
        folder = Path(root) / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(np.array_split(train_labels, 5), start=1):
            _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                                "labels": part.tolist(), "data": _cifar_images(part, rng),
                                                "filenames": [f"img_{i}_{j}.png" for j in range(len(part))]})
        _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_labels.tolist(),
                                      "data": _cifar_images(test_labels, rng),
                                      "filenames": [f"test_{j}.png" for j in range(len(test_labels))]})
        _dump(folder / "batches.meta", {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": 10000,
                                        "num_vis": 3072})
    elif name == "cifar100":
        folder = Path(root) / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for split, labels in (("train", train_labels), ("test", test_labels)):
            _dump(folder / split, {"batch_label": split, "fine_labels": labels.tolist(),
                                   "coarse_labels": (labels // 5).tolist(), "data": _cifar_images(labels, rng),
                                   "filenames": [f"{split}_{j}.png" for j in range(len(labels))]})
        _dump(folder / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)],
                                "coarse_label_names": [f"super{i:02d}" for i in range(20)]})
    else:
        raise ValueError(f"name must be cifar10 or cifar100, got {name!r}")
    return folder


# ---- events ---------------------------------------------------------------------------------------
def _events(n: int, rng: np.random.Generator, t0: int = 0, duration: int = 100_000) -> dict[str, np.ndarray]:
    t = np.sort(rng.integers(t0, t0 + duration, size=n)).astype(np.int64)
    return {"t": t, "x": rng.integers(0, 128, n), "y": rng.integers(0, 128, n), "p": rng.integers(0, 2, n)}


def write_cifar10_dvs_aedat(root: str | Path, per_class: int = 10, events: int = 200, seed: int = 0) -> Path:
    """Raw CIFAR10-DVS recordings as unpacked from the class zips: ``<root>/extract/<class>/*.aedat``."""
    rng = np.random.default_rng(seed)
    extract = Path(root) / "extract"
    for c in CIFAR10_DVS.classes:
        (extract / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (extract / c / f"cifar10_{c}_{i}.aedat").write_bytes(aedat2_bytes(_events(events, rng)))
    return extract


def aedat2_bytes(ev: dict[str, np.ndarray]) -> bytes:
    """One CIFAR10-DVS recording (AEDAT 2.0) holding the events ``ev`` (t, x, y, p; sensor coordinates)."""
    addr = (ev["y"].astype(np.uint32) << 8) | (ev["x"].astype(np.uint32) << 1) | ev["p"].astype(np.uint32)
    body = np.stack([addr, ev["t"].astype(np.uint32)], axis=1).astype(">u4").tobytes()
    return b"#!AER-DAT2.0\r\n# This is a raw AE data file created by saveaerdat.m\r\n" + body


def _save_events(path: Path, ev: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, t=ev["t"], x=ev["x"].astype(np.int64), y=ev["y"].astype(np.int64), p=ev["p"].astype(np.int64))


def write_cifar10_dvs_events(root: str | Path, per_class: int = 10, events: int = 200, seed: int = 0) -> Path:
    """spikingjelly's converted tree: ``<root>/events_np/<class>/cifar10_<class>_<i>.npz``."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "events_np"
    for c in CIFAR10_DVS.classes:
        for i in range(per_class):
            _save_events(raw / c / f"cifar10_{c}_{i}.npz", _events(events, rng))
    return raw


def _aedat3_packet(ev: dict[str, np.ndarray]) -> bytes:
    n = len(ev["t"])
    data = (ev["x"].astype(np.uint32) << 17) | (ev["y"].astype(np.uint32) << 2) | (ev["p"].astype(np.uint32) << 1) | 1
    # eventType=1 (polarity), eventSource, eventSize=8, eventTSOffset=4, eventTSOverflow=0, capacity, number, valid
    header = struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, n, n, n)
    body = np.stack([data, ev["t"].astype(np.uint32)], axis=1).astype("<u4").tobytes()
    return header + body


def write_dvs_gesture_aedat(
    root: str | Path, train_users: Sequence[int] = (1, 2), test_users: Sequence[int] = (24,),
    events_per_gesture: int = 120, seed: int = 0,
) -> Path:
    """Raw DVS128 Gesture trials as in DvsGesture.tar.gz: ``<root>/extract/DvsGesture/userNN_led.aedat``,
    ``userNN_led_labels.csv`` (all 11 gestures once per trial) and ``trials_to_{train,test}.txt``."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "extract" / "DvsGesture"
    folder.mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for split, users in (("train", train_users), ("test", test_users)):
        for u in users:
            stem = f"user{u:02d}_led"
            rows, packets, t0 = [], [], 1_000_000
            for label in range(1, 12):  # the csv numbers gestures 1..11
                ev = _events(events_per_gesture, rng, t0=t0, duration=50_000)
                packets.append(_aedat3_packet(ev))
                rows.append(f"{label},{t0},{t0 + 50_000}")
                t0 += 80_000
            header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
            (folder / f"{stem}.aedat").write_bytes(header + b"".join(packets))
            (folder / f"{stem}_labels.csv").write_text("class,startTime_usec,endTime_usec\n" + "\n".join(rows) + "\n")
            lists[split].append(f"{stem}.aedat")
    for split in ("train", "test"):
        (folder / f"trials_to_{split}.txt").write_text("\n".join(lists[split]) + "\n")
    return folder


def write_dvs_gesture_events(
    root: str | Path, train_per_class: int = 4, test_per_class: int = 2, events: int = 200, seed: int = 0
) -> Path:
    """spikingjelly's converted tree: ``<root>/events_np/{train,test}/<0..10>/userNN_led_<k>.npz``."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "events_np"
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in DVS_GESTURE.classes:
            for k in range(n):
                _save_events(raw / split / c / f"user{k + 1:02d}_led_{c}.npz", _events(events, rng))
    return raw


# ---- ImageNet -------------------------------------------------------------------------------------
def write_imagefolder(
    root: str | Path, classes: int = 3, train_per_class: int = 6, val_per_class: int = 2, size: int = 40, seed: int = 0
) -> Path:
    """``<root>/train/nXXXXXXXX/*.JPEG`` and ``<root>/val/nXXXXXXXX/*.JPEG`` (small RGB JPEGs)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            d = root / split / f"n{1440764 + c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, size=(size, size + 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{split}_{c}_{i}.JPEG", quality=85)
    return root
