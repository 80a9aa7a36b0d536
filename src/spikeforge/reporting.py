"""Collect the runs of a (multi)run directory into one table and plots.

A run is a directory holding ``.hydra/config.yaml``; it succeeded if it also holds ``results.json``.
Failed or unfinished jobs are reported, never fatal, so partial sweeps can be summarised.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

DEFAULT_GROUP_BY = ("method", "model", "data", "T")


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    results: dict[str, Any] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.results is not None

    def key(self, name: str) -> Any:
        """A grouping key: a results.json field, else a dotted config path (``method.width``)."""
        if self.results is not None and name in self.results and not isinstance(self.results[name], dict):
            return self.results[name]
        node: Any = self.config
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node.get("name") if isinstance(node, dict) else node


def collect_runs(root: str | Path) -> list[Run]:
    runs = []
    for cfg_file in sorted(Path(root).rglob(".hydra/config.yaml")):
        run_dir = cfg_file.parent.parent
        config = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False)
        res_file = run_dir / "results.json"
        if res_file.is_file():
            try:
                runs.append(Run(run_dir, config, json.loads(res_file.read_text())))
                continue
            except json.JSONDecodeError as e:
                runs.append(Run(run_dir, config, None, f"unreadable results.json ({e})"))
                continue
        runs.append(Run(run_dir, config, None, _failure_reason(run_dir)))
    return runs


def _failure_reason(run_dir: Path) -> str:
    logs = sorted(run_dir.glob("*.log"))
    if logs:
        lines = [ln for ln in logs[0].read_text(errors="ignore").splitlines() if ln.strip()]
        if lines:
            return f"no results.json; last log line: {lines[-1][-160:]}"
    return "no results.json (failed or still running)"


def sparsity_of(r: dict[str, Any]) -> float | None:
    s = r.get("sparsity")
    if isinstance(s, dict):
        s = s.get("total")
    return s if isinstance(s, (int, float)) else r.get("sparsity_total")


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


@dataclass
class Row:
    group: dict[str, Any]
    n_ok: int = 0
    n_failed: int = 0
    cells: dict[str, Any] = field(default_factory=dict)


COLUMNS = [
    ("top1", "top-1 % (mean ± std)"),
    ("paper_top1", "paper top-1 %"),
    ("protocol", "protocol"),
    ("epoch_time_s", "train s/epoch"),
    ("peak_memory_mb", "peak memory MB"),
    ("saved_mb", "saved for backward MB"),
    ("firing_rate", "firing rate"),
    ("macs", "MACs/sample"),
    ("synops", "SynOps/sample"),
    ("dense_ops", "dense ops/sample"),
    ("energy_mj", "energy mJ/sample"),
    ("sparsity", "sparsity"),
    ("seeds", "runs ok/failed"),
]


def summarize(runs: Iterable[Run], group_by: Sequence[str] = DEFAULT_GROUP_BY) -> list[Row]:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[tuple(run.key(k) for k in group_by)].append(run)
    rows = []
    for key, members in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        ok = [m.results for m in members if m.results is not None]
        row = Row(dict(zip(group_by, key)), len(ok), len(members) - len(ok))

        def stat(fn, ok=ok):
            return _mean_std([fn(r) for r in ok])

        top1 = stat(lambda r: 100 * r["test"]["test/acc1"] if r.get("test", {}).get("test/acc1") is not None
                    else None)
        expected = next((r["expected"].get("top1") for r in ok if isinstance(r.get("expected"), dict)), None)
        row.cells = {
            "top1": top1,
            "paper_top1": expected,
            "protocol": protocol_label(ok),
            "epoch_time_s": stat(lambda r: r["fit_wall_time_s"] / max(r["epochs"], 1) if r.get("fit_wall_time_s")
                                 else None)[0],
            "peak_memory_mb": stat(lambda r: (r.get("peak_gpu_memory_bytes") or r.get("peak_host_memory_bytes")
                                              or 0) / 2**20 or None)[0],
            "saved_mb": stat(lambda r: r["saved_for_backward_peak_bytes"] / 2**20
                             if r.get("saved_for_backward_peak_bytes") is not None else None)[0],
            "firing_rate": stat(lambda r: r.get("mean_firing_rate"))[0],
            "macs": stat(lambda r: r.get("macs_per_sample"))[0],
            "synops": stat(lambda r: r.get("synops_per_sample"))[0],
            "dense_ops": stat(lambda r: r.get("dense_ops_per_sample"))[0],
            "energy_mj": stat(lambda r: r.get("energy_compute_mj_per_sample"))[0],
            "sparsity": stat(sparsity_of)[0],
            "seeds": f"{row.n_ok}/{row.n_failed}",
        }
        rows.append(row)
    return rows


def protocol_label(results: Sequence[dict[str, Any]]) -> str | None:
    """How the runs of a row selected their reported top-1 (spikeforge.protocol): ``paper`` = best epoch
    chosen on the test set (the papers' protocol; last-epoch top-1 in brackets), ``clean`` = best on
    validation, tested once. Runs written before protocols existed are ``clean``."""
    labels = []
    for r in results:
        p = r.get("protocol") if isinstance(r.get("protocol"), dict) else {"name": "clean"}
        if p.get("name") == "paper":
            last = p.get("last_test_acc1")
            label = "paper: test-set selection" + (f" (last {100 * last:.2f})" if last is not None else "")
        else:
            label = "clean: validation selection"
        labels.append(label)
    return "; ".join(dict.fromkeys(labels)) or None


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, tuple):
        m, s = v
        return "–" if m is None else f"{m:.2f} ± {s:.2f}"
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


def to_markdown(rows: list[Row], group_by: Sequence[str], runs: list[Run] | None = None) -> str:
    header = [*group_by, *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        vals = [_fmt(row.group[k]) for k in group_by] + [_fmt(row.cells[c]) for c, _ in COLUMNS]
        lines.append("| " + " | ".join(vals) + " |")
    failed = [r for r in runs or [] if not r.ok]
    if failed:
        lines += ["", "Failed or unfinished jobs:", ""]
        lines += [f"- `{r.path}`: {r.error}" for r in failed]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row], group_by: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*group_by, "top1_mean", "top1_std", *(c for c, _ in COLUMNS[1:])])
    for row in rows:
        m, s = row.cells["top1"]
        w.writerow([*(row.group[k] for k in group_by), m, s, *(row.cells[c] for c, _ in COLUMNS[1:])])
    return buf.getvalue()
