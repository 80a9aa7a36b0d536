"""Packaging metadata: Python >= 3.11, version ranges in pyproject.toml and exact pins in
requirements.txt (the lock) and environment.yml that agree, every third-party package the code imports
declared, LICENSE, URLs, extras and console scripts."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

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
                                  "spikeforge-eval": "spikeforge.cli:eval_entry",
                                  "spikeforge-export": "spikeforge.cli:export_entry"}
    assert {"wandb", "slurm", "optuna", "export", "dev"} <= set(PROJECT["optional-dependencies"])


def test_code_is_ruff_clean() -> None:
    """`make lint` (the rules in pyproject.toml) finds nothing in src, tests and scripts."""
    import subprocess

    ruff = Path(sys.executable).parent / "ruff"  # the pinned ruff of the dev extra, beside this Python
    r = subprocess.run([str(ruff), "check", "--quiet", "src", "tests", "scripts"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]
