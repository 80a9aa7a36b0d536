"""Bytes all-reduced per optimiser step under DDP, per method × model, measured on CPU (gloo, one
rank), and derived estimates of the gradient all-reduce time at 8 / 64 / 256 GPUs.

    python scripts/comm_volume.py                                   # convnet, spiking_resnet18 × 4 methods
    python scripts/comm_volume.py --methods bptt sltt "sltt_k:K=1" --models spiking_resnet18 \\
        --accumulate 1 4 --bucket-cap-mb 25 100 --out docs/scaling

Each configuration trains ``--steps`` optimiser steps of the method's own LightningModule under
Lightning's ``DDPStrategy`` with a DDP communication hook
(``DistributedDataParallel.register_comm_hook``) that counts every bucket it all-reduces (then all-
reduces it as DDP's default hook does), so what is counted is what DDP sends: every trainable
gradient once per optimiser step when the method skips the sync of intermediate backward passes
(SLTT's T backward passes per step, Lightning's ``accumulate_grad_batches``), T or k times when it
does not. The bytes do not depend on the number of ranks, the batch or (for models with global
pooling) the image size.

The estimates (labelled as such in the outputs) use the ring all-reduce cost per bucket,
``2 (N−1)/N · bytes / B + 2 (N−1) · α``, with a per-GPU bandwidth ``B`` and a per-message latency
``α`` for each interconnect (:data:`LINKS`; NVLink only within one node of 8; NCCL switches to a tree
for small buckets on many GPUs, so the latency term is an upper bound). The result is the
communication time of one step if nothing overlaps it with the backward pass: a step whose compute
takes longer than that hides it (DDP overlaps buckets with the backward pass), a shorter one waits.

Outputs, under ``--out``: ``comm_volume.json`` (rows, assumptions) and ``comm_volume.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))

import torch  # noqa: E402

# interconnect: (per-GPU bandwidth in bytes/s, latency per message in s) — assumptions, not measurements
LINKS: dict[str, tuple[float, float]] = {
    "NVLink (H100, one node)": (300e9, 3e-6),  # ~300 GB/s effective all-reduce bus bandwidth per GPU
    "InfiniBand 400 Gb/s": (400e9 / 8, 5e-6),  # one 400 Gb/s NIC per GPU
    "InfiniBand 100 Gb/s": (100e9 / 8, 5e-6),  # one 100 Gb/s NIC per GPU
}
GPUS = (8, 64, 256)


def allreduce_estimate_s(bucket_bytes: list[int], n: int, bandwidth: float, latency: float) -> float:
    """Ring all-reduce of every bucket, one after another, on ``n`` GPUs (an estimate)."""
    return sum(2 * (n - 1) / n * b / bandwidth + 2 * (n - 1) * latency for b in bucket_bytes)


def measure(method: str, model: str, T: int, batch: int, image_size: int, steps: int, accumulate: int,
            bucket_cap_mb: float) -> dict[str, Any]:
    """Train ``steps`` optimiser steps on one gloo rank; what the comm hook all-reduced per step."""
    import lightning as L
    from bench import RepeatedBatch, compose_cfg, synthetic_batch
    from lightning.pytorch.strategies import DDPStrategy
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from spikeforge import distributed
    from spikeforge.run import build_module

    cfg = compose_cfg(method, model, T)
    module = build_module(cfg)
    x, y = synthetic_batch(batch, int(cfg.data.channels), image_size, int(cfg.data.num_classes), T,
                           bool(cfg.data.get("events", False)))
    state: dict[str, Any] = {"calls": 0, "buckets": []}

    def counting_hook(st, bucket):  # type: ignore[no-untyped-def]  (DDP checks real annotations only)
        buf = bucket.buffer()
        st["calls"] += 1
        st["buckets"].append(buf.numel() * buf.element_size())
        return default_hooks.allreduce_hook(None, bucket)  # DDP's own all-reduce of the bucket

    class RegisterHook(L.Callback):  # Lightning registers ddp_comm_hook on CUDA only: do it here
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            trainer.strategy.model.register_comm_hook(state, counting_hook)

    saved = distributed.snapshot_launch_env()
    start = time.perf_counter()
    try:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
            accumulate_grad_batches=accumulate if module.automatic_optimization else 1,
            strategy=DDPStrategy(process_group_backend="gloo", bucket_cap_mb=bucket_cap_mb), callbacks=[RegisterHook()],
        )
        trainer.fit(module, train_dataloaders=RepeatedBatch((x, y), steps * accumulate))
        done = trainer.global_step
    finally:
        distributed.teardown_process_group()
        distributed.restore_launch_env(saved)
    per_step_calls = state["calls"] / max(done, 1)
    last = state["buckets"][-round(per_step_calls):] if per_step_calls >= 1 else []  # the last step's buckets
    trainable = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    return {
        "method": method, "model": model, "T": T, "batch": batch, "image_size": image_size,
        "accumulate_grad_batches": accumulate if module.automatic_optimization else 1,
        "bucket_cap_mb": bucket_cap_mb, "optimizer_steps": done,
        "bytes_per_step": sum(state["buckets"]) / max(done, 1), "allreduce_calls_per_step": per_step_calls,
        "last_step_bucket_bytes": last, "trainable_param_bytes": trainable,
        "wall_s": time.perf_counter() - start,
    }


def estimates(row: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Estimated all-reduce seconds per step, per interconnect and GPU count (NVLink: 8 only)."""
    out: dict[str, dict[str, float]] = {}
    buckets = row["last_step_bucket_bytes"] or [row["bytes_per_step"]]
    for link, (bw, lat) in LINKS.items():
        out[link] = {str(n): allreduce_estimate_s(buckets, n, bw, lat) for n in GPUS
                     if n == 8 or not link.startswith("NVLink")}
    return out


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Gradient all-reduce per optimiser step", "",
        f"Measured with `{command}` (CPU, gloo, one rank; DDP communication hook). "
        "The time columns are **estimates** derived from the measured buckets (ring all-reduce, "
        "see `scripts/comm_volume.py` for the assumed bandwidths and latencies), not measurements.", "",
        "| method | model | T | accumulate | bucket MB | MB all-reduced / step | all-reduce calls / step "
        "| trainable MB | " + " | ".join(f"est. ms, {link}, {n} GPUs" for link in LINKS for n in GPUS
                                         if n == 8 or not link.startswith("NVLink")) + " |",
        "|" + "---|" * (8 + sum(1 for link in LINKS for n in GPUS if n == 8 or not link.startswith("NVLink"))),
    ]
    for r in rows:
        est = [f"{1e3 * t:.2f}" for link in LINKS for t in r["estimate_s"][link].values()]
        lines.append(f"| {r['method']} | {r['model']} | {r['T']} | {r['accumulate_grad_batches']} | "
                     f"{r['bucket_cap_mb']:g} | {r['bytes_per_step'] / 2**20:.2f} | "
                     f"{r['allreduce_calls_per_step']:g} | "
                     f"{r['trainable_param_bytes'] / 2**20:.2f} | " + " | ".join(est) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["bptt", "sltt", "sltt_k", "stbp_tdbn"])
    p.add_argument("--models", nargs="+", default=["convnet", "spiking_resnet18"])
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=2, help="optimiser steps measured per configuration")
    p.add_argument("--accumulate", type=int, nargs="+", default=[1], help="accumulate_grad_batches values")
    p.add_argument("--bucket-cap-mb", type=float, nargs="+", default=[25.0], help="DDP bucket sizes (MB)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "scaling")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for model in args.models:
        for method in args.methods:
            for acc in args.accumulate:
                for cap in args.bucket_cap_mb:
                    row = measure(method, model, args.T, args.batch, args.image_size, args.steps, acc, cap)
                    row["estimate_s"] = estimates(row)
                    rows.append(row)
                    print(f"{method} × {model} (accumulate {acc}, buckets {cap:g} MB): "
                          f"{row['bytes_per_step'] / 2**20:.2f} MB in {row['allreduce_calls_per_step']:g} "
                          f"all-reduce calls per step", flush=True)
    command = "python scripts/comm_volume.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": command.strip(), "rows": rows, "gpus": list(GPUS),
              "links_assumed": {k: {"bandwidth_bytes_per_s": bw, "latency_s": lat}
                                for k, (bw, lat) in LINKS.items()},
              "versions": {"torch": torch.__version__}}
    (args.out / "comm_volume.json").write_text(json.dumps(report, indent=1))
    (args.out / "comm_volume.md").write_text(markdown(rows, command.strip()))
    print(f"wrote {args.out / 'comm_volume.json'} and {args.out / 'comm_volume.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
