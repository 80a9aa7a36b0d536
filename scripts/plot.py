"""PNG plots of a (multi)run directory:

- ``val_acc_vs_epoch.png``: validation top-1 per epoch of every run (from ``csv/metrics.csv``);
- ``memory_vs_T.png``: against T, one line per method: the peak bytes saved for backward in one
  training step (the figure the SLTT paper compares) and the run's own peak memory; with a single T
  (``make compare``) ``memory_by_method.png`` shows the same two figures as one bar per method;
- ``acc_vs_connectivity.png``: test top-1 against connectivity (1 − sparsity), STDS sweeps;
- ``acc_vs_energy.png``: test top-1 against the compute energy per sample (``energy_compute_mj_per_sample``),
  one point per run (method and seed), each method's mean marked, and the Pareto front of the method
  means (no other method both more accurate and cheaper);
- ``width_sweep.png``: test top-1 against the surrogate width, one line per method (ASGL vs SG).

    python scripts/plot.py outputs/train/multiruns/<date>_<time> [--out DIR]

A plot is skipped (and said so) when the runs hold no data for it; failed jobs are ignored.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from spikeforge.reporting import Run, collect_runs, sparsity_of


def _label(run: Run) -> str:
    return f"{run.key('method')}/{run.key('model')}/T{run.key('T')}/s{run.key('seed')}"


def _top1(run: Run) -> float | None:
    v = (run.results or {}).get("test", {}).get("test/acc1")
    return None if v is None else 100 * v


def val_curves(runs: list[Run]) -> dict[str, tuple[list[int], list[float]]]:
    curves = {}
    for run in runs:
        f = run.path / "csv" / "metrics.csv"
        if not f.is_file():
            continue
        xs, ys = [], []
        with f.open() as fh:
            for row in csv.DictReader(fh):
                if row.get("val/acc1"):
                    xs.append(int(float(row["epoch"])))
                    ys.append(100 * float(row["val/acc1"]))
        if xs:
            curves[f"{_label(run)} ({run.path.name})"] = (xs, ys)
        protocol = (run.results or {}).get("protocol") or {}
        if not xs and protocol.get("test_acc1_per_epoch"):  # protocol=paper: the test set every epoch
            per_epoch = protocol["test_acc1_per_epoch"]
            curves[f"{_label(run)} ({run.path.name}, test: paper protocol)"] = (
                list(range(len(per_epoch))), [100 * a for a in per_epoch])
    return curves


def memory_points(runs: list[Run]) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]]]:
    """``(saved, peak)`` points (method, T, MB): the peak bytes saved for backward in one training step
    and the run's own peak memory (GPU when it ran on one, else host)."""
    saved, peak = [], []
    for r in runs:
        if r.key("T") is None:
            continue
        method, T = str(r.key("method")), float(r.key("T"))
        if r.results.get("saved_for_backward_peak_bytes") is not None:
            saved.append((method, T, r.results["saved_for_backward_peak_bytes"] / 2**20))
        own = r.results.get("peak_gpu_memory_bytes") or r.results.get("peak_host_memory_bytes")
        if own:
            peak.append((method, T, own / 2**20))
    return saved, peak


def _mean_by(points: list[tuple[str, float, float]]) -> dict[str, tuple[list[float], list[float]]]:
    acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for series, x, y in points:
        acc[series][x].append(y)
    return {s: (sorted(d), [statistics.fmean(d[x]) for x in sorted(d)]) for s, d in acc.items()}


def line_figure(series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str, title: str,
                logx: bool = False) -> Figure:
    """One line (with markers) per series, labelled in the legend."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6 if len(series) > 6 else 8)
    fig.tight_layout()
    return fig


def memory_figure(saved: list[tuple[str, float, float]],
                  peak: list[tuple[str, float, float]]) -> tuple[str, Figure] | None:
    """Two panels — peak bytes saved for backward in one step, the run's own peak — against T, one line
    per method (``memory_vs_T.png``); at a single T one bar per method (``memory_by_method.png``)."""
    panels = ((saved, "peak saved for backward, one step (MB)"), (peak, "peak memory of the run (MB)"))
    if len({p[1] for p in saved + peak}) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, (points, ylabel) in zip(axes, panels):
            for label, (xs, ys) in _mean_by(points).items():
                ax.plot(xs, ys, marker="o", ms=3, label=label)
            ax.set(xlabel="T", ylabel=ylabel)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        fig.suptitle("Memory against time steps (mean over seeds)")
        name = "memory_vs_T.png"
    elif len({p[0] for p in saved + peak}) > 1:  # one T (e.g. make compare): one bar per method
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, (points, ylabel) in zip(axes, panels):
            means = {m: ys[0] for m, (_, ys) in sorted(_mean_by(points).items())}
            ax.bar(list(means), list(means.values()))
            ax.set(ylabel=ylabel)
            ax.tick_params(axis="x", labelrotation=30)
            ax.grid(alpha=0.3, axis="y")
        fig.suptitle(f"Memory per method at T = {int((saved or peak)[0][1])} (mean over seeds)")
        name = "memory_by_method.png"
    else:
        return None
    fig.tight_layout()
    return name, fig


def energy_points(runs: list[Run]) -> list[tuple[str, float, float]]:
    """``(method, energy mJ per sample, test top-1 %)`` of every run that has both."""
    return [(str(r.key("method")), float(r.results["energy_compute_mj_per_sample"]), _top1(r)) for r in runs
            if r.results.get("energy_compute_mj_per_sample") is not None and _top1(r) is not None]


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ``(energy, accuracy)`` points that no other point beats on both (lower energy, higher accuracy),
    by increasing energy."""
    front: list[tuple[float, float]] = []
    for e, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or a > front[-1][1]:
            front.append((e, a))
    return front


def energy_figure(points: list[tuple[str, float, float]]) -> Figure | None:
    """Accuracy against energy: the runs as dots, each method's mean as a cross (same colour), the Pareto
    front of the means as a step line."""
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    means = {}
    for method in sorted({p[0] for p in points}):
        es, accs = zip(*((e, a) for m, e, a in points if m == method))
        dots = ax.scatter(es, accs, s=14, alpha=0.5)
        means[method] = (statistics.fmean(es), statistics.fmean(accs))
        ax.scatter(*means[method], marker="X", s=90, color=dots.get_facecolor()[0], edgecolor="black",
                   linewidth=0.6, label=method)
    front = pareto_front(list(means.values()))
    ax.plot([e for e, _ in front], [a for _, a in front], drawstyle="steps-post", color="black", lw=1, ls="--",
            label="Pareto front (means)")
    energies = [p[1] for p in points]
    if min(energies) > 0 and max(energies) / min(energies) > 10:
        ax.set_xscale("log")
    ax.set(xlabel="compute energy per sample (mJ)", ylabel="test top-1 (%)",
           title="Accuracy against energy (dots: runs, crosses: method means)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figures(root: Path) -> dict[str, Figure]:
    """The plots of the finished runs under ``root``, by file name; a plot without data is left out."""
    runs = [r for r in collect_runs(root) if r.ok]
    conn = [(str(r.key("method.schedule") or r.key("method")), 100 * (1 - sparsity_of(r.results)), _top1(r))
            for r in runs if sparsity_of(r.results) is not None and _top1(r) is not None]
    width = [(str(r.key("method")), float(r.key("method.width")), _top1(r))
             for r in runs if r.key("method.width") is not None and _top1(r) is not None]
    plots = {  # name: (series, xlabel, ylabel, title, logx)
        "val_acc_vs_epoch.png": (val_curves(runs), "epoch", "validation top-1 (%)",
                                 "Validation accuracy (protocol=paper runs: test accuracy)", False),
        "acc_vs_connectivity.png": (_mean_by(conn), "connectivity (%)", "test top-1 (%)",
                                    "Accuracy against connectivity", True),
        "width_sweep.png": (_mean_by(width) if len({p[1] for p in width}) > 1 else {}, "surrogate width",
                            "test top-1 (%)", "Width sweep (mean over seeds)", True),
    }
    out = {}
    for name, (series, *labels) in plots.items():
        if series:
            out[name] = line_figure(series, *labels)
        else:
            print(f"skipped {name}: no runs with the data it needs")
    energy = energy_figure(energy_points(runs))
    if energy is None:
        print("skipped acc_vs_energy.png: no runs with the data it needs")
    else:
        out["acc_vs_energy.png"] = energy
    memory = memory_figure(*memory_points(runs))
    if memory is None:
        print("skipped memory_vs_T.png: no runs with the data it needs")
    else:
        out[memory[0]] = memory[1]
    return out


def plot_all(root: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, fig in figures(root).items():
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        print(f"wrote {out / name}")
        written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="PNG plots of a (multi)run directory")
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ROOT/plots)")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a directory; pass a multirun directory under outputs/", file=sys.stderr)
        return 2
    plot_all(args.root, args.out or args.root / "plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
