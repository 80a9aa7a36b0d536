"""Export a checkpoint: ``python src/export.py ckpt_path=<run>/checkpoints/last.ckpt format=nir|torchscript|onnx``."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from spikeforge.cli import one_line_errors  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from spikeforge.export import export  # heavy imports after composition
    from spikeforge.run import run_cli

    run_cli(export, cfg)


if __name__ == "__main__":
    one_line_errors()
    main()
