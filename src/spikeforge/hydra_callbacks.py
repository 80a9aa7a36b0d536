"""Hydra callback (``conf/hydra/default.yaml``) that checks a single run before Hydra writes anything.

``on_run_start`` runs after composition and before Hydra creates the run directory, saves
``.hydra/*.yaml`` and opens the log file, so a mistake found here leaves every directory untouched:

- the config is validated (:func:`spikeforge.config_schema.validate`);
- a run directory that already holds a run is only reused when resuming it (``resume=auto`` or
  ``ckpt_path=last``/a checkpoint inside it); otherwise the run stops with one sentence, so a new run
  never overwrites another run's directory;
- resuming a run that already finished (``results.json``) prints one line and exits 0 before anything
  is written (a requeued job);
- when resuming, the checkpoint is checked to be readable, and Hydra's config files of this attempt go
  to ``.hydra/resume-<time>/`` instead of overwriting the original ``.hydra/*.yaml``.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from spikeforge import resolvers  # noqa: F401  (${sf.or:...} in hydra.run.dir)
from spikeforge.errors import SpikeforgeError


def holds_run(path: Path) -> bool:
    return path.is_dir() and any((path / p).exists() for p in (".hydra", "checkpoints", "results.json"))


def is_resuming(cfg: DictConfig, run_dir: Path) -> bool:
    ckpt = cfg.get("ckpt_path")
    if cfg.get("resume") == "auto" or ckpt == "last":
        return True
    if ckpt:
        try:
            return Path(str(ckpt)).resolve().is_relative_to(run_dir.resolve())
        except OSError:
            return False
    return False


def writable_or_raise(path: Path) -> None:
    """The run directory can be created and written (checked on its nearest existing parent)."""
    from spikeforge.errors import ConfigError

    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the run directory {path} ({probe} is not a writable folder); "
                          "set run_dir or paths.log_dir to a writable folder")


class RunGuard(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("task_name") != "train" or os.environ.get("LOCAL_RANK", "0") not in ("", "0"):
            return
        from spikeforge.distributed import global_rank

        if global_rank() > 0:  # srun/torchrun rank > 0: rank 0 checks and writes the run directory
            with read_write(config), open_dict(config):
                config.hydra.output_subdir = None
            return
        try:
            self._check(config)
        except SpikeforgeError as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)

    def _check(self, config: DictConfig) -> None:
        from spikeforge.config_schema import validate
        from spikeforge.distributed import check_external_launch, check_launcher
        from spikeforge.errors import ConfigError
        from spikeforge.run import build_module, check_state_matches, finished_run_notice, resume_checkpoint

        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        with read_write(task), open_dict(task):
            task.paths.output_dir = str(config.hydra.run.dir)  # ${hydra:...} is not available yet
        validate(task)
        check_launcher(task, config.hydra)
        overrides = list(OmegaConf.select(config, "hydra.overrides.hydra", default=[]) or [])
        from_clock = config.get("run_dir") is None and not any(o.startswith("hydra.run.dir=") for o in overrides)
        check_external_launch(task, from_clock)

        run_dir = Path(str(config.hydra.run.dir))
        notice = finished_run_notice(task, run_dir)
        if notice is not None:  # a requeued job of a finished run: say so, touch nothing, exit 0
            print(notice)
            sys.exit(0)
        writable_or_raise(run_dir)
        resuming = is_resuming(task, run_dir)
        if holds_run(run_dir) and not resuming:
            raise ConfigError(f"{run_dir} already holds a run; continue it with resume=auto run_dir={run_dir}, "
                              "or leave run_dir/hydra.run.dir unset to start a new run directory")
        if resuming:
            ckpt = resume_checkpoint(task, run_dir)  # raises if missing/unreadable/for another config
            if ckpt is not None:
                check_state_matches(build_module(task), ckpt)
            if holds_run(run_dir):
                stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
                with read_write(config), open_dict(config):
                    config.hydra.output_subdir = f".hydra/resume-{stamp}"
