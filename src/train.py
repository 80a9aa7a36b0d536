"""Train a spiking network: ``python src/train.py method=<m> model=<m> data=<d> [key=value ...]``."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from spikeforge.cli import main_or_child  # noqa: E402
from spikeforge.run import run_cli, train  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    results = run_cli(train, cfg)
    return (results or {}).get("best_val_acc1")  # objective for sweepers


if __name__ == "__main__":
    main_or_child(main, train)
