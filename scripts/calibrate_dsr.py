"""DSR hybrid step 2: per-layer thresholds from a trained ReLU ANN (dsr.md "Networks", ImageNet).

    python scripts/calibrate_dsr.py <ANN run>/checkpoints/last.ckpt thresholds.json [--batches 5]
        [--percentile 99.9] [--split train|test] [--data batch_size=64 ...]

Runs a few batches of the ANN run's ``method.calibration_split`` through the ANN (eval mode): the training
split by default, the test set for ``experiment=dsr_imagenet_ann`` under ``protocol=paper`` (as DSR's
``imagenet/main.py`` calibrates on its val_loader). It takes the 99.9th percentile of every neuron layer's
ReLU'd pre-activations and writes them as JSON; then train the SNN with
``method=dsr method.init_from=<ANN ckpt> method.thresholds=thresholds.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from omegaconf import OmegaConf  # noqa: E402

from spikeforge.calibration import calibrate_checkpoint  # noqa: E402
from spikeforge.errors import SpikeforgeError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="checkpoint of the ANN run (method=dsr_ann)")
    p.add_argument("out", help="JSON file to write")
    p.add_argument("--batches", type=int, default=5, help="batches to run (default 5)")
    p.add_argument("--split", choices=("train", "test"), default=None,
                   help="split to calibrate on (default: the ANN run's method.calibration_split, else train; "
                        "test only for a protocol=paper run)")
    p.add_argument("--percentile", type=float, default=99.9, help="percentile of the activations (default 99.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of the checkpoint's data config, e.g. root=/datasets/imagenet batch_size=64")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        overrides = OmegaConf.to_container(OmegaConf.from_dotlist(args.data)) if args.data else None
        values = calibrate_checkpoint(args.ckpt, args.out, args.batches, args.percentile, overrides, args.seed,
                                      split=args.split)
    except SpikeforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    width = max(len(k) for k in values)
    for name, v in values.items():
        print(f"{name:<{width}}  {v:.4f}")
    print(f"wrote {len(values)} thresholds to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
