"""One-line errors that depend on which command runs, and what a failed run leaves behind.

- :func:`cfg_job_hint` names the ``--cfg job`` of the command that runs (``src/eval.py`` when evaluating),
  and :func:`other_entry_for` finds the command a top-level key belongs to (``threads`` to training,
  ``format`` to export): keys of another entry point are named as such instead of as misspelt.
- :func:`os_error_line`: a folder that cannot be created (``paths.log_dir=/proc/x``) as a sentence.
- :func:`check_data_overrides`: every ``data_overrides.<key>`` of eval/export must be a key of the
  checkpoint's data config, of the same type as its value there, and within the training rules.
- :func:`discard_failed_run`: a single run that failed before writing anything of its own (only
  Hydra's ``.hydra/``, its log, empty logger folders) leaves no directory behind.

Only the standard library, PyYAML and OmegaConf are imported: these run before torch is loaded.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

ENTRIES = {"train": "train.py", "eval": "eval.py", "export": "export.py"}


def current_entry() -> str:
    """``train``, ``eval`` or ``export``: the command this process runs (script or installed name)."""
    name = Path(sys.argv[0]).name
    return next((e for e in ("eval", "export") if e in name), "train")


def command(entry: str | None = None) -> str:
    entry = entry or current_entry()
    installed = not Path(sys.argv[0]).name.endswith(".py")
    return f"spikeforge-{entry}" if installed and entry == current_entry() else f"python src/{ENTRIES[entry]}"


def cfg_job_hint() -> str:
    return f"`{command()} --cfg job`"


def _top_level_keys(entry: str) -> set[str]:
    import yaml

    from spikeforge.compose import find_config_dir

    conf = find_config_dir(Path(__file__).resolve().parent) or Path("conf")
    try:
        data = yaml.safe_load((conf / f"{entry}.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return set()
    keys = {k for k in data if k != "defaults"}
    for d in data.get("defaults", []):  # config groups: `- method: bptt`, `- override hydra/...` excluded
        if isinstance(d, dict):
            keys.update(str(k).split("/")[0] for k in d if not str(k).startswith("override "))
    return keys


def other_entry_for(key: str) -> str | None:
    """The other command whose config has the top-level ``key`` (None when it is in none of them)."""
    top, here = key.lstrip("+~").split(".")[0], current_entry()
    if top in _top_level_keys(here):
        return None
    return next((e for e in ENTRIES if e != here and top in _top_level_keys(e)), None)


def unknown_key_line(key: str, plus: str | None = None) -> str:
    other = other_entry_for(key)
    if other is not None:
        return (f"{key.split('.')[0]} is a setting of `{command(other)}`, not of `{command()}`; "
                f"drop it, or see this command's settings with {cfg_job_hint()}")
    add = f", or add a new key with +{plus}" if plus else ""
    return f"unknown config key {key!r} (misspelt?); check the name with {cfg_job_hint()}{add}"


def os_error_line(ex: BaseException) -> str | None:
    """``[Errno 2] No such file or directory: '/proc/x'`` → what to do about it."""
    if not isinstance(ex, OSError) or not ex.filename:
        return None
    why = ex.strerror or type(ex).__name__
    return (f"cannot create or write {ex.filename} ({why}); set paths.log_dir (or run_dir, hydra.run.dir) "
            "to a folder that can be created and written")


def probe_creatable(path: Path) -> str | None:
    """Create ``path`` (and its missing parents), write a file in it, and remove what was created; the
    reason it failed, else None. Nothing is left behind either way."""
    created: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        for d in reversed(created):
            d.mkdir()
        probe = path / f".write_test_{os.getpid()}"
        probe.touch()
        probe.unlink()
        return None
    except OSError as e:
        return f"{e.strerror or type(e).__name__}: {e.filename or path}"
    finally:
        for d in created:
            if d.is_dir():
                d.rmdir()


# ---- data_overrides -------------------------------------------------------------------------------
def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "true or false"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list | tuple):
        return "a list"
    return "a mapping"


def _same_kind(new: Any, old: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float):
        return isinstance(new, int | float)
    if isinstance(old, int):
        return isinstance(new, int)
    if isinstance(old, str):
        return isinstance(new, str)
    if isinstance(old, list | tuple):
        return isinstance(new, list | tuple)
    return isinstance(new, dict)


def check_data_overrides(data: Any, overrides: Any) -> None:
    """``data_overrides`` against the checkpoint's ``data`` config (see the module docstring)."""
    from omegaconf import OmegaConf

    from spikeforge.config_schema import DataSchema, check_data
    from spikeforge.errors import ConfigError

    if not overrides:
        return
    base = OmegaConf.to_container(data, resolve=False) if OmegaConf.is_config(data) else dict(data)
    new = OmegaConf.to_container(overrides, resolve=True) if OmegaConf.is_config(overrides) else dict(overrides)
    if not isinstance(new, dict):
        raise ConfigError(f"data_overrides must be a mapping of data settings (got {new!r}); "
                          "e.g. data_overrides.batch_size=256")
    schema = {f.name for f in DataSchema.__dataclass_fields__.values()}
    for key, value in new.items():
        if key not in base and key not in schema:
            raise ConfigError(f"data_overrides.{key} is not a setting of this checkpoint's data "
                              f"({base.get('name')}); its settings: {', '.join(sorted(map(str, base)))}")
        old = base.get(key)
        if not _same_kind(value, old):
            raise ConfigError(f"data_overrides.{key} must be {_kind(old)} like the checkpoint's value {old!r} "
                              f"(got {value!r}); e.g. data_overrides.{key}={old}")
    check_data({**base, **new}, prefix="data_overrides")


# ---- failed runs ------------------------------------------------------------------------------------
def _scaffolding(rel: Path) -> bool:
    """What a run writes before doing anything of its own: Hydra's config copies, the log, loggers'
    folders and event files (no checkpoint, no results, no exported model)."""
    first = rel.parts[0]
    if rel.name == "metrics.csv":  # logged steps: the run trained
        return False
    return first in (".hydra", "csv", "tensorboard", "wandb") or (len(rel.parts) == 1 and rel.suffix == ".log")


def discard_failed_run(run_dir: str | os.PathLike[str], log_dir: str | os.PathLike[str] | None = None) -> bool:
    """Remove ``run_dir`` when it holds only :func:`_scaffolding`, and the folders between it and
    ``log_dir`` that are left empty (``<log_dir>/<task>/runs``); True when removed."""
    root = Path(run_dir)
    if not root.is_dir() or root.resolve() in (Path.cwd().resolve(), Path.home().resolve()):
        return False
    files = [p.relative_to(root) for p in root.rglob("*") if p.is_file() or p.is_symlink()]
    if not all(_scaffolding(f) for f in files):
        return False
    import logging

    # the run's log file (train.log) may be open in any logger's handlers: close and detach it first, or a
    # later run in the same process would log into a deleted folder
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for lg in loggers:
        for h in list(lg.handlers):
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().is_relative_to(root.resolve()):
                h.close()
                lg.removeHandler(h)
    shutil.rmtree(root, ignore_errors=True)
    if log_dir is not None:
        stop, parent = Path(log_dir).resolve(), root.resolve().parent
        while parent != stop and parent.is_relative_to(stop) and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return True
