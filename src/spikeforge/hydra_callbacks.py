"""Hydra callback (``conf/hydra/default.yaml``) that checks a single run before Hydra writes anything.

``on_run_start`` runs after composition and before Hydra creates the run directory, saves
``.hydra/*.yaml`` and opens the log file, so a mistake found here leaves every directory untouched:

- the config is validated (:func:`spikeforge.config_schema.validate`), once: the task that follows takes
  this decision and the chosen checkpoint from :func:`spikeforge.rundir.take_checked`;
- a run directory that already holds a run is only reused when resuming it (``resume=auto`` or
  ``ckpt_path=last``/a checkpoint inside it); otherwise the run stops with one sentence, so a new run
  never overwrites another run's directory;
- resuming a run that already finished (``results.json``) prints one line and exits 0 before anything
  is written (a requeued job);
- when resuming, the checkpoint is read once and checked (readable, written for this method, model and
  data, parameter shapes equal to a meta-device build of the model), and Hydra's config files of this attempt go
  to ``.hydra/resume-<time>/`` instead of overwriting the original ``.hydra/*.yaml``.

In a ``-m`` sweep a failing job does not stop the others (:func:`spikeforge.cli.run_cli` lets Hydra
record the failure instead of exiting); ``on_job_end`` writes one line per failed job to
``<sweep dir>/failures/<job number>.txt`` and :func:`spikeforge.cli.run_hydra_app` lists them when
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

from spikeforge import resolvers, rundir  # noqa: F401  (resolvers: ${sf.or:...} in hydra.run.dir)
from spikeforge.errors import SpikeforgeError, full_errors

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
        try:
            error: Any = job_return.return_value  # re-raises the job's exception for a failed job
        except Exception as e:
            error = e
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
        from spikeforge.distributed import check_slurm_tasks, first_process

        self._exit_on_error(check_slurm_tasks, config)  # on every srun task, before anything is written
        if not first_process():  # srun/torchrun rank > 0, node > 0: rank 0 checks and writes the run directory
            with read_write(config), open_dict(config):
                config.hydra.output_subdir = None
            return
        self._exit_on_error(self._check, config)

    @staticmethod
    def _exit_on_error(check: Any, config: DictConfig) -> None:
        try:
            check(config)
        except SpikeforgeError as e:
            if full_errors():
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)

    @staticmethod
    def _check_eval(config: DictConfig) -> None:
        from spikeforge.config_schema import check_accelerator

        check_accelerator(str(OmegaConf.select(config, "trainer.accelerator", default="cpu")))
        rundir.writable_or_raise(Path(str(config.hydra.run.dir)))

    def _check(self, config: DictConfig) -> None:
        from spikeforge.config_schema import validate
        from spikeforge.distributed import check_external_launch, check_launcher

        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        with read_write(task), open_dict(task):
            task.paths.output_dir = str(config.hydra.run.dir)  # ${hydra:...} is not available yet
        validate(task)
        check_launcher(task, config.hydra)
        overrides = list(OmegaConf.select(config, "hydra.overrides.hydra", default=[]) or [])
        from_clock = config.get("run_dir") is None and not any(o.startswith("hydra.run.dir=") for o in overrides)
        check_external_launch(task, from_clock)

        run_dir = Path(str(config.hydra.run.dir))
        rundir.writable_or_raise(run_dir)
        rundir.check_not_reused(task, run_dir, unset_hint="run_dir/hydra.run.dir")
        ckpt: str | None = None
        if rundir.is_resuming(task, run_dir) or task.get("ckpt_path"):  # reading it needs torch: only here
            from spikeforge.run import build_module, check_state_matches, finished_run_notice, resume_point

            point = resume_point(task, run_dir)  # raises if missing/unreadable/for another config
            if point is not None:
                import torch

                with torch.device("meta"):  # names and shapes only: no memory, no initialisation
                    shell = build_module(task)
                check_state_matches(shell, point.path, point.state_dict)
                ckpt = point.path
            notice = finished_run_notice(task, run_dir)
            if notice is not None:  # a requeued job of a finished run: say so, touch nothing, exit 0
                print(notice)
                sys.exit(0)
            if rundir.holds_run(run_dir):
                stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
                with read_write(config), open_dict(config):
                    config.hydra.output_subdir = f".hydra/resume-{stamp}"
        rundir.record_checked(run_dir, ckpt)
