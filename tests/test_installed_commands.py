"""The installed commands run as the user runs them: ``spikeforge-train`` trains, ``spikeforge-eval``
evaluates and ``spikeforge-export`` exports, from an editable install (``pip install -e .``, what
``make install`` does) and from a wheel (``pip wheel``) installed into a fresh virtual environment.

Both environments are new virtual environments on this interpreter that reuse the running
environment's installed dependencies (a ``.pth`` line; nothing is downloaded) and hold their own
spikeforge: a copy of this checkout installed editable, and the wheel built from that copy. The
commands run in an empty folder, without ``PYTHONPATH`` or ``SPIKEFORGE_ROOT``, so only the
installed package can answer."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from infra_utils import TINY, run_cmd, tail

ROOT = Path(__file__).resolve().parents[1]
SHORT = [*TINY, "trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
         "++trainer.limit_test_batches=1"]
BUILD_TIMEOUT_S, RUN_TIMEOUT_S = 180, 240


def _bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def _new_venv(venv: Path) -> Path:
    """A virtual environment on this interpreter that sees the running environment's packages after
    its own (so a spikeforge installed into it comes first)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=BUILD_TIMEOUT_S)
    py = _bin(venv, "python")
    own = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    outer = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(own) / "spikeforge-test-deps.pth").write_text("".join(f"{p}\n" for p in outer))
    return py


def _pip(py: Path, *args: str, cwd: Path) -> None:
    # without build isolation when setuptools is here (no download); else pip fetches the build backend
    iso = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    r = run_cmd([str(py), "-m", "pip", *args[:1], "-q", "--no-deps", "--disable-pip-version-check", *iso,
                 *args[1:]], BUILD_TIMEOUT_S, cwd=cwd, env=_clean_env())
    assert r.returncode == 0, tail(r.stdout + r.stderr)


def _clean_env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPIKEFORGE_ROOT", "HYDRA_FULL_ERROR")}
    e["OMP_NUM_THREADS"] = "1"
    return e


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"editable": venv, "wheel": venv}, each with its own installed spikeforge."""
    base = tmp_path_factory.mktemp("installed")
    src = base / "checkout"  # a copy, so that building writes nothing into the repository
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    editable = _new_venv(base / "venv-editable")
    _pip(editable, "install", "-e", str(src), cwd=base)
    _pip(editable, "wheel", "-w", str(base / "dist"), str(src), cwd=base)
    wheels = sorted((base / "dist").glob("spikeforge-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = _new_venv(base / "venv-wheel")
    _pip(wheel, "install", "--ignore-installed", str(wheels[0]), cwd=base)
    return {"editable": base / "venv-editable", "wheel": base / "venv-wheel", "checkout": src}


def _where(venv: Path, cwd: Path) -> str:
    r = subprocess.run([str(_bin(venv, "python")), "-c", "import spikeforge; print(spikeforge.__file__)"], cwd=cwd,
                       env=_clean_env(), capture_output=True, text=True, timeout=60)
    return r.stdout.strip()


@pytest.mark.parametrize("kind", ["editable", "wheel"])
def test_installed_commands_train_eval_and_export(installs: dict[str, Path], kind: str, tmp_path: Path) -> None:
    venv = installs[kind]
    where = Path(_where(venv, tmp_path))
    expected = installs["checkout"] / "src" if kind == "editable" else venv
    assert expected in where.parents, f"spikeforge imported from {where}, not from the {kind} install"

    run = tmp_path / "run"
    r = run_cmd([str(_bin(venv, "spikeforge-train")), *SHORT, f"run_dir={run}"], RUN_TIMEOUT_S, cwd=tmp_path,
                env=_clean_env())
    assert r.returncode == 0, tail(r.stdout + r.stderr)
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 1 and results["global_steps"] == 2 and 0.0 <= results["test"]["test/acc1"] <= 1.0
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    # the other two commands on the checkpoint just written (one each per install keeps the test short)
    if kind == "editable":
        out = tmp_path / "eval"
        r = run_cmd([str(_bin(venv, "spikeforge-eval")), f"ckpt_path={ckpt}", f"hydra.run.dir={out}",
                     "++trainer.limit_test_batches=1"], RUN_TIMEOUT_S, cwd=tmp_path, env=_clean_env())
        assert r.returncode == 0, tail(r.stdout + r.stderr)
        assert (out / "eval_results.json").is_file(), tail(r.stdout + r.stderr)
    else:
        model = tmp_path / "model.pt"
        r = run_cmd([str(_bin(venv, "spikeforge-export")), f"ckpt_path={ckpt}", "format=torchscript",
                     f"output={model}", f"hydra.run.dir={tmp_path / 'export'}"], RUN_TIMEOUT_S, cwd=tmp_path,
                    env=_clean_env())
        assert r.returncode == 0, tail(r.stdout + r.stderr)
        assert model.is_file(), tail(r.stdout + r.stderr)
