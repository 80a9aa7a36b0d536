"""Convert raw CIFAR10-DVS / DVS128 Gesture downloads into spikingjelly's event files and the cached
frames the datamodules read, ahead of training (a progress bar per frame count).

    python scripts/prepare_dvs.py --dataset cifar10_dvs --frames 10
    python scripts/prepare_dvs.py --dataset dvs_gesture --frames 16 20 --root /datasets/DVS128Gesture
    python scripts/prepare_dvs.py --dataset all --frames 10       # every event dataset under the data dir

The dataset folder is ``--root``, else ``--data-dir/<dataset>``, else
``$SPIKEFORGE_DATA_DIR/<dataset>``, else ``data/<dataset>`` in the repository. It must hold the
archives in ``download/`` (CIFAR10-DVS: the ten ``<class>.zip``; DVS128 Gesture:
``DvsGesture.tar.gz``), or their contents in ``extract/``, or spikingjelly's ``events_np/``.
``--download`` fetches what can be fetched (CIFAR10-DVS only); nothing is downloaded otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spikeforge.data.dvs import DVS_SPECS, prepare_dvs  # noqa: E402
from spikeforge.errors import SpikeforgeError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=[*sorted(DVS_SPECS), "all"], required=True)
    p.add_argument("--frames", type=int, nargs="+", required=True, help="frame counts T to cache (the runs' T)")
    p.add_argument("--root", type=Path, help="the dataset folder (one dataset only)")
    p.add_argument("--data-dir", type=Path, help="folder holding <dataset>/ (default: $SPIKEFORGE_DATA_DIR or data/)")
    p.add_argument("--split-by", choices=["number", "time"], default="number")
    p.add_argument("--download", action="store_true", help="download what can be downloaded (CIFAR10-DVS)")
    p.add_argument("--no-verify", action="store_true", help="skip the MD5 check of download/ archives")
    args = p.parse_args(argv)

    names = sorted(DVS_SPECS) if args.dataset == "all" else [args.dataset]
    if args.root is not None and len(names) > 1:
        p.error("--root names one dataset's folder; use --data-dir with --dataset all")
    data_dir = args.data_dir or Path(os.environ.get("SPIKEFORGE_DATA_DIR", ROOT / "data"))
    failed = 0
    for name in names:
        root = args.root or data_dir / name
        print(f"{name}: preparing {root} (spikingjelly converts the raw recordings first if needed)")
        try:
            for frames in args.frames:
                start = time.perf_counter()
                out = prepare_dvs(name, root, frames, args.split_by, download=args.download,
                                  verify_checksums=not args.no_verify, progress=True)
                n = sum(1 for _ in out.rglob("*.np[yz]"))
                print(f"{name}: {n} samples with {frames} frames in {out} ({time.perf_counter() - start:.1f} s)")
        except SpikeforgeError as e:
            print(f"error: {e}", file=sys.stderr)
            failed = e.exit_code
    return failed


if __name__ == "__main__":
    sys.exit(main())
