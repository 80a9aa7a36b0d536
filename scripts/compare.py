"""Every method on the embedded digits data with the same small model, 3 seeds each: one multirun,
then the results table and plots, copied under ``docs/compare/`` with the date and machine.

    python scripts/compare.py [--methods bptt,sltt,...] [--seeds 0,1,2] [--epochs 6] [--threads 2] [--out docs/compare]

``make compare`` runs it (about 15 minutes on 2 CPU cores). Every job runs at ``--threads`` torch
threads (results are repeatable for a seed at a fixed thread count), one after another in one process;
each job's ``results.json`` holds its own peak memory and the bytes saved for backward in one step, and
its operations and energy per sample; the plots include accuracy against energy (``acc_vs_energy.png``)
beside memory per method.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "src"))

import plot  # noqa: E402
import summarize  # noqa: E402

# one configuration per method of the papers (plus the BPTT baseline); each method's own digits defaults
DEFAULT_METHODS = ["bptt", "stbp_tdbn", "sltt", "sltt_k", "dsr", "asgl", "stds"]


COLUMNS_NOTE = (
    "Peak memory: each job's own peak (host VmHWM reset at the job's start, or the GPU's peak); saved for "
    "backward: the peak bytes autograd holds during one training step (parameters included). Operations per "
    "sample over all T steps on 16 validation images, in the NeuroBench convention: a synaptic layer performs "
    "one operation per (non-zero input, non-zero weight) pair, bias excluded; fed spikes (non-zeros of one "
    "magnitude: binary, or scaled by a threshold) they are accumulates (SynOps), otherwise multiply-accumulates "
    "(MACs); dense ops: the same count with every input and weight non-zero. Energy = 4.6 pJ·MACs + 0.9 pJ·SynOps "
    "(45 nm fp32). `convnet` pools before its neurons, so every synaptic layer but the image-driven first "
    "takes spikes: SynOps follow the firing rate, and STDS's pruned weights perform none. "
    "`acc_vs_energy.png`: test top-1 against energy, one dot per job, a cross per method mean, the Pareto "
    "front of the means.")


def machine() -> str:
    return f"{platform.node() or 'host'}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, " \
           f"Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="all methods side by side on the embedded digits data")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--threads", type=int, default=2, help="torch threads of every job (the committed table: 2)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "compare")
    p.add_argument("extra", nargs="*", help="further Hydra overrides for every job")
    args = p.parse_args(argv)

    if args.threads < 1:
        print(f"error: --threads must be a positive number of torch threads (got {args.threads}); e.g. --threads 2",
              file=sys.stderr)
        return 2
    known = {f.stem for f in (ROOT / "conf" / "method").glob("*.yaml")}
    methods = [m for m in args.methods.split(",") if m]
    missing = [m for m in methods if m not in known]
    if missing:
        print(f"error: unknown method(s) {missing}; available: {sorted(known)}", file=sys.stderr)
        return 2
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    sweep = ROOT / "outputs" / "compare" / stamp
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "-m", f"method={','.join(methods)}", "model=convnet",
           "data=digits", f"T={args.T}", f"seed={args.seeds}", f"trainer.max_epochs={args.epochs}",
           f"threads={args.threads}",
           "callbacks.progress_bar=null", "task_name=compare", f"hydra.sweep.dir={sweep}", *args.extra]
    print("+ " + " ".join(cmd[1:]), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        print(f"warning: the multirun exited with {rc}; summarising the jobs that finished", file=sys.stderr)
    summarize.main([str(sweep)])
    plot.plot_all(sweep, sweep / "plots")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = "make compare" if argv is None and len(sys.argv) == 1 else "python scripts/compare.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    header = (f"# All methods on digits (convnet, T = {args.T}, {args.epochs} epoch{'s' * (args.epochs != 1)}, "
              f"seeds {args.seeds}, "
              f"{args.threads} threads)\n\n"
              f"Run on {dt.date.today().isoformat()} — {machine()}. Command: `{command}`.\n\n"
              f"{COLUMNS_NOTE}\n\n")
    (out / "README.md").write_text(header + (sweep / "summary.md").read_text())
    shutil.copy(sweep / "summary.csv", out / "summary.csv")
    for png in (sweep / "plots").glob("*.png"):
        shutil.copy(png, out / png.name)
    print(f"wrote {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
