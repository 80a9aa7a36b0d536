"""Host-device synchronisations from the project's own code in the training step (docs/performance.md "GPU").

A GPU step should never wait for the device except where a value is genuinely needed on the host: at
most one synchronisation per training step, whatever the method. On CPU there is no device to wait
for, so the test counts the calls that *would* synchronise on CUDA — ``Tensor.item``, ``__bool__``,
``__float__``, ``__int__``, ``tolist``, ``cpu``, ``numpy`` and ``torch.cuda.synchronize`` — made
directly from a file under ``src/spikeforge`` (Lightning's, torchmetrics' and torch's own calls are
theirs). A step is counted from the start of one training batch to the start of the next (or the
end of the epoch), so every hook of the step — callbacks' batch-end hooks included — is inside.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import pytest
import torch

from spikeforge.run import train

SRC = str(Path(__file__).resolve().parents[1] / "src" / "spikeforge")
PATCHED = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy")
# Host-only reads that are not device synchronisations, named by call site (file name, function):
# SLTT-K draws its K time steps with a CPU torch.Generator (a CPU tensor's tolist never waits).
HOST_ONLY = {("sltt.py", "draw_grad_steps")}


class SyncCounter(L.Callback):
    """Counts the would-be synchronisations of project code per training step and per validation
    batch (the last instance is kept in ``SyncCounter.instances``)."""

    instances: ClassVar[list[SyncCounter]] = []

    def __init__(self) -> None:
        self.phase: str | None = None
        self.sites: dict[str, Counter[str]] = {"train": Counter(), "val": Counter()}
        self.steps = {"train": 0, "val": 0}
        self.per_step: list[int] = []  # host syncs of each training step
        self._saved: dict[str, Any] = {}
        SyncCounter.instances.append(self)

    def _record(self, name: str) -> None:
        frame = sys._getframe(2)
        path = frame.f_code.co_filename
        if self.phase and path.startswith(SRC) and (Path(path).name, frame.f_code.co_name) not in HOST_ONLY:
            self.sites[self.phase][f"{Path(path).name}:{frame.f_lineno} {frame.f_code.co_name} {name}"] += 1
            if self.phase == "train":
                self.per_step[-1] += 1

    def _wrap(self, name: str, original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._record(name)
            return original(*args, **kwargs)

        return wrapper

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name in PATCHED:
            self._saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap(name, self._saved[name]))
        self._saved["synchronize"] = torch.cuda.synchronize
        torch.cuda.synchronize = self._wrap("cuda.synchronize", torch.cuda.synchronize)

    def _restore(self) -> None:
        for name, original in self._saved.items():
            if name == "synchronize":
                torch.cuda.synchronize = original
            else:
                setattr(torch.Tensor, name, original)
        self._saved.clear()
        self.phase = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.phase = "train"
        self.steps["train"] += 1
        self.per_step.append(0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.phase = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.phase = None

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.phase = "val"
        self.steps["val"] += 1

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.phase = None  # runs before the module's own epoch-end hook (its one read of the firing rates)


# Every method config; the default callbacks and loggers.
METHODS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "method").glob("*.yaml"))
STEPS = 4


@pytest.mark.parametrize("method", METHODS)
def test_at_most_one_host_sync_per_training_step(method: str, make_cfg) -> None:
    cfg = make_cfg(f"method={method}", "data.image_size=8", "model.channels=[8,16]", "model.pool_size=1", "T=2",
                   "data.batch_size=16", "trainer.max_epochs=1", f"trainer.limit_train_batches={STEPS}",
                   "trainer.limit_val_batches=2", "trainer.num_sanity_val_steps=0", "test=false",
                   "inference_cost=false", "+callbacks.sync_counter._target_=test_host_syncs.SyncCounter")
    SyncCounter.instances.clear()
    train(cfg)
    counter = SyncCounter.instances[-1]
    assert counter.steps == {"train": STEPS, "val": 2}
    assert len(counter.per_step) == STEPS and max(counter.per_step) <= 1, (  # each step, not a total
        f"host syncs per step {counter.per_step}: {dict(counter.sites['train'])}")
    assert not counter.sites["val"], f"host syncs in validation batches: {dict(counter.sites['val'])}"
