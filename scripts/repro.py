"""Paper recipes (``conf/experiment/*.yaml``) as make targets.

    python scripts/repro.py list                 # table: make target, recipe, paper top-1, GPU budget
    python scripts/repro.py run sltt-cifar10 [overrides...]   # = python src/train.py experiment=sltt_cifar10 ...

``make repro-list`` and ``make repro-<method>-<dataset>[-<variant>]`` call this script.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "conf" / "experiment"


def recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(EXPERIMENTS.glob("*.yaml"))}


def describe(path: Path) -> dict[str, str]:
    cfg = OmegaConf.load(path)
    overrides = {}
    for entry in cfg.get("defaults", []) or []:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            for k, v in dict(entry).items():
                overrides[str(k).replace("override ", "").strip("/")] = str(v)
    expected = cfg.get("expected") or {}
    budget = expected.get("gpu_hours")
    return {
        "target": "repro-" + path.stem.replace("_", "-"),
        "recipe": path.stem,
        "method/model/data": "/".join(overrides.get(k, "–") for k in ("method", "model", "data")),
        "T": str(cfg.get("T", "–")),
        "paper top-1 %": "–" if expected.get("top1") is None else f"{expected['top1']}",
        "GPU budget": "–" if budget is None else f"~{budget} GPU-h",
    }


def list_recipes() -> str:
    rows = [describe(p) for p in recipes().values()]
    if not rows:
        return "no recipes under conf/experiment/\n"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines) + "\n"


def resolve(name: str) -> str:
    """``sltt-cifar10`` or ``sltt_cifar10`` → the recipe name; exits with a clear message if unknown."""
    key = name.replace("-", "_")
    if key not in recipes():
        print(f"error: no recipe {name!r}; run `make repro-list` for the available targets", file=sys.stderr)
        sys.exit(2)
    return key


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("list", "run"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "list":
        print(list_recipes(), end="")
        return 0
    if len(argv) < 2:
        print("error: name a recipe, e.g. `python scripts/repro.py run sltt-cifar10`", file=sys.stderr)
        return 2
    recipe = resolve(argv[1])
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), f"experiment={recipe}", *argv[2:]]
    print("+ " + " ".join(cmd[1:]), flush=True)
    os.execv(sys.executable, cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
