"""DDP on CPU (gloo) under Hydra, multiruns with DDP, mixed precision, generators for methods."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from infra_utils import TINY, cli_in_process, method_names, results, run_train
from omegaconf import OmegaConf

from spikeforge.distributed import check_launcher, rank_generator, shared_generator
from spikeforge.errors import ConfigError

# one epoch of 10 global batches of 32; BN statistics are per process without SyncBN, so the DDP run
# uses sync_batchnorm for the comparison with one process
DDP = [*TINY, "trainer.max_epochs=1", "++trainer.limit_train_batches=10", "++trainer.limit_val_batches=2",
       "++trainer.limit_test_batches=2", "reliability.checkpoint_every_n_steps=0"]


def dumped(dirpath: Path) -> dict[str, dict]:
    return {p.stem: torch.load(p, weights_only=False) for p in sorted(dirpath.glob("weights_rank*.pt"))}


def test_ddp_cpu_two_ranks_match_one_process(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    dump = tmp_path / "dump"
    r = run_train([*DDP, "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=16", "trainer.sync_batchnorm=true",
                   f"paths.log_dir={out}", "+callbacks.dump._target_=infra_utils.DumpWeights",
                   f"+callbacks.dump.dirpath={dump}"])
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [p.parent for p in out.rglob("results.json")]
    assert len(runs) == 1 and len(list((out / "train" / "runs").iterdir())) == 1  # one run directory
    res = results(runs[0])
    assert res["world_size"] == 2 and res["global_steps"] == 10  # 10 steps of 2 × 16
    ranks = dumped(dump)
    assert set(ranks) == {"weights_rank0_T2", "weights_rank1_T2"}
    w0, w1 = ranks["weights_rank0_T2"]["state"], ranks["weights_rank1_T2"]["state"]
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks ended with different weights"

    # one process, same global batch (32) and seed: same samples per step (the sampler deals rank r
    # the indices r, r+2, ... of the same permutation) → the same result up to float summation order
    single = tmp_path / "single"
    rc, err = cli_in_process([*DDP, "data.batch_size=32", f"run_dir={single}"])
    assert rc == 0, err[-2000:]
    s = torch.load(single / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for k in w0:
        if w0[k].is_floating_point():
            assert torch.allclose(w0[k], s[k], atol=1e-4, rtol=1e-3), k  # stated tolerance
    assert abs(res["test"]["test/acc1"] - results(single)["test"]["test/acc1"]) <= 0.02


def test_joblib_launcher_with_ddp_is_refused() -> None:
    cfg = OmegaConf.create({"trainer": {"strategy": "ddp", "devices": 2}})
    hydra_cfg = OmegaConf.create({"launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher"}})
    with pytest.raises(ConfigError, match="cannot run inside the joblib launcher"):
        check_launcher(cfg, hydra_cfg)
    check_launcher(OmegaConf.create({"trainer": {"strategy": "ddp", "devices": 1}}), hydra_cfg)  # 1 process: fine


def test_generators_shared_and_per_rank() -> None:
    a0, a1 = shared_generator(7, "sltt_k"), shared_generator(7, "sltt_k")
    assert torch.equal(torch.rand(4, generator=a0), torch.rand(4, generator=a1))
    r0, r1 = rank_generator(7, "asgl", rank=0), rank_generator(7, "asgl", rank=1)
    assert not torch.equal(torch.rand(4, generator=r0), torch.rand(4, generator=r1))
    assert torch.equal(torch.rand(4, generator=rank_generator(7, "asgl", rank=1)),
                       torch.rand(4, generator=rank_generator(7, "asgl", rank=1)))


def test_bf16_mixed_on_cpu_bptt(tmp_path: Path) -> None:
    run = tmp_path / "bf16"
    rc, err = cli_in_process([*DDP, "trainer.precision=bf16-mixed", f"run_dir={run}"])
    assert rc == 0, err[-2000:]
    res = results(run)
    assert res["precision"] == "bf16-mixed" and math.isfinite(res["test"]["test/loss"])
    assert res["global_steps"] == 10


@pytest.mark.slow
def test_multirun_with_ddp_cpu_trains_each_jobs_config(tmp_path: Path) -> None:
    sweep, dump = tmp_path / "sweep", tmp_path / "dump"
    r = run_train(["-m", *DDP, "T=2,3", "trainer=ddp_cpu", "trainer.devices=2", f"hydra.sweep.dir={sweep}",
                   "+callbacks.dump._target_=infra_utils.DumpWeights", f"+callbacks.dump.dirpath={dump}"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.parent.name for p in sweep.rglob("results.json")) == ["0", "1"]
    assert [results(sweep / j)["T"] for j in ("0", "1")] == [2, 3]
    ranks = dumped(dump)
    # every rank of job j trained job j's T (not the sweep re-run with other values)
    assert set(ranks) == {f"weights_rank{r}_T{t}" for r in (0, 1) for t in (2, 3)}
    for t in (2, 3):
        w0, w1 = ranks[f"weights_rank0_T{t}"]["state"], ranks[f"weights_rank1_T{t}"]["state"]
        assert all(torch.equal(w0[k], w1[k]) for k in w0)
        assert {ranks[f"weights_rank{r}_T{t}"]["world_size"] for r in (0, 1)} == {2}


@pytest.mark.slow
@pytest.mark.parametrize("method", method_names())
def test_every_method_ddp_cpu(method: str, tmp_path: Path) -> None:
    out, dump = tmp_path / "outputs", tmp_path / "dump"
    # SyncBN: without it the BN running statistics stay per rank (only rank 0's are saved); the
    # weights agree either way
    r = run_train([*DDP, f"method={method}", "trainer=ddp_cpu", "trainer.devices=2", "trainer.sync_batchnorm=true",
                   f"paths.log_dir={out}", "+callbacks.dump._target_=infra_utils.DumpWeights",
                   f"+callbacks.dump.dirpath={dump}"], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(out.rglob("results.json"))) == 1
    ranks = list(dumped(dump).values())
    assert len(ranks) == 2 and all(torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]) for k in ranks[0]["state"])


@pytest.mark.slow
@pytest.mark.parametrize("method", method_names())
def test_every_method_bf16_mixed_cpu(method: str, tmp_path: Path) -> None:
    run = tmp_path / "bf16"
    r = run_train([*DDP, f"method={method}", "trainer.precision=bf16-mixed", f"run_dir={run}"], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    assert res["precision"] == "bf16-mixed"
    assert all(v == v for v in res["test"].values())  # finite metrics (NaN != NaN)
