"""Compose → instantiate → fit/test → ``results.json``: the one place where a run happens.

``src/train.py`` and ``src/eval.py`` are thin Hydra entry points over :func:`train` and
:func:`evaluate`; tests call these functions directly with a composed config.
"""

from __future__ import annotations

import importlib.metadata
import json
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
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from spikeforge import distributed
from spikeforge.callbacks.collectives import EpochMetricsSync
from spikeforge.callbacks.cost import CostMonitor
from spikeforge.callbacks.hparams import RunConfigLogger
from spikeforge.callbacks.reliability import (
    LastCheckpoint,
    NonFiniteLossGuard,
    PreemptionHandler,
    TrainingInterrupted,
    last_checkpoint_path,
)
from spikeforge.callbacks.resume import EpochAccumulatorState, RNGStateCallback, make_resumable
from spikeforge.config_schema import validate
from spikeforge.console import quiet_console
from spikeforge.errors import CheckpointError, ConfigError, SpikeforgeError
from spikeforge.plugins import AtomicCheckpointIO, TimeSyncBatchNorm
from spikeforge.protocol import apply_protocol, protocol_results
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
    """Trainer with the configured callbacks/loggers, atomic checkpoint writes and (with
    ``trainer.sync_batchnorm``) a SyncBatchNorm that understands time-major norms."""
    # EpochMetricsSync first: it fixes where the epoch metrics are reduced on every rank
    callbacks = [EpochMetricsSync(), *_instantiate_all(cfg.get("callbacks")), *extra_callbacks]
    loggers = _instantiate_all(cfg.get("logger"))
    plugins: list[Any] = [AtomicCheckpointIO()]
    extra: dict[str, Any] = {}
    if cfg.trainer.get("sync_batchnorm", False):
        plugins.append(TimeSyncBatchNorm())  # replaces Lightning's own conversion (see plugins/sync_bn.py)
        extra["sync_batchnorm"] = False
    try:
        return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins,
                                       **extra)
    except InstantiationException as e:
        cause = e.__cause__ or e
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise ConfigError(f"invalid trainer settings ({first}); see conf/trainer/*.yaml for valid values") from None


def reliability_callbacks(cfg: DictConfig, out_dir: Path) -> list[L.Callback]:
    """Exact-resume, mid-epoch checkpoint, preemption and non-finite-loss callbacks (``reliability.*``)."""
    rel = cfg.get("reliability") or {}
    ckpt_dir = out_dir / "checkpoints"
    cbs: list[L.Callback] = [RNGStateCallback(), EpochAccumulatorState()]
    cbs.append(LastCheckpoint(ckpt_dir, int(rel.get("checkpoint_every_n_steps", 0) or 0)))
    if rel.get("handle_signals", True):
        cbs.append(PreemptionHandler(ckpt_dir, requeue=bool(rel.get("requeue", True))))
    cbs.append(NonFiniteLossGuard(str(rel.get("nonfinite_loss", "stop")), last_checkpoint_path(out_dir)))
    return cbs


def resume_checkpoint(cfg: DictConfig, run_dir: str | Path) -> str | None:
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
    return str(path)


def finished_run_notice(cfg: DictConfig, run_dir: str | Path) -> str | None:
    """The one line to print when resuming a run that already finished (its ``results.json`` exists),
    e.g. a requeued job: there is nothing left to do and no file is touched. None otherwise."""
    ckpt = cfg.get("ckpt_path")
    resuming = cfg.get("resume") == "auto" or ckpt == "last" or (
        ckpt is not None and Path(str(ckpt)).resolve().is_relative_to(Path(run_dir).resolve()))
    if not resuming or not (Path(run_dir) / "results.json").is_file():
        return None
    return (f"{run_dir} already finished (results.json); nothing to do. To train it longer, start a new run "
            f"from its weights: ckpt_path={last_checkpoint_path(run_dir)} trainer.max_epochs=<more>")


def check_state_matches(module: L.LightningModule, ckpt_path: str) -> None:
    """Parameter names and shapes of the checkpoint equal the module's (one-sentence error if not)."""
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


def _output_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test_{os.getpid()}"  # one per rank: ranks share the directory
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to the output directory {out} ({e.strerror}); "
                          "set paths.log_dir or hydra.run.dir to a writable folder") from None
    return out


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
    cost = CostMonitor()
    cost.start_run()  # this run's own memory peak, also for a job after others in one process
    validate(cfg)
    if cfg.get("threads"):  # results are repeatable for a fixed seed at a fixed thread count
        torch.set_num_threads(int(cfg.threads))
    ckpt_path = resume_checkpoint(cfg, cfg.paths.output_dir)
    notice = finished_run_notice(cfg, cfg.paths.output_dir)
    if notice is not None:  # e.g. a requeued sweep job: nothing to do
        log.info(notice)
        return json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    out_dir = _output_dir(cfg)
    if ckpt_path is None and not distributed.is_spawned_child() and distributed.global_rank() == 0 and (
        (out_dir / "results.json").exists() or last_checkpoint_path(out_dir).exists()
    ):
        raise ConfigError(f"{out_dir} already holds a run; continue it with resume=auto run_dir={out_dir}, "
                          "or leave run_dir unset to start a new run directory")
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
    protocol, test_recorder = apply_protocol(cfg, datamodule, module)  # conf/protocol: clean or paper
    datamodule = make_resumable(datamodule, int(cfg.seed))
    if ckpt_path is not None:
        check_state_matches(module, ckpt_path)
    extra = [test_recorder] if test_recorder is not None else []
    trainer = build_trainer(cfg, [cost, *reliability_callbacks(cfg, out_dir), RunConfigLogger(cfg), *extra])
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
        **cost.summary(module.device),
        **cost_of_inference,
        **module.extra_results(),
        "wall_time_s": time.perf_counter() - start,
        "git_commit": git_commit(cfg.paths.root_dir),
        "versions": {"torch": torch.__version__, "lightning": L.__version__, "spikingjelly": _version("spikingjelly"),
                     "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "output_dir": str(out_dir),
        "resumed_from": ckpt_path,
        "world_size": trainer.world_size,
        "precision": str(cfg.trainer.get("precision")),
        "nonfinite_batches_skipped": next((c.skipped for c in trainer.callbacks
                                           if isinstance(c, NonFiniteLossGuard)), 0),
    }
    if trainer.is_global_zero:
        atomic_write_json(out_dir / "results.json", results)
        log.info("finished: best val/acc1 %s, test %s; %s", results["best_val_acc1"], test_metrics,
                 out_dir / "results.json")
        print_summary(results)
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


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Re-create data and model from the checkpoint's own config and report test metrics."""
    quiet_console()
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
                "mean_firing_rate", "time_per_step_s", "peak_host_memory_bytes", "saved_for_backward_peak_bytes",
                "synops_per_sample", "wall_time_s"):
        if results.get(key) is not None:
            table.add_row(key, fmt(results[key]))
    for k, v in results.get("test", {}).items():
        table.add_row(k, fmt(v))
    Console(stderr=False).print(table)


def run_cli(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``fn(cfg)``; a :class:`SpikeforgeError` becomes one line on stderr (and in ``train.log``) and a
    non-zero exit (the full trace with ``HYDRA_FULL_ERROR=1``). In a ``-m`` sweep a failed job prints its
    line and hands the error to Hydra, so that the other jobs still run (see ``hydra_callbacks``)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from spikeforge.cli import record_in_run_log, summarize_hydra_error
    from spikeforge.hydra_callbacks import one_line

    run_dir = str(OmegaConf.select(cfg, "paths.output_dir", default="", throw_on_resolution_failure=False) or ".")
    logging.captureWarnings(True)  # Python warnings (Lightning's among them) reach train.log too
    try:
        return fn(cfg)
    except TrainingInterrupted as e:  # a clean stop with a checkpoint, not an error
        record_in_run_log(run_dir, str(e), level=logging.WARNING)
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sweep = _in_sweep()
        if isinstance(e, MisconfigurationException):  # Lightning's verdict on trainer settings
            first = (str(e).strip().splitlines() or ["invalid trainer settings"])[0]
            line, code = f"error: {first} (see conf/trainer/*.yaml)", 2
        else:
            user_error = user_error_in(e) or distributed.collective_timeout_in(e)
            if user_error is None and not sweep:  # not a user error: Hydra's reporter (spikeforge.cli)
                record_in_run_log(run_dir, f"error: {summarize_hydra_error(e)}", e)  # prints the line
                raise
            line = f"error: {user_error if user_error is not None else one_line(e)}"
            code = user_error.exit_code if user_error is not None else 1
        record_in_run_log(run_dir, line, e)
        print(line, file=sys.stderr)
        if sweep and not distributed.uses_subprocess_ddp(cfg):
            raise  # Hydra records the failed job and runs the next one
        # A DDP job that failed leaves rank processes Lightning's launcher is still tearing down (it kills
        # every child of this process when one of them fails), so the next job could not start its own
        # ranks safely: under DDP a failing job ends the sweep with its one-line error and exit code.
        sys.exit(code)


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def user_error_in(e: BaseException | None) -> SpikeforgeError | None:
    """The :class:`SpikeforgeError` behind ``e`` (Hydra's instantiate wraps errors in its own)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, SpikeforgeError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
