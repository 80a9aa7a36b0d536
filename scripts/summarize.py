"""Summarise a (multi)run directory into one Markdown and one CSV table.

    python scripts/summarize.py outputs/train/multiruns/<date>_<time> [--group-by method,model,data,T,method.width]

Columns: method, model, dataset, T (or the --group-by keys), test top-1 mean ± std over seeds, the
paper's top-1 (``expected.top1`` of the recipe), the evaluation protocol of the runs (``paper``:
test-set selection, with the last-epoch top-1; ``clean``: validation selection), train time per
epoch, the run's own peak memory, the peak bytes saved for backward in one training step, mean firing
rate, MACs, SynOps, dense operations and energy per sample, sparsity (STDS), and how many jobs succeeded/failed. Failed
jobs are listed, not fatal. Writes ``summary.md`` and ``summary.csv`` into the directory (or --out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from spikeforge.reporting import DEFAULT_GROUP_BY, collect_runs, summarize, to_csv, to_markdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="a multirun (or any) directory containing run directories")
    p.add_argument("--group-by", default=",".join(DEFAULT_GROUP_BY),
                   help="comma-separated results/config keys (dotted config paths allowed)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ROOT)")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a directory; pass a multirun directory under outputs/", file=sys.stderr)
        return 2
    runs = collect_runs(args.root)
    if not runs:
        print(f"error: no run directories (with .hydra/config.yaml) under {args.root}", file=sys.stderr)
        return 2
    group_by = [k for k in args.group_by.split(",") if k]
    rows = summarize(runs, group_by)
    out = args.out or args.root
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(rows, group_by, runs)
    (out / "summary.md").write_text(md)
    (out / "summary.csv").write_text(to_csv(rows, group_by))
    print(md)
    print(f"wrote {out / 'summary.md'} and {out / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
