"""ASGL width sweep → Markdown table: test top-1 (mean ± std over seeds) of SG and ASGL per width.

    python src/train.py -m method=asgl,asgl_sg method.width=0.5,1,2.5,5,10 seed=0,1,2 ...
    python scripts/asgl_width_table.py outputs/train/multiruns/<date_time>

Reads every ``results.json`` under the multirun directory; the width comes from the run's own config.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import yaml


def collect(root: Path) -> dict[tuple[str, float], list[dict]]:
    runs: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for res in sorted(root.rglob("results.json")):
        cfg = yaml.safe_load((res.parent / ".hydra" / "config.yaml").read_text())
        r = json.loads(res.read_text())
        runs[(cfg["method"]["name"], float(cfg["method"]["width"]))].append(r)
    return runs


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.mean(values)
    sd = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {sd:.2f}"


def table(runs: dict[tuple[str, float], list[dict]]) -> str:
    widths = sorted({w for _, w in runs})
    lines = ["| width | SG (`asgl_sg`) | ASGL (`asgl`) | ASGL final width (mean) | seeds |", "|---|---|---|---|---|"]
    for w in widths:
        sg, asgl = runs.get(("asgl_sg", w), []), runs.get(("asgl", w), [])
        fw = [r["asgl"]["final_width_mean"] for r in asgl if r.get("asgl")]
        lines.append(
            f"| {w:g} | {fmt([r['test']['test/acc1'] for r in sg])} | {fmt([r['test']['test/acc1'] for r in asgl])} "
            f"| {statistics.mean(fw):.2f} | {len(sg)}/{len(asgl)} |" if fw else
            f"| {w:g} | {fmt([r['test']['test/acc1'] for r in sg])} | {fmt([r['test']['test/acc1'] for r in asgl])} "
            f"| – | {len(sg)}/{len(asgl)} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("multirun_dir", type=Path)
    args = ap.parse_args()
    print(table(collect(args.multirun_dir)))


if __name__ == "__main__":
    main()
