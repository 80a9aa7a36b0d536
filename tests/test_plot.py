"""Plots from run directories with logs (validation curves, memory vs T, connectivity, width sweep)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import plot


def _fake_run(root: Path, name: str, method: str, T: int, width: float, acc: float, sparsity: float | None) -> None:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(
        f"method:\n  name: {method}\n  width: {width}\nmodel:\n  name: convnet\n"
        f"data:\n  name: digits\nT: {T}\nseed: 0\n")
    (d / "csv").mkdir()
    (d / "csv" / "metrics.csv").write_text("epoch,step,val/acc1\n0,10,0.5\n1,20,0.8\n")
    results = {"method": method, "model": "convnet", "data": "digits", "T": T, "epochs": 2, "seed": 0,
               "test": {"test/acc1": acc}, "peak_host_memory_bytes": 2**20 * 100 * T,
               "saved_for_backward_peak_bytes": 2**20 * 10 * T}
    if sparsity is not None:
        results["sparsity"] = {"total": sparsity}
    (d / "results.json").write_text(json.dumps(results))


def test_all_plots_are_written(tmp_path: Path) -> None:
    for i, (method, T, width, acc, sp) in enumerate([("asgl", 2, 1.0, 0.9, 0.5), ("asgl", 4, 5.0, 0.8, 0.9),
                                                      ("asgl_sg", 2, 1.0, 0.85, None), ("asgl_sg", 4, 5.0, 0.3, None)]):
        _fake_run(tmp_path, str(i), method, T, width, acc, sp)
    written = {p.name for p in plot.plot_all(tmp_path, tmp_path / "plots")}
    assert written == {"val_acc_vs_epoch.png", "memory_vs_T.png", "acc_vs_connectivity.png", "width_sweep.png"}
    assert all((tmp_path / "plots" / n).stat().st_size > 1000 for n in written)


def test_memory_plot_uses_saved_bytes_and_the_runs_own_peak(tmp_path: Path) -> None:
    for i, T in enumerate((2, 4)):
        _fake_run(tmp_path, str(i), "sltt", T, 1.0, 0.9, None)
    saved, peak = plot.memory_points(plot.collect_runs(tmp_path))
    assert sorted(saved) == [("sltt", 2.0, 20.0), ("sltt", 4.0, 40.0)]
    assert sorted(peak) == [("sltt", 2.0, 200.0), ("sltt", 4.0, 400.0)]
    one_T = tmp_path / "one_T"  # a side-by-side sweep at one T (make compare): bars per method
    for i, method in enumerate(("bptt", "sltt")):
        _fake_run(one_T, str(i), method, 4, 1.0, 0.9, None)
    names = {p.name for p in plot.plot_all(one_T, one_T / "plots")}
    assert "memory_by_method.png" in names and "memory_vs_T.png" not in names
