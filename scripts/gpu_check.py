"""The GPU check (``make gpu-check``, ``scripts/gpu_check.sh``; docs/performance.md "GPU check"): parts (a)–(c).

(a) every method × ``16-mixed`` and ``bf16-mixed``: a few training steps of preact_spiking_resnet18 on
    one CIFAR-shaped synthetic batch (repeated), through the method's LightningModule, the run's
    callbacks (cost, reliability) and the configured trainer; the loss must be finite at every step
    and lower at the last step than at the first.
(b) the same steps under ``torch.cuda.set_sync_debug_mode("warn")``: every synchronising CUDA call is
    recorded with the file it came from; at most one per step may come from ``src/spikeforge``
    (other libraries' syncs, e.g. AMP's GradScaler, are reported, not judged).
(c) every neuron kind: fused vs reference outputs and gradients (fp32, ≤ 1e-5 relative) at
    T = 8, and the forward+backward time of each fused neuron against spikingjelly's fused
    ``LIFNode`` at T 8, 64×32×32 channels, batch 64 (a target, reported).

Results: ``<out>/gpu_check.json`` and ``<out>/gpu_check.md``. Exit status 0 when every assertion
holds, 1 when one fails, 2 when no CUDA device is visible (without ``--dry-run``).

``--dry-run`` rehearses the same code on CPU: 1 step per method in ``bf16-mixed`` (CPU autocast;
``--precisions 16-mixed bf16-mixed`` for both), host syncs counted by patching the tensor methods
that synchronise (CPU has no sync debug mode), tiny neuron shapes with the fused graph captured by
``torch.compile(backend="aot_eager")``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from spikeforge.compose import compose_config  # noqa: E402

SRC = str(ROOT / "src" / "spikeforge")
METHODS = ["bptt", "sltt", "stbp_tdbn", "stds", "asgl", "dsr"]
PRECISIONS = ["16-mixed", "bf16-mixed"]
SYNC_WARNING = "called a synchronizing CUDA operation"
# tensor methods that wait for the device when called on a CUDA tensor (counted in --dry-run)
SYNC_METHODS = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy")
NEURON_KINDS: dict[str, dict[str, Any]] = {
    "stbp_lif": {}, "sltt_lif": {}, "asgl_lif": {"granularity": "channel", "train_decay": True},
    "dsr_if": {"v_threshold": 1.0}, "dsr_lif": {}, "lif": {}, "if": {},
}


# ---- (a) + (b): training steps --------------------------------------------------------------------
def compose_cfg(method: str, precision: str, device: str, out_dir: Path, T: int, batch: int, width: int,
                steps: int) -> DictConfig:
    cfg = compose_config(ROOT / "conf", [
        f"method={method}", "model=preact_spiking_resnet18", f"model.width={width}", "data=cifar10",
        f"trainer={'gpu' if device == 'cuda' else 'cpu'}", f"trainer.precision={precision}", f"T={T}",
        f"data.batch_size={batch}", "++trainer.max_epochs=1", f"++trainer.max_steps={steps}",
        "++trainer.limit_val_batches=0", "++trainer.num_sanity_val_steps=0", "logger=csv",
        "callbacks.model_checkpoint=null",  # no validation here, so nothing to select on
        "callbacks.progress_bar=null", "callbacks.model_summary=null", "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false", "run_callbacks.cost_monitor.warmup=1",
    ])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.log_dir = str(out_dir.parent)
    return cfg


def synthetic_cifar(batch: int, steps: int, seed: int = 0) -> DataLoader:
    """One normalised 3×32×32 batch whose brightness depends on the label, served ``steps`` times."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(batch) % 10
    x = (y.float().view(-1, 1, 1, 1) - 4.5) / 3 + 0.5 * torch.randn(batch, 3, 32, 32, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, sampler=[i % batch for i in range(batch * steps)],
                      pin_memory=torch.cuda.is_available())


class StepProbe(L.Callback):
    """Per-step losses (kept on the device, read after fit) and the host syncs of every step, from
    the start of one training batch to the start of the next (so every hook of the step is inside)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.losses: list[torch.Tensor] = []
        self.steps = 0
        self.ours: Counter[str] = Counter()
        self.others: Counter[str] = Counter()
        self.active = False
        self._saved: dict[str, Any] = {}
        self._catcher: warnings.catch_warnings | None = None
        self._records: list[warnings.WarningMessage] = []

    # where a sync came from: the project's own files, or elsewhere
    def record(self, filename: str, lineno: int, what: str) -> None:
        site = f"{Path(filename).name}:{lineno} {what}"
        (self.ours if filename.startswith(SRC) else self.others)[site] += 1

    def _count_warnings(self) -> None:
        for w in self._records:
            if SYNC_WARNING in str(w.message):
                self.record(w.filename, w.lineno, "sync")
        self._records.clear()

    def _set_active(self, active: bool) -> None:
        if self.cuda:
            self._count_warnings()  # the records so far belong to the window that ends here
            torch.cuda.set_sync_debug_mode("warn" if active else "default")
        self.active = active

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.cuda:
            self._catcher = warnings.catch_warnings(record=True)
            self._records = self._catcher.__enter__()
            warnings.simplefilter("always")
        else:  # CPU rehearsal: count the tensor methods that would synchronise on CUDA
            for name in SYNC_METHODS:
                self._saved[name] = getattr(torch.Tensor, name)
                setattr(torch.Tensor, name, self._wrap(name, self._saved[name]))

    def _wrap(self, name: str, original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.active:
                frame = sys._getframe(1)
                self.record(frame.f_code.co_filename, frame.f_lineno, name)
            return original(*args, **kwargs)

        return wrapper

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._set_active(False)
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()
        if self._catcher is not None:
            self._catcher.__exit__(None, None, None)
            self._catcher = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._set_active(True)
        self.steps += 1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self.losses.append(loss.detach())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set_active(False)


def train_check(method: str, precision: str, device: str, steps: int, T: int, batch: int, width: int) -> dict:
    from spikeforge.callbacks.cost import CostMonitor
    from spikeforge.run import build_module, build_trainer

    row: dict[str, Any] = {"method": method, "precision": precision, "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(method, precision, device, Path(tmp) / "run", T, batch, width, steps)
        L.seed_everything(0, workers=True)
        module = build_module(cfg)
        probe = StepProbe(cuda=device == "cuda")
        trainer = build_trainer(cfg, [probe])  # the run's own callbacks (run_callbacks), cost_monitor among them
        cost = next(c for c in trainer.callbacks if isinstance(c, CostMonitor))
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=synthetic_cifar(batch, steps))
        row["wall_s"] = time.perf_counter() - start
        row["time_per_step_s"] = cost.summary(torch.device(device))["time_per_step_s"]
    losses = torch.stack(probe.losses).float().tolist() if probe.losses else []
    row.update(losses=losses, syncs_ours=dict(probe.ours), syncs_others=dict(probe.others),
               steps_seen=probe.steps)
    n_ours = sum(probe.ours.values())
    row["syncs_ours_per_step"] = n_ours / max(probe.steps, 1)
    row["syncs_others_per_step"] = sum(probe.others.values()) / max(probe.steps, 1)
    checks = {
        "ran every step": probe.steps == steps and len(losses) == steps,
        "finite loss": bool(losses) and all(math.isfinite(v) for v in losses),
        # one step of the rehearsal cannot show a decrease
        "loss decreased": steps < 2 or (len(losses) == steps and losses[-1] < losses[0]),
        "<= 1 host sync per step from src/spikeforge": n_ours <= probe.steps,
    }
    row["failed"] = [name for name, ok in checks.items() if not ok]
    return row


# ---- (c): fused vs reference neurons -----------------------------------------------------------------
def _neuron_run(kind: str, impl: str, x: torch.Tensor) -> list[torch.Tensor]:
    from spikeforge.neurons import build_neuron

    torch.manual_seed(1)
    params = dict(NEURON_KINDS[kind])
    if kind == "asgl_lif":
        params["num_features"] = x.shape[2]
    n = build_neuron(kind, backend=impl, **params).to(x.device)
    out = n(x)
    trainable = [p for p in n.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * torch.randn_like(out)).sum(), [x, *trainable])
    return [out.detach(), *grads]


def _time_fwd_bwd(kind: str, impl: str, x: torch.Tensor, reps: int) -> float:
    """Median seconds of one forward + backward (CUDA events on CUDA)."""
    from spikingjelly.activation_based import neuron as sj_neuron

    from spikeforge.neurons import build_neuron
    from spikeforge.neurons.surrogates import build_surrogate

    if kind == "sj_LIFNode":
        n = sj_neuron.LIFNode(tau=2.0, surrogate_function=build_surrogate("atan"), step_mode="m")
    else:
        params = dict(NEURON_KINDS[kind])
        if kind == "asgl_lif":
            params["num_features"] = x.shape[2]
        n = build_neuron(kind, backend=impl, **params)
    n = n.to(x.device)
    times = []
    for _ in range(reps + 2):  # two warm-up repetitions (compilation)
        n.reset()
        if x.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            n(x).sum().backward()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            n(x).sum().backward()
            times.append(time.perf_counter() - t0)
    times = sorted(times[2:])
    return times[len(times) // 2]


def neuron_check(device: str, shape: tuple[int, ...], bench_shape: tuple[int, ...], reps: int) -> list[dict]:
    from spikeforge.neurons import backend

    backend._COMPILED.clear()
    backend.COMPILE_OPTIONS["fullgraph"] = True  # here a graph break fails: the whole loop must fuse
    rows = []
    torch.manual_seed(0)
    x = (torch.randn(*shape, device=device) * 1.5).requires_grad_()
    xb = torch.randn(*bench_shape, device=device).requires_grad_()
    lif_s = _time_fwd_bwd("sj_LIFNode", "auto", xb, reps)
    for kind in NEURON_KINDS:
        row: dict[str, Any] = {"kind": kind, "failed": []}
        try:
            ref, fused = _neuron_run(kind, "reference", x), _neuron_run(kind, "fused", x)
            errs = [float((f - r).abs().max() / r.abs().max().clamp_min(1e-12))
                    for r, f in zip(ref, fused, strict=True)]
            row["max_rel_err"] = max(errs)
            if row["max_rel_err"] > 1e-5:
                row["failed"].append("fused != reference (> 1e-5 relative)")
            row["fused_fwd_bwd_s"] = _time_fwd_bwd(kind, "fused", xb, reps)
            row["reference_fwd_bwd_s"] = _time_fwd_bwd(kind, "reference", xb, reps)
            row["sj_lif_fwd_bwd_s"] = lif_s
            row["vs_sj_lif"] = row["fused_fwd_bwd_s"] / lif_s  # target ≤ 1.5 (reported, not asserted)
        except Exception as e:  # one line per failure in the report, the rest continues
            row["failed"].append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            traceback.print_exc()
        rows.append(row)
    return rows


# ---- report ------------------------------------------------------------------------------------------
def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [f"# GPU check {report['date']}", "", f"device: {report['device_name']}; torch {report['torch']}", "",
             "## (a)+(b) training steps", "",
             "| method | precision | first loss | last loss | syncs/step (ours) | syncs/step (others) | s/step "
             "| result |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["train"]:
        losses = r.get("losses") or [float("nan")]
        step = r.get("time_per_step_s")
        lines.append(f"| {r['method']} | {r['precision']} | {losses[0]:.4g} | {losses[-1]:.4g} | "
                     f"{r.get('syncs_ours_per_step', float('nan')):.2f} | "
                     f"{r.get('syncs_others_per_step', float('nan')):.2f} | "
                     f"{'' if step is None else f'{step:.4f}'} | {'; '.join(r['failed']) or 'PASS'} |")
    lines += ["", "## (c) neurons: fused vs reference", "",
              "| kind | max rel. err | fused fwd+bwd s | reference s | / sj LIFNode (target ≤ 1.5) | result |",
              "|---|---|---|---|---|---|"]
    for r in report["neurons"]:
        def f(k: str, r: dict = r) -> str:
            return f"{r[k]:.4g}" if isinstance(r.get(k), float) else ""

        lines.append(f"| {r['kind']} | {f('max_rel_err')} | {f('fused_fwd_bwd_s')} | {f('reference_fwd_bwd_s')} | "
                     f"{f('vs_sj_lif')} | {'; '.join(r['failed']) or 'PASS'} |")
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="results directory (default docs/benchmarks/gpu-<UTC date>)")
    p.add_argument("--dry-run", action="store_true", help="CPU rehearsal: 1 step, bf16-mixed, tiny shapes")
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--precisions", nargs="+", default=None)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--parts", default="abc", help="which parts to run (a and b always run together)")
    args = p.parse_args(argv)

    date = time.strftime("%Y-%m-%d", time.gmtime())
    out = Path(args.out or ROOT / "docs" / "benchmarks" / f"gpu-{date}")
    if args.dry_run:
        device, steps, precisions = "cpu", 1, args.precisions or ["bf16-mixed"]
        T, batch, width, shape, bench_shape, reps = 2, 4, 8, (4, 2, 3, 4, 4), (4, 2, 3, 4, 4), 1
        from spikeforge.neurons import backend

        backend.COMPILE_OPTIONS["backend"] = "aot_eager"  # the captured graph, without code generation
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU "
                  "machine, or use --dry-run for the CPU rehearsal", file=sys.stderr)
            return 2
        device, steps, precisions = "cuda", args.steps, args.precisions or PRECISIONS
        T, batch, width, shape, bench_shape, reps = 4, 32, 64, (8, 4, 8, 16, 16), (8, 64, 64, 32, 32), 10
    report: dict[str, Any] = {
        "date": date, "device": device, "dry_run": args.dry_run, "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "settings": {"T": T, "batch": batch, "width": width, "steps": steps, "neuron_shape": shape,
                     "bench_shape": bench_shape},
        "train": [], "neurons": [],
    }
    if "a" in args.parts or "b" in args.parts:
        for method in args.methods:
            for precision in precisions:
                print(f"(a,b) {method} {precision} ...", flush=True)
                try:
                    row = train_check(method, precision, device, steps, T, batch, width)
                except Exception as e:
                    traceback.print_exc()
                    row = {"method": method, "precision": precision,
                           "failed": [f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"]}
                print(f"    {'; '.join(row['failed']) or 'PASS'}  losses={row.get('losses')} "
                      f"syncs(ours)={row.get('syncs_ours')}", flush=True)
                report["train"].append(row)
    if "c" in args.parts:
        print("(c) neurons ...", flush=True)
        report["neurons"] = neuron_check(device, shape, bench_shape, reps)
        for r in report["neurons"]:
            print(f"    {r['kind']}: {'; '.join(r['failed']) or 'PASS'} {r.get('max_rel_err')}", flush=True)
    write_report(report, out)
    failed = [r for r in report["train"] + report["neurons"] if r["failed"]]
    print(f"gpu_check: {'FAIL' if failed else 'PASS'} ({len(failed)} failing rows); wrote {out}/gpu_check.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
