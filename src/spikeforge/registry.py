"""One small registry type shared by neurons, norms, models and losses.

Builders are plain callables registered under a name. ``build`` forwards only the keyword
arguments a builder accepts, so factories can pass optional hints (``num_features``, ``alpha``)
that only some kinds use.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

from spikeforge.errors import ConfigError


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
