"""Train a spiking network: ``python src/train.py method=<m> model=<m> data=<d> [key=value ...]``.

Only Hydra and the config code are imported here: ``--help``, ``--cfg job`` and config errors answer
before torch, Lightning or spikingjelly load (they load inside the task, :func:`spikeforge.run.train`).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from spikeforge.cli import train_entry  # noqa: E402

if __name__ == "__main__":
    train_entry()
