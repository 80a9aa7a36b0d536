"""Packaging metadata: Python >= 3.11, version ranges in pyproject.toml and exact pins in
requirements.txt (the lock) and environment.yml that agree, every third-party package the code imports
declared, LICENSE, console scripts; and the entry points compose configs without importing torch."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def declared() -> dict[str, Requirement]:
    """Every requirement of pyproject.toml (dependencies and extras), by canonical name."""
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra if not r.startswith(PROJECT["name"])]
    return {canonicalize_name(r.name): r for r in reqs}


def pins(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"{line!r} is not an exact pin"
        assert canonicalize_name(name) not in out, f"{name} pinned twice"
        out[canonicalize_name(name)] = version.strip()
    return out


def requirements_pins() -> dict[str, str]:
    return pins((ROOT / "requirements.txt").read_text().splitlines())


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_python_311_or_newer() -> None:
    spec = SpecifierSet(PROJECT["requires-python"])
    assert "3.10" not in spec and "3.11" in spec and "3.13" in spec
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert "python=3.11" in environment()["dependencies"]


def test_ranges_in_pyproject_pins_in_the_lock_and_they_agree() -> None:
    reqs, lock = declared(), requirements_pins()
    conda = pins(next(d for d in environment()["dependencies"] if isinstance(d, dict))["pip"])
    assert set(reqs) == set(lock), f"only in pyproject: {set(reqs) - set(lock)}; only in requirements.txt: " \
                                   f"{set(lock) - set(reqs)}"
    assert conda == lock, "environment.yml and requirements.txt pin different packages or versions"
    for name, req in reqs.items():
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{req}: a range belongs in pyproject"
        assert req.specifier, f"{req}: give a range"
        assert req.specifier.contains(lock[name], prereleases=True), f"pin {name}=={lock[name]} is outside {req}"


def _imported_modules(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_imported_package_is_declared() -> None:
    files = [p for d in ("src", "scripts", "tests") for p in (ROOT / d).rglob("*.py")]
    local = {p.stem for p in files} | {"spikeforge"}
    third_party = _imported_modules(files) - set(sys.stdlib_module_names) - local
    dists = importlib.metadata.packages_distributions()
    names = set(declared())
    missing = {m: dists.get(m) for m in third_party
               if not any(canonicalize_name(d) in names for d in dists.get(m, []))}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_license_urls_and_console_scripts() -> None:
    assert PROJECT["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 spikeforge contributors" in text
    assert {"Homepage", "Repository", "Issues"} <= set(PROJECT["urls"])
    assert PROJECT["scripts"] == {"spikeforge-train": "spikeforge.cli:train_entry",
                                  "spikeforge-eval": "spikeforge.cli:eval_entry"}
    assert {"wandb", "slurm", "optuna", "export", "dev"} <= set(PROJECT["optional-dependencies"])


CHECK_NO_TORCH = """
import json, runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = sorted(m for m in ("torch", "lightning", "spikingjelly", "torchvision") if m in sys.modules)
print("\\n" + json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize("argv", [
    ["src/train.py", "--cfg", "job"],
    ["src/train.py", "--help"],
    ["src/train.py", "method=sltt", "T=0"],            # an error found by validation
    ["src/train.py", "method=bptx"],                   # an unknown option (Hydra's composition error)
    ["src/eval.py", "--cfg", "job", "ckpt_path=x.ckpt", "data_overrides.batch_size=256"],
], ids=["cfg-job", "help", "validation-error", "unknown-option", "eval-cfg-job"])
def test_entry_points_answer_without_importing_torch(argv: list[str], tmp_path: Path) -> None:
    """--cfg job, --help and config errors compose and validate before any heavy import (speed itself
    is measured by benchmarks, not here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("HYDRA_FULL_ERROR", None)
    out = subprocess.run([sys.executable, "-c", CHECK_NO_TORCH, *argv, f"hydra.run.dir={tmp_path}/run"]
                         if argv[0].startswith("src/") and "--help" not in argv
                         else [sys.executable, "-c", CHECK_NO_TORCH, *argv],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    tail = (out.stdout + out.stderr)[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], tail
    if "T=0" in argv or "method=bptx" in argv:
        assert result["code"] == 2 and "error: " in out.stderr, tail
        assert not (tmp_path / "run").exists(), "a config error left a run directory"
    else:
        assert result["code"] in (0, None), tail


def test_repro_list_does_not_import_torch() -> None:
    """`make repro-list` composes recipes (for their budget) without torch: one recipe checked here."""
    code = ("import json, sys; sys.path.insert(0, 'scripts'); import repro; "
            "row = repro.describe(repro.recipes()['sltt_k_dvs_gesture']); "
            "print(json.dumps({'row': row, 'torch': 'torch' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                         capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "GPU-h" in result["row"]["GPU budget"] and not result["torch"], out.stderr[-2000:]
