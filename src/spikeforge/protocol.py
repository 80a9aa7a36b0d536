"""Evaluation protocols (``conf/protocol/*``): how a run selects and reports its test accuracy.

- ``clean`` (default): a validation split is held out from the training set, the best-on-validation
  checkpoint is tested once; the test set never influences training or selection.
- ``paper``: what the papers' code does (SLTT ``train_SLTT.py``, DSR ``cifar/main_single_gpu.py``,
  ASGL ``experiment/*/main.py``, STDS ``CIFAR10/train.py``): the full training split trains, the test
  split is evaluated after every epoch (Lightning's validation loop runs on it and the method logs
  ``test/*``), and the best and the last test accuracy are reported. Choosing the best epoch on the
  test set is test-set selection; ``results.json`` (``protocol``) and the summary table say so.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig

from spikeforge.errors import ConfigError

PROTOCOLS = ("clean", "paper")
SELECTION = {
    "clean": "validation split (best-on-validation checkpoint tested once)",
    "paper": "test set (the paper's protocol: full training split, test every epoch, best epoch chosen on test)",
}


def protocol_name(cfg: DictConfig) -> str:
    node = cfg.get("protocol")
    name = "clean" if node is None else str(node.get("name", "clean"))
    if name not in PROTOCOLS:
        raise ConfigError(f"protocol={name!r} is unknown; valid: {', '.join(PROTOCOLS)} (conf/protocol/)")
    return name


class EpochTestRecorder(L.Callback):
    """Records the test accuracy of every epoch (``protocol=paper``); saved in checkpoints so a
    resumed run reports the whole history."""

    def __init__(self) -> None:
        self.history: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # epoch metrics are final here (ModelCheckpoint reads them in the same hook); a stand-alone
        # trainer.validate() (e.g. after resuming a finished run) is no training epoch
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if not fitting or "test/acc1" not in trainer.callback_metrics:
            return
        acc = float(trainer.callback_metrics["test/acc1"])
        self.history = [(e, a) for e, a in self.history if e != trainer.current_epoch] + [(trainer.current_epoch, acc)]

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # merged, not replaced: testing the best checkpoint after fitting restores callback states too,
        # and must not forget the epochs after it; a resumed run starts empty and takes the saved ones
        merged = {int(e): float(a) for e, a in state_dict.get("history", [])}
        merged.update(dict(self.history))
        self.history = sorted(merged.items())

    def summary(self) -> dict[str, Any]:
        if not self.history:
            return {"best_test_acc1": None, "best_epoch": None, "last_test_acc1": None, "test_acc1_per_epoch": []}
        best_epoch, best = max(self.history, key=lambda ea: ea[1])
        return {"best_test_acc1": best, "best_epoch": best_epoch, "last_test_acc1": self.history[-1][1],
                "test_acc1_per_epoch": [a for _, a in self.history]}


def apply_protocol(cfg: DictConfig, datamodule: L.LightningDataModule, module: L.LightningModule) -> str:
    """Set the datamodule and method up for the configured protocol, before fitting; returns its name.

    ``paper``: no validation hold-out, the validation loop runs on the test split and the method logs
    it as ``test/*``; ``conf/protocol/paper.yaml`` adds the :class:`EpochTestRecorder` callback
    (``run_callbacks.test_recorder``) that records the test accuracy of every epoch."""
    name = protocol_name(cfg)
    if name == "clean":
        return name
    fraction = float(getattr(datamodule, "val_fraction", 0.0) or 0.0)
    if fraction != 0.0:
        raise ConfigError(f"protocol=paper trains on the full training split, but data.val_fraction={fraction}; "
                          "drop the data.val_fraction override, or use protocol=clean for a validation split")
    datamodule.val_dataloader = datamodule.test_dataloader  # type: ignore[method-assign]
    module.validation_stage = "test"
    return name


def protocol_results(name: str, recorder: EpochTestRecorder | None) -> dict[str, Any]:
    """The ``protocol`` entry of ``results.json``."""
    out: dict[str, Any] = {"name": name, "selection": SELECTION[name]}
    if recorder is not None:
        out.update(recorder.summary())
    return out
