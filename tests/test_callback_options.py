"""``callbacks=[default,early_stopping|ema|swa]``: each composes with the default callbacks and does its job.

The runs drop the rich progress bar and model summary (make_cfg's quiet default): these tests are about
the optional callbacks, not the console."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import lightning as L
import torch

from spikeforge.callbacks.averaging import EMA, SWA
from spikeforge.run import train

TINY = ["data.image_size=8", "model.channels=[8,16]", "model.pool_size=1", "T=2", "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "inference_cost=false", "logger=csv"]


def _last(cfg) -> dict:
    return torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def test_early_stopping_stops_when_validation_stalls(make_cfg) -> None:
    # lr 1e-9: validation accuracy never improves, so patience 1 ends fitting after the second epoch of 5
    cfg = make_cfg(*TINY, "callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=1",
                   "trainer.max_epochs=5", "method.optimizer.lr=1e-9", "test=false")
    assert cfg.callbacks.model_checkpoint is not None  # the defaults are kept
    results = train(cfg)
    assert results["epochs"] == 2 and results["global_steps"] == 6


def test_ema_checkpoints_and_tests_the_averaged_weights(make_cfg) -> None:
    cfg = make_cfg(*TINY, "callbacks=[default,ema]", "callbacks.ema.decay=0.5", "trainer.max_epochs=2")
    results = train(cfg)
    ckpt = _last(cfg)
    averaged, trained = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged if averaged[k].is_floating_point())
    assert int(ckpt["averaging_state"]["n_averaged"]) == 6  # one update per optimiser step
    assert results["test"]["test/acc1"] >= 0 and results["best_val_acc1"] is not None


class EpochEndWeights(L.Callback):
    """The trained (not averaged) weights at the end of every training epoch."""

    seen: ClassVar[list[dict[str, torch.Tensor]]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        EpochEndWeights.seen.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def test_swa_averages_end_of_epoch_weights_from_start(make_cfg) -> None:
    cfg = make_cfg(*TINY, "callbacks=[default,swa]", "callbacks.swa.start=1", "trainer.max_epochs=3", "test=false",
                   "+callbacks.weights._target_=test_callback_options.EpochEndWeights")
    EpochEndWeights.seen.clear()
    train(cfg)
    ckpt = _last(cfg)
    assert int(ckpt["averaging_state"]["n_averaged"]) == 2  # epochs 1 and 2
    assert len(EpochEndWeights.seen) == 3
    epoch1, epoch2 = EpochEndWeights.seen[1], EpochEndWeights.seen[2]
    for k, w_avg in ckpt["state_dict"].items():  # the equal average of the two end-of-epoch weights
        if w_avg.is_floating_point() and k in epoch1:
            assert torch.allclose(w_avg, (epoch1[k] + epoch2[k]) / 2, atol=1e-6, rtol=0), k
    w_avg = ckpt["state_dict"]["net.classifier.weight"]
    assert not torch.equal(w_avg, ckpt["current_model_state"]["net.classifier.weight"])


def test_averaging_callbacks_are_lightning_weight_averaging() -> None:
    from lightning.pytorch.callbacks import WeightAveraging

    assert issubclass(EMA, WeightAveraging) and issubclass(SWA, WeightAveraging)
    swa = SWA(start=0.5)
    assert not swa.should_update(step_idx=3) and swa.should_update(epoch_idx=0)  # start_epoch before setup: 0
