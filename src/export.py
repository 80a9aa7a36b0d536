"""Export a checkpoint: ``python src/export.py ckpt_path=<run>/checkpoints/last.ckpt format=nir|torchscript|onnx``.

Like ``src/train.py``, only the config code is imported here; torch, Lightning and the exporters load
inside the task (:func:`spikeforge.export.export`).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from spikeforge.cli import export_entry  # noqa: E402

if __name__ == "__main__":
    export_entry()
