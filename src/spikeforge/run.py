"""Compose → instantiate → fit/test → ``results.json``: the one place where a run happens.

The application layer (docs/architecture.md): :func:`train` and :func:`evaluate` return their results and
raise a :class:`~spikeforge.errors.SpikeforgeError` for a user mistake, never exit; the entry points
(:mod:`spikeforge.cli`, ``src/train.py``, ``src/eval.py``) turn an error into one line and an exit code.
Tests call these functions directly with a composed config.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.layer_sync import LayerSync
from omegaconf import DictConfig, OmegaConf, open_dict

from spikeforge import distributed, rundir
from spikeforge.callbacks.cost import CostMonitor
from spikeforge.callbacks.reliability import NonFiniteLossGuard, last_checkpoint_path
from spikeforge.callbacks.resume import make_resumable
from spikeforge.config_schema import validate
from spikeforge.console import quiet_console
from spikeforge.entry_errors import check_data_overrides
from spikeforge.errors import CheckpointError, ConfigError, SpikeforgeError
from spikeforge.protocol import EpochTestRecorder, apply_protocol, protocol_results
from spikeforge.summary_format import eval_line, finished_line, summary_rows
from spikeforge.utils.io import atomic_write_json
from spikeforge.utils.opcount import batch_inference_cost

log = logging.getLogger("spikeforge")


# ---- building blocks of a run ------------------------------------------------------------------
def _instantiate(node: Any, **kw: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a user-facing error through unwrapped (one sentence)."""
    try:
        return hydra.utils.instantiate(node, **kw)
    except InstantiationException as e:
        if isinstance(e.__cause__, SpikeforgeError):
            raise e.__cause__ from None
        raise


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return _instantiate(cfg.data, _convert_="all")


def build_module(cfg: DictConfig) -> L.LightningModule:
    """The method's LightningModule, given the model and the data's classes/channels."""
    module = _instantiate(
        cfg.method,
        model=OmegaConf.to_container(cfg.model, resolve=True),
        num_classes=cfg.data.num_classes,
        in_channels=cfg.data.channels,
        memory=OmegaConf.to_container(cfg.memory, resolve=True) if cfg.get("memory") else None,
        _recursive_=False,
        _convert_="all",
    )
    # unresolved, so that eval on another machine re-resolves data paths against its own `paths`
    module.run_config = OmegaConf.to_container(cfg, resolve=False)
    return module


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    if not group:
        return []
    return [_instantiate(c) for c in group.values() if c is not None and "_target_" in c]


# run_callbacks (conf/run_callbacks/default.yaml) that go before every other callback
FIRST_RUN_CALLBACKS = ("epoch_metrics_sync",)


def build_run_callbacks(cfg: DictConfig) -> dict[str, L.Callback]:
    """spikeforge's own callbacks of a training run, by name, as ``run_callbacks`` declares them."""
    node = cfg.get("run_callbacks") or {}
    return {str(name): _instantiate(c) for name, c in node.items() if c is not None and "_target_" in c}


def trainer_plugins(cfg: DictConfig) -> list[Any]:
    """``trainer.plugins`` (a name → plugin mapping in the config); ``layer_sync`` only with
    ``trainer.sync_batchnorm=true``."""
    node = cfg.trainer.get("plugins") or {}
    sync = bool(cfg.trainer.get("sync_batchnorm", False))
    return [_instantiate(c) for name, c in node.items()
            if c is not None and "_target_" in c and (name != "layer_sync" or sync)]


def instantiate_trainer(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """``Trainer(**cfg.trainer, plugins=trainer_plugins(cfg), **kwargs)``; a bad setting is one sentence."""
    plugins = trainer_plugins(cfg)
    # Lightning's SLURM environment without its own requeue when spikeforge handles the signals
    plugins += distributed.cluster_plugins(bool(OmegaConf.select(cfg, "reliability.handle_signals", default=True)))
    full = copy.deepcopy(cfg)  # the trainer node without `plugins`, its interpolations intact
    with open_dict(full.trainer):
        full.trainer.pop("plugins", None)
    trainer_cfg = full.trainer
    if any(isinstance(p, LayerSync) for p in plugins):
        kwargs["sync_batchnorm"] = False  # the plugin replaces Lightning's own conversion
    try:
        return hydra.utils.instantiate(trainer_cfg, plugins=plugins, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise ConfigError(f"invalid trainer settings ({first}); see conf/trainer/*.yaml for valid values") from None


def build_trainer(cfg: DictConfig, extra_callbacks: list[L.Callback] = (),
                  run_callbacks: Mapping[str, L.Callback] | None = None) -> L.Trainer:
    """Trainer with the configured callbacks, loggers and plugins: ``run_callbacks.epoch_metrics_sync``
    first (it fixes where the epoch metrics are reduced on every rank), then ``callbacks.*``, the rest of
    ``run_callbacks.*`` (built here unless given) and ``extra_callbacks``."""
    run_cbs = dict(build_run_callbacks(cfg) if run_callbacks is None else run_callbacks)
    first = [run_cbs.pop(name) for name in FIRST_RUN_CALLBACKS if name in run_cbs]
    callbacks = [*first, *_instantiate_all(cfg.get("callbacks")), *run_cbs.values(), *extra_callbacks]
    loggers = _instantiate_all(cfg.get("logger"))
    return instantiate_trainer(cfg, callbacks=callbacks, logger=loggers or False)


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from, read once: its path and its parameters."""

    path: str
    state_dict: Mapping[str, Any]


def resume_checkpoint(cfg: DictConfig, run_dir: str | Path) -> str | None:
    """The path of :func:`resume_point` (None for a fresh start)."""
    point = resume_point(cfg, run_dir)
    return point.path if point is not None else None


def resume_point(cfg: DictConfig, run_dir: str | Path) -> ResumePoint | None:
    """The checkpoint this run continues from, or None for a fresh start.

    ``ckpt_path=last``: ``<run dir>/checkpoints/last.ckpt`` (must exist); ``ckpt_path=<file>``: that
    file; ``resume=auto``: ``last.ckpt`` of the run directory if there is one (requeued jobs).
    The checkpoint must be readable and written for the same method, model and data."""
    ckpt, last = cfg.get("ckpt_path"), last_checkpoint_path(run_dir)
    if ckpt == "last":
        if not last.is_file():
            raise CheckpointError(f"ckpt_path=last but {last} does not exist; point run_dir=<the run's directory> "
                                  "at the run to continue")
        path: Path | None = last
    elif ckpt:
        path = Path(str(ckpt))
    elif cfg.get("resume") == "auto":
        path = last if last.is_file() else None
    else:
        return None
    if path is None:
        return None
    path = path.resolve()  # decided before the task starts (hydra_callbacks) and used inside it: one absolute path
    saved = load_checkpoint(path, mmap=True)
    old = saved["spikeforge_config"]
    for group in ("method", "model", "data"):
        was, now = (old.get(group) or {}).get("name"), cfg[group].get("name")
        if was != now:
            raise CheckpointError(f"checkpoint {path} was written for {group}={was}, not {group}={now}; "
                                  f"resume with {group}={was} or start a new run without ckpt_path/resume")
    if "loops" not in saved or "optimizer_states" not in saved:
        raise CheckpointError(f"{path} holds weights only, not a training state; resume from a checkpoint "
                              "written during training (checkpoints/last.ckpt)")
    return ResumePoint(str(path), saved["state_dict"])


def finished_run_notice(cfg: DictConfig, run_dir: str | Path) -> str | None:
    """The one line to print when resuming a run that already finished (its ``results.json`` exists),
    e.g. a requeued job: there is nothing left to do and no file is touched. None otherwise."""
    if not rundir.is_resuming(cfg, run_dir) or not (Path(run_dir) / "results.json").is_file():
        return None
    return (f"{run_dir} already finished (results.json); nothing to do. To train it longer, start a new run "
            f"from its weights: ckpt_path={last_checkpoint_path(run_dir)} trainer.max_epochs=<more>")


def check_state_matches(module: L.LightningModule, ckpt_path: str,
                        state: Mapping[str, Any] | None = None) -> None:
    """Parameter names and shapes of the checkpoint (``state``: its ``state_dict``, read from
    ``ckpt_path`` if not given) equal the module's (one-sentence error if not)."""
    if state is None:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)["state_dict"]
    mine = module.state_dict()
    for key, value in mine.items():
        if key not in state:
            raise CheckpointError(f"checkpoint {ckpt_path} does not match this model (no {key!r}); resume with "
                                  "the run's own config (T, model, method settings)")
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"checkpoint {ckpt_path} does not match this model ({key} has shape "
                                  f"{tuple(state[key].shape)}, the model {tuple(value.shape)}); resume with the "
                                  "run's own config")
    extra = sorted(set(state) - set(mine))
    if extra:
        raise CheckpointError(f"checkpoint {ckpt_path} does not match this model (unexpected {extra[0]!r}); "
                              "resume with the run's own config")


def git_commit(root: str | Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
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


# ---- train -------------------------------------------------------------------------------------
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split, select on validation, test the best checkpoint; write results.json.

    Every rank of a DDP job calls this with the same config (see :mod:`spikeforge.distributed`).
    A run continues from a checkpoint with ``ckpt_path=`` / ``resume=auto`` (:func:`resume_checkpoint`);
    a signal (SIGTERM/SIGUSR1/SIGUSR2) ends it with a checkpoint and :class:`TrainingInterrupted`."""
    quiet_console()
    saved_env = distributed.snapshot_launch_env()
    saved_threads = torch.get_num_threads()
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(saved_threads)  # a pinned count is this run's, not the next job's
        distributed.teardown_process_group()
        distributed.restore_launch_env(saved_env)


def _train(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    # the Hydra run guard (spikeforge.hydra_callbacks) has validated this config and chosen its checkpoint
    # before Hydra wrote anything; otherwise (a direct call, a sweep job, a DDP rank) that is done here
    checked = rundir.take_checked(cfg.paths.output_dir)
    point: ResumePoint | None = None
    if checked is None:
        validate(cfg)
        point = resume_point(cfg, cfg.paths.output_dir)
        ckpt_path = point.path if point is not None else None
        notice = finished_run_notice(cfg, cfg.paths.output_dir)
        if notice is not None:  # e.g. a requeued sweep job: nothing to do
            log.info(notice)
            return json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    else:
        ckpt_path = checked.ckpt_path
    run_callbacks = build_run_callbacks(cfg)
    cost = next((c for c in run_callbacks.values() if isinstance(c, CostMonitor)), None)
    if cost is not None:
        cost.start_run()  # this run's own memory peak, also for a job after others in one process
    if cfg.get("threads"):  # results are repeatable for a fixed seed at a fixed thread count
        distributed.pin_threads(int(cfg.threads))  # ranks Lightning starts too
    out_dir = rundir.output_dir(cfg)
    if checked is None and not distributed.is_spawned_child() and distributed.global_rank() == 0:
        # Hydra writes .hydra/ into a sweep job's directory before the job starts: only training files count
        rundir.check_not_reused(cfg, out_dir, files=rundir.TRAINING_FILES)
    if ckpt_path is not None:  # methods see the checkpoint they resume from (e.g. to skip initialisations)
        with open_dict(cfg):
            cfg.ckpt_path = ckpt_path
    log.info("run directory %s: method=%s model=%s data=%s T=%s seed=%s%s", out_dir, cfg.method.get("name"),
             cfg.model.get("name"), cfg.data.get("name"), cfg.get("T"), cfg.seed,
             f"; resuming from {ckpt_path}" if ckpt_path else "")
    L.seed_everything(cfg.seed, workers=True)
    _prepare_wandb(cfg)

    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    protocol = apply_protocol(cfg, datamodule, module)  # conf/protocol: clean or paper
    datamodule = make_resumable(datamodule, int(cfg.seed))
    if point is not None:  # (the run guard checked it already otherwise)
        check_state_matches(module, point.path, point.state_dict)
        point = None  # releases the memory-mapped checkpoint; Lightning reads it again to restore the state
    trainer = build_trainer(cfg, run_callbacks=run_callbacks)
    test_recorder = next((c for c in trainer.callbacks if isinstance(c, EpochTestRecorder)), None)
    n_params = sum(p.numel() for p in module.parameters())

    if not distributed.is_spawned_child():
        distributed.export_job_config(cfg)  # DDP ranks started by Lightning train exactly this config
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
    val_metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if not val_metrics and ckpt_path is not None and not trainer.fast_dev_run:
        # resumed from a checkpoint taken after the last epoch: nothing left to fit, so validate the
        # final weights to report the same metrics as the uninterrupted run (not logged: the
        # uninterrupted run logged this validation already, before its final checkpoint)
        loggers, trainer.loggers = trainer.loggers, []
        trainer.validate(module, datamodule=datamodule, verbose=False, weights_only=False)
        trainer.loggers = loggers
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
            energy = cfg.get("energy")
            energy = OmegaConf.to_container(energy, resolve=True) if isinstance(energy, DictConfig) else energy
            cost_of_inference = batch_inference_cost(module, datamodule.val_dataloader(), energy=energy)
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
        "max_epochs": 1 if trainer.fast_dev_run else trainer.max_epochs,
        "global_steps": trainer.global_step,
        "val": val_metrics,
        "best_val_acc1": _scalar(ckpt_cb.best_model_score) if protocol == "clean" and ckpt_cb
        and ckpt_cb.best_model_score is not None else None,
        "best_checkpoint": best or None,
        "test": test_metrics,
        "test_checkpoint": "best" if test_ckpt else "last-weights",
        "protocol": protocol_results(protocol, test_recorder),
        "firing_rate": getattr(module, "last_firing_rates", {}),
        "mean_firing_rate": getattr(module, "last_firing_rates", {}).get("mean"),
        "parameters": n_params,
        **(cost.summary(module.device) if cost is not None else {}),
        **cost_of_inference,
        **module.extra_results(),
        "wall_time_s": time.perf_counter() - start,
        "git_commit": git_commit(cfg.paths.root_dir),
        "versions": {"torch": torch.__version__, "lightning": L.__version__, "spikingjelly": _version("spikingjelly"),
                     "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "output_dir": str(out_dir),
        "resumed_from": ckpt_path,
        **distributed.cluster_info(trainer),  # world_size, num_nodes, cluster_environment
        "precision": str(cfg.trainer.get("precision")),
        "nonfinite_batches_skipped": next((c.skipped for c in trainer.callbacks
                                           if isinstance(c, NonFiniteLossGuard)), 0),
    }
    if trainer.is_global_zero:
        atomic_write_json(out_dir / "results.json", results)
        print_summary(results)
        log.info("%s", finished_line(results, out_dir / "results.json"))
    _finish_wandb()
    return results


# ---- eval --------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}); "
                              "it is truncated or not a spikeforge/Lightning checkpoint") from None
    if not isinstance(ckpt, dict) or "spikeforge_config" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a spikeforge checkpoint (no run config inside); "
                              "use a checkpoint written by src/train.py")
    return ckpt


def restore_run(ckpt_path: str | Path, paths: DictConfig | None = None,
                data_overrides: Mapping[str, Any] | None = None) -> tuple[DictConfig, L.LightningModule]:
    """A finished or interrupted run rebuilt from its checkpoint: the run config saved inside it (with
    this machine's ``paths`` and ``data_overrides`` merged into ``data``) and the module with its weights."""
    ckpt = load_checkpoint(ckpt_path)
    run_cfg = OmegaConf.create(ckpt["spikeforge_config"])
    with open_dict(run_cfg):
        if paths is not None:
            run_cfg.paths = paths  # this machine's folders, not the training machine's
        if data_overrides:
            check_data_overrides(run_cfg.data, data_overrides)  # keys and types, one line each
            run_cfg.data = OmegaConf.merge(run_cfg.data, data_overrides)
    module = build_module(run_cfg)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"checkpoint {ckpt_path} does not match its model config ({first})") from None
    return run_cfg, module


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Re-create data and model from the checkpoint's own config and report test metrics."""
    quiet_console()
    run_cfg, module = restore_run(cfg.ckpt_path, cfg.paths, cfg.get("data_overrides"))
    out_dir = rundir.output_dir(cfg)
    datamodule = build_datamodule(run_cfg)
    trainer = instantiate_trainer(cfg, logger=False, callbacks=[])
    trainer.test(module, datamodule=datamodule)
    metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    results = {"ckpt_path": str(cfg.ckpt_path), "test": metrics, "method": run_cfg.method.get("name"),
               "model": run_cfg.model.get("name"), "data": run_cfg.data.get("name"), "T": run_cfg.get("T")}
    if trainer.is_global_zero:
        atomic_write_json(out_dir / "eval_results.json", results)
        print_summary(results)
        log.info("%s", eval_line(results, out_dir / "eval_results.json"))
    return results


# ---- presentation & entry ----------------------------------------------------------------------
def print_summary(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="spikeforge run summary", show_header=True)
    table.add_column("key")
    table.add_column("value", justify="right")

    for label, value in summary_rows(results):  # units, and why a value does not apply
        table.add_row(label, value)
    Console(stderr=False).print(table)
