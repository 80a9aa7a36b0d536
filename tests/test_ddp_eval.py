"""Validation and test under DDP score every sample exactly once: on 2 gloo ranks, with splits whose
sizes are not multiples of ranks × batch (uneven last shards), the metrics of a checkpoint equal those
of one process on the same weights — through ``src/train.py`` (validation and test) and through
``src/eval.py`` (test)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from infra_utils import PY, ROOT, TINY, cli_in_process, env, results, run_cmd, run_train, tail
from torch.utils.data import DataLoader

from spikeforge.data.digits import DigitsDataModule
from spikeforge.data.sharding import UnpaddedDistributedSampler

BATCH, RANKS = 32, 2
ONE_EPOCH = [*TINY, "trainer.max_epochs=1", f"data.batch_size={BATCH}", "reliability.checkpoint_every_n_steps=0"]
TOL = 1e-6  # float summation order only


@pytest.mark.parametrize("n", [7, 8, 143, 359])
def test_unpadded_sampler_deals_every_index_once(n: int) -> None:
    shards = [list(UnpaddedDistributedSampler(list(range(n)), num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(s) for s in shards] == [len(UnpaddedDistributedSampler(list(range(n)), 3, r)) for r in range(3)]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def _close(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys(), (a, b)
    for k in a:
        assert math.isclose(a[k], b[k], rel_tol=0, abs_tol=TOL), (k, a[k], b[k])


def test_ddp_validation_and_test_equal_one_process(tmp_path: Path) -> None:
    dm = DigitsDataModule(batch_size=BATCH, image_size=8)
    dm.setup("fit")
    dm.setup("test")
    sizes = {"val": len(dm.val_set), "test": len(dm.test_set)}
    assert all(n % (RANKS * BATCH) and n % RANKS for n in sizes.values()), sizes  # uneven last shards
    assert sum(len(b[1]) for b in DataLoader(dm.val_set, batch_size=BATCH)) == sizes["val"]

    # one process: train one epoch; its validation and test ran on the weights of last.ckpt
    single = tmp_path / "single"
    rc, err = cli_in_process([*ONE_EPOCH, f"run_dir={single}"])
    assert rc == 0, err[-2000:]
    one = results(single)
    ckpt = single / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["epoch"] == 0

    # 2 ranks, the same weights: the finished run continued from last.ckpt has nothing left to fit, so
    # it validates and tests the checkpoint's weights
    ddp = tmp_path / "ddp"
    r = run_train([*ONE_EPOCH, "trainer=ddp_cpu", f"trainer.devices={RANKS}", f"ckpt_path={ckpt}", f"run_dir={ddp}"],
                  timeout=400)
    assert r.returncode == 0, tail(r.stdout + r.stderr)
    two = results(ddp)
    assert two["world_size"] == RANKS
    _close(two["val"], one["val"])
    _close(two["test"], one["test"])
    _close(two["firing_rate"], one["firing_rate"])  # the whole split's spike counts, not a mean of ranks'

    # src/eval.py on 2 ranks
    out = tmp_path / "eval"
    r = run_cmd([PY, str(ROOT / "src" / "eval.py"), f"ckpt_path={ckpt}", "trainer=ddp_cpu",
                 f"trainer.devices={RANKS}", f"hydra.run.dir={out}"], 400, env=env())
    assert r.returncode == 0, tail(r.stdout + r.stderr)
    _close(json.loads((out / "eval_results.json").read_text())["test"], one["test"])


def test_split_smaller_than_the_ranks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from spikeforge.data import sharding
    from spikeforge.errors import ConfigError

    monkeypatch.setattr(sharding.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(sharding.dist, "get_world_size", lambda: 4)
    with pytest.raises(ConfigError, match=r"^the evaluation split has 3 samples, fewer than the 4 ranks; use fewer "):
        sharding.eval_sampler(list(range(3)))
    monkeypatch.setattr(sharding.dist, "get_world_size", lambda: 1)
    assert sharding.eval_sampler(list(range(3))) is None
