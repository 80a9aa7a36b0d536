"""Paper recipes (``conf/experiment/*.yaml``) as make targets.

    python scripts/repro.py list                 # table: make target, recipe, paper top-1, protocol, GPU budget
    python scripts/repro.py run sltt-cifar10 [overrides...]   # = python src/train.py experiment=sltt_cifar10 ...

``make repro-list`` and ``make repro-<method>-<dataset>[-<variant>]`` call this script. Every recipe
with a paper result runs the paper's evaluation protocol (``protocol=paper``: full training split,
test every epoch, best and last test accuracy: test-set selection); append ``protocol=clean`` for
validation-only selection.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "conf" / "experiment"
CACHE = ROOT / "outputs" / ".cache" / "repro-list.json"


def recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(EXPERIMENTS.glob("*.yaml"))}


# Rough budget where the paper reports none: GPU-hours ∝ epochs × training samples × T × forward GFLOPs
# of the ANN of the same graph, calibrated on the SLTT paper's BPTT timing (CIFAR-10, PreAct ResNet-18,
# T = 6, 200 epochs: 6.35 h, sltt.md Table 1). Good to a factor of ~2; it tells hours from weeks.
_GPU_H_PER_SAMPLE_STEP_GFLOP = 6.35 / (200 * 50_000 * 6 * 0.56)
_TRAIN_SAMPLES = {"cifar10": 50_000, "cifar100": 50_000, "cifar10_dvs": 9_000, "dvs_gesture": 1_176,
                  "imagenet": 1_281_167, "digits": 1_150}
_GFLOPS = {  # forward, one sample, one step, native input size
    "convnet": 0.005, "preact_spiking_resnet18": 0.56, "resnet18": 0.56, "resnet19": 2.2,
    "spiking_vgg11_bn": 0.7, "vggsnn": 0.6, "stds_cifarnet": 2.5, "sew_resnet18": 1.8, "sew_resnet34": 3.6,
    "sew_resnet50": 4.1, "spiking_resnet18": 1.8, "spiking_resnet34": 3.6, "nf_resnet34": 3.6,
    "nf_resnet50": 4.1, "nf_resnet101": 7.8, "preact_spiking_resnet18_imagenet": 1.8,
}


def _compose(name: str) -> Any:
    """The composed recipe (Hydra initialised once for all recipes: ``make repro-list`` stays fast)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3")
    # only method, model, data, trainer and T matter here: leave out the groups that are slow to compose
    return compose(config_name="train", overrides=[f"experiment={name}", *_LEAN])


_LEAN = ["~callbacks", "~logger", "hydra/job_logging=none", "hydra/hydra_logging=none"]


def estimate_gpu_hours(name: str) -> float | None:
    """Budget from the composed recipe (epochs, data, T, model); None when a piece is unknown."""
    cfg = _compose(name)
    gflops = _GFLOPS.get(cfg.model.name)
    samples = _TRAIN_SAMPLES.get(cfg.data.name)
    if gflops is None or samples is None:
        return None
    steps = cfg.T
    if cfg.method.name.startswith("sltt_k"):
        steps = cfg.T * (1 + 2 * cfg.method.get("K", cfg.T) / cfg.T) / 3  # no-grad steps cost ~1/3 of a step
    return cfg.trainer.max_epochs * samples * steps * gflops * _GPU_H_PER_SAMPLE_STEP_GFLOP


def _hours(h: float) -> str:
    return "<0.01" if h < 0.01 else f"{h:.2g}" if h < 10 else f"{h:,.0f}"


def describe(path: Path) -> dict[str, str]:
    cfg = OmegaConf.load(path)
    overrides = {}
    for entry in cfg.get("defaults", []) or []:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            for k, v in dict(entry).items():
                overrides[str(k).replace("override ", "").strip("/")] = str(v)
    expected = cfg.get("expected") or {}
    budget = expected.get("gpu_hours")
    if budget is not None:
        budget_text = f"{budget:.3g} GPU-h (paper)"
    else:
        est = estimate_gpu_hours(path.stem)
        budget_text = "–" if est is None else f"~{_hours(est)} GPU-h (est.)"
    return {
        "target": "repro-" + path.stem.replace("_", "-"),
        "recipe": path.stem,
        "method/model/data": "/".join(overrides.get(k, "–") for k in ("method", "model", "data")),
        "T": str(cfg.get("T", "–")),
        "paper top-1 %": "–" if expected.get("top1") is None else f"{expected['top1']}",
        "protocol": overrides.get("protocol", "clean"),
        "GPU budget": budget_text,
    }


def _cache_key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for p in sorted((ROOT / "conf").rglob("*.yaml")):
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def list_recipes(cache: Path | None = None) -> str:
    """The table; with ``cache`` (a JSON file) it is reused while ``conf/`` and this script are unchanged
    (composing every recipe for its budget takes seconds)."""
    key = _cache_key() if cache is not None else ""
    if cache is not None and cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            if saved.get("key") == key:
                return str(saved["table"])
        except (OSError, ValueError, KeyError):
            pass
    table = _table()
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"key": key, "table": table}))
        except OSError:
            pass  # a read-only checkout: no cache, same table
    return table


def _table() -> str:
    rows = [describe(p) for p in recipes().values()]
    if not rows:
        return "no recipes under conf/experiment/\n"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    lines += ["", PROTOCOL_NOTE]
    return "\n".join(lines) + "\n"


PROTOCOL_NOTE = (
    "protocol: paper = the paper's evaluation (full training split, test every epoch, best and last test accuracy "
    "reported: test-set selection), the default of every recipe with a paper result; add protocol=clean to a "
    "make target's ARGS for validation-only selection (docs/protocols.md)."
)


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
        print(list_recipes(cache=CACHE), end="")
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
