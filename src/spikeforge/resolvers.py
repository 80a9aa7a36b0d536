"""OmegaConf resolvers used by ``conf/`` (registered on import of this module, which the Hydra
callback in ``conf/hydra/default.yaml`` and ``spikeforge.config_schema`` import before any run
directory is resolved)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def first_set(value: Any, fallback: Any) -> Any:
    """``${sf.or:${oc.select:run_dir,null},<default>}``: the value, or the fallback when unset."""
    return fallback if value in (None, "", "null") else value


if not OmegaConf.has_resolver("sf.or"):
    OmegaConf.register_new_resolver("sf.or", first_set)
