"""Accuracy vs connectivity of STDS runs: one Markdown table and one PNG from ``results.json`` files.

    python scripts/plot_sparsity.py outputs/<task>/multiruns/<date_time> [more dirs ...] [--out prefix]

Every ``results.json`` below the given directories that carries STDS figures (``connectivity``) is one
row: schedule, D, connectivity, non-zero weights, test top-1. Dense runs (``sparse_function:
identity``) are drawn as a horizontal line. Writes ``<out>.md`` and ``<out>.png`` (default: ``sparsity``
inside the first directory) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def collect(dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per STDS ``results.json`` found below ``dirs``, sorted dense first, then by D."""
    rows = []
    for d in dirs:
        for path in sorted(Path(d).rglob("results.json")):
            r = json.loads(path.read_text())
            if "connectivity" not in r:
                continue
            test = r.get("test") or {}
            top1 = test.get("test/acc1")
            rows.append({
                "run": str(path.parent.relative_to(d)) if path.parent != Path(d) else Path(d).name,
                "sparse_function": r.get("sparse_function"),
                "schedule": r.get("schedule"),
                "D": r.get("flat_width_final"),
                "alpha_gr": r.get("alpha_gr", 0.0),
                "connectivity": 100.0 * r["connectivity"],
                "nonzeros": r.get("nonzeros"),
                "top1": None if top1 is None else 100.0 * top1,
                "best_val": None if r.get("best_val_acc1") is None else 100.0 * r["best_val_acc1"],
                "model": r.get("model"),
                "data": r.get("data"),
            })
    rows.sort(key=lambda x: (x["sparse_function"] != "identity", x["schedule"] or "", x["D"] or 0.0))
    return rows


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| run | map | schedule | D | α (Grad R) | connectivity (%) | non-zero weights | test top-1 (%) |"
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        dense = r["sparse_function"] == "identity"
        lines.append(
            f"| {r['run']} | {r['sparse_function']} | {'–' if dense else r['schedule']} | "
            f"{'–' if dense else _fmt(r['D'], 3)} | {_fmt(r['alpha_gr'], 4) if r['alpha_gr'] else '–'} | "
            f"{_fmt(r['connectivity'])} | {_fmt(r['nonzeros'])} | {_fmt(r['top1'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    sparse = [r for r in rows if r["sparse_function"] != "identity" and r["top1"] is not None]
    for schedule in sorted({r["schedule"] for r in sparse}):
        pts = sorted((r["connectivity"], r["top1"], r["D"]) for r in sparse if r["schedule"] == schedule)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"STDS ({schedule})")
        for c, a, d in pts:
            ax.annotate(f"D={d:g}", (c, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for r in rows:
        if r["sparse_function"] == "identity" and r["top1"] is not None:
            ax.axhline(r["top1"], color="grey", linestyle="--", label=f"dense ({r['top1']:.2f}%)")
    if sparse and min(r["connectivity"] for r in sparse) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("connectivity (% non-zero weights)")
    ax.set_ylabel("test top-1 (%)")
    models = sorted({f"{r['model']} / {r['data']}" for r in rows})
    ax.set_title("accuracy vs connectivity: " + ", ".join(models), fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or multirun directories")
    parser.add_argument("--out", type=Path, default=None, help="output prefix (default: <first dir>/sparsity)")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = collect(args.dirs)
    if not rows:
        print(f"error: no STDS results.json below {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0] / "sparsity"
    table = markdown_table(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table)
    plot(rows, out.with_suffix(".png"))
    print(table)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
