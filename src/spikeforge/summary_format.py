"""The console's run summary in units a person reads at a glance, and the closing sentences of
training, evaluation and export.

Memory in MB/GB (10⁶/10⁹ bytes), times in ms or s, operation counts with k/M/G, energy in mJ, accuracies
and firing rates in %; MACs, SynOps and energy per sample side by side. A value that does not apply is
not printed as ``None``: the row says why (``protocol=paper`` has no validation selection, a
fast-dev-run selects no checkpoint). ``results.json`` keeps the raw numbers.
"""

from __future__ import annotations

from typing import Any


def _si(x: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix} {unit}"
    return f"{x:.3g} {unit}"


def nbytes(x: float) -> str:
    return f"{x / 1e9:.2f} GB" if abs(x) >= 1e9 else f"{x / 1e6:.1f} MB"


def seconds(x: float) -> str:
    return f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.1f} s"


def percent(x: float) -> str:
    return f"{100 * x:.2f} %"


def energy_mj(x: float) -> str:
    return f"{x:.3g} mJ"


def _best_val(results: dict[str, Any]) -> str:
    v = results.get("best_val_acc1")
    if v is not None:
        return percent(v)
    if (results.get("protocol") or {}).get("name") == "paper":
        return "n/a: protocol=paper selects on the test split (see test/acc1)"
    if results.get("best_checkpoint") is None:
        return "n/a: no checkpoint was selected (fast-dev-run, or checkpointing off)"
    return "n/a: no validation ran"


def _metric(key: str, v: Any) -> str:
    if isinstance(v, float) and "acc" in key:
        return percent(v)
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of the console summary, in reading order; rows without a value are left out."""
    r = results
    rows: list[tuple[str, str]] = [(k, str(r[k])) for k in ("method", "model", "data", "T", "seed")
                                   if r.get(k) is not None]
    if r.get("epochs") is not None:
        total = r.get("max_epochs")
        rows.append(("epochs", f"{r['epochs']} of {total}" if isinstance(total, int) and total > 0
                     else str(r["epochs"])))
    if r.get("parameters") is not None:
        rows.append(("parameters", f"{r['parameters']:,}"))
    if r.get("task_name") == "train":
        rows.append(("best val acc1", _best_val(r)))
    if r.get("mean_firing_rate") is not None:
        rows.append(("mean firing rate", percent(r["mean_firing_rate"])))
    if r.get("time_per_step_s") is not None:
        rows.append(("time per training step", seconds(r["time_per_step_s"])))
    if r.get("peak_host_memory_bytes") is not None:
        rows.append(("peak host memory", nbytes(r["peak_host_memory_bytes"])))
    if r.get("peak_gpu_memory_bytes") is not None:
        rows.append(("peak GPU memory", nbytes(r["peak_gpu_memory_bytes"])))
    if r.get("saved_for_backward_peak_bytes") is not None:
        rows.append(("saved for backward (peak)", nbytes(r["saved_for_backward_peak_bytes"])))
    if r.get("macs_per_sample") is not None:
        parts = [_si(r["macs_per_sample"], "MACs"), _si(r.get("synops_per_sample") or 0.0, "SynOps")]
        if r.get("energy_compute_mj_per_sample") is not None:
            parts.append(energy_mj(r["energy_compute_mj_per_sample"]))
        rows.append(("inference per sample", ", ".join(parts)))
    elif r.get("inference_cost_error"):
        rows.append(("inference per sample", "not measured (see train.log)"))
    if r.get("wall_time_s") is not None:
        rows.append(("wall time", seconds(r["wall_time_s"])))
    rows += [(k, _metric(k, v)) for k, v in (r.get("test") or {}).items()]
    return rows


def finished_line(results: dict[str, Any], path: Any) -> str:
    """The closing sentence of a training run."""
    test = results.get("test") or {}
    acc = test.get("test/acc1")
    tested = f"test acc1 {percent(acc)}" if acc is not None else "not tested (test=false)"
    return f"finished: best val acc1 {_best_val(results)}, {tested}; results in {path}"


def eval_line(results: dict[str, Any], path: Any) -> str:
    acc = (results.get("test") or {}).get("test/acc1")
    score = f"test acc1 {percent(acc)}" if acc is not None else "no test metrics"
    where = f"the test split of {results.get('data')}"
    return f"evaluated {results.get('ckpt_path')} on {where}: {score}; results in {path}"


def export_line(results: dict[str, Any], path: Any) -> str:
    """What the export wrote and what its read-back check found, in one sentence."""
    c, fmt = results["check"], results["format"]
    n = results["input_shape"][0]
    if fmt == "nir":
        found = (f"spikes equal at all {c['spikes_compared']:,} positions ({c['neuron_layers']} neuron layers, "
                 f"{c['time_steps']} steps), outputs within {c['max_abs_diff']:.2g} (tolerance {c['atol']:g})")
    else:
        found = f"outputs within {c['max_abs_diff']:.2g} (tolerance {c['atol']:g})"
    return (f"exported to {results['file']} ({fmt}); read back and run on {n} test samples: {found}; "
            f"the check is in {path}")
