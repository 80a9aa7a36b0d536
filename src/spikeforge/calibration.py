"""DSR's ImageNet hybrid step 2 as a task: thresholds calibrated on a trained ANN checkpoint.

The formulas (percentile thresholds, dsr.md "Networks") are in :mod:`spikeforge.methods.dsr`; this module
rebuilds the run from its checkpoint (:func:`spikeforge.run.restore_run`), so it sits in the application
layer (docs/architecture.md). Used by ``scripts/calibrate_dsr.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from spikeforge.errors import CheckpointError
from spikeforge.methods.dsr import calibrate_thresholds, dsr_neurons, save_thresholds
from spikeforge.run import build_datamodule, restore_run

log = logging.getLogger("spikeforge")


def calibrate_checkpoint(
    ckpt_path: str | Path,
    out: str | Path,
    num_batches: int = 5,
    q: float = 99.9,
    data_overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """ImageNet hybrid step 2 on a trained ANN checkpoint (``method=dsr_ann``): re-create its model and
    data from the checkpoint's own config, run ``num_batches`` batches of the **training** split
    (dsr.md "Networks"), and save the per-layer q-th percentiles to ``out`` (JSON)."""
    if not Path(ckpt_path).is_file():
        raise CheckpointError(f"ANN checkpoint {ckpt_path} does not exist; pass the ANN run's "
                              "checkpoints/last.ckpt (python src/train.py method=dsr_ann ...)")
    cfg, module = restore_run(ckpt_path, data_overrides=data_overrides)
    if dsr_neurons(module.net):
        log.warning("calibrating a spiking network: thresholds are meant to come from the ReLU ANN (method=dsr_ann)")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    torch.manual_seed(seed)
    batches = (module.encode(x) for x, _ in datamodule.train_dataloader())
    values = calibrate_thresholds(module.net, batches, q=q, num_batches=num_batches, seed=seed)
    save_thresholds(out, values, percentile=q, batches=num_batches, split="train", ann_checkpoint=str(ckpt_path),
                    model=cfg.model.get("name"), data=cfg.data.get("name"))
    return values
