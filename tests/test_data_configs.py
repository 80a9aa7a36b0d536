"""Every data config composes and builds its datamodule; a CIFAR-10 run on a tiny fake dataset."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from infra_utils import run_cmd

from spikeforge.data.base import SpikeDataModule
from spikeforge.data.fakes import write_cifar

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["digits", "cifar10", "cifar100", "cifar10_dvs", "dvs_gesture", "imagenet"]


@pytest.mark.parametrize("name", DATASETS)
def test_data_config_composes(name: str, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={name}", f"paths.data_dir={tmp_path}", "T=6"])
    for key in ("name", "num_classes", "channels", "batch_size", "val_fraction", "num_workers"):
        assert key in cfg.data, key
    assert cfg.data.name == name
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    assert isinstance(dm, SpikeDataModule)
    if name != "digits":
        assert Path(dm.root) == tmp_path / name
    if name in ("cifar10_dvs", "dvs_gesture"):
        assert dm.frames == 6 and dm.size == 48


def test_data_root_overrides_one_dataset(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["data=cifar10", f"data.root={tmp_path / 'mine'}"])
    assert Path(hydra.utils.instantiate(cfg.data).root) == tmp_path / "mine"


def test_train_fast_dev_run_on_fake_cifar10(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_cifar(data_dir / "cifar10", "cifar10", train_per_class=4, test_per_class=2)
    env = {**os.environ, "SPIKEFORGE_VERIFY_CHECKSUMS": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "data=cifar10", f"paths.data_dir={data_dir}",
           "++trainer.fast_dev_run=true", "data.num_workers=0", "data.persistent_workers=false",
           "data.val_fraction=0.25", "data.batch_size=8", f"hydra.run.dir={tmp_path / 'run'}"]
    out = run_cmd(cmd, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "run" / "results.json").is_file()


def test_bench_data_writes_json_and_markdown(tmp_path: Path) -> None:
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("_bench_data", ROOT / "scripts" / "bench_data.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "out"
    args = ["--datasets", "digits", "cifar10", "--batches", "1", "--data-dir", str(tmp_path / "none"),
            "--out", str(out)]
    assert bench.main(args) == 0
    rows = json.loads((out / "bench_data.json").read_text())["results"]
    assert [(r["dataset"], r["source"]) for r in rows] == [("digits", "embedded"), ("cifar10", "fake")]
    assert all(r["samples_per_s"] > 0 and r["samples"] > 0 for r in rows)
    assert rows[1]["sample_shape"] == [3, 32, 32]
    assert "| cifar10 | fake |" in (out / "bench_data.md").read_text()
