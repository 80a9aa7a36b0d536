"""A 2-job multirun on digits, summarised into a table and plots; failed jobs are reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from infra_utils import run_cmd

sys.path.insert(0, str(ROOT / "scripts"))

import plot
import summarize


def test_multirun_is_summarised(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cmd(
        [sys.executable, "src/train.py", "-m", "seed=0,1", "trainer.fast_dev_run=true",
         f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and (p / "results.json").is_file())
    assert jobs == ["0", "1"]
    seeds = {json.loads((sweep / j / "results.json").read_text())["seed"] for j in jobs}
    assert seeds == {0, 1}
    # a job that died before writing results.json
    (sweep / "2" / ".hydra").mkdir(parents=True)
    (sweep / "2" / ".hydra" / "config.yaml").write_text((sweep / "0" / ".hydra" / "config.yaml").read_text())
    (sweep / "2" / "train.log").write_text("RuntimeError: out of memory\n")

    assert summarize.main([str(sweep)]) == 0
    md = (sweep / "summary.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| bptt"))
    assert "| convnet | digits | 4 |" in row and "| 2/1 |" in row
    assert "out of memory" in md
    csv_text = (sweep / "summary.csv").read_text().splitlines()
    assert csv_text[0].startswith("method,model,data,T,top1_mean,top1_std")
    header = csv_text[0].split(",")
    saved = float(csv_text[1].split(",")[header.index("saved_mb")])  # one training step's, mean of 2 jobs
    assert saved == pytest.approx(sum(json.loads((sweep / j / "results.json").read_text())
                                      ["saved_for_backward_peak_bytes"] for j in jobs) / 2 / 2**20)
    # fast_dev_run writes no CSV log: plots are skipped, not an error (partial data); accuracy against
    # energy needs only results.json
    assert [p.name for p in plot.plot_all(sweep, sweep / "plots")] == ["acc_vs_energy.png"]


def test_summarize_rejects_missing_dir(tmp_path: Path) -> None:
    assert summarize.main([str(tmp_path / "nope")]) == 2
    assert summarize.main([str(tmp_path)]) == 2
