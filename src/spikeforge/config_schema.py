"""Structured validation of a composed run config: one clear sentence per mistake.

Three layers, checked in this order before anything is built or written:

1. **Common schema**: dataclasses for the keys every run has (``T``, ``seed``, ``data.*``,
   ``method.optimizer.*``, ``trainer.*``, ``reliability.*``); they are registered in Hydra's
   ``ConfigStore`` under ``schema/*`` so they can also be used as Hydra defaults. Each field carries
   its constraint (``_Rule``), so the message names the key, the bad value and the valid range.
2. **Method keys**: the keys under ``method.`` are the keyword arguments of the ``_target_`` class's
   ``__init__`` (its own and, through ``**kwargs``, its base classes'), read from the source without
   importing it (:func:`method_keys_from_source`; validation runs before torch is loaded), so a new
   method needs no list; any other key (``+method.k=2``) is refused with the closest valid name. A
   method module that imports no torch may also register a dataclass with constraints for its keys
   (:func:`register_method_schema`).
3. **Generic method rules** by key name, so methods that have not registered a schema still get the
   common impossible values caught: ``K`` (1 ≤ K ≤ T), ``p`` and ``*_p`` (a probability in [0, 1]),
   ``D`` (≥ 0), ``width``/``alpha``/``surrogate_alpha``/``tau`` (> 0).

:func:`validate` raises :class:`spikeforge.errors.ConfigError`.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spikeforge import resolvers  # noqa: F401  (registers ${sf.or:...})
from spikeforge.errors import ConfigError
from spikeforge.sources import find_spec

# ---- constraints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """A numeric constraint: ``lo``/``hi`` bounds (open or closed), ``integer`` values only."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    hint: str = ""

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.lo is not None and self.hi is not None:
            lb, rb = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{kind} in {lb}{_fmt(self.lo)}, {_fmt(self.hi)}{rb}"
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {_fmt(self.hi)}"
        return kind

    def ok(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.integer and not float(v).is_integer():
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = _Rule(lo=0, lo_open=True)
NON_NEGATIVE = _Rule(lo=0)
POSITIVE_INT = _Rule(lo=1, integer=True)
NON_NEGATIVE_INT = _Rule(lo=0, integer=True)
PROBABILITY = _Rule(lo=0, hi=1)
FRACTION = _Rule(lo=0, hi=1, hi_open=True)


def rule(r: _Rule, default: Any = None, **kw: Any) -> Any:
    """A dataclass field carrying its constraint in ``metadata``."""
    return field(default=default, metadata={"rule": r, **kw})


# ---- common schema (conf/train.yaml keys every run has) -----------------------------------------


@dataclass
class DataSchema:
    name: str = "digits"
    num_classes: int = rule(POSITIVE_INT, 10)
    channels: int = rule(POSITIVE_INT, 3)
    batch_size: int = rule(POSITIVE_INT, 64)
    val_fraction: float = rule(FRACTION, 0.1)
    num_workers: int = rule(NON_NEGATIVE_INT, 0)


@dataclass
class OptimizerSchema:
    name: str = "sgd"
    lr: float = rule(POSITIVE, 0.1, hint="e.g. method.optimizer.lr=0.1")
    weight_decay: float = rule(NON_NEGATIVE, 0.0)
    momentum: float = rule(_Rule(lo=0, hi=1), 0.9)


_PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "bf16-true", "16-true", "64-true", "64",
               "transformer-engine")


@dataclass
class TrainerSchema:
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = rule(POSITIVE_INT, 1)
    precision: Any = "32-true"
    max_epochs: int = rule(_Rule(lo=-1, integer=True), 10)
    sync_batchnorm: bool = False


@dataclass
class ReliabilitySchema:
    checkpoint_every_n_steps: int = rule(NON_NEGATIVE_INT, 0)
    nonfinite_loss: str = "stop"
    handle_signals: bool = True
    requeue: bool = True


@dataclass
class RunSchema:
    T: int = rule(POSITIVE_INT, 4, hint="e.g. T=4")
    seed: int = rule(NON_NEGATIVE_INT, 42)


def _register_in_config_store() -> None:
    try:
        from hydra.core.config_store import ConfigStore
    except ImportError:  # pragma: no cover - hydra is a dependency
        return
    cs = ConfigStore.instance()
    for name, node in (
        ("data", DataSchema),
        ("optimizer", OptimizerSchema),
        ("trainer", TrainerSchema),
        ("reliability", ReliabilitySchema),
        ("run", RunSchema),
    ):
        cs.store(group="schema", name=name, node=node)


_register_in_config_store()

# ---- per-method schemas -------------------------------------------------------------------------

_METHOD_SCHEMAS: dict[str, type] = {}
_METHOD_CHECKS: dict[str, list[Callable[[DictConfig], None]]] = {}


def register_method_schema(name: str) -> Callable[[type], type]:
    """Class decorator: ``@register_method_schema("asgl")`` on a dataclass whose fields are the
    method's own top-level keys (``rule(...)`` fields carry constraints). Common keys (``_target_``,
    ``name``, ``T``, ``neuron``, ``norm``, ``loss``, ``optimizer``, ``scheduler``) need not be listed."""

    def deco(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"method schema for {name!r} must be a dataclass")
        _METHOD_SCHEMAS[name] = cls
        return cls

    return deco


def register_method_check(name: str) -> Callable[[Callable[[DictConfig], None]], Callable[[DictConfig], None]]:
    """Decorator for a free-form check ``fn(cfg)`` of method ``name`` over the whole run config
    (e.g. a method × model compatibility rule); it raises ``ConfigError`` with one sentence."""

    def deco(fn: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
        _METHOD_CHECKS.setdefault(name, []).append(fn)
        return fn

    return deco


_COMMON_METHOD_KEYS = {"_target_", "name", "T", "neuron", "norm", "loss", "optimizer", "scheduler"}

# generic rules by key name for method keys (see module docstring)
_NAME_RULES: dict[str, _Rule] = {
    "p": PROBABILITY,
    "D": NON_NEGATIVE,
    "width": POSITIVE,
    "alpha": POSITIVE,
    "surrogate_alpha": POSITIVE,
    "tau": POSITIVE,
    "v_threshold": POSITIVE,
    "v_threshold_grad_scale": POSITIVE,
}


def _name_rule(key: str) -> _Rule | None:
    if key in _NAME_RULES:
        return _NAME_RULES[key]
    if key.endswith("_p") or key.endswith("_prob"):
        return PROBABILITY
    if key.endswith("_width"):
        return POSITIVE
    return None


# ---- options of the paper recipes (checked before torch loads; the methods call the same functions) ----

CALIBRATION_SPLITS = ("train", "test")
GRAD_R_PARAMS = ("all", "theta")


def check_calibration_split(split: object, protocol: str | None = None) -> str:
    """DSR hybrid step 2 (``method.calibration_split``) reads ``train`` or, only under ``protocol=paper``
    (when ``protocol`` is known), the ``test`` set as DSR's ``imagenet/main.py`` does (its val_loader):
    ``protocol=clean`` promises that the test set never influences training."""
    if split not in CALIBRATION_SPLITS:
        raise ConfigError(f"method.calibration_split={split!r} is not valid; choose one of: "
                          f"{', '.join(CALIBRATION_SPLITS)}")
    if split == "test" and protocol is not None and protocol != "paper":
        raise ConfigError(f"method.calibration_split=test calibrates on the test set, which protocol={protocol} "
                          "keeps out of training; use calibration_split=train, or protocol=paper as DSR's code")
    return str(split)


def check_grad_r_params(value: object, alpha_gr: object) -> str:
    """STDS ``method.grad_r_params``: ``all`` (θ with the prior; BN, biases and excluded layers in a second
    group) or ``theta`` (only θ in the optimiser, as STDS's Grad R code), which needs ``alpha_gr`` > 0."""
    if value not in GRAD_R_PARAMS:
        raise ConfigError(f"method.grad_r_params={value!r} is not valid; choose one of: {', '.join(GRAD_R_PARAMS)}")
    if value == "theta" and isinstance(alpha_gr, (int, float)) and not isinstance(alpha_gr, bool) and alpha_gr <= 0:
        raise ConfigError("method.grad_r_params=theta keeps only θ in the Grad R optimiser and needs Grad R; "
                          "set method.alpha_gr > 0, or method.grad_r_params=all")
    return str(value)


def _check_dsr(cfg: DictConfig) -> None:
    check_calibration_split(OmegaConf.select(cfg, "method.calibration_split", default="train"),
                            str(OmegaConf.select(cfg, "protocol.name", default="clean")))


def _check_stds(cfg: DictConfig) -> None:
    check_grad_r_params(OmegaConf.select(cfg, "method.grad_r_params", default="all"),
                        OmegaConf.select(cfg, "method.alpha_gr", default=0.0))


for _name in ("dsr", "dsr_lif", "dsr_ann"):
    _METHOD_CHECKS.setdefault(_name, []).append(_check_dsr)
_METHOD_CHECKS.setdefault("stds", []).append(_check_stds)


# ---- validation ---------------------------------------------------------------------------------


def _check_value(path: str, value: Any, r: _Rule, hint: str = "") -> None:
    if value is None:
        return
    if not r.ok(value):
        fix = hint or r.hint or f"set {path}=<{r.describe()}>"
        raise ConfigError(f"{path} must be {r.describe()} (got {value!r}); {fix}")


def _check_dataclass(prefix: str, node: Any, schema: type, strict: bool) -> None:
    if not isinstance(node, dict):
        raise ConfigError(f"{prefix} must be a mapping of keys, got {node!r}")
    names = {f.name for f in dataclasses.fields(schema)}
    for f in dataclasses.fields(schema):
        if f.name in node and "rule" in f.metadata:
            _check_value(
                f"{prefix}.{f.name}" if prefix else f.name, node[f.name], f.metadata["rule"], f.metadata["rule"].hint
            )
    if strict:
        for key in node:
            if key not in names and key not in _COMMON_METHOD_KEYS:
                close = difflib.get_close_matches(key, sorted(names), n=1)
                tip = f"did you mean {prefix}.{close[0]}?" if close else f"valid keys: {', '.join(sorted(names))}"
                raise ConfigError(f"unknown key {prefix}.{key}; {tip}")


def check_data(data: dict[str, Any], prefix: str = "data") -> None:
    """The rules of the data settings (:class:`DataSchema`), as a training config gets them."""
    _check_dataclass(prefix, data, DataSchema, strict=False)


def _walk_name_rules(prefix: str, node: Any) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}.{k}"
            if isinstance(v, (dict, list)):
                _walk_name_rules(path, v)
                continue
            r = _name_rule(str(k))
            if r is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
                _check_value(path, v, r)


def module_file(module: str) -> str | None:
    """The source file of ``module`` (dotted name), found without executing it or its packages."""
    spec = find_spec(module)
    return None if spec is None else spec.origin


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for n in tree.body:
        if isinstance(n, (ast.ClassDef, ast.FunctionDef)):
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, ast.Assign):
            names.update(t.id for t in n.targets if isinstance(t, ast.Name))
    return names


def _parse(module: str) -> ast.Module | None:
    file = module_file(module)
    if file is None or not file.endswith(".py"):
        return None
    return ast.parse(Path(file).read_text(encoding="utf-8"))


def _class_chain(module: str, name: str, seen: set[str] | None = None) -> list[ast.ClassDef | None]:
    """``module.name`` and its base classes in method-resolution order, read from the source; a base
    outside this package (``LightningModule``) ends its branch as ``None``."""
    seen = set() if seen is None else seen
    tree = _parse(module) if module.startswith("spikeforge") else None
    if tree is None or f"{module}.{name}" in seen:
        return [None]
    seen.add(f"{module}.{name}")
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:  # imported into this module: follow the import
        src = next((n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module
                    and any((a.asname or a.name) == name for a in n.names)), None)
        real = next((a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names
                     if (a.asname or a.name) == name), name)
        return _class_chain(src, real, seen) if src else [None]
    chain: list[ast.ClassDef | None] = [cls]
    for base in cls.bases:
        chain += _class_chain(module, base.id, seen) if isinstance(base, ast.Name) else [None]
    return chain


def method_keys_from_source(target: str) -> set[str] | None:
    """Keyword arguments of ``target``'s ``__init__`` and, while an ``__init__`` passes ``**kwargs`` on,
    of its base classes' (up to a class outside spikeforge, e.g. ``LightningModule``), read from the
    source without importing it: validation runs before torch loads. None if the class does not exist."""
    if "." not in target:
        return None
    module, name = target.rsplit(".", 1)
    chain = _class_chain(module, name)
    if not chain or chain[0] is None:
        return None
    keys: set[str] = set()
    for cls in chain:
        if cls is None:
            break
        init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is None:
            continue
        keys |= {a.arg for a in [*init.args.args, *init.args.kwonlyargs] if a.arg != "self"}
        if init.args.kwarg is None:
            break
    return keys


# given by the run from the model and data configs (spikeforge.run.build_module), not by method.*
_RUN_SUPPLIED = {"model": "model.*", "num_classes": "data.num_classes", "in_channels": "data.channels",
                 "memory": "the memory group (memory=none|checkpoint|auto)"}


def method_keys(cls: type) -> set[str]:
    """Keyword arguments ``cls(...)`` accepts: its ``__init__``'s and, while an ``__init__`` passes
    ``**kwargs`` on, those of its base classes (up to ``LightningModule``). For an imported class (a
    method defined outside spikeforge); :func:`method_keys_from_source` reads spikeforge's own."""
    import lightning as L

    keys: set[str] = set()
    for klass in cls.__mro__:
        if klass is L.LightningModule or klass is object:
            break
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        keys |= {p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return keys


def closest(key: str, names: list[str]) -> str | None:
    """The valid name a misspelt ``key`` most likely meant (case-insensitive)."""
    lower = {n.lower(): n for n in names}
    if key.lower() in lower:
        return lower[key.lower()]
    match = difflib.get_close_matches(key.lower(), list(lower), n=1)
    return lower[match[0]] if match else None


def method_class(target: str | None) -> type | None:
    if not target or "." not in target:
        return None
    module, name = target.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name, None)
    return cls if isinstance(cls, type) else None


def check_method_keys(method: dict[str, Any]) -> None:
    """Every key under ``method.`` is an argument of its ``_target_`` class (see module docstring): read
    from the source for spikeforge's own classes (no torch import), else from the imported class."""
    target = method.get("_target_")
    keys = method_keys_from_source(target) if isinstance(target, str) else None
    if keys is None:
        cls = method_class(target)
        if cls is None:
            return
        keys = method_keys(cls)
    cls_name = str(target).rsplit(".", 1)[-1]
    valid = (keys | {"_target_", "name"}) - set(_RUN_SUPPLIED)
    for key in method:
        if key in _RUN_SUPPLIED:
            raise ConfigError(f"method.{key} is set by the run from {_RUN_SUPPLIED[key]}; remove method.{key} "
                              f"and set {_RUN_SUPPLIED[key]} instead")
        if key not in valid:
            near = closest(str(key), sorted(valid - {"_target_"}))
            tip = (f"did you mean method.{near}?" if near
                   else f"valid keys: {', '.join(sorted(valid - {'_target_'}))}")
            raise ConfigError(f"unknown key method.{key} for {cls_name} ({target}); {tip}")


def _check_target(target: str | None) -> None:
    """``method._target_`` names a class that exists. Checked on the source, not by importing it:
    validation runs before torch is loaded (per-method schemas and checks are therefore registered from
    modules that import no torch, e.g. this one; class signatures come from
    :func:`method_keys_from_source`)."""
    if not target or "." not in target:
        return
    module, cls = target.rsplit(".", 1)
    tree = _parse(module)
    if tree is None or cls not in _top_level_names(tree):
        raise ConfigError(f"method._target_ {target!r} does not exist; check the method config (conf/method/*.yaml)")


# registry-backed names a config chooses: (config key, module, registering call, what the registry calls it)
_REGISTERED = (
    ("method.neuron.kind", "spikeforge.neurons", "register_neuron", "neuron kind"),
    ("method.norm.kind", "spikeforge.layers", "register_norm", "norm kind"),
    ("method.loss.name", "spikeforge.losses", "LOSSES.register", "loss"),
    ("model.name", "spikeforge.models", "register_model", "model"),
)


def _check_registered(c: dict[str, Any]) -> None:
    """Neuron, norm, loss and model names exist (the same sentence as the registries' own, found before
    torch loads: :func:`spikeforge.registry.declared_names` reads them from the source)."""
    from spikeforge.registry import declared_names

    for key, module, register, what in _REGISTERED:
        node: Any = c
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str):
            continue
        names = declared_names(module, register)
        if names and node not in names:
            raise ConfigError(f"unknown {what} {node!r}; choose one of: {', '.join(names)}")


def check_accelerator(accelerator: str) -> None:
    """A GPU accelerator needs a GPU on this machine. torch is imported only for GPU accelerators, so
    CPU configs are still validated before it loads."""
    if accelerator not in ("gpu", "cuda", "mps"):
        return
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if (accelerator == "cuda" and not cuda) or (accelerator == "mps" and not mps) or not (cuda or mps):
        raise ConfigError(f"trainer.accelerator={accelerator} needs a GPU and torch sees none on this machine; "
                          "use trainer=cpu, or trainer=ddp_cpu for several CPU processes")


def validate(cfg: DictConfig) -> None:
    """Check a composed train config; raise :class:`ConfigError` naming the first mistake."""
    try:
        c = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # missing mandatory values, bad interpolations
        msg = str(e).splitlines()[0]
        raise ConfigError(
            f"the config cannot be resolved ({msg}); check the value you passed on the command line"
        ) from None
    assert isinstance(c, dict)
    T = c.get("T")
    if T is not None and not POSITIVE_INT.ok(T):
        raise ConfigError(f"T must be a positive number of time steps (got T={T}); e.g. T=4")
    _check_dataclass("", {k: c.get(k) for k in ("T", "seed") if k in c}, RunSchema, strict=False)
    threads = c.get("threads")
    if threads is not None and not POSITIVE_INT.ok(threads):
        raise ConfigError(f"threads must be a positive number of torch threads or null for torch's default "
                          f"(got threads={threads!r}); e.g. threads=2")
    if isinstance(c.get("data"), dict):
        _check_dataclass("data", c["data"], DataSchema, strict=False)
    if isinstance(c.get("trainer"), dict):
        tr = c["trainer"]
        _check_dataclass("trainer", tr, TrainerSchema, strict=False)
        prec = tr.get("precision")
        if prec is not None and str(prec) not in _PRECISIONS:
            raise ConfigError(
                f"trainer.precision={prec!r} is not a Lightning precision; "
                "choose one of 32-true, 16-mixed, bf16-mixed, bf16-true, 64-true"
            )
        check_accelerator(str(tr.get("accelerator", "cpu")))
        dev = tr.get("devices")
        if not (
            dev in ("auto", -1)
            or isinstance(dev, (list, tuple))
            or (isinstance(dev, int) and not isinstance(dev, bool) and dev >= 1)
            or (isinstance(dev, str) and dev.replace(",", "").isdigit())
        ):
            raise ConfigError(
                f"trainer.devices must be a positive count, a list of device ids or 'auto' "
                f"(got {dev!r}); e.g. trainer.devices=2"
            )
    rel = c.get("reliability")
    if isinstance(rel, dict):
        _check_dataclass("reliability", rel, ReliabilitySchema, strict=True)
        if rel.get("nonfinite_loss", "stop") not in ("stop", "skip"):
            raise ConfigError(
                f"reliability.nonfinite_loss must be 'stop' or 'skip' (got {rel.get('nonfinite_loss')!r})"
            )
    if c.get("energy") is not None:
        from spikeforge.utils.energy import energy_from_config

        if not isinstance(c["energy"], (dict, str)):
            raise ConfigError(f"energy must be a preset name or {{preset, e_mac_pj, e_ac_pj}} (got {c['energy']!r}); "
                              "e.g. energy.preset=int8")
        energy_from_config(c["energy"])
    resume = c.get("resume")
    if resume not in (None, False, "auto"):
        raise ConfigError(
            f"resume must be 'auto' or unset (got {resume!r}); to resume a run use "
            "resume=auto run_dir=<run dir> or ckpt_path=<file>"
        )
    check_run_callbacks(c)
    _check_registered(c)
    method = c.get("method")
    if isinstance(method, dict):
        name = method.get("name")
        _check_target(method.get("_target_"))
        check_method_keys(method)
        if isinstance(method.get("optimizer"), dict):
            _check_dataclass("method.optimizer", method["optimizer"], OptimizerSchema, strict=False)
        T = c.get("T")
        K = method.get("K")
        if K is not None and isinstance(T, int):
            _check_value("method.K", K, POSITIVE_INT)
            if K > T:
                raise ConfigError(
                    f"method.K={K} is larger than T={T}; K counts the time steps used for "
                    f"the backward pass, so choose 1 <= K <= T"
                )
        _walk_name_rules("method", method)
        if name in _METHOD_SCHEMAS:
            _check_dataclass("method", method, _METHOD_SCHEMAS[name], strict=True)
        for check in _METHOD_CHECKS.get(str(name), []):
            check(cfg)


# run_callbacks that make a resume from the written checkpoints exact, and those that write them
RESUME_STATE_CALLBACKS = ("rng_state", "epoch_accumulators")
CHECKPOINT_WRITERS = ("last_checkpoint", "preemption")


def check_run_callbacks(c: dict) -> None:
    """Exact resume needs its state callbacks while any spikeforge callback writes checkpoints."""
    run_cbs = c.get("run_callbacks")
    if not isinstance(run_cbs, dict):
        return
    writers = [n for n in CHECKPOINT_WRITERS if run_cbs.get(n)]
    missing = [n for n in RESUME_STATE_CALLBACKS if not run_cbs.get(n)]
    if writers and missing:
        raise ConfigError(
            f"run_callbacks.{missing[0]} cannot be removed while run_callbacks.{writers[0]} writes checkpoints: "
            f"a resume from them would not be exact; keep it, or remove "
            f"{' '.join('~run_callbacks.' + n for n in writers)} too"
        )
