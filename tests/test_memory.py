"""Memory figures of a run: its own peak (not the process's so far) and the bytes saved for backward."""

from __future__ import annotations

import torch
from conftest import compose_cfg

from spikeforge.run import train
from spikeforge.utils.memory import SCOPE_RUN, peak_host_memory_bytes, reset_peak_memory

MB = 2**20
ONE_EPOCH = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false",
             "inference_cost=false"]


def test_reset_forgets_an_earlier_peak() -> None:
    assert reset_peak_memory() == SCOPE_RUN  # Linux: /proc/self/clear_refs resets VmHWM
    big = torch.ones(256 * MB // 4)  # 256 MiB, touched
    high, scope = peak_host_memory_bytes(SCOPE_RUN)
    assert scope == SCOPE_RUN
    del big
    low, _ = peak_host_memory_bytes(reset_peak_memory())
    assert low < high - 200 * MB


def test_each_job_of_a_sweep_reports_its_own_peak(tmp_path) -> None:
    """Two jobs in one process one after the other, as Hydra's default launcher runs a sweep (default
    callbacks and loggers): a large job, then a small one. The small one reports less memory."""
    large = compose_cfg([*ONE_EPOCH, "data.batch_size=128", "data.image_size=16", "T=8"], tmp_path / "large")
    small = compose_cfg([*ONE_EPOCH, "data.batch_size=8", "data.image_size=16", "T=2"], tmp_path / "small")
    r1 = train(large)
    r2 = train(small)
    assert r1["peak_host_memory_scope"] == r2["peak_host_memory_scope"] == SCOPE_RUN
    saved1, saved2 = r1["saved_for_backward_peak_bytes"], r2["saved_for_backward_peak_bytes"]
    # one training step of job 1 holds 128 samples × 8 steps of activations for backward: well over 100 MiB
    assert saved1 > 50 * MB and saved2 < saved1 / 20
    assert r2["peak_host_memory_bytes"] < r1["peak_host_memory_bytes"] - saved1 / 2
