"""The console summary: units, and a reason instead of ``None``; the closing sentences of eval and export."""

from __future__ import annotations

from spikeforge.summary_format import eval_line, export_line, finished_line, summary_rows

RESULTS = {"task_name": "train", "method": "bptt", "model": "convnet", "data": "digits", "T": 4, "seed": 0,
           "epochs": 1, "max_epochs": 1, "parameters": 6823496, "best_val_acc1": 0.5, "mean_firing_rate": 0.0421,
           "time_per_step_s": 0.0123, "peak_host_memory_bytes": 1394327552, "saved_for_backward_peak_bytes": 2144704,
           "macs_per_sample": 6.8e6, "synops_per_sample": 1.25e5, "energy_compute_mj_per_sample": 0.0312,
           "wall_time_s": 12.5, "test": {"test/loss": 1.23456, "test/acc1": 0.9012}, "protocol": {"name": "clean"},
           "best_checkpoint": "/r/checkpoints/best-epoch000.ckpt"}


def test_summary_rows_have_units() -> None:
    rows = dict(summary_rows(RESULTS))
    assert rows["epochs"] == "1 of 1" and rows["parameters"] == "6,823,496"
    assert rows["peak host memory"] == "1.39 GB" and rows["saved for backward (peak)"] == "2.1 MB"
    assert rows["time per training step"] == "12.30 ms" and rows["wall time"] == "12.5 s"
    assert rows["inference per sample"] == "6.8 M MACs, 125 k SynOps, 0.0312 mJ"
    assert rows["best val acc1"] == "50.00 %" and rows["mean firing rate"] == "4.21 %"
    assert rows["test/acc1"] == "90.12 %" and rows["test/loss"] == "1.2346"
    assert "None" not in str(rows)


def test_not_applicable_values_say_why() -> None:
    paper = dict(summary_rows({**RESULTS, "best_val_acc1": None, "protocol": {"name": "paper"}}))
    assert paper["best val acc1"] == "n/a: protocol=paper selects on the test split (see test/acc1)"
    fdr = dict(summary_rows({**RESULTS, "best_val_acc1": None, "best_checkpoint": None}))
    assert fdr["best val acc1"] == "n/a: no checkpoint was selected (fast-dev-run, or checkpointing off)"
    assert finished_line({**RESULTS, "best_val_acc1": None, "best_checkpoint": None}, "/r/results.json") == (
        "finished: best val acc1 n/a: no checkpoint was selected (fast-dev-run, or checkpointing off), "
        "test acc1 90.12 %; results in /r/results.json")


def test_eval_and_export_end_with_a_sentence() -> None:
    assert eval_line({"ckpt_path": "/r/last.ckpt", "data": "digits", "test": {"test/acc1": 0.25}}, "/e/x.json") == (
        "evaluated /r/last.ckpt on the test split of digits: test acc1 25.00 %; results in /e/x.json")
    check = {"spikes_compared": 24576, "neuron_layers": 2, "time_steps": 4, "max_abs_diff": 0.0, "atol": 1e-5}
    res = {"format": "nir", "file": "/x/model.nir", "input_shape": [16, 3, 8, 8], "check": check}
    assert export_line(res, "/x/export_results.json") == (
        "exported to /x/model.nir (nir); read back and run on 16 test samples: spikes equal at all 24,576 positions "
        "(2 neuron layers, 4 steps), outputs within 0 (tolerance 1e-05); the check is in /x/export_results.json")
