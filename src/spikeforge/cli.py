"""Entry-point plumbing shared by ``src/train.py`` and ``src/eval.py``.

- :func:`one_line_errors` makes Hydra's own errors (unknown group option, misspelt key, bad override
  syntax, missing value) one line on stderr with exit code 2, like every :class:`SpikeforgeError`
  (full traces with ``HYDRA_FULL_ERROR=1``); after a ``-m`` sweep with failed jobs it lists them
  (job, overrides, one-line error) and exits with 1.
- :func:`main_or_child` runs the Hydra app, or — in a DDP rank process that Lightning started for a
  job — trains the job's resolved config without re-parsing the command line
  (see :mod:`spikeforge.distributed`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from spikeforge.errors import SpikeforgeError

_HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


def summarize_hydra_error(ex: BaseException) -> str:
    """One sentence from a Hydra/OmegaConf composition error."""
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
        key = m.group(1)
        return (
            f"unknown config key {key!r} (misspelt?); check the name with `python src/train.py --cfg job`, "
            f"or add a new key with +{m.group(2)}"
        )
    m = re.search(r"Key '([^']+)' (?:is not in struct|not in)", text)
    if m:
        return f"unknown config key {m.group(1)!r} (misspelt?); check the name with `python src/train.py --cfg job`"
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
    from pathlib import Path

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
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from spikeforge.config_schema import check_method_keys
    from spikeforge.errors import ConfigError

    root = os.environ.get("SPIKEFORGE_ROOT")
    if not root or Path(sys.argv[0]).name != "train.py":
        return None
    args = [a for a in sys.argv[1:] if not a.startswith("-") and not a.lstrip("+~").startswith(f"{key}=")]
    try:  # an error path that ends the process: Hydra's global state is not needed any more
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(Path(root) / "conf"), version_base="1.3"):
            method = compose(config_name="train", overrides=args).method
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


def one_line_errors() -> None:
    """Replace Hydra's error reporter (the one place Hydra prints exceptions) with a one-liner."""
    import hydra._internal.utils as hu

    if getattr(hu.run_and_report, "_spikeforge", False):
        return

    def run_and_report(func: Any) -> Any:
        try:
            return func()
        except Exception as ex:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            from spikeforge.hydra_callbacks import sweep_failures

            failed = sweep_failures()
            if failed:  # a sweep: every job ran; list the failures
                print(f"error: {len(failed)} sweep job(s) failed:", *(f"  {f}" for f in failed), sep="\n",
                      file=sys.stderr)
                sys.exit(1)
            _report(ex)

    run_and_report._spikeforge = True  # type: ignore[attr-defined]
    hu.run_and_report = run_and_report


def main_or_child(hydra_main: Callable[[], Any], fn: Callable[[Any], Any]) -> Any:
    """``hydra_main()`` normally; in a Lightning-started DDP rank, ``fn(job config)`` directly."""
    from spikeforge.distributed import child_config, is_spawned_child
    from spikeforge.run import run_cli

    if is_spawned_child():
        return run_cli(fn, child_config())
    one_line_errors()
    return hydra_main()
