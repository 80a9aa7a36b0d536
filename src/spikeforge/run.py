"""Compose → instantiate → fit/test → ``results.json``: the one place where a run happens.

``src/train.py`` and ``src/eval.py`` are thin Hydra entry points over :func:`train` and
:func:`evaluate`; tests call these functions directly with a composed config.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from spikeforge.callbacks.cost import CostMonitor
from spikeforge.errors import CheckpointError, ConfigError, SpikeforgeError
from spikeforge.utils.io import atomic_write_json
from spikeforge.utils.opcount import batch_inference_cost

log = logging.getLogger("spikeforge")


# ---- building blocks of a run ------------------------------------------------------------------
def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return hydra.utils.instantiate(cfg.data, _convert_="all")


def build_module(cfg: DictConfig) -> L.LightningModule:
    """The method's LightningModule, given the model and the data's classes/channels."""
    module = hydra.utils.instantiate(
        cfg.method,
        model=OmegaConf.to_container(cfg.model, resolve=True),
        num_classes=cfg.data.num_classes,
        in_channels=cfg.data.channels,
        _recursive_=False,
        _convert_="all",
    )
    # unresolved, so that eval on another machine re-resolves data paths against its own `paths`
    module.run_config = OmegaConf.to_container(cfg, resolve=False)
    return module


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def build_trainer(cfg: DictConfig, extra_callbacks: list[L.Callback] = ()) -> L.Trainer:
    callbacks = _instantiate_all(cfg.get("callbacks")) + list(extra_callbacks)
    loggers = _instantiate_all(cfg.get("logger"))
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def git_commit(root: str | Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v


def _prepare_wandb(cfg: DictConfig) -> None:
    """wandb offline when no API key is available, so ``logger=wandb`` never blocks on a login."""
    if cfg.get("logger") and "wandb" in cfg.logger and not os.environ.get("WANDB_API_KEY"):
        netrc = Path.home() / ".netrc"
        if not (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
            os.environ.setdefault("WANDB_MODE", "offline")


def _finish_wandb() -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _output_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to the output directory {out} ({e.strerror}); "
                          "set paths.log_dir or hydra.run.dir to a writable folder") from None
    return out


# ---- train -------------------------------------------------------------------------------------
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split, select on validation, test the best checkpoint; write results.json."""
    start = time.perf_counter()
    out_dir = _output_dir(cfg)
    L.seed_everything(cfg.seed, workers=True)
    _prepare_wandb(cfg)

    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    cost = CostMonitor()
    trainer = build_trainer(cfg, [cost])
    n_params = sum(p.numel() for p in module.parameters())

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    val_metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    ckpt_cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    # a method may test its final weights instead (e.g. STDS: the fully sparse network)
    test_ckpt = "" if getattr(module, "test_checkpoint", "best") == "last" else best
    test_metrics: dict[str, Any] = {}
    if cfg.get("test", True):
        trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt or None, weights_only=False)
        test_metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}

    cost_of_inference: dict[str, Any] = {}
    if cfg.get("inference_cost", True) and trainer.is_global_zero:
        try:
            cost_of_inference = batch_inference_cost(module, datamodule.val_dataloader())
        except Exception as e:  # an op the counter does not know must not lose the run
            log.warning("inference cost not measured: %s", e)
            cost_of_inference = {"inference_cost_error": f"{type(e).__name__}: {e}"}

    results = {
        "task_name": cfg.task_name,
        "method": cfg.method.get("name"),
        "model": cfg.model.get("name"),
        "data": cfg.data.get("name"),
        "T": cfg.get("T"),
        "seed": cfg.seed,
        "expected": OmegaConf.to_container(cfg.expected, resolve=True) if cfg.get("expected") else None,
        "epochs": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "val": val_metrics,
        "best_val_acc1": _scalar(ckpt_cb.best_model_score) if ckpt_cb and ckpt_cb.best_model_score is not None
        else None,
        "best_checkpoint": best or None,
        "test": test_metrics,
        "test_checkpoint": "best" if test_ckpt else "last-weights",
        "firing_rate": getattr(module, "last_firing_rates", {}),
        "mean_firing_rate": getattr(module, "last_firing_rates", {}).get("mean"),
        "parameters": n_params,
        **cost.summary(module.device),
        **cost_of_inference,
        **module.extra_results(),
        "wall_time_s": time.perf_counter() - start,
        "git_commit": git_commit(cfg.paths.root_dir),
        "versions": {"torch": torch.__version__, "lightning": L.__version__, "python": platform.python_version()},
        "output_dir": str(out_dir),
    }
    if trainer.is_global_zero:
        atomic_write_json(out_dir / "results.json", results)
        print_summary(results)
    _finish_wandb()
    return results


# ---- eval --------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}); "
                              "it is truncated or not a spikeforge/Lightning checkpoint") from None
    if not isinstance(ckpt, dict) or "spikeforge_config" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a spikeforge checkpoint (no run config inside); "
                              "use a checkpoint written by src/train.py")
    return ckpt


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Re-create data and model from the checkpoint's own config and report test metrics."""
    ckpt = load_checkpoint(cfg.ckpt_path)
    run_cfg = OmegaConf.create(ckpt["spikeforge_config"])
    with open_dict(run_cfg):
        run_cfg.paths = cfg.paths  # this machine's folders, not the training machine's
        if cfg.get("data_overrides"):
            run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.data_overrides)
    out_dir = _output_dir(cfg)
    datamodule = build_datamodule(run_cfg)
    module = build_module(run_cfg)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"checkpoint {cfg.ckpt_path} does not match its model config ({first})") from None
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    trainer.test(module, datamodule=datamodule)
    metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    results = {"ckpt_path": str(cfg.ckpt_path), "test": metrics, "method": run_cfg.method.get("name"),
               "model": run_cfg.model.get("name"), "data": run_cfg.data.get("name"), "T": run_cfg.get("T")}
    if trainer.is_global_zero:
        atomic_write_json(out_dir / "eval_results.json", results)
        print_summary(results)
    return results


# ---- presentation & entry ----------------------------------------------------------------------
def print_summary(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="spikeforge run summary", show_header=True)
    table.add_column("key")
    table.add_column("value", justify="right")

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    for key in ("method", "model", "data", "T", "seed", "epochs", "parameters", "best_val_acc1",
                "mean_firing_rate", "time_per_step_s", "peak_host_memory_bytes", "wall_time_s"):
        if results.get(key) is not None:
            table.add_row(key, fmt(results[key]))
    for k, v in results.get("test", {}).items():
        table.add_row(k, fmt(v))
    Console(stderr=False).print(table)


def run_cli(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``fn(cfg)``; a :class:`SpikeforgeError` becomes one line on stderr and a non-zero exit
    (the full trace with ``HYDRA_FULL_ERROR=1``)."""
    try:
        return fn(cfg)
    except Exception as e:
        user_error = user_error_in(e)
        if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {user_error}", file=sys.stderr)
        sys.exit(user_error.exit_code)


def user_error_in(e: BaseException | None) -> SpikeforgeError | None:
    """The :class:`SpikeforgeError` behind ``e`` (Hydra's instantiate wraps errors in its own)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, SpikeforgeError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
