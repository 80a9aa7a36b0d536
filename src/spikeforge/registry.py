"""One small registry type shared by neurons, norms, models and losses.

Builders are plain callables registered under a name. ``build`` forwards only the keyword
arguments a builder accepts, so factories can pass optional hints (``num_features``, ``alpha``)
that only some kinds use.

:func:`declared_names` reads the registered names from the source (``@register_x("name")`` or
``register_x("name")(cls)``) without importing it, so a config can be validated before torch loads;
tests check that it agrees with the registries.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spikeforge.errors import ConfigError
from spikeforge.sources import find_spec


class Registry:
    def __init__(self, what: str, package: str | None = None) -> None:
        self.what = what
        self.package = package  # sub-modules of this package are imported on first use
        self._builders: dict[str, Callable[..., Any]] = {}
        self._discovered = package is None

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders and self._builders[name] is not fn:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._builders[name] = fn
            return fn

        return deco

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)  # type: ignore[arg-type]
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._builders)

    def get(self, name: str) -> Callable[..., Any]:
        self._discover()
        if name not in self._builders:
            raise ConfigError(
                f"unknown {self.what} {name!r}; choose one of: {', '.join(self.names())}"
            )
        return self._builders[name]

    def build(self, name: str, *args: Any, hints: dict[str, Any] | None = None, **params: Any) -> Any:
        """Call builder ``name``; ``hints`` are passed only if the builder accepts them."""
        fn = self.get(name)
        if hints:
            accepted = _accepted_kwargs(fn)
            params.update({k: v for k, v in hints.items() if accepted is None or k in accepted})
        try:
            inspect.signature(fn).bind(*args, **params)
        except TypeError as e:
            raise ConfigError(f"bad parameters for {self.what} {name!r}: {e}") from None
        return fn(*args, **params)


def _accepted_kwargs(fn: Callable[..., Any]) -> set[str] | None:
    """Names ``fn`` accepts as keywords; None when it takes ``**kwargs``."""
    sig = inspect.signature(fn)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return set(sig.parameters)


def _source_files(module: str) -> list[Path]:
    """``module``'s file; for a package, its ``__init__`` and the sub-modules a registry discovers."""
    spec = find_spec(module)
    if spec is None or spec.origin is None:
        return []
    path = spec.submodule_search_locations
    files = [Path(spec.origin)]
    for folder in path or []:
        files += sorted(p for p in Path(folder).glob("*.py") if not p.name.startswith("_"))
    return files


def declared_names(module: str, register: str) -> list[str]:
    """Names registered in ``module`` (and, for a package, its sub-modules) by calls of ``register``
    (``"register_neuron"``, ``"LOSSES.register"``) with a string literal, read from the source."""
    names: set[str] = set()
    for file in _source_files(module):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == register and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
    return sorted(names)
