"""The whole resolved config reaches every logger as hyper-parameters; TensorBoard's HParams view holds
the final metrics beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spikeforge.callbacks.hparams import flatten_config
from spikeforge.run import train

TINY = ["data.image_size=8", "model.channels=[8,16]", "model.pool_size=1", "T=2", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
        "inference_cost=false"]


def _tb_hparams(tb_dir: Path) -> tuple[dict, set[str], dict[str, float]]:
    """(hparams of the session, metric tags the HParams view shows, scalar values of those tags)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tb_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    params: dict = {}
    metric_tags: set[str] = set()
    for tag, content in acc.PluginTagToContent("hparams").items():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if tag == "_hparams_/session_start_info":
            for k, v in data.session_start_info.hparams.items():
                params[k] = v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        if tag == "_hparams_/experiment":
            metric_tags |= {m.name.tag for m in data.experiment.metric_infos}
    scalars = {t: acc.Scalars(t)[-1].value for t in acc.Tags()["scalars"] if t in metric_tags}
    return params, metric_tags, scalars


def test_full_config_in_csv_and_tensorboard_hparams(make_cfg) -> None:
    # the default loggers (CSV + TensorBoard) and callbacks; quiet console only
    cfg = make_cfg(*TINY, "seed=7", "method.optimizer.lr=0.004")
    results = train(cfg)
    out = Path(cfg.paths.output_dir)

    saved = yaml.safe_load((out / "csv" / "hparams.yaml").read_text())
    for key, value in {"T": 2, "seed": 7, "method.optimizer.lr": 0.004, "method.name": "bptt",
                       "data.name": "digits", "data.image_size": 8, "data.batch_size": cfg.data.batch_size,
                       "model.name": "convnet", "model.channels": "[8, 16]", "trainer.max_epochs": 1}.items():
        assert saved[key] == value, key
    assert not any(k.startswith(("paths.", "logger.", "callbacks.")) for k in saved)
    assert saved == flatten_config(cfg)

    params, metric_tags, scalars = _tb_hparams(out / "tensorboard")
    assert params["T"] == 2 and params["seed"] == 7 and params["data.name"] == "digits"
    assert params["method.optimizer.lr"] == pytest.approx(0.004)
    assert params["trainer.limit_train_batches"] == 3
    assert {"hp/best_val_acc1", "hp/test_acc1", "hp/val_acc1"} <= metric_tags
    assert scalars["hp/best_val_acc1"] == pytest.approx(results["best_val_acc1"])
    assert scalars["hp/test_acc1"] == pytest.approx(results["test"]["test/acc1"])
