"""Training-step benchmark: time and memory per step over method × model × T × batch, against the
ANN of the same graph and against a plain spikingjelly + torch loop of the same network.

    python scripts/bench.py                       # the default grid (small, for a 2-core CPU)
    python scripts/bench.py --quick               # one tiny configuration, its ANN and plain loop
    python scripts/bench.py --methods bptt sltt "sltt_k:K=1" --models preact_spiking_resnet18 \\
        --T 1 4 8 --batch 16 --out docs/benchmarks
    python scripts/bench.py --preset targets      # the grid the targets below are checked on

Each configuration runs in a fresh Python process (so that its peak RSS is its own) and measures,
after ``--warmup`` steps, the median wall time of ``--steps`` training steps (forward + backward +
optimiser step) and its memory:

- ``method``: the method's own LightningModule driven by a Lightning ``Trainer`` over one fixed
  synthetic batch (``training_step`` as in a real run: automatic optimisation, or SLTT's manual
  per-step loop; logging and LR schedule included; no data loading).
- ``ann``: the same method and model with ReLU in every neuron slot (``neuron.kind=relu``) at T = 1.
- ``plain``: the same network driven by a hand-written torch loop (no Lightning, no metrics):
  ``reset_net → net(x_seq) → loss → backward → step``, or for SLTT methods spikingjelly's own
  single-step ``SLTTLIFNode`` in a per-step forward/backward loop.
- ``stepwise``: the plain BPTT loop with the network in single-step mode, called T times (the
  "before" of batching stateless layers over ``[T·N, ...]``).
- ``compile``: the method with ``model.compile=true`` (``torch.compile`` of the network).
- ``paired``: ``method`` and ``plain`` steps alternating in one process (each timed alone), so that
  the framework-overhead ratio is not skewed by a load that changes between processes (shared
  machines); its overhead is the median of the per-step ratios; its memory figures are the method's
  plus a second copy of the network.

Memory (``spikeforge.utils.memory``, the same figures a run writes to ``results.json``): the peak of
the bytes saved for backward (``torch.autograd.graph.saved_tensors_hooks``, live bytes counted per
storage, in one extra step), the peak RSS of the configuration's own process (``VmHWM``) and, on
GPU, ``torch.cuda.max_memory_allocated``.

Outputs, under ``<out>/<UTC date>/``: ``bench.json`` (rows, machine, library versions, load
average, targets), ``bench.md`` (table and PASS/FAIL lines) and ``time_vs_T.png``/``memory_vs_T.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))

import torch  # noqa: E402

# memory figures: one implementation for runs (results.json) and benchmarks
from spikeforge.utils.memory import SavedBytesCounter, peak_host_memory_bytes  # noqa: E402

MB = 1e6
RESULT_TAG = "BENCH_RESULT "
VARIANTS = ("method", "ann", "plain", "stepwise", "compile", "paired")
# The SLTT figures of the issue are for the original SLTT code's CIFAR network, the pre-activation
# ResNet-18 (sltt.md "Networks and recipes"), which is `preact_spiking_resnet18` in this zoo.
SLTT_RESNET = "preact_spiking_resnet18"


# ---- memory ----------------------------------------------------------------------------------------
def current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# ---- configurations ----------------------------------------------------------------------------
def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    """``"sltt_k:K=1,seed=0"`` → ``("sltt_k", {"K": "1", "seed": "0"})``."""
    name, _, rest = spec.partition(":")
    overrides = dict(kv.split("=", 1) for kv in rest.split(",") if kv) if rest else {}
    return name, overrides


def method_label(spec: str) -> str:
    name, ov = parse_method(spec)
    return name + (f"({','.join(f'{k}={v}' for k, v in ov.items())})" if ov else "")


def compose_cfg(method: str, model: str, T: int, extra: Sequence[str] = ()) -> Any:
    """The run config of ``method`` (``name[:key=val,...]``) × ``model`` at ``T`` (data=digits gives
    10 classes and 3 channels; the bench feeds its own synthetic batch)."""
    from spikeforge.compose import compose_config

    name, method_overrides = parse_method(method)
    memory = method_overrides.pop("memory", None)  # "bptt:memory=checkpoint": the run's memory group
    overrides = [f"method={name}", f"model={model}", f"T={T}", "data=digits",
                 *(f"method.{k}={v}" for k, v in method_overrides.items()), *extra,
                 *([f"memory={memory}"] if memory else [])]
    return compose_config(ROOT / "conf", overrides)


def build_module(cfg: Any) -> Any:
    from spikeforge.run import build_module as _build

    return _build(cfg)


def synthetic_batch(batch: int, channels: int, size: int, num_classes: int, T: int, events: bool,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A static image batch ``[N, C, H, W]`` (or event frames ``[N, T, C, H, W]``) and labels."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, T, channels, size, size) if events else (batch, channels, size, size)
    x = torch.rand(shape, generator=g)
    if events:
        x = (x > 0.8).float()
    y = torch.randint(0, num_classes, (batch,), generator=g)
    return x, y


def is_online(module: Any) -> bool:
    """Methods trained by a per-step loop with manual optimisation (SLTT, SLTT-K)."""
    return not module.automatic_optimization and hasattr(module, "draw_grad_steps")


# ---- timing: the method's LightningModule ------------------------------------------------------
class RepeatedBatch:
    """An iterable of ``n`` copies of one batch (a train loader without data-loading cost)."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        return iter([self.batch] * self.n)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_lightning(module: Any, x: torch.Tensor, y: torch.Tensor, warmup: int, steps: int,
                   device: torch.device, count_saved: bool = True, paired: Any = None) -> dict[str, Any]:
    """Drive ``module`` with a Lightning Trainer for ``warmup`` untimed and ``steps`` timed batches;
    the saved-bytes counter runs during the first (untimed) batch, so its hooks never touch a timed
    step (one extra batch when ``warmup`` is 0). ``paired``: a plain-loop step function run after
    every batch, timed alone (``plain_step_s_all``), so that both loops see the same machine load.
    Returns per-step times and memory figures."""
    import lightning as L

    times: list[float] = []
    warm: list[float] = []  # warm-up steps (the first one includes torch.compile's compilation)
    plain_times: list[float] = []
    warmup = max(warmup, 1 if count_saved else 0)
    total = warmup + steps
    counter = SavedBytesCounter(module.parameters()) if count_saved else None

    class Timer(L.Callback):
        t0 = 0.0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if counter is not None and batch_idx == 0:
                counter.__enter__()
            if device.type == "cuda" and batch_idx == warmup:
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            _sync(device)
            dt = time.perf_counter() - self.t0
            if counter is not None and batch_idx == 0:
                counter.__exit__(None, None, None)
            (times if batch_idx >= warmup else warm).append(dt)
            if paired is not None:
                _sync(device)
                t0 = time.perf_counter()
                paired()
                _sync(device)
                if batch_idx >= warmup:
                    plain_times.append(time.perf_counter() - t0)

    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_steps=total, max_epochs=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[Timer()],
    )
    trainer.fit(module, train_dataloaders=RepeatedBatch((x, y), total))
    out = {**_memory_figures(times, counter, device), "warmup_s_all": warm}
    if paired is not None:
        out["plain_step_s"] = statistics.median(plain_times) if plain_times else None
        out["plain_step_s_all"] = plain_times
    return out


def _memory_figures(times: list[float], counter: SavedBytesCounter | None, device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {"step_s": statistics.median(times) if times else None, "step_s_all": times}
    if counter is not None:
        out["saved_bytes_peak"] = counter.peak
        out["saved_param_bytes_at_peak"] = counter.peak_param_bytes
    if device.type == "cuda":
        out["gpu_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    return out


# ---- timing: a plain spikingjelly + torch loop --------------------------------------------------
def plain_network(module: Any) -> torch.nn.Module:
    """The method's network for the plain loop. SLTT methods get spikingjelly's own ``SLTTLIFNode``
    (single-step, every argument explicit) in place of ``sltt_lif``; others keep their network."""
    if not is_online(module):
        return module.net
    from spikingjelly.activation_based import functional, neuron

    from spikeforge.models import build_model
    from spikeforge.neurons.surrogates import build_surrogate

    p = dict(module.hparams.neuron)
    kind = p.pop("kind")
    if kind != "sltt_lif":
        return module.net

    def sj_sltt(num_features: int | None = None, **_: Any) -> torch.nn.Module:
        return neuron.SLTTLIFNode(
            tau=p.get("tau", 1.1), decay_input=p.get("decay_input", False), v_threshold=p.get("v_threshold", 1.0),
            v_reset=p.get("v_reset"), surrogate_function=build_surrogate(p.get("surrogate", "triangle"),
                                                                           p.get("surrogate_alpha")),
            detach_reset=p.get("detach_reset", False), step_mode="s")

    cfg = dict(module.hparams.model)
    name = cfg.pop("name")
    cfg.pop("compile", None)
    cfg.pop("channels_last", None)
    net = build_model(name, num_classes=module.hparams.num_classes, in_channels=module.hparams.in_channels,
                      neuron=sj_sltt, norm=module.norm_factory(), **cfg)
    net.load_state_dict(module.net.state_dict(), strict=False)
    functional.set_step_mode(net, "s")
    return net


def plain_step_fn(module: Any, x: torch.Tensor, y: torch.Tensor, device: torch.device, stepwise: bool = False,
                  own_copy: bool = False) -> tuple[Any, torch.nn.Module]:
    """One step of a hand-written training loop over the same network, loss and optimiser settings:
    ``(step, net)``; ``own_copy`` trains a copy of the network (leaves ``module.net`` alone)."""
    import copy

    from spikingjelly.activation_based import functional

    from spikeforge.methods.optim import build_optimizer

    net = plain_network(module)
    if own_copy and net is module.net:
        functional.reset_net(net)
        net = copy.deepcopy(net)
    net = net.to(device)
    net.train()
    criterion, T = module.criterion, module.T
    opt = build_optimizer([{"params": [p for p in net.parameters() if p.requires_grad]}],
                          dict(module.hparams.optimizer))
    x, y = x.to(device), y.to(device)
    online = is_online(module)
    K = getattr(module, "K", T)
    static_net = getattr(net, "static_input", False)

    def x_seq() -> torch.Tensor:
        if x.dim() == 5:
            return x.transpose(0, 1)
        return x if static_net else x.unsqueeze(0).expand(T, *x.shape)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        functional.reset_net(net)
        if online:  # sltt.md "The SLTT cut": per step forward, loss/T, backward; one optimiser step
            grad = set(torch.randperm(T)[:K].tolist()) if K < T else set(range(T))
            for t in range(T):
                x_t = x[:, t] if x.dim() == 5 else x
                if t in grad:
                    (criterion(net(x_t), y) / T).backward()
                else:
                    with torch.no_grad():
                        net(x_t)
        elif stepwise:
            functional.set_step_mode(net, "s")
            xs = x_seq()
            out = torch.stack([net(xs[t]) for t in range(T)])
            criterion(out, y).backward()
        else:
            criterion(net(x_seq()), y).backward()
        opt.step()
        functional.reset_net(net)
        if stepwise:
            functional.set_step_mode(net, "m")

    return step, net


def time_plain(module: Any, x: torch.Tensor, y: torch.Tensor, warmup: int, steps: int, device: torch.device,
               stepwise: bool = False, count_saved: bool = True) -> dict[str, Any]:
    """Time the plain loop of :func:`plain_step_fn` (the first, untimed step under the counter)."""
    step, net = plain_step_fn(module, x, y, device, stepwise)
    times: list[float] = []
    counter = SavedBytesCounter(net.parameters()) if count_saved else None
    warmup = max(warmup, 1 if count_saved else 0)
    for i in range(warmup + steps):
        if device.type == "cuda" and i == warmup:
            torch.cuda.reset_peak_memory_stats(device)
        if i == 0 and counter is not None:  # the first, untimed step runs under the saved-bytes counter
            with counter:
                step()
            continue
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return _memory_figures(times, counter, device)


# ---- one configuration (runs in a worker process) ----------------------------------------------
def run_config(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration: ``spec`` has method, model, T, batch, variant, image_size, warmup,
    steps, device, channels_last, seed."""
    variant = spec["variant"]
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    import lightning as L

    L.seed_everything(spec.get("seed", 0), workers=False, verbose=False)
    device = torch.device(spec.get("device", "cpu"))
    T = 1 if variant == "ann" else int(spec["T"])
    cfg, module, ann_trainer = variant_module(spec["method"], spec["model"], T, variant)
    events = bool(spec.get("events", False))
    x, y = synthetic_batch(int(spec["batch"]), int(cfg.data.channels), int(spec.get("image_size", 32)),
                           int(cfg.data.num_classes), T, events)
    if spec.get("channels_last") and device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    rss_setup = current_rss_bytes()
    return _measure(spec, variant, device, cfg, module, ann_trainer, x, y, T, rss_setup)


def variant_module(method_spec: str, model: str, T: int, variant: str) -> tuple[Any, Any, str | None]:
    """``(cfg, module, ann_trainer)`` for one variant: ``ann`` puts ReLU in every neuron slot (keys
    that read the neuron's settings keep their values); ``compile`` sets ``model.compile=true``."""
    from omegaconf import OmegaConf, open_dict

    extra = ["model.compile=true"] if variant == "compile" else []
    cfg = compose_cfg(method_spec, model, T, extra)
    if variant == "ann":  # ReLU in every neuron slot; other keys that read the neuron's settings keep them
        method = OmegaConf.to_container(cfg.method, resolve=True)
        method["neuron"] = {"kind": "relu"}
        with open_dict(cfg):
            cfg.method = OmegaConf.create(method)
    ann_trainer = None
    try:
        module = build_module(cfg)
    except Exception as e:
        from spikeforge.errors import user_error_in

        if variant != "ann" or user_error_in(e) is None:
            raise
        # a method that only accepts its own neuron (ASGL): the ANN is trained by the base class with
        # the method's norm, loss and optimiser
        with open_dict(cfg):
            cfg.method["_target_"] = "spikeforge.methods.base.SpikingClassifier"
        module, ann_trainer = build_module(cfg), "base (the method refuses relu)"
    return cfg, module, ann_trainer


def _measure(spec: dict[str, Any], variant: str, device: torch.device, cfg: Any, module: Any,
             ann_trainer: str | None, x: torch.Tensor, y: torch.Tensor, T: int, rss_setup: int | None
             ) -> dict[str, Any]:
    t0 = time.perf_counter()
    if variant in ("plain", "stepwise"):
        figures = time_plain(module, x, y, spec["warmup"], spec["steps"], device, stepwise=variant == "stepwise")
    elif variant == "paired":
        step, _ = plain_step_fn(module, x, y, device, own_copy=True)
        figures = time_lightning(module, x, y, spec["warmup"], spec["steps"], device, paired=step)
    else:
        figures = time_lightning(module, x, y, spec["warmup"], spec["steps"], device)
    return {
        **{k: spec[k] for k in ("method", "model", "batch", "variant")},
        "method_label": method_label(spec["method"]),
        "T": T,
        "image_size": int(spec.get("image_size", 32)),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "K": getattr(module, "K", None),
        **({"ann_trainer": ann_trainer} if ann_trainer else {}),
        "parameters": sum(p.numel() for p in module.net.parameters()),
        "param_bytes": sum(p.numel() * p.element_size() for p in module.net.parameters()),
        **figures,
        "rss_setup_bytes": rss_setup,
        "rss_peak_bytes": peak_host_memory_bytes()[0],
        "measure_wall_s": time.perf_counter() - t0,
    }


def run_in_subprocess(spec: dict[str, Any], threads: int, timeout: float) -> dict[str, Any]:
    """``run_config(spec)`` in a fresh interpreter (its own peak RSS); an error becomes a row."""
    # OMP_WAIT_POLICY=PASSIVE: on a shared (loaded) CPU, spinning OpenMP workers slow a 2-thread
    # step down by 10-50x; with idle cores it costs nothing measurable.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec), "--threads", str(threads)]
    start = time.perf_counter()
    try:  # in a scratch folder: files a method writes into the working directory are not kept
        with tempfile.TemporaryDirectory(prefix="spikeforge-bench-") as scratch:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=scratch)
    except subprocess.TimeoutExpired:
        return {**spec, "method_label": method_label(spec["method"]), "error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            row = json.loads(line[len(RESULT_TAG):])
            row["process_wall_s"] = time.perf_counter() - start
            return row
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {**spec, "method_label": method_label(spec["method"]), "error": f"exit {proc.returncode}: {tail[0]}"}


# ---- grid --------------------------------------------------------------------------------------
def build_grid(methods: Sequence[str], models: Sequence[str], Ts: Sequence[int], batches: Sequence[int],
               variants: Sequence[str], plain_T: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Configurations: every method × model × T × batch for ``method`` (and ``compile``), the ANN once
    per method × model × batch, ``plain``/``stepwise`` at the T values in ``plain_T`` (all if None)."""
    grid: list[dict[str, Any]] = []
    for method in methods:
        for model in models:
            for batch in batches:
                if "ann" in variants:
                    grid.append({"method": method, "model": model, "T": 1, "batch": batch, "variant": "ann"})
                for T in Ts:
                    for v in variants:
                        if v == "ann":
                            continue
                        if v in ("plain", "stepwise") and plain_T is not None and T not in plain_T:
                            continue
                        grid.append({"method": method, "model": model, "T": T, "batch": batch, "variant": v})
    return grid


# Predefined grids: lists of runs; a run's keys default to the preset's, the CLI overrides both.
_FAST_PATH = {"methods": ["bptt"], "models": ["convnet"], "T": [1, 4, 8], "batch": [32],
              "variants": ["method", "ann", "plain", "stepwise"], "warmup": 2, "steps": 4, "image_size": 32}
# torch.compile (model.compile=true): the first warm-up step compiles (minutes on a small CPU)
_COMPILE = {**_FAST_PATH, "T": [4], "variants": ["compile"]}
_PAIRED = {**_FAST_PATH, "T": [4], "variants": ["paired"]}
# The figures: SLTT's CIFAR network, batch 16, 32×32, fp32 (sltt.md "Networks and recipes").
_TARGETS = [
    # SLTT: saved bytes flat in T; step against the plain spikingjelly per-step loop and the ANN (T = 6)
    {"methods": ["sltt"], "T": [1, 6, 8], "variants": ["method"]},
    {"methods": ["sltt"], "T": [6], "variants": ["ann", "plain", "paired"]},
    {"methods": ["sltt_k:K=1"], "T": [8], "variants": ["method"]},
    # the paper's BPTT baseline (the same LIF without the cut, per-step BN, TET loss)
    {"methods": ["bptt_sltt"], "T": [4, 8], "variants": ["method"]},
    {"methods": ["bptt_sltt"], "T": [4], "variants": ["ann", "plain", "paired"]},
]
# the SLTT paper's BPTT baseline under each memory mode (README "Memory")
_MEMORY_MODES = [f"bptt_sltt:memory={m}" for m in ("none", "checkpoint", "auto")]
_TARGET_KEYS = {"models": [SLTT_RESNET], "batch": [16], "warmup": 1, "steps": 2, "image_size": 32}
PRESETS: dict[str, list[dict[str, Any]]] = {
    "quick": [{"methods": ["bptt"], "models": ["convnet"], "T": [2], "batch": [4],
               "variants": ["method", "ann", "plain"], "warmup": 1, "steps": 2, "image_size": 16}],
    "default": [_FAST_PATH, _PAIRED],
    "targets": [{**_TARGET_KEYS, **run} for run in _TARGETS],
    # every method of conf/method/ on convnet: step, ANN ratio and framework overhead (paired)
    "methods": [{**_FAST_PATH, "methods": sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")),
                 "T": [4], "variants": ["ann", "paired"], "steps": 3}],
    "all": [_FAST_PATH, _PAIRED, _COMPILE, *({**_TARGET_KEYS, **run} for run in _TARGETS)],
    # memory=none | checkpoint | auto against SLTT: saved-for-backward bytes, peak RSS and step time vs T
    "memory": [{**_TARGET_KEYS, "methods": [*_MEMORY_MODES, "sltt"], "T": [1, 2, 4, 6, 8], "variants": ["method"]},
               {**_TARGET_KEYS, "models": ["convnet"], "methods": [*_MEMORY_MODES, "sltt"],
                "T": [1, 2, 4, 6, 8], "variants": ["method"]}],
}


# ---- derived figures and targets ---------------------------------------------------------------
def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return r.get("method_label", r["method"]), r["model"], r["batch"]


def paired_overhead(row: dict[str, Any]) -> float:
    """Median over steps of (our step / the plain step timed right after it): each ratio compares two
    steps under the same machine load, which the ratio of two medians does not."""
    pairs = list(zip(row.get("step_s_all") or [], row.get("plain_step_s_all") or [], strict=False))
    if not pairs:
        return row["step_s"] / row["plain_step_s"]
    return statistics.median(ours / plain for ours, plain in pairs)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``ann_ratio`` = step / (T × ANN step); ``overhead`` = step / plain-loop step (same T);
    ``batched_speedup`` = stepwise / plain step."""
    ok = [r for r in rows if not r.get("error") and r.get("step_s")]
    ann = {_key(r): r["step_s"] for r in ok if r["variant"] == "ann"}
    plain = {(*_key(r), r["T"]): r["step_s"] for r in ok if r["variant"] == "plain"}
    stepwise = {(*_key(r), r["T"]): r["step_s"] for r in ok if r["variant"] == "stepwise"}
    for r in ok:
        if r["variant"] in ("method", "compile", "paired") and _key(r) in ann:
            r["ann_ratio"] = r["step_s"] / (r["T"] * ann[_key(r)])
        if r["variant"] in ("method", "compile") and (*_key(r), r["T"]) in plain:
            r["overhead"] = r["step_s"] / plain[(*_key(r), r["T"])]
        if r["variant"] == "paired" and r.get("plain_step_s"):
            r["overhead"] = paired_overhead(r)
        if r["variant"] == "plain" and (*_key(r), r["T"]) in stepwise:
            r["batched_speedup"] = stepwise[(*_key(r), r["T"])] / r["step_s"]


def _find(rows: list[dict[str, Any]], **kw: Any) -> dict[str, Any] | None:
    for r in rows:
        if not r.get("error") and all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def _target(name: str, value: float | None, limit: float | None, unit: str = "") -> dict[str, Any]:
    if value is None or limit is None:
        return {"target": name, "status": "NOT MEASURED", "value": None, "limit": limit}
    return {"target": name, "status": "PASS" if value <= limit else "FAIL", "value": value, "limit": limit,
            "unit": unit}


def evaluate_targets(rows: list[dict[str, Any]], model: str = SLTT_RESNET, batch: int = 16) -> list[dict[str, Any]]:
    """The issue's PASS/FAIL lines (ratios within this run)."""
    def get(label: str, T: int, variant: str = "method") -> dict[str, Any] | None:
        return _find(rows, method_label=label, model=model, batch=batch, T=T, variant=variant)

    def val(r: dict[str, Any] | None, k: str) -> float | None:
        return None if r is None else r.get(k)

    out = []
    s1, s8 = get("sltt", 1), get("sltt", 8)
    out.append(_target(f"SLTT saved bytes T=8 <= 1.1 x T=1 ({model}, batch {batch})",
                       val(s8, "saved_bytes_peak"), None if s1 is None else 1.1 * s1["saved_bytes_peak"], "B"))
    k1 = get("sltt_k(K=1)", 8)
    bptt8 = get("bptt_sltt", 8) or get("bptt", 8)
    out.append(_target("SLTT-K (K=1, T=8) step <= 0.6 x BPTT step", val(k1, "step_s"),
                       None if bptt8 is None else 0.6 * bptt8["step_s"], "s"))
    for label in ("bptt", "bptt_sltt"):
        b4 = get(label, 4)
        if b4 is not None or label == "bptt_sltt":
            out.append(_target(f"{label}: step <= 1.3 x T x ANN step (T=4)", val(b4, "ann_ratio"), 1.3))
    def overhead_row(label: str, T: int | None = None) -> dict[str, Any] | None:
        """The overhead figure of ``label``: the target model first, the paired measurement first."""
        rs = [r for r in rows if not r.get("error") and r.get("method_label") == label
              and r["variant"] in ("paired", "method") and r.get("overhead") is not None and T in (None, r["T"])]
        rs.sort(key=lambda r: (r["model"] != model, r["variant"] != "paired"))
        return rs[0] if rs else None

    def where(r: dict[str, Any] | None) -> str:
        return f" (T={r['T']}, {r['model']}, {r['variant']})" if r else ""

    for label in ("bptt", "bptt_sltt"):
        b = overhead_row(label)
        if b is not None or label == "bptt_sltt":
            out.append(_target(f"{label}: step <= 1.05 x plain spikingjelly loop{where(b)}", val(b, "overhead"), 1.05))
    s6 = get("sltt", 6)
    out.append(_target("SLTT saved bytes <= 152 MB (T=6, batch 16, fp32)",
                       None if s6 is None else s6["saved_bytes_peak"] / MB, 152.0, "MB"))
    o6 = overhead_row("sltt", 6)
    out.append(_target(f"SLTT step within 5% of the plain spikingjelly loop{where(o6) or ' (T=6)'}",
                       val(o6, "overhead"), 1.05))
    # memory=checkpoint against memory=none (the SLTT paper's BPTT baseline, T = 6)
    none6, ck6 = get("bptt_sltt(memory=none)", 6), get("bptt_sltt(memory=checkpoint)", 6)
    out.append(_target("memory=checkpoint saved bytes <= 0.5 x memory=none (T=6)", val(ck6, "saved_bytes_peak"),
                       None if none6 is None else 0.5 * none6["saved_bytes_peak"], "B"))
    out.append(_target("memory=checkpoint step <= 1.3 x memory=none step (T=6)", val(ck6, "step_s"),
                       None if none6 is None else 1.3 * none6["step_s"], "s"))
    return out


# ---- outputs -----------------------------------------------------------------------------------
def machine_info(threads: int) -> dict[str, Any]:
    import lightning
    import spikingjelly

    try:
        import importlib.metadata as md

        sj_version = md.version("spikingjelly")
    except Exception:
        sj_version = getattr(spikingjelly, "__version__", None)
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
        "threads": threads, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
        "spikingjelly": sj_version, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def _fmt(v: Any, scale: float = 1.0, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v / scale:.{digits}f}" if isinstance(v, (int, float)) else str(v)


def markdown_report(report: dict[str, Any]) -> str:
    """The Markdown table of all rows, then the PASS/FAIL lines and the machine."""
    m = report["machine"]
    lines = [f"# Training-step benchmark ({m['date_utc']})", "",
             f"{m['cpu']} · {m['threads']} threads · load average at start/end "
             f"{_fmt_load(report.get('load_start'))} / {_fmt_load(report.get('load_end'))} · "
             f"torch {m['torch']}, lightning {m['lightning']}, spikingjelly {m['spikingjelly']}, "
             f"python {m['python']} · commit {m.get('git_commit') or '–'}", "",
             f"`{report.get('command', '')}`", "",
             "| method | model | variant | T | batch | step (s) | ANN ratio | overhead | saved MB (params) "
             "| peak RSS MB | GPU peak MB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        if r.get("error"):
            lines.append(f"| {r.get('method_label', r['method'])} | {r['model']} | {r['variant']} | {r['T']} | "
                         f"{r['batch']} | error: {r['error']} | | | | | |")
            continue
        saved = (f"{_fmt(r.get('saved_bytes_peak'), MB, 1)} ({_fmt(r.get('saved_param_bytes_at_peak'), MB, 1)})"
                 if r.get("saved_bytes_peak") is not None else "–")
        lines.append(
            f"| {r['method_label']} | {r['model']} | {r['variant']} | {r['T']} | {r['batch']} | "
            f"{_fmt(r.get('step_s'))} | {_fmt(r.get('ann_ratio'), digits=2)} | {_fmt(r.get('overhead'), digits=3)} | "
            f"{saved} | {_fmt(r.get('rss_peak_bytes'), MB, 0)} | {_fmt(r.get('gpu_peak_bytes'), MB, 0)} |")
    lines += ["", "ANN ratio = step / (T × step of the same graph with ReLU neurons at T = 1); overhead = step / "
              "step of the plain spikingjelly + torch loop at the same T (paired: the median of per-step ratios); "
              "saved MB = peak bytes saved for "
              "backward (in brackets: parameters among them); peak RSS of the configuration's own process.", ""]
    if report.get("targets"):
        lines += ["## Targets", ""]
        for t in report["targets"]:
            if t["value"] is None:
                lines.append(f"- {t['status']}: {t['target']}")
            else:
                lines.append(f"- {t['status']}: {t['target']} — {t['value']:.4g} vs limit {t['limit']:.4g} "
                             f"{t.get('unit', '')}".rstrip())
    return "\n".join(lines) + "\n"


def _fmt_load(load: Any) -> str:
    return "–" if not load else " ".join(f"{v:.1f}" for v in load)


def plot_rows(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """time_vs_T.png and memory_vs_T.png: one line per method × model × batch (variants method, paired)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if not r.get("error") and r["variant"] in ("method", "paired") and r.get("step_s"):
            tag = " · paired" if r["variant"] == "paired" else ""
            series.setdefault(f"{r['method_label']} · {r['model']} · N={r['batch']}{tag}", []).append(r)
    paths = []
    for fname, key, scale, ylabel in (("time_vs_T.png", "step_s", 1.0, "median step time (s)"),
                                      ("memory_vs_T.png", "saved_bytes_peak", MB, "peak saved for backward (MB)")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, rs in sorted(series.items()):
            rs = sorted((r for r in rs if r.get(key) is not None), key=lambda r: r["T"])
            if rs:
                ax.plot([r["T"] for r in rs], [r[key] / scale for r in rs], marker="o", label=label)
        ax.set_xlabel("T (time steps)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(report: dict[str, Any], out_dir: Path, plots: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / "bench.md").write_text(markdown_report(report))
    written = [out_dir / "bench.json", out_dir / "bench.md"]
    if plots:
        written += plot_rows(report["rows"], out_dir)
    return written


# ---- CLI ---------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a predefined grid: default (BPTT on convnet: ANN, plain and stepwise loops), "
                        "targets (the SLTT/BPTT figures on preact_spiking_resnet18), all (both), "
                        "methods (every conf/method on convnet, T=4), quick")
    p.add_argument("--quick", action="store_true", help="one tiny configuration (CI-style check)")
    p.add_argument("--methods", nargs="+", help="conf/method names, optionally name:key=val,... (e.g. sltt_k:K=1)")
    p.add_argument("--models", nargs="+", help="conf/model names")
    p.add_argument("--T", nargs="+", type=int, dest="T", help="time steps")
    p.add_argument("--batch", nargs="+", type=int, help="batch sizes")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, help="what to time (see the module doc)")
    p.add_argument("--plain-T", nargs="+", type=int, default=None, help="T values for the plain/stepwise loops")
    p.add_argument("--image-size", type=int, help="input height = width")
    p.add_argument("--events", action="store_true", help="feed event frames [N, T, C, H, W] instead of images")
    p.add_argument("--warmup", type=int, help="untimed steps first")
    p.add_argument("--steps", type=int, help="timed steps (the median is reported)")
    p.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads per configuration")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (GPU)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    p.add_argument("--out", default="outputs/bench", help="results go to <out>/<UTC date>/")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="list the configurations and exit")
    p.add_argument("--rewrite", metavar="DIR", help="re-derive ratios and targets of DIR/bench.json and rewrite "
                   "its Markdown and plots (no measurement)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def grid_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The configurations: the preset's runs, each key overridden by its CLI flag when given."""
    runs = PRESETS["quick" if args.quick else (args.preset or "default")]
    if args.methods:  # an explicit grid: one run, unset keys from the preset's first run
        runs = [dict(runs[0])]
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    grid: list[dict[str, Any]] = []
    for run in runs:
        def pick(key: str, run: dict[str, Any] = run) -> Any:
            value = getattr(args, key, None)
            return value if value is not None else run[key]

        settings = {k: pick(k) for k in ("warmup", "steps", "image_size")}
        for spec in build_grid(pick("methods"), pick("models"), pick("T"), pick("batch"), pick("variants"),
                               args.plain_T):
            grid.append({**spec, **settings, "device": device, "channels_last": args.channels_last,
                         "events": args.events})
    return grid


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        row = run_config(json.loads(args.worker))
        print(RESULT_TAG + json.dumps(row, default=str), flush=True)
        return 0
    if args.rewrite:
        out_dir = Path(args.rewrite)
        report = json.loads((out_dir / "bench.json").read_text())
        add_ratios(report["rows"])
        report["targets"] = evaluate_targets(report["rows"])
        for path in write_report(report, out_dir, plots=not args.no_plots):
            print(f"wrote {path}")
        return 0
    grid = grid_from_args(args)
    if args.dry_run:
        for spec in grid:
            print(json.dumps(spec))
        return 0
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    rows = []
    for i, spec in enumerate(grid, 1):
        print(f"[{i}/{len(grid)}] {method_label(spec['method'])} {spec['model']} {spec['variant']} "
              f"T={spec['T']} batch={spec['batch']} ...", end=" ", flush=True)
        row = run_in_subprocess(spec, args.threads, args.timeout)
        rows.append(row)
        print(row.get("error") or f"{row['step_s']:.4f} s/step, saved {row.get('saved_bytes_peak', 0) / MB:.1f} MB, "
              f"RSS {row['rss_peak_bytes'] / MB:.0f} MB", flush=True)
    add_ratios(rows)
    report = {"machine": machine_info(args.threads), "command": " ".join(sys.argv), "load_start": load_start,
              "load_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
              "total_wall_s": time.perf_counter() - start, "rows": rows, "targets": evaluate_targets(rows)}
    out_dir = Path(args.out) / datetime.now(UTC).strftime("%Y-%m-%d")
    for path in write_report(report, out_dir, plots=not args.no_plots):
        print(f"wrote {path}")
    for t in report["targets"]:
        figure = "" if t["value"] is None else f" ({t['value']:.4g} vs {t['limit']:.4g})"
        print(f"{t['status']}: {t['target']}{figure}")
    return 1 if all(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
