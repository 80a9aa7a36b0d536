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
from omegaconf import OmegaConf

from spikeforge.config_schema import check_calibration_split
from spikeforge.errors import CheckpointError
from spikeforge.methods.dsr import calibrate_thresholds, dsr_neurons, save_thresholds
from spikeforge.protocol import protocol_name
from spikeforge.run import build_datamodule, restore_run

log = logging.getLogger("spikeforge")


def calibrate_checkpoint(
    ckpt_path: str | Path,
    out: str | Path,
    num_batches: int = 5,
    q: float = 99.9,
    data_overrides: dict[str, Any] | None = None,
    seed: int = 0,
    split: str | None = None,
) -> dict[str, float]:
    """ImageNet hybrid step 2 on a trained ANN checkpoint (``method=dsr_ann``): re-create its model and
    data from the checkpoint's own config, run ``num_batches`` batches of ``split`` (default: the
    checkpoint's ``method.calibration_split``, else ``train``; ``test`` = the test set with evaluation
    transforms, as DSR's ``imagenet/main.py`` calibrates on its val_loader, and only under
    ``protocol=paper``) and save the per-layer q-th percentiles to ``out`` (JSON; dsr.md "Networks")."""
    if not Path(ckpt_path).is_file():
        raise CheckpointError(f"ANN checkpoint {ckpt_path} does not exist; pass the ANN run's "
                              "checkpoints/last.ckpt (python src/train.py method=dsr_ann ...)")
    cfg, module = restore_run(ckpt_path, data_overrides=data_overrides)
    if split is None:
        split = OmegaConf.select(cfg, "method.calibration_split", default="train")
    split = check_calibration_split(split, protocol_name(cfg))
    if dsr_neurons(module.net):
        log.warning("calibrating a spiking network: thresholds are meant to come from the ReLU ANN (method=dsr_ann)")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit" if split == "train" else "test")
    torch.manual_seed(seed)
    loader = datamodule.train_dataloader() if split == "train" else datamodule.test_dataloader()
    batches = (module.encode(x) for x, _ in loader)
    values = calibrate_thresholds(module.net, batches, q=q, num_batches=num_batches, seed=seed)
    save_thresholds(out, values, percentile=q, batches=num_batches, split=split, ann_checkpoint=str(ckpt_path),
                    model=cfg.model.get("name"), data=cfg.data.get("name"))
    return values
