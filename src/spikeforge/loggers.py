"""CSV and TensorBoard loggers whose history survives a resume (``conf/logger/*``).

A resumed run re-trains the steps after its checkpoint, so it logs those steps again. Lightning's
``CSVLogger`` deletes an existing ``metrics.csv`` when it starts ("Previous log files in this
directory will be deleted"), and ``TensorBoardLogger`` adds a second event file in which the steps
after the checkpoint appear twice. Here both keep what was logged before and drop what is logged
again:

- the first step this process logs (``s0``) is the first step the resumed run re-trains (logging is
  driven by the restored step counter, so an interrupted process logged steps ``>= s0`` only after
  the checkpoint, and the resumed process logs every one of them again);
- :class:`AppendingCSVLogger` then keeps the rows of ``metrics.csv`` with ``step < s0`` (and its header)
  and appends; a row cut short by a kill is dropped;
- :class:`AppendingTensorBoardLogger` opens its event file with ``purge_step=s0``
  (``torch.utils.tensorboard.SummaryWriter``): TensorBoard discards the events at ``step >= s0`` of the
  earlier files.

A fresh run directory has nothing to keep, so both behave like Lightning's loggers there.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def read_metrics_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and complete rows of a ``metrics.csv`` (a last line without newline is incomplete)."""
    with open(path, newline="") as f:
        text = f.read()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = list(reader.fieldnames or [])
    rows = [r for r in reader if None not in r and None not in r.values()]
    return header, rows


class _AppendingExperimentWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv``; on the first logged step drops the rows at or after it."""

    def __init__(self, log_dir: str) -> None:
        self._first_step: int | None = None
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            self.metrics_keys, _ = read_metrics_csv(self.metrics_file_path)

    def _check_log_dir_exists(self) -> None:  # Lightning deletes metrics.csv here
        pass

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if self._first_step is None and step is not None:
            self._first_step = int(step)
            self._drop_rows_from(self._first_step)
        super().log_metrics(metrics_dict, step)

    def _drop_rows_from(self, step: int) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return
        header, rows = read_metrics_csv(self.metrics_file_path)
        keep = [r for r in rows if r.get("step", "") != "" and int(float(r["step"])) < step]
        tmp = f"{self.metrics_file_path}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(keep)
        os.replace(tmp, self.metrics_file_path)


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that continues ``metrics.csv`` across resumes (module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingExperimentWriter:  # type: ignore[override]
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class AppendingTensorBoardLogger(TensorBoardLogger):
    """``TensorBoardLogger`` that purges re-logged steps of earlier event files (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._earlier_events = any(Path(self.log_dir).glob("events.out.tfevents.*"))
        self._first_step: int | None = None

    @rank_zero_only
    def log_metrics(self, metrics: Any, step: int | None = None) -> None:  # type: ignore[override]
        if self._first_step is None and step is not None:
            self._first_step = int(step)
            if self._earlier_events:
                if self._experiment is not None:  # opened earlier (hyperparameters): reopen with the purge
                    self._experiment.close()
                    self._experiment = None
                self._kwargs["purge_step"] = self._first_step
        super().log_metrics(metrics, step)
