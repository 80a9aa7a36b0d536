"""Compose a config outside a Hydra app: the one helper for tests, scripts and the CLI's error hints.

Torch-free (Hydra and OmegaConf only, imported when composing: the config-folder search runs before the
dependencies are known to be installed). Hydra keeps global state; it is cleared before composing, so an
earlier app or composition in the same process does not leak into this one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig


def compose_config(config_dir: str | Path, overrides: Sequence[str] = (), config_name: str = "train",
                   return_hydra_config: bool = False) -> DictConfig:
    """``<config_dir>/<config_name>.yaml`` composed with ``overrides`` (command-line syntax);
    ``return_hydra_config`` keeps the ``hydra`` node (launcher, sweeper)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def checkout_root(package_dir: Path) -> Path | None:
    """The repository ``package_dir`` (``src/spikeforge``) runs from (``src/`` layout, editable install), if any."""
    root = package_dir.parents[1]
    return root if (root / "conf" / "train.yaml").is_file() and (root / "src" / "spikeforge").is_dir() else None


def config_dir_candidates(package_dir: Path) -> list[Path]:
    """Where ``conf/`` is looked for, in order: the checkout ``package_dir`` lives in, ``$SPIKEFORGE_ROOT/conf``,
    the copy shipped inside an installed wheel (``spikeforge/conf``)."""
    root, env_root = checkout_root(package_dir), os.environ.get("SPIKEFORGE_ROOT")
    candidates = [r / "conf" for r in (root, Path(env_root) if env_root else None) if r is not None]
    candidates.append(package_dir / "conf")
    return candidates


def find_config_dir(package_dir: Path) -> Path | None:
    """The first of :func:`config_dir_candidates` that holds ``train.yaml``, or None."""
    return next((c.resolve() for c in config_dir_candidates(package_dir) if (c / "train.yaml").is_file()), None)
