"""The one-way import layers of src/ (docs/architecture.md) and nothing hidden in a run's trainer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from spikeforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT / "scripts" / "check_layers.py"


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECKER), "--root", str(root)], capture_output=True, text=True,
                          timeout=120)


def test_layers_hold() -> None:
    """`make lint`'s layer check passes on this checkout: no upward import, no cycle."""
    out = _check(ROOT)
    assert out.returncode == 0, out.stderr
    assert "entry > application > library" in out.stdout


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text() + "\n\n" + code + "\n")


def test_checker_fails_on_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _append(root / "src/spikeforge/neurons/basic.py", "def _sneaky():\n    from spikeforge.run import train\n\n"
            "    return train")
    out = _check(root)
    assert out.returncode == 1
    assert "spikeforge.neurons.basic (library) imports spikeforge.run (application)" in out.stderr


def test_checker_fails_on_a_cycle(tmp_path: Path) -> None:
    root = _copy(tmp_path)  # registry imports errors; errors importing registry closes a cycle
    _append(root / "src/spikeforge/errors.py", "def _names():\n    from spikeforge import registry\n\n"
            "    return registry")
    out = _check(root)
    assert out.returncode == 1
    assert "import cycle:" in out.stderr and "spikeforge.errors" in out.stderr and "spikeforge.registry" in out.stderr


def test_checker_fails_on_a_module_in_no_layer(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    (root / "src/stray.py").write_text("import os\n")
    out = _check(root)
    assert out.returncode == 1 and "module stray is in no layer" in out.stderr


def _targets(node: DictConfig | None) -> set[str]:
    return {str(c["_target_"]) for c in (node or {}).values() if c is not None and "_target_" in c}


@pytest.mark.parametrize("protocol", ["clean", "paper"])
def test_every_spikeforge_callback_and_plugin_is_in_the_config(make_cfg, protocol: str) -> None:
    """What a run's trainer does is what `--cfg job` shows (Lightning's own defaults aside)."""
    from spikeforge.run import build_trainer

    cfg = make_cfg(f"protocol={protocol}", "data.val_fraction=0.0")
    trainer = build_trainer(cfg)
    declared = _targets(cfg.callbacks) | _targets(cfg.run_callbacks)
    ours = [type(c) for c in trainer.callbacks if type(c).__module__.startswith("spikeforge.")]
    assert ours, "the run has spikeforge callbacks"
    for cls in ours:
        assert any(_resolves_to(t, cls) for t in declared), f"{cls.__qualname__} is not in the composed config"
    assert (protocol == "paper") == any(type(c).__name__ == "EpochTestRecorder" for c in trainer.callbacks)
    checkpoint_io = type(trainer.strategy.checkpoint_io)
    assert any(_resolves_to(t, checkpoint_io) for t in _targets(cfg.trainer.plugins))
    # the first callback fixes where DDP reduces the epoch metrics
    assert type(trainer.callbacks[0]).__name__ == "EpochMetricsSync"


def _resolves_to(target: str, cls: type) -> bool:
    from hydra.utils import get_class

    return get_class(target) is cls


def test_removing_a_callback_from_the_config_removes_it(make_cfg) -> None:
    from spikeforge.run import build_trainer

    cfg = make_cfg("~run_callbacks.cost_monitor", "~run_callbacks.nonfinite_loss")
    names = {type(c).__name__ for c in build_trainer(cfg).callbacks}
    assert "CostMonitor" not in names and "NonFiniteLossGuard" not in names and "RNGStateCallback" in names


def test_exact_resume_callbacks_cannot_be_removed_while_checkpoints_are_written(make_cfg) -> None:
    from spikeforge.config_schema import validate

    with pytest.raises(ConfigError, match=r"^run_callbacks.rng_state cannot be removed while "
                                          r"run_callbacks.last_checkpoint writes checkpoints"):
        validate(make_cfg("~run_callbacks.rng_state"))
    # without checkpoints there is nothing to resume from: allowed
    cfg = make_cfg("~run_callbacks.rng_state", "~run_callbacks.epoch_accumulators",
                   "~run_callbacks.last_checkpoint", "~run_callbacks.preemption")
    validate(cfg)
    assert "rng_state" not in OmegaConf.to_container(cfg.run_callbacks)
