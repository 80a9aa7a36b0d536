"""The run's whole resolved config as hyper-parameters in every logger, and its final metrics beside them.

Lightning logs only the LightningModule's own arguments (method, model) by itself; runs could then not
be filtered by data, trainer, T or seed. :class:`RunConfigLogger` replaces that with the flattened
resolved config (``method.optimizer.lr``, ``data.batch_size``, ``trainer.max_epochs``, ``T``, ``seed``:
the keys of Hydra's command line), given to each logger's ``log_hyperparams`` when fitting starts:

- CSV: ``csv/hparams.yaml``;
- TensorBoard: the HParams view, written once at the end with the final metrics (``hp/best_val_acc1``,
  ``hp/val_acc1``, ``hp/test_acc1``, ...) so that every run is one row with its results;
- Weights & Biases: the run config; the final metrics also go to the run summary.

Loggers are rank-zero only in Lightning, so no rank waits on another here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

# run plumbing, not hyper-parameters: where files go and which callbacks/loggers are attached
_SKIP = ("paths", "logger", "callbacks", "hydra")


def flatten_config(cfg: DictConfig | Mapping[str, Any], skip: tuple[str, ...] = _SKIP) -> dict[str, Any]:
    """``{"method.optimizer.lr": 0.005, "T": 4, ...}``: the resolved config with dotted keys; lists
    become strings (loggers take scalars); ``skip`` leaves out top-level groups that are not hyper-parameters."""
    if isinstance(cfg, DictConfig):  # resolve only what is kept (paths.output_dir may need Hydra's runtime)
        tree = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in cfg if k not in skip}
    else:
        tree = dict(cfg)
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, list | tuple):
            flat[prefix] = str(list(node))
        elif node is None or isinstance(node, bool | int | float | str):
            flat[prefix] = node
        else:
            flat[prefix] = str(node)

    walk({k: v for k, v in tree.items() if k not in skip}, "")
    return flat


def _scalar(v: Any) -> float | None:
    if isinstance(v, torch.Tensor):
        return float(v.item()) if v.numel() == 1 else None
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


class RunConfigLogger(L.Callback):
    """Log ``flatten_config(cfg)`` to every logger at fit start; the final metrics at the run's end
    (after testing when ``test=true``, else after fitting).

    ``cfg`` defaults to the run config the module was built from (``pl_module.run_config``, set by
    ``spikeforge.run.build_module``), so the callback is declared in ``conf/run_callbacks/default.yaml``
    without arguments. The module and the datamodule send nothing to the loggers themselves
    (``save_hyperparameters(logger=False)``): the full config replaces their subsets."""

    def __init__(self, cfg: DictConfig | Mapping[str, Any] | None = None, test: bool | None = None) -> None:
        self.params = flatten_config(cfg) if cfg is not None else None
        self.tests = bool((cfg or {}).get("test", True)) if test is None else bool(test)
        self.final: dict[str, float] = {}
        self._logged = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.params is None:
            run_config = getattr(pl_module, "run_config", None)
            self.params = flatten_config(OmegaConf.create(run_config)) if run_config is not None else {}
        if stage == "fit" and not self._logged:
            for logger in trainer.loggers:
                logger.log_hyperparams(self.params)
            self._logged = True

    def _collect(self, trainer: L.Trainer, prefix: str) -> None:
        for k, v in trainer.callback_metrics.items():
            value = _scalar(v)
            if k.startswith(prefix) and value is not None:
                self.final["hp/" + k.replace("/", "_")] = value

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._collect(trainer, "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collect(trainer, "test/")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != ("test" if self.tests else "fit") or trainer.fast_dev_run:
            return
        ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        best = _scalar(ckpt.best_model_score) if ckpt is not None and ckpt.best_model_score is not None else None
        if best is not None:
            self.final["hp/best_val_acc1"] = best
        if not self.final:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(self.params, metrics=self.final)  # the HParams view: config + results
            elif isinstance(logger, WandbLogger):
                logger.experiment.summary.update(self.final)
        for logger in trainer.loggers:
            logger.save()
