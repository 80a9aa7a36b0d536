"""Where a module's source lives, found without executing it or its packages (config validation reads
sources before torch is loaded).

The lookup asks every finder on ``sys.meta_path`` — the same finders ``import`` asks — so it sees what
``import`` sees: ``sys.path`` entries, and also the finder an editable install (``pip install -e .``)
registers, which no ``sys.path`` search can see.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec


def find_spec(module: str) -> ModuleSpec | None:
    """The spec of ``module`` (dotted name); its parent packages are searched, not imported."""
    path: list[str] | None = None
    spec: ModuleSpec | None = None
    parts = module.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        loaded = sys.modules.get(name)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else None
        if spec is None:
            spec = next((s for f in sys.meta_path if hasattr(f, "find_spec")
                         and (s := f.find_spec(name, path)) is not None), None)
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or [])
    return spec
