"""Entry points: ``src/train.py`` / ``spikeforge-train`` and ``src/eval.py`` / ``spikeforge-eval``.

The entry layer (docs/architecture.md): argument handling, re-exec under ``.venv``, turning an error
into one line and an exit code (:func:`run_cli`, :func:`run_hydra_app`). The tasks below it
(:mod:`spikeforge.run`, :mod:`spikeforge.export`) return results and raise typed errors; nothing below
imports this module.

This module imports only Hydra, OmegaConf and spikeforge's config code: ``--help``, ``--cfg job``,
``make repro-list`` and config errors answer without loading torch, Lightning or spikingjelly, which
:mod:`spikeforge.run` imports when the task starts (after composition and validation).

- :func:`config_dir` finds ``conf/``: in the checkout this package lives in (``src/spikeforge`` →
  ``conf``), else ``$SPIKEFORGE_ROOT/conf``, else the copy shipped inside an installed wheel
  (``spikeforge/conf``).
- :func:`ensure_dependencies` re-runs ``python src/train.py ...`` with the checkout's ``.venv`` Python
  when the Python that started it lacks the dependencies (the environment was not activated).
- :func:`run_hydra_app` makes Hydra's own errors (unknown group option, misspelt key, bad override
  syntax, missing value) one line on stderr with exit code 2, like every :class:`SpikeforgeError`
  (full traces with ``HYDRA_FULL_ERROR=1``); after a ``-m`` sweep with failed jobs it lists them
  (job, overrides, one-line error) and exits with 1.
- :func:`train_entry` runs the Hydra app, or — in a DDP rank process that Lightning started for a
  job — trains the job's resolved config without re-parsing the command line
  (see :mod:`spikeforge.distributed`); :func:`eval_entry` runs the evaluation app.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spikeforge.errors import USER_FULL_ERROR_ENV, SpikeforgeError, full_errors, user_error_in

PACKAGE_DIR = Path(__file__).resolve().parent

_HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


def summarize_hydra_error(ex: BaseException) -> str:
    """One sentence from a Hydra/OmegaConf composition error."""
    from spikeforge.entry_errors import os_error_line, unknown_key_line

    text = str(ex).replace(_HYDRA_HINT, "").strip()
    m = re.search(r"Could not find '([^']+)/([^']+)'.*?Available options in '[^']+':\s*(.*?)(?:\n\S|\Z)", text, re.S)
    if m:
        group, option, avail = m.group(1), m.group(2), m.group(3)
        options = ", ".join(o.strip() for o in avail.split("\n") if o.strip())
        return f"unknown {group} option {option!r}; choose one of: {options}"
    m = re.search(r"Could not override '([^']+)'\.\s*To append to your config use \+(\S+)", text)
    if m and m.group(1).startswith("method."):
        hint = method_key_hint(m.group(1))
        if hint:
            return hint
    if m:
        return unknown_key_line(m.group(1), m.group(2))
    m = re.search(r"Key '([^']+)' (?:is not in struct|not in)", text)
    if m:
        return unknown_key_line(m.group(1))
    if os_error_line(ex):
        return str(os_error_line(ex))
    m = re.search(r"Missing mandatory value: (\S+)", text)
    if m:
        return f"missing value for {m.group(1)}; pass {m.group(1)}=<value> on the command line"
    if "mismatched input" in text or "no viable alternative" in text or "extraneous input" in text:
        first = text.splitlines()[0]
        return f"cannot parse the command line ({first}); write overrides as key=value"
    if ex.__cause__ is not None and str(ex.__cause__).strip():
        cause = str(ex.__cause__).strip().splitlines()[0]
        text = f"{text.splitlines()[0] if text else ''} {cause}".strip()
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.strip().startswith(("full_key", "object_type", "reference_type"))
    ]
    return " ".join(lines)[:400] or type(ex).__name__


def record_in_run_log(run_dir: str | os.PathLike[str], message: str, exc: BaseException | None = None,
                      level: int = logging.ERROR) -> None:
    """Write a run's closing message (its error) to ``<run_dir>/train.log`` — through the file handler
    of Hydra's job logging — without repeating it on the console: the line at ``level``, the traceback
    at DEBUG (recorded with ``hydra.verbose=spikeforge``). Nothing happens outside a Hydra job."""
    logger = logging.getLogger("spikeforge")
    here = Path(run_dir).resolve()
    files = [h for h in logging.getLogger().handlers
             if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().parent == here]
    records = [logger.makeRecord(logger.name, level, __file__, 0, message, (), None)]
    if exc is not None and logger.isEnabledFor(logging.DEBUG):
        records.append(logger.makeRecord(logger.name, logging.DEBUG, __file__, 0, "traceback of the error above:",
                                         (), (type(exc), exc, exc.__traceback__)))
    for handler in files:
        for record in records:
            handler.handle(record)


def method_key_hint(key: str) -> str | None:
    """For a ``method.<k>=...`` override that names no key: the same sentence as for ``+method.<k>``
    (the closest valid name, from the method class's signature), found by composing the command line
    without that override. None when that is not possible (the generic message is used then)."""
    from hydra.core.global_hydra import GlobalHydra

    from spikeforge.compose import compose_config
    from spikeforge.config_schema import check_method_keys
    from spikeforge.errors import ConfigError

    root = os.environ.get("SPIKEFORGE_ROOT")
    if not root or Path(sys.argv[0]).name != "train.py":
        return None
    args = [a for a in sys.argv[1:] if not a.startswith("-") and not a.lstrip("+~").startswith(f"{key}=")]
    try:  # an error path that ends the process: Hydra's global state is not needed any more
        method = compose_config(Path(root) / "conf", args).method
        check_method_keys({**{k: None for k in method}, "_target_": method.get("_target_"),
                           key.split(".")[1]: None})
    except ConfigError as e:
        return str(e)
    except Exception:
        return None
    finally:
        GlobalHydra.instance().clear()
    return None


def _report(ex: BaseException) -> None:
    line = f"error: {ex}" if isinstance(ex, SpikeforgeError) else f"error: {summarize_hydra_error(ex)}"
    print(line, file=sys.stderr)
    sys.exit(ex.exit_code if isinstance(ex, SpikeforgeError) else 2)


def run_hydra_app(app: Callable[[], Any]) -> Any:
    """Run a ``hydra.main`` app with its errors made one line (see the module docstring).

    Hydra prints an exception itself unless ``HYDRA_FULL_ERROR=1`` (its documented switch), under which
    it hands the exception on: the app runs with it set, and the user's own choice is kept in
    ``$SPIKEFORGE_FULL_ERROR`` (:func:`spikeforge.errors.full_errors`) for the duration."""
    saved = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", USER_FULL_ERROR_ENV)}
    os.environ[USER_FULL_ERROR_ENV] = "1" if full_errors() else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return app()
    except Exception as ex:
        if os.environ[USER_FULL_ERROR_ENV] == "1":
            raise
        from spikeforge.hydra_callbacks import sweep_failures

        failed = sweep_failures()
        if failed:  # a sweep: every job ran; list the failures
            print(f"error: {len(failed)} sweep job(s) failed:", *(f"  {f}" for f in failed), sep="\n",
                  file=sys.stderr)
            sys.exit(1)
        _report(ex)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cli(fn: Callable[[Any], Any], cfg: Any) -> Any:
    """Run the task ``fn(cfg)``; a :class:`SpikeforgeError` becomes one line on stderr (and in ``train.log``) and a
    non-zero exit (the full trace with ``HYDRA_FULL_ERROR=1``). In a ``-m`` sweep a failed job prints its
    line and hands the error to Hydra, so that the other jobs still run (see ``hydra_callbacks``)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from omegaconf import OmegaConf

    from spikeforge import distributed
    from spikeforge.callbacks.reliability import TrainingInterrupted
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
        if full_errors():
            raise
        sweep = _in_sweep()
        if isinstance(e, MisconfigurationException):  # Lightning's verdict on trainer settings
            first = (str(e).strip().splitlines() or ["invalid trainer settings"])[0]
            line, code = f"error: {first} (see conf/trainer/*.yaml)", 2
        else:
            user_error = user_error_in(e) or distributed.collective_timeout_in(e)
            if user_error is None and not sweep:  # not a user error: Hydra's reporter (run_hydra_app)
                record_in_run_log(run_dir, f"error: {summarize_hydra_error(e)}", e)  # prints the line
                raise
            line = f"error: {user_error if user_error is not None else one_line(e)}"
            code = user_error.exit_code if user_error is not None else 1
        if code == 2 and not sweep and not distributed.is_spawned_child() and distributed.global_rank() == 0:
            from spikeforge.entry_errors import discard_failed_run

            # a mistake in the input: no run directory is left unless the run wrote something of its own
            discard_failed_run(run_dir, OmegaConf.select(cfg, "paths.log_dir", default=None,
                                                         throw_on_resolution_failure=False))
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


def checkout_root() -> Path | None:
    """The repository this package runs from (``src/`` layout, editable install), if any."""
    from spikeforge import compose

    return compose.checkout_root(PACKAGE_DIR)


def config_dir() -> Path:
    """Hydra's config folder (see the module docstring for the search order)."""
    from spikeforge import compose

    found = compose.find_config_dir(PACKAGE_DIR)
    if found is None:
        candidates = compose.config_dir_candidates(PACKAGE_DIR)
        print(f"error: no spikeforge configs found (looked in {', '.join(map(str, candidates))}); "
              "set SPIKEFORGE_ROOT=<the spikeforge checkout>", file=sys.stderr)
        sys.exit(2)
    return found


def venv_python(root: Path) -> Path | None:
    for exe in (root / ".venv" / "bin" / "python", root / ".venv" / "Scripts" / "python.exe"):
        if exe.is_file():
            return exe
    return None


def ensure_dependencies() -> None:
    """``python src/train.py`` with a Python that lacks the dependencies (``.venv`` not activated):
    re-run the same command with the checkout's ``.venv`` Python, or say how to install them."""
    import importlib.util

    if importlib.util.find_spec("hydra") is not None and importlib.util.find_spec("omegaconf") is not None:
        return
    root = checkout_root()
    exe = venv_python(root) if root is not None else None
    in_venv = exe is not None and Path(sys.prefix).resolve() == exe.parent.parent.resolve()
    if exe is not None and not in_venv and not os.environ.get("SPIKEFORGE_REEXEC"):
        os.environ["SPIKEFORGE_REEXEC"] = "1"
        os.execv(str(exe), [str(exe), *sys.argv])
    print(f"error: this Python ({sys.executable}) lacks spikeforge's dependencies (hydra-core, torch, ...) and the "
          "checkout has no .venv; run `make install` (it creates .venv), then `source .venv/bin/activate`",
          file=sys.stderr)
    sys.exit(2)


def _set_root() -> None:
    """Outputs and data under the checkout (as ``python src/train.py`` does), else under the cwd."""
    root = checkout_root()
    if root is not None:
        os.environ.setdefault("SPIKEFORGE_ROOT", str(root))


def _hydra_app(task: Callable[[Any], Any], config_name: str) -> Callable[[], Any]:
    import hydra

    app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(task)
    return lambda: run_hydra_app(app)


def _train_task(cfg: Any) -> float | None:
    from spikeforge.run import train

    results = run_cli(train, cfg)
    return (results or {}).get("best_val_acc1")  # objective for sweepers


def _eval_task(cfg: Any) -> None:
    from spikeforge.run import evaluate

    run_cli(evaluate, cfg)


def _export_task(cfg: Any) -> None:
    from spikeforge.export import export

    run_cli(export, cfg)


def train_entry() -> Any:
    """``python src/train.py`` / ``spikeforge-train``: the Hydra app, or — in a DDP rank process that
    Lightning started for a job — training of the job's resolved config without re-parsing the
    command line (see :mod:`spikeforge.distributed`)."""
    ensure_dependencies()
    from spikeforge.distributed import child_config, is_spawned_child

    _set_root()
    if is_spawned_child():
        from spikeforge.run import train

        return run_cli(train, child_config())
    return _hydra_app(_train_task, "train")()


OPEN_KEYS = ("data_overrides.",)  # eval.yaml groups whose keys are free (any data setting)


def open_key_overrides(argv: list[str]) -> list[str]:
    """``data_overrides.batch_size=256`` → ``+data_overrides.batch_size=256``: the keys of an open
    group are new to the composed config, which Hydra accepts only with ``+``."""
    return [f"+{a}" if a.startswith(OPEN_KEYS) and "=" in a else a for a in argv]


def eval_entry() -> Any:
    """``python src/eval.py`` / ``spikeforge-eval``."""
    ensure_dependencies()
    _set_root()
    sys.argv[1:] = open_key_overrides(sys.argv[1:])
    return _hydra_app(_eval_task, "eval")()


def export_entry() -> Any:
    """``python src/export.py`` / ``spikeforge-export``."""
    ensure_dependencies()
    _set_root()
    return _hydra_app(_export_task, "export")()
