"""Data-loading throughput per dataset: training samples per second through each datamodule's
training loader (reading, decoding, resizing and the config's augmentation), written as JSON and a
Markdown table.

    python scripts/bench_data.py                                   # every dataset, 0 workers
    python scripts/bench_data.py --datasets cifar10 imagenet --num-workers 8 --batches 50
    python scripts/bench_data.py --data-dir /datasets --out outputs/bench_data

A dataset found under the data dir (``--data-dir``, else ``$SPIKEFORGE_DATA_DIR``, else ``data/``)
is measured as it is; one that is missing is replaced by a tiny dataset in its genuine on-disk
format (``spikeforge.data.fakes``) in a temporary folder, and the row says ``fake``. Figures from
fake data measure the pipeline (decode, resize, augmentation), not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import hydra  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from spikeforge.data import fakes  # noqa: E402
from spikeforge.errors import DataError  # noqa: E402

DATASETS = ["digits", "cifar10", "cifar100", "cifar10_dvs", "dvs_gesture", "imagenet"]


def write_fake(name: str, data_dir: Path) -> dict[str, Any]:
    """Write a small dataset for ``name`` under ``data_dir/<name>``; return the config overrides it needs."""
    root = data_dir / name
    if name in ("cifar10", "cifar100"):
        fakes.write_cifar(root, name, train_per_class=40 if name == "cifar10" else 4, test_per_class=2)
        return {"verify_checksums": False}
    if name == "cifar10_dvs":
        fakes.write_cifar10_dvs_events(root, per_class=12, events=20_000)
        return {"progress": False}
    if name == "dvs_gesture":
        fakes.write_dvs_gesture_events(root, train_per_class=12, test_per_class=2, events=20_000)
        return {"progress": False}
    if name == "imagenet":
        fakes.write_imagefolder(root, classes=4, train_per_class=48, val_per_class=2, size=320)
        return {"num_classes": 4}
    raise ValueError(name)


def build(name: str, data_dir: Path, T: int, num_workers: int, extra: dict[str, Any]) -> Any:
    overrides = [f"data={name}", f"paths.data_dir={data_dir}", f"T={T}", f"data.num_workers={num_workers}",
                 f"++data.persistent_workers={str(num_workers > 0).lower()}"]
    overrides += [f"data.{k}={v}" for k, v in extra.items()]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    return dm


def measure(dm: Any, batches: int) -> dict[str, Any]:
    loader = dm.train_dataloader()
    it = iter(loader)
    x, _ = next(it)  # warm-up: worker start, first file reads
    n, start = 0, time.perf_counter()
    for step, (_, y) in enumerate(it, start=1):
        n += y.shape[0]
        if step >= batches:
            break
    elapsed = time.perf_counter() - start
    if n == 0:  # a single batch: time it again
        start = time.perf_counter()
        x, y = next(iter(loader))
        n, elapsed = y.shape[0], time.perf_counter() - start
    return {"samples": n, "seconds": round(elapsed, 4), "samples_per_s": round(n / elapsed, 1),
            "sample_shape": list(x.shape[1:]), "dtype": str(x.dtype).replace("torch.", "")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=DATASETS)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SPIKEFORGE_DATA_DIR", ROOT / "data")))
    p.add_argument("--batches", type=int, default=20, help="timed batches per dataset (after one warm-up batch)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--T", type=int, default=10, help="frames per event sample")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_data")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spikeforge_bench_") as tmp:
        for name in args.datasets:
            source, data_dir, extra = "real", args.data_dir, {}
            if name == "digits":
                source = "embedded"
            try:
                dm = build(name, data_dir, args.T, args.num_workers, extra)
            except DataError:
                source, data_dir = "fake", Path(tmp)
                extra = write_fake(name, data_dir)
                dm = build(name, data_dir, args.T, args.num_workers, extra)
            row = {"dataset": name, "source": source, "batch_size": dm.batch_size, "num_workers": args.num_workers,
                   "train_samples": len(dm.train_set), **measure(dm, args.batches)}
            rows.append(row)
            print(f"{name:12s} {source:8s} {row['samples_per_s']:>10.1f} samples/s  {row['sample_shape']}")
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "T": args.T, "batches": args.batches}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_data.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    lines = ["| dataset | data | batch | workers | sample shape | samples/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['source']} | {r['batch_size']} | {r['num_workers']} | "
              f"{'×'.join(map(str, r['sample_shape']))} {r['dtype']} | {r['samples_per_s']:.1f} |" for r in rows]
    lines += ["", f"torch {meta['torch']}, {meta['cpus']} CPUs, {meta['threads']} threads, T = {args.T} frames "
              f"for event data, {args.batches} timed batches after one warm-up; 'fake' = tiny dataset in the "
              "genuine format (pipeline cost, not disk)."]
    (args.out / "bench_data.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'bench_data.json'} and {args.out / 'bench_data.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
