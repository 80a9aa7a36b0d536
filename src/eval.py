"""Evaluate a checkpoint on the test split: ``python src/eval.py ckpt_path=<run>/checkpoints/last.ckpt``."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from spikeforge.cli import eval_entry  # noqa: E402

if __name__ == "__main__":
    eval_entry()
