"""A run directory's state, decided in one place: writable, already holding a run, being resumed.

Used by the Hydra run guard (:mod:`spikeforge.hydra_callbacks`, before Hydra writes anything) and by the
tasks (:mod:`spikeforge.run`, :mod:`spikeforge.export`). Torch-free, so that a config mistake is
reported before torch loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from spikeforge.errors import ConfigError

# what a run leaves in its directory: Hydra's config files, checkpoints, results
RUN_FILES = (".hydra", "checkpoints", "results.json")
# the same without Hydra's files (which Hydra writes for the run itself before its task starts)
TRAINING_FILES = ("checkpoints", "results.json")


def holds_run(path: str | Path, files: tuple[str, ...] = RUN_FILES) -> bool:
    """``path`` already holds a run (one of ``files``)."""
    path = Path(path)
    return path.is_dir() and any((path / p).exists() for p in files)


def is_resuming(cfg: DictConfig, run_dir: str | Path) -> bool:
    """The config continues the run in ``run_dir``: ``resume=auto``, ``ckpt_path=last`` or a checkpoint
    inside ``run_dir``."""
    ckpt = cfg.get("ckpt_path")
    if cfg.get("resume") == "auto" or ckpt == "last":
        return True
    if ckpt:
        try:
            return Path(str(ckpt)).resolve().is_relative_to(Path(run_dir).resolve())
        except OSError:
            return False
    return False


def check_not_reused(cfg: DictConfig, run_dir: str | Path, unset_hint: str = "run_dir",
                     files: tuple[str, ...] = RUN_FILES) -> None:
    """A new run never writes into another run's directory: refuse unless the config resumes it."""
    if holds_run(run_dir, files) and not is_resuming(cfg, run_dir):
        raise ConfigError(f"{run_dir} already holds a run; continue it with resume=auto run_dir={run_dir}, "
                          f"or leave {unset_hint} unset to start a new run directory")


def writable_or_raise(path: str | Path) -> None:
    """The run directory can be created and written (checked on its nearest existing parent)."""
    path = probe = Path(path)
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


def output_dir(cfg: DictConfig) -> Path:
    """``paths.output_dir``, created and checked writable (one probe file per process: ranks share it)."""
    out = Path(cfg.paths.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test_{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to the output directory {out} ({e.strerror}); "
                          "set paths.log_dir or hydra.run.dir to a writable folder") from None
    return out


@dataclass(frozen=True)
class Checked:
    """What the Hydra run guard decided for a run directory: the config is valid, the directory may be
    used, and the run continues from ``ckpt_path`` (None: a fresh start)."""

    ckpt_path: str | None


_CHECKED: dict[Path, Checked] = {}


def record_checked(run_dir: str | Path, ckpt_path: str | None) -> None:
    """Called by the run guard once every check passed, for the task that follows in this process."""
    _CHECKED.clear()
    _CHECKED[Path(run_dir).resolve()] = Checked(ckpt_path)


def take_checked(run_dir: str | Path) -> Checked | None:
    """The guard's decision for ``run_dir`` (used once), or None when no guard checked it."""
    return _CHECKED.pop(Path(str(run_dir)).resolve(), None)
