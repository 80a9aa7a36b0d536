"""Shared test helpers: compose the project's Hydra configs into a temporary output directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

# `make test` runs the suite on two pytest-xdist workers: one torch thread each, and one for every run
# they launch (set before torch is imported), so that two workers never oversubscribe two cores
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))
torch.set_num_threads(1 if XDIST_WORKER else max(1, min(2, os.cpu_count() or 1)))


def compose_cfg(overrides: list[str] | None = None, output_dir: Path | None = None,
                config_name: str = "train", return_hydra_config: bool = False) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides``; ``paths.output_dir`` → ``output_dir``.
    ``return_hydra_config`` keeps the ``hydra`` node (launcher, sweeper: what ``hydra.*`` overrides set)."""
    from spikeforge.compose import compose_config

    cfg = compose_config(CONF, overrides or [], config_name, return_hydra_config=return_hydra_config)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir) if output_dir is not None else "/tmp/spikeforge-test"
        cfg.paths.log_dir = str(output_dir.parent) if output_dir is not None else "/tmp"
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """The shipped configuration (default callbacks and loggers) with ``overrides``, run in ``tmp_path``."""

    def _make(*overrides: str, name: str = "run") -> DictConfig:
        return compose_cfg(list(overrides), tmp_path / name)

    yield _make
    GlobalHydra.instance().clear()


# Backstop against hangs (pytest-timeout): a fast test fails after 15 min (the whole fast suite's
# budget), a slow one after an hour, unless it sets its own @pytest.mark.timeout. Tests that launch
# processes also time them out themselves (infra_utils.run_cmd) and report the processes' last lines.
FAST_TEST_TIMEOUT_S, SLOW_TEST_TIMEOUT_S = 900, 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is None:
            slow = item.get_closest_marker("slow") is not None
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S if slow else FAST_TEST_TIMEOUT_S))


def config_options(group: str) -> list[str]:
    """Every option of a config group (file names under conf/<group>/, nested folders included)."""
    base = CONF / group
    return sorted(str(p.relative_to(base).with_suffix("")) for p in base.rglob("*.yaml"))


# CIFAR augmentations off: what a test sees is the stored image, normalised
CIFAR_AUG_OFF = {"random_crop": False, "flip": False, "autoaugment": False}


def fake_cifar_root(factory: pytest.TempPathFactory, name: str, train_per_class: int, test_per_class: int,
                    seed: int = 0) -> Path:
    """A fresh ``<name>`` tree in torchvision's on-disk pickle format (``spikeforge.data.fakes``)."""
    from spikeforge.data.fakes import write_cifar

    root = factory.mktemp(name)
    write_cifar(root, name, train_per_class=train_per_class, test_per_class=test_per_class, seed=seed)
    return root
