"""DDP on CPU (gloo) under Hydra with the user's callbacks and loggers, multiruns with DDP, SyncBN,
random streams of methods, the non-finite guard's one decision per step, mixed precision."""

from __future__ import annotations

import copy
import datetime
import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from infra_utils import PY, ROOT, TINY, cli_in_process, env, method_names, results, run_train
from omegaconf import OmegaConf

from spikeforge.callbacks.reliability import NonFiniteLossError, NonFiniteLossGuard
from spikeforge.callbacks.resume import RNGStateCallback
from spikeforge.distributed import (
    check_launcher,
    collective_timeout_in,
    rank_generator,
    shared_generator,
    strategy_name,
)
from spikeforge.errors import ConfigError

# TINY as the user runs it: the default callbacks (progress bar, model summary) and loggers (CSV +
# TensorBoard) stay on, since DDP runs depend on what they do on each rank
USER_TINY = [a for a in TINY if not a.startswith(("callbacks.", "logger="))]
# one epoch of 10 global batches of 32; BN statistics are per process without SyncBN, so the DDP run
# uses sync_batchnorm for the comparison with one process
DDP = [*USER_TINY, "trainer.max_epochs=1", "++trainer.limit_train_batches=10", "++trainer.limit_val_batches=2",
       "++trainer.limit_test_batches=2", "reliability.checkpoint_every_n_steps=0"]


def launch(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``src/train.py args``; a run past ``timeout`` fails the test with its last output lines."""
    try:
        return run_train(args, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        tail = "\n".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                         for x in (e.stdout, e.stderr))[-3000:]
        pytest.fail(f"src/train.py {' '.join(args[:3])} ... did not finish in {timeout:.0f} s; last output:\n{tail}")


def dumped(dirpath: Path) -> dict[str, dict]:
    return {p.stem: torch.load(p, weights_only=False) for p in sorted(dirpath.glob("weights_rank*.pt"))}


def test_ddp_cpu_two_ranks_match_one_process(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    dump = tmp_path / "dump"
    r = launch([*DDP, "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=16", "trainer.sync_batchnorm=true",
                f"paths.log_dir={out}", "+callbacks.dump._target_=infra_utils.DumpWeights",
                f"+callbacks.dump.dirpath={dump}"], timeout=600)
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
            diff = float((w0[k] - s[k]).abs().max())
            assert diff <= 1e-4, (k, diff)  # README: the weights agree to 1e-4 (absolute, no relative slack)
    assert abs(res["test"]["test/acc1"] - results(single)["test"]["test/acc1"]) <= 0.02


# The DDP command of docs/scaling.md scaled down: 8×8 digits, 3 batches of 16 per rank, T=4 (so SLTT-K's K=2 is
# a real choice), default callbacks and loggers, a checkpoint every 2 steps (a mid-epoch save under
# DDP besides the epoch-end ones); all methods in one `-m` sweep so the imports are paid once
SWEEP = ["data.image_size=8", "model.channels=[8,16]", "model.pool_size=1", "T=4", "data.batch_size=16",
         "trainer.max_epochs=1", "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=1",
         "++trainer.limit_test_batches=1", "reliability.checkpoint_every_n_steps=2"]


def test_readme_ddp_command_every_method_in_a_sweep(tmp_path: Path) -> None:
    sweep, rec = tmp_path / "sweep", tmp_path / "ranks"
    methods = method_names()
    r = launch(["-m", *SWEEP, f"method={','.join(methods)}", "trainer=ddp_cpu", "trainer.devices=2",
                f"hydra.sweep.dir={sweep}", "+callbacks.probe._target_=ddp_probes.RecordRank",
                f"+callbacks.probe.dirpath={rec}", "+callbacks.probe.tag=${method.name}"], timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert len(jobs) == len(methods)
    cfg = OmegaConf.load(jobs[0] / ".hydra" / "config.yaml")  # the user's callbacks and loggers
    assert cfg.callbacks.progress_bar._target_.endswith("RichProgressBar") and set(cfg.logger) == {"csv", "tensorboard"}
    names = []
    for job in jobs:
        res = results(job)
        names.append(res["method"])
        assert res["world_size"] == 2 and res["global_steps"] == 3 and res["epochs"] == 1, job
        assert list(job.rglob("events.out.tfevents.*")) and list(job.rglob("metrics.csv")), job
        ranks = [torch.load(rec / f"{res['method']}_rank{k}.pt", weights_only=False) for k in (0, 1)]
        # rank 1 was started by rank 0 of this job and trained this job's config (not the sweep's first)
        assert [(x["tag"], x["rank"], x["world_size"]) for x in ranks] == [(res["method"], k, 2) for k in (0, 1)]
        assert all(torch.equal(ranks[0]["params"][k], ranks[1]["params"][k]) for k in ranks[0]["params"]), job
        draws = {"masks": [x["masks"] for x in ranks], "steps": [x["steps"] for x in ranks]}
        if res["method"] == "asgl":  # the paper's per-GPU noise: each rank its own Bernoulli masks
            m0, m1 = draws["masks"][0][0], draws["masks"][1][0]
            assert m0.shape == m1.shape and 0 < m0.mean() < 1 and not torch.equal(m0, m1)
            rng = torch.load(job / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["RNGStateCallback"]
            gens = [x["generators"]["asgl/masks"] for x in rng["per_rank"]]
            assert len(gens) == 2 and not torch.equal(gens[0], gens[1])  # each rank's stream is saved
        if res["method"] == "sltt_k":  # K=2 of T=4 steps, the same on both ranks in every batch
            s0, s1 = draws["steps"]
            assert len(s0) == 3 and all(len(s) == 2 for s in s0) and s0 == s1
    assert sorted(names) == methods  # conf/method/<name>.yaml has name: <name>


def test_ddp_configs_have_a_timeout() -> None:
    from conftest import compose_cfg
    from hydra.utils import instantiate

    for trainer, seconds in (("ddp_cpu", 300), ("ddp", 600)):
        cfg = compose_cfg([f"trainer={trainer}"])
        assert strategy_name(cfg.trainer.strategy) == "ddp"
        assert instantiate(cfg.trainer.strategy)._timeout == datetime.timedelta(seconds=seconds)
    cfg = compose_cfg(["trainer=ddp_cpu", "trainer.strategy.timeout.seconds=7"])
    assert instantiate(cfg.trainer.strategy)._timeout == datetime.timedelta(seconds=7)
    assert strategy_name(compose_cfg(["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"]).trainer.strategy) == "ddp_spawn"
    # a timed-out collective becomes one line saying what to do
    gloo = RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 300000ms for recv operation")
    err = collective_timeout_in(gloo)
    assert err is not None and "trainer.strategy.timeout.seconds" in str(err) and err.exit_code != 0
    assert collective_timeout_in(RuntimeError("CUDA out of memory")) is None


@pytest.mark.slow
def test_stuck_rank_ends_with_the_timeout_error(tmp_path: Path) -> None:
    # 120 s: long enough for a rank to start on a loaded machine (init waits with the same timeout)
    r = launch([*SWEEP, "trainer=ddp_cpu", "trainer.devices=2", "trainer.strategy.timeout.seconds=120",
                f"paths.log_dir={tmp_path}", "+callbacks.stall._target_=ddp_probes.StallRank"], timeout=900)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "error: rank 0 waited longer than the DDP timeout for the other ranks" in r.stderr, r.stderr[-3000:]
    assert "raise trainer.strategy.timeout.seconds" in r.stderr


def test_sync_batchnorm_keeps_each_norms_forward_one_process() -> None:
    from torch import nn

    from spikeforge.layers.norm import StepwiseBatchNorm
    from spikeforge.layers.tdbn import ThresholdDependentBN
    from spikeforge.plugins import TimeSyncBatchNorm

    torch.manual_seed(0)
    x = torch.randn(4, 8, 3, 5, 5) * 2 + 1  # [T, N, C, H, W]
    for norm in (ThresholdDependentBN(3, alpha=0.7, v_th=0.5), StepwiseBatchNorm(3)):
        ref = nn.Sequential(norm)
        conv = TimeSyncBatchNorm().apply(nn.Sequential(copy.deepcopy(norm)))
        assert isinstance(conv[0], type(norm)) and type(conv[0]) is not type(norm)
        y_ref, y = ref(x), conv(x)
        assert torch.equal(y, y_ref)  # train: batch statistics, the norm's own scale
        assert torch.equal(conv[0].running_var, norm.running_var)
        ref.eval(), conv.eval()
        assert torch.equal(conv(x), ref(x))  # eval: running statistics
        if isinstance(norm, ThresholdDependentBN):  # λ = 1, β = 0: the output std is α·V_th, not 1
            assert abs(float(y.detach().std()) - 0.35) < 0.01


def test_sync_batchnorm_two_gloo_ranks_equal_one_process(tmp_path: Path) -> None:
    out = tmp_path / "diffs.pt"
    try:
        r = subprocess.run([PY, str(ROOT / "tests" / "ddp_probes.py"), "syncbn", str(out)], cwd=ROOT, env=env(),
                           capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the 2-rank SyncBN check did not finish in 300 s; last output:\n{str(e.stderr)[-3000:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    diffs = torch.load(out)
    # each rank normalises its half of the batch with the statistics of the whole batch: outputs,
    # gradients (summed over ranks), running statistics and eval outputs as one process on the whole
    # batch, for tdBN (α·V_th kept) and bn_step (per-step statistics kept)
    assert {k for k, v in diffs.items() if v > 2e-5} == set(), diffs


def test_rank_generator_state_restored_exactly_on_resume() -> None:
    gen = rank_generator(5, "asgl/masks", rank=1)
    module = SimpleNamespace(rank_generators=lambda: {"asgl/masks": gen})
    trainer = SimpleNamespace(world_size=1)
    saver = RNGStateCallback()
    saver.setup(trainer, module, "fit")  # type: ignore[arg-type]
    torch.rand(3, generator=gen)
    state = saver.state_dict()
    expected = torch.rand(5, generator=gen), torch.rand(5)
    resumed = rank_generator(5, "asgl/masks", rank=1)  # a fresh process: the stream from its start
    loader = RNGStateCallback()
    loader.setup(trainer, SimpleNamespace(rank_generators=lambda: {"asgl/masks": resumed}), "fit")  # type: ignore[arg-type]
    loader.load_state_dict(state)
    torch.rand(7)  # the global RNG moved on too
    loader.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
    assert torch.equal(torch.rand(5, generator=resumed), expected[0]) and torch.equal(torch.rand(5), expected[1])


class _CountingStrategy:
    def __init__(self) -> None:
        self.reductions = 0

    def reduce(self, t: torch.Tensor, reduce_op: str = "sum") -> torch.Tensor:
        self.reductions += 1
        return t * 2  # two ranks that saw the same


def _guard_step(guard: NonFiniteLossGuard, losses: list[float], grad: float = 1.0) -> _CountingStrategy:
    strategy = _CountingStrategy()
    trainer = SimpleNamespace(world_size=2, strategy=strategy, precision="32-true", global_step=4, current_epoch=0,
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(
                                  current=SimpleNamespace(ready=5)))))
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.full((3,), grad)
    opt = torch.optim.SGD([p], lr=0.1)
    for v in losses:  # SLTT: T backward passes before one optimiser step
        guard.on_before_backward(trainer, None, torch.tensor(v))  # type: ignore[arg-type]
    guard.on_before_optimizer_step(trainer, SimpleNamespace(device=torch.device("cpu")), opt)  # type: ignore[arg-type]
    guard.p = p  # type: ignore[attr-defined]
    return strategy


def test_nonfinite_guard_decides_once_per_optimizer_step() -> None:
    guard = NonFiniteLossGuard("stop")
    assert _guard_step(guard, [0.5] * 6).reductions == 1  # T=6 backwards, one all-reduce
    with pytest.raises(NonFiniteLossError, match="training loss became nan at global step 4"):
        _guard_step(guard, [0.5, float("nan"), 0.5])
    with pytest.raises(NonFiniteLossError, match="training gradient became non-finite"):
        _guard_step(guard, [0.5], grad=float("inf"))
    skip = NonFiniteLossGuard("skip")
    assert _guard_step(skip, [float("inf"), 0.5]).reductions == 1
    assert skip.skipped == 1 and skip.p.grad is None  # type: ignore[attr-defined]


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


def test_a_failing_ddp_job_ends_its_sweep_with_its_error(tmp_path: Path) -> None:
    """docs/scaling.md: under DDP a failing `-m` job ends the sweep with its one-line error and exit
    code (without DDP the sweep runs every job). Job 0's loss turns NaN at step 2 on both ranks; the
    sweep must neither hang nor start job 1, and job 0 keeps its last good checkpoint."""
    sweep = tmp_path / "sweep"
    r = launch(["-m", *DDP, "T=2,3", "trainer=ddp_cpu", "trainer.devices=2", f"hydra.sweep.dir={sweep}",
                "reliability.checkpoint_every_n_steps=1", "+callbacks.poison._target_=infra_utils.PoisonAt",
                "+callbacks.poison.step=2"], timeout=300)
    assert r.returncode == 3, r.stderr[-3000:]  # NonFiniteLossError's exit code
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert errors and "training loss became nan at global step 2" in errors[-1], r.stderr[-3000:]
    assert not (sweep / "1").exists() and not list(sweep.rglob("results.json"))
    assert "training loss became nan at global step 2" in (sweep / "0" / "train.log").read_text()
    assert torch.load(sweep / "0" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2


@pytest.mark.slow
def test_multirun_with_ddp_cpu_trains_each_jobs_config(tmp_path: Path) -> None:
    sweep, dump = tmp_path / "sweep", tmp_path / "dump"
    r = launch(["-m", *DDP, "T=2,3", "trainer=ddp_cpu", "trainer.devices=2", f"hydra.sweep.dir={sweep}",
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
    r = launch([*DDP, f"method={method}", "trainer=ddp_cpu", "trainer.devices=2", "trainer.sync_batchnorm=true",
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
    r = launch([*DDP, f"method={method}", "trainer.precision=bf16-mixed", f"run_dir={run}"], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    assert res["precision"] == "bf16-mixed"
    assert all(v == v for v in res["test"].values())  # finite metrics (NaN != NaN)
