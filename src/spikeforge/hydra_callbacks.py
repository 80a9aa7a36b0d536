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

In a ``-m`` sweep a failing job does not stop the others (:func:`spikeforge.run.run_cli` lets Hydra
record the failure instead of exiting); ``on_job_end`` writes one line per failed job to
``<sweep dir>/failures/<job number>.txt`` and :func:`spikeforge.cli.one_line_errors` lists them when
the sweep is over, with a non-zero exit code.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from spikeforge import resolvers  # noqa: F401  (${sf.or:...} in hydra.run.dir)
from spikeforge.errors import SpikeforgeError

# the directory of the sweep this process launched (set in on_multirun_start), for the failure list
_SWEEP_DIR: list[Path] = []


def failures_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / "failures"


def one_line(e: BaseException) -> str:
    """A failed job's error in one line."""
    if isinstance(e, SpikeforgeError):
        return str(e)
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def sweep_failures() -> list[str]:
    """One line per failed job of the sweep this process launched (job order), or []."""
    if not _SWEEP_DIR or not failures_dir(_SWEEP_DIR[-1]).is_dir():
        return []
    files = sorted(failures_dir(_SWEEP_DIR[-1]).glob("*.txt"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
    return [f.read_text().strip() for f in files]


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
    from spikeforge.entry_errors import probe_creatable

    why = probe_creatable(path)  # e.g. under /proc: an existing, "writable" parent that refuses folders
    if why is not None:
        raise ConfigError(f"cannot create the run directory {path} ({why}); "
                          "set run_dir or paths.log_dir to a writable folder")


class RunGuard(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        _SWEEP_DIR.append(sweep_dir)
        stale = failures_dir(sweep_dir)
        if stale.is_dir():  # the same sweep directory run again: only this sweep's failures count
            for f in stale.glob("*.txt"):
                f.unlink()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
            return
        num = config.hydra.job.num
        overrides = " ".join(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        error = job_return._return_value
        line = f"job {num} ({overrides}): {one_line(error) if isinstance(error, BaseException) else error}"
        out = failures_dir(Path(str(config.hydra.sweep.dir)))
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{num}.txt").write_text(line + "\n")

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get("LOCAL_RANK", "0") not in ("", "0"):
            return
        if config.get("task_name") != "train":
            self._exit_on_error(self._check_eval, config)
            return
        from spikeforge.distributed import global_rank

        if global_rank() > 0:  # srun/torchrun rank > 0: rank 0 checks and writes the run directory
            with read_write(config), open_dict(config):
                config.hydra.output_subdir = None
            return
        self._exit_on_error(self._check, config)

    @staticmethod
    def _exit_on_error(check: Any, config: DictConfig) -> None:
        try:
            check(config)
        except SpikeforgeError as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)

    @staticmethod
    def _check_eval(config: DictConfig) -> None:
        from spikeforge.config_schema import check_accelerator

        check_accelerator(str(OmegaConf.select(config, "trainer.accelerator", default="cpu")))
        writable_or_raise(Path(str(config.hydra.run.dir)))

    def _check(self, config: DictConfig) -> None:
        from spikeforge.config_schema import validate
        from spikeforge.distributed import check_external_launch, check_launcher
        from spikeforge.errors import ConfigError

        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        with read_write(task), open_dict(task):
            task.paths.output_dir = str(config.hydra.run.dir)  # ${hydra:...} is not available yet
        validate(task)
        check_launcher(task, config.hydra)
        overrides = list(OmegaConf.select(config, "hydra.overrides.hydra", default=[]) or [])
        from_clock = config.get("run_dir") is None and not any(o.startswith("hydra.run.dir=") for o in overrides)
        check_external_launch(task, from_clock)

        run_dir = Path(str(config.hydra.run.dir))
        writable_or_raise(run_dir)
        resuming = is_resuming(task, run_dir)
        if holds_run(run_dir) and not resuming:
            raise ConfigError(f"{run_dir} already holds a run; continue it with resume=auto run_dir={run_dir}, "
                              "or leave run_dir/hydra.run.dir unset to start a new run directory")
        if resuming:  # reading the checkpoint needs torch: only here
            from spikeforge.run import build_module, check_state_matches, finished_run_notice, resume_checkpoint

            ckpt = resume_checkpoint(task, run_dir)  # raises if missing/unreadable/for another config
            if ckpt is not None:
                check_state_matches(build_module(task), ckpt)
            notice = finished_run_notice(task, run_dir)
            if notice is not None:  # a requeued job of a finished run: say so, touch nothing, exit 0
                print(notice)
                sys.exit(0)
            if holds_run(run_dir):
                stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
                with read_write(config), open_dict(config):
                    config.hydra.output_subdir = f".hydra/resume-{stamp}"
