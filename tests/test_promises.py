"""Scaled-down CI versions of what the method pages (docs/methods/) promise (the full checks are `make test-slow`):
every method learns the embedded digits well above chance, and every method trains under bf16 autocast."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import compose_cfg, config_options
from infra_utils import TINY

from spikeforge.run import train

METHODS = config_options("method")

# ---- digits accuracy, per method ------------------------------------------------------------------
# The method pages' accuracies (≥ 90–98% after 10 epochs on 32×32 digits, `pytest -m slow`) scaled down:
# 8×8 digits, a 16/32-channel convnet, T = 2, 3 epochs of batch 32 (123 optimiser steps), each method's
# own defaults otherwise. Chance is 10%; the bounds sit about 10 points below what these runs reached
# (test top-1 in the comments, seed 42), so they fail when a method stops learning, not on noise.
ACCURACY = [*TINY, "model.channels=[16,32]", "trainer.max_epochs=3"]
MIN_TEST_TOP1 = {
    "asgl": 0.70,  # 81.6% (20% analog neurons in training, evaluated binary)
    "asgl_sg": 0.75,  # 85.2%
    "bptt": 0.75,  # 85.0%
    "bptt_sltt": 0.80,  # 92.2%
    "dsr": 0.70,  # 79.9%
    "dsr_ann": 0.80,  # 93.6%
    "dsr_lif": 0.70,  # 83.8%
    "sltt": 0.80,  # 91.1%
    "sltt_k": 0.70,  # 84.7%, K = 1 of T = 2
    "stbp_tdbn": 0.80,  # 90.0%
    "stds": 0.75,  # 85.2%, pruning as it trains
}
# per-method overrides: the ANN runs T = 1 (docs/methods/dsr.md table); SLTT-K back-propagates one step of two
EXTRA = {"dsr_ann": ["T=1"], "sltt_k": ["method.K=1"]}


def test_every_method_has_an_accuracy_bound() -> None:
    assert set(MIN_TEST_TOP1) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_method_learns_digits(method: str, tmp_path: Path, record_property) -> None:
    overrides = [*ACCURACY, f"method={method}", *EXTRA.get(method, [])]
    results = train(compose_cfg(overrides, tmp_path / "run"))
    record_property("test_acc1", results["test"]["test/acc1"])  # the figures of the comments above
    assert results["global_steps"] == 3 * 41
    assert results["test"]["test/acc1"] >= MIN_TEST_TOP1[method], results["test"]


# ---- bf16 autocast, per method ----------------------------------------------------------------------
class AutocastProbe(L.Callback):
    """Records the dtype of the first synaptic layer's output during training steps."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()
        self._hook: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        first = next(m for m in pl_module.net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
        self._hook = first.register_forward_hook(lambda m, i, o: self.dtypes.add(o.dtype))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook.remove()


PROBES: dict[str, AutocastProbe] = {}


def autocast_probe(key: str) -> AutocastProbe:
    """Hydra target: a probe the test can read back after the run."""
    PROBES[key] = AutocastProbe()
    return PROBES[key]


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_under_bf16(method: str, tmp_path: Path) -> None:
    """`trainer.precision=bf16-mixed` (docs/scaling.md) for every method: 4 steps, autocast active in
    the network, finite training loss and test metrics (the full version: `make test-slow`)."""
    overrides = [*TINY, f"method={method}", *EXTRA.get(method, []), "trainer.precision=bf16-mixed",
                 "trainer.max_epochs=1", "++trainer.limit_train_batches=4", "++trainer.limit_val_batches=2",
                 "++trainer.limit_test_batches=2", "+callbacks.autocast._target_=test_promises.autocast_probe",
                 f"+callbacks.autocast.key={method}"]
    results = train(compose_cfg(overrides, tmp_path / "run"))
    assert results["precision"] == "bf16-mixed" and results["global_steps"] == 4
    assert torch.bfloat16 in PROBES.pop(method).dtypes
    assert all(math.isfinite(v) for v in results["test"].values()), results["test"]


# ---- a hang cannot stall CI ---------------------------------------------------------------------------
def test_a_hanging_process_fails_the_test_with_its_last_lines(tmp_path: Path) -> None:
    """`infra_utils.run_cmd` (every test that launches processes): after the timeout the process and its
    children are killed and the test fails with the last lines of their output."""
    import sys
    import time

    from infra_utils import run_cmd

    pid_file = tmp_path / "child.pid"
    hang = ("import subprocess, sys, time; print('started', flush=True); "
            f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('waiting', flush=True); c.wait()")
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"did not finish within 3 s(.|\n)*started\nwaiting"):
        run_cmd([sys.executable, "-c", hang], timeout=3)
    assert time.monotonic() - start < 60
    status = Path(f"/proc/{int(pid_file.read_text())}/status")
    for _ in range(50):  # the grandchild was killed with its group: gone, or a zombie awaiting its reaper
        if not status.exists() or "\nState:\tZ" in status.read_text():
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the child of the timed-out process is still running")
