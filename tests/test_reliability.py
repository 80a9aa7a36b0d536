"""Exact resume after SIGKILL, SIGTERM checkpoint-and-stop, non-finite loss, atomic writes, resumable
sampler. Runs are tiny digits runs (``infra_utils.TINY``); killed runs are real subprocesses."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from infra_utils import TINY, assert_same_run, cli_in_process, final_state, method_names, results, run_train

from spikeforge.callbacks.resume import ResumableSampler
from spikeforge.plugins.checkpoint_io import AtomicCheckpointIO

# 2 epochs of 12 batches, mid-epoch checkpoints every 5 steps, dropout so the RNG state matters
SHORT = [*TINY, "++trainer.limit_train_batches=12", "++trainer.limit_val_batches=3", "++trainer.limit_test_batches=3",
         "reliability.checkpoint_every_n_steps=5", "model.dropout=0.3"]



def kill_and_resume(tmp: Path, args: list[str], kill_step: int) -> Path:
    run = tmp / "killed"
    r = run_train([*args, f"run_dir={run}", "+callbacks.kill._target_=infra_utils.KillAt",
                   f"+callbacks.kill.step={kill_step}"])
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert not (run / "results.json").exists()
    r = run_train([*args, f"run_dir={run}", "resume=auto"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert results(run)["resumed_from"].endswith("last.ckpt")
    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("reliability") / "uninterrupted"
    r = run_train([*SHORT, f"run_dir={run}"])
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_kill_after_the_final_checkpoint_resumes_to_the_same_results(reference: Path, tmp_path: Path) -> None:
    """Killed after the last epoch's checkpoint but before results.json: nothing is left to fit, and the
    resumed run still reports the uninterrupted run's validation and test metrics."""
    run = tmp_path / "late"
    assert run_train([*SHORT, f"run_dir={run}"]).returncode == 0
    (run / "results.json").unlink()
    r = run_train([*SHORT, f"run_dir={run}", "resume=auto"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(reference, run)


def test_sigkill_mid_step_resumes_exactly(reference: Path, tmp_path: Path) -> None:
    # step 17: epoch 2, batch 5, inside the optimiser step; last checkpoint at step 15
    run = kill_and_resume(tmp_path, SHORT, kill_step=17)
    assert_same_run(reference, run)
    # a resumed run keeps its first config files and records the resume separately
    assert (run / ".hydra" / "config.yaml").is_file()
    assert any((run / ".hydra").glob("resume-*/overrides.yaml"))


def test_sigterm_checkpoints_and_stops(tmp_path: Path) -> None:
    run = tmp_path / "term"
    before = signal.getsignal(signal.SIGTERM)
    # in this process: the handler installed for training turns the signal into a checkpoint and a stop
    rc, err = cli_in_process([*SHORT, f"run_dir={run}", "+callbacks.sig._target_=infra_utils.SignalAt",
                              "+callbacks.sig.step=7"])
    assert rc == 0, err[-2000:]
    assert "stopped by SIGTERM after step 8" in err and f"resume=auto run_dir={run}" in err
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored after the run
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 8  # the batch in flight finished, then the checkpoint was taken
    assert not (run / "results.json").exists()


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "nan"
    rc, err = cli_in_process([*SHORT, f"run_dir={run}", "+callbacks.poison._target_=infra_utils.PoisonAt",
                              "+callbacks.poison.step=8"])
    assert rc == 3, err[-2000:]
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")][-1]
    assert "training loss became nan at global step 8 (epoch 0, batch 8)" in line
    assert "last good checkpoint is" in line
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (run / "results.json").exists()


def test_nonfinite_loss_skip_batch(tmp_path: Path) -> None:
    run = tmp_path / "skip"
    rc, err = cli_in_process([*SHORT, f"run_dir={run}", "reliability.nonfinite_loss=skip",
                              "+callbacks.poison._target_=infra_utils.PoisonAt", "+callbacks.poison.step=8"])
    assert rc == 0, err[-2000:]
    res = results(run)
    assert res["nonfinite_batches_skipped"] == 1 and res["global_steps"] == 24
    assert all(torch.isfinite(v).all() for v in final_state(run).values() if v.is_floating_point())


# ---- units --------------------------------------------------------------------------------------


def test_resumable_sampler_restarts_mid_epoch_and_shards() -> None:
    data = list(range(50))
    s = ResumableSampler(data, shuffle=True, seed=3)
    s.set_epoch(2)
    full = list(s)
    assert sorted(full) == data and full != data
    s.set_epoch(2)
    s.skip_batches(3, batch_size=8)
    assert list(s) == full[24:]
    assert list(s) == full  # the skip applies to one iteration only
    s.set_epoch(3)
    assert list(s) != full
    shards = []
    for rank in range(3):  # like DistributedSampler: padded to equal length, disjoint strides
        r = ResumableSampler(data, shuffle=True, seed=3)
        r.num_replicas, r.rank = 3, rank
        r.num_samples, r.total_size = 17, 51
        r.set_epoch(2)
        shards.append(list(r))
    assert all(len(x) == 17 for x in shards) and set().union(*shards) == set(data)


def test_atomic_checkpoint_write_never_truncates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)

    def crash(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        io.save_checkpoint({"w": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


# ---- slow: every method with a resume-relevant state, and a kill at a random moment ---------------

RESUME_METHODS = [m for m in ("bptt", "sltt_k", "asgl", "stds") if m in method_names()]


@pytest.mark.slow
@pytest.mark.parametrize("method", RESUME_METHODS)
def test_sigkill_resume_every_method(method: str, tmp_path: Path) -> None:
    args = [*SHORT, f"method={method}"]
    ref = tmp_path / "ref"
    r = run_train([*args, f"run_dir={ref}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(ref, kill_and_resume(tmp_path, args, kill_step=17))


@pytest.mark.slow
def test_external_sigkill_at_a_random_moment(reference: Path, tmp_path: Path) -> None:
    import random
    import subprocess

    from infra_utils import PY, ROOT, env

    run = tmp_path / "ext"
    proc = subprocess.Popen([PY, str(ROOT / "src" / "train.py"), *SHORT, f"run_dir={run}"], cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = run_train([*SHORT, f"run_dir={run}", "resume=auto"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(reference, run)


@pytest.mark.slow
def test_sigterm_then_resume_matches_uninterrupted(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "term"
    r = run_train([*SHORT, f"run_dir={run}", "+callbacks.sig._target_=infra_utils.SignalAt", "+callbacks.sig.step=14",
                   "+callbacks.sig.signum=10"])  # SIGUSR1, as SLURM sends before the time limit
    assert r.returncode == 0 and "stopped by SIGUSR1" in r.stderr, r.stderr[-2000:]
    r = run_train([*SHORT, f"run_dir={run}", "ckpt_path=last"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(reference, run)


@pytest.mark.slow
def test_ddp_cpu_sigkill_resume_exact(tmp_path: Path) -> None:
    """Two gloo ranks, killed inside a step and resumed: the same weights as an uninterrupted DDP run
    (every rank's RNG state and sampler position come back)."""
    args = [*SHORT, "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=16"]
    ref = tmp_path / "ref"
    r = run_train([*args, f"run_dir={ref}"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "killed"
    r = run_train([*args, f"run_dir={run}", "+callbacks.kill._target_=infra_utils.KillAt", "+callbacks.kill.step=17"],
                  timeout=600)
    assert r.returncode != 0 and not (run / "results.json").exists()
    r = run_train([*args, f"run_dir={run}", "resume=auto"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(ref, run)
