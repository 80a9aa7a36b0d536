"""Compose a config outside a Hydra app: the one helper for tests, scripts and the CLI's error hints.

Torch-free (Hydra and OmegaConf only). Hydra keeps global state; it is cleared before composing, so an
earlier app or composition in the same process does not leak into this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig


def compose_config(config_dir: str | Path, overrides: Sequence[str] = (), config_name: str = "train",
                   return_hydra_config: bool = False) -> DictConfig:
    """``<config_dir>/<config_name>.yaml`` composed with ``overrides`` (command-line syntax);
    ``return_hydra_config`` keeps the ``hydra`` node (launcher, sweeper)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
