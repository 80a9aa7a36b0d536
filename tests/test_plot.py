"""Plots from run directories with logs (validation curves, memory vs T, connectivity, width sweep): each
figure is checked for what it shows (axes, labels, series and their points), then written as PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import plot

# (directory, method, T, seed, surrogate width, test top-1, sparsity or None, validation top-1 per epoch)
RUNS = [
    ("0", "asgl", 2, 0, 1.0, 0.90, 0.5, [0.50, 0.80]),
    ("1", "asgl", 4, 0, 5.0, 0.80, 0.9, [0.40, 0.70]),
    ("2", "asgl", 4, 1, 5.0, 0.70, 0.9, [0.30, 0.60]),  # second seed of run 1: points are seed means
    ("3", "asgl_sg", 2, 0, 1.0, 0.85, None, [0.45, 0.75]),
    ("4", "asgl_sg", 4, 0, 5.0, 0.30, None, [0.20, 0.25]),
]


def _fake_run(root: Path, name: str, method: str, T: int, seed: int, width: float, acc: float,
              sparsity: float | None, val: list[float]) -> None:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(
        f"method:\n  name: {method}\n  width: {width}\nmodel:\n  name: convnet\n"
        f"data:\n  name: digits\nT: {T}\nseed: {seed}\n")
    (d / "csv").mkdir()
    rows = "".join(f"{e},{10 * (e + 1)},{v}\n" for e, v in enumerate(val))
    (d / "csv" / "metrics.csv").write_text("epoch,step,val/acc1\n" + rows)
    results = {"method": method, "model": "convnet", "data": "digits", "T": T, "epochs": len(val), "seed": seed,
               "test": {"test/acc1": acc}, "peak_host_memory_bytes": 2**20 * 100 * T,
               "saved_for_backward_peak_bytes": 2**20 * 10 * T}
    if sparsity is not None:
        results["sparsity"] = {"total": sparsity}
    (d / "results.json").write_text(json.dumps(results))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    for run in RUNS:
        _fake_run(tmp_path, *run)
    return tmp_path


def _content(fig, panel: int | None = None) -> dict:
    """What a line figure shows (its one axes, or panel ``panel``): labels, scale and every line's legend
    label and points."""
    ax = fig.axes[panel] if panel is not None else fig.axes[0]
    assert panel is not None or len(fig.axes) == 1
    def points(values) -> list[float]:
        return [round(float(v), 6) for v in values]

    lines = {ln.get_label(): (points(ln.get_xdata()), points(ln.get_ydata())) for ln in ax.get_lines()}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == list(lines)  # every series is in the legend
    return {"x": ax.get_xlabel(), "y": ax.get_ylabel(), "title": ax.get_title(), "xscale": ax.get_xscale(),
            "lines": lines}


def test_figures_show_the_runs_data(runs: Path) -> None:
    figs = plot.figures(runs)
    assert set(figs) == {"val_acc_vs_epoch.png", "memory_vs_T.png", "acc_vs_connectivity.png", "width_sweep.png"}
    val = _content(figs["val_acc_vs_epoch.png"])
    assert (val["x"], val["y"], val["title"]) == ("epoch", "validation top-1 (%)",
                                                "Validation accuracy (protocol=paper runs: test accuracy)")
    assert val["lines"] == {f"{m}/convnet/T{T}/s{s} ({d})": ([0.0, 1.0], [round(100 * v, 6) for v in curve])
                            for d, m, T, s, *_, curve in RUNS}

    saved, peak = (_content(figs["memory_vs_T.png"], i) for i in (0, 1))
    assert (saved["x"], saved["y"]) == ("T", "peak saved for backward, one step (MB)")
    assert saved["lines"] == {"asgl": ([2.0, 4.0], [20.0, 40.0]), "asgl_sg": ([2.0, 4.0], [20.0, 40.0])}
    assert (peak["x"], peak["y"]) == ("T", "peak memory of the run (MB)")
    assert peak["lines"] == {"asgl": ([2.0, 4.0], [200.0, 400.0]), "asgl_sg": ([2.0, 4.0], [200.0, 400.0])}

    conn = _content(figs["acc_vs_connectivity.png"])
    assert (conn["x"], conn["y"], conn["xscale"]) == ("connectivity (%)", "test top-1 (%)", "log")
    # only the runs with a sparsity; connectivity 100·(1 − sparsity), mean of the two seeds at 10%
    assert conn["lines"] == {"asgl": ([10.0, 50.0], [75.0, 90.0])}

    width = _content(figs["width_sweep.png"])
    assert (width["x"], width["y"], width["xscale"]) == ("surrogate width", "test top-1 (%)", "log")
    assert width["lines"] == {"asgl": ([1.0, 5.0], [90.0, 75.0]), "asgl_sg": ([1.0, 5.0], [85.0, 30.0])}
    for fig in figs.values():
        plt.close(fig)


def test_plots_without_data_are_left_out(runs: Path) -> None:
    for d in ("0", "3"):  # only T = 4 and width 5 left: nothing to draw against T or the width
        for f in (runs / d).rglob("*"):
            if f.is_file():
                f.unlink()
    figs = plot.figures(runs)
    # one T left: memory as one bar per method (as for make compare) instead of lines against T
    assert set(figs) == {"val_acc_vs_epoch.png", "acc_vs_connectivity.png", "memory_by_method.png"}
    saved_bars = figs["memory_by_method.png"].axes[0]
    assert [t.get_text() for t in saved_bars.get_xticklabels()] == ["asgl", "asgl_sg"]
    assert [round(b.get_height(), 6) for b in saved_bars.patches] == [40.0, 40.0]
    for fig in figs.values():
        plt.close(fig)


def test_all_plots_are_written_as_png(runs: Path) -> None:
    written = plot.plot_all(runs, runs / "plots")
    assert {p.name for p in written} == {"val_acc_vs_epoch.png", "memory_vs_T.png", "acc_vs_connectivity.png",
                                         "width_sweep.png"}
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        width = 10 if p.name == "memory_vs_T.png" else 6.4  # memory: two panels side by side
        assert plt.imread(p).shape[:2] == (round(4.2 * 120), round(width * 120))  # figsize × dpi


def test_accuracy_against_energy_marks_means_and_the_pareto_front(runs: Path) -> None:
    """``acc_vs_energy.png`` (make compare): a dot per run, a cross per method mean, the front of the means."""
    energies = {"0": 0.02, "1": 0.01, "2": 0.03, "3": 0.005, "4": 0.005}  # asgl mean: 0.02 mJ, 80%
    for d, e in energies.items():
        f = runs / d / "results.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), "energy_compute_mj_per_sample": e}))
    figs = plot.figures(runs)
    ax = figs["acc_vs_energy.png"].axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("compute energy per sample (mJ)", "test top-1 (%)")
    dots, crosses = ax.collections[0::2], ax.collections[1::2]
    runs_drawn = sorted((round(float(x), 6), round(float(y), 6)) for c in dots for x, y in c.get_offsets())
    assert runs_drawn == sorted((energies[d], round(100 * acc, 6)) for d, _, _, _, _, acc, *_ in RUNS)
    means = {c.get_label(): tuple(round(float(v), 6) for v in c.get_offsets()[0]) for c in crosses}
    assert means == {"asgl": (0.02, 80.0), "asgl_sg": (0.005, 57.5)}
    (front,) = ax.get_lines()
    assert front.get_label() == "Pareto front (means)"
    assert [round(float(v), 6) for v in front.get_xdata()] == [0.005, 0.02]  # neither mean dominates the other
    assert plot.pareto_front([(1.0, 50.0), (2.0, 40.0), (2.0, 60.0), (3.0, 60.0), (0.5, 10.0)]) == [
        (0.5, 10.0), (1.0, 50.0), (2.0, 60.0)]
    for fig in figs.values():
        plt.close(fig)
