"""Evaluate a checkpoint on the test split: ``python src/eval.py ckpt_path=<run>/checkpoints/last.ckpt``."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from spikeforge.cli import one_line_errors  # noqa: E402
from spikeforge.run import evaluate, run_cli  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_cli(evaluate, cfg)


if __name__ == "__main__":
    one_line_errors()
    main()
