"""Helpers of the Optuna sweeper (``hparams_search=optuna``): the study in the sweep directory, the
search space of the chosen method and the summary of the trials.

The sweeper itself is the Hydra plugin ``hydra_plugins.spikeforge_optuna_sweeper`` (Hydra finds plugins
only in that namespace); it runs hydra-optuna-sweeper's loop with these additions:

- the study is ``<sweep dir>/optuna.db`` (sqlite), one study per sweep directory, so running the same
  command with ``hydra.sweep.dir=<that directory>`` resumes it;
- job numbers continue from the trials already in the study, so trial N always runs in ``<sweep dir>/N``
  and a resumed sweep never reuses a finished trial's directory;
- the sampler is reseeded with ``seed + trials already in the study``, so a resumed seeded sampler
  does not propose the points of the first launch again;
- the search space is ``params`` (every method) plus ``method_params.<method.name>``;
- a trial whose run exits with an error is a failed trial (:func:`failures_as_exceptions`);
- at the end (also after a failure) every trial goes to ``<sweep dir>/trials.csv`` and a table.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from spikeforge.errors import ConfigError

STUDY_FILE = "optuna.db"
SUMMARY_FILE = "trials.csv"


def sqlite_url(sweep_dir: str | Path) -> str:
    return f"sqlite:///{Path(sweep_dir).resolve() / STUDY_FILE}"


def search_space(params: Mapping[str, Any] | None, method_params: Mapping[str, Any] | None,
                 method: str) -> dict[str, str]:
    """``params`` plus the entry of ``method_params`` for ``method`` (one clear error if it has none)."""
    space = {str(k): str(v) for k, v in (params or {}).items()}
    per_method = method_params or {}
    if method not in per_method:
        known = ", ".join(sorted(per_method)) or "none"
        raise ConfigError(f"hparams_search=optuna has no search space for method={method} (it has: {known}); "
                          f"add one under hydra.sweeper.method_params.{method} in conf/hparams_search/optuna.yaml")
    space.update({str(k): str(v) for k, v in (per_method[method] or {}).items()})
    return space


class TrialFailed(RuntimeError):
    """A trial's run ended with an error (its one-line message is already on stderr)."""


def failures_as_exceptions(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``task`` with ``SystemExit(code != 0)`` turned into :class:`TrialFailed`.

    ``src/train.py`` reports a user-facing error (a diverged loss, a bad value) with ``sys.exit``; Hydra's
    job runner catches exceptions only, so without this one failed trial would end the whole search.
    As an exception the trial is marked FAIL and ``hydra.sweeper.max_failure_rate`` decides whether the
    sweep goes on. A clean stop (exit 0: preemption, with a checkpoint) still ends the sweep."""

    @functools.wraps(task)
    def run(cfg: Any) -> Any:
        try:
            return task(cfg)
        except SystemExit as e:
            if e.code in (0, None):
                raise
            raise TrialFailed(f"the trial's run exited with code {e.code}") from None

    return run


def existing_trials(storage: str, study_name: str) -> int:
    """Trials already in the study ``study_name`` of ``storage`` (0 for a new sweep). A storage that
    holds another study belongs to another sweep: one clear error."""
    import optuna

    summaries = optuna.get_all_study_summaries(storage)
    others = [s.study_name for s in summaries if s.study_name != study_name]
    if others:
        raise ConfigError(f"the sweep directory's study is {others[0]!r}, not {study_name!r}; resume it with the "
                          "same method, model and data, or leave hydra.sweep.dir unset for a new sweep")
    return next((s.n_trials for s in summaries if s.study_name == study_name), 0)


def trial_rows(study: Any, sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per trial: number, state, objective value, its parameters, duration and run directory."""
    names = sorted({k for t in study.trials for k in t.params})
    rows = []
    for t in study.trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        run_dir = Path(sweep_dir) / str(t.number)
        rows.append({"number": t.number, "state": t.state.name, "value": t.value,
                     **{n: t.params.get(n) for n in names}, "duration_s": duration,
                     "output_dir": str(run_dir) if run_dir.is_dir() else ""})
    return rows


def write_summary(study: Any, sweep_dir: str | Path) -> Path:
    """``<sweep dir>/trials.csv`` with every trial of the study, and a table (best first) on the console."""
    rows = trial_rows(study, sweep_dir)
    path = Path(sweep_dir) / SUMMARY_FILE
    if rows:
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)
    print_table(rows, study.study_name)
    return path


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if math.isfinite(v) else str(v)
        return "" if v is None else str(v)

    hidden = {"output_dir"}
    table = Table(title=f"optuna study {title}: {len(rows)} trials, best value first")
    for key in (rows[0] if rows else {}):
        if key not in hidden:
            table.add_column(key.removeprefix("method."), justify="right")
    ranked = sorted(rows, key=lambda r: (r["value"] is None, -(r["value"] or 0.0)))
    for r in ranked:
        table.add_row(*(fmt(v) for k, v in r.items() if k not in hidden))
    Console().print(table)
