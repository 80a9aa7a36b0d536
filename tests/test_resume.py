"""Kill-and-resume as a user meets it: SIGKILL in the middle of an epoch, ``resume=auto run_dir=...``,
again, and once more on the finished run. The logs (metrics.csv, TensorBoard) hold every logged step
once and equal an uninterrupted run's; the final weights equal it for every method; a finished run
is left untouched.

Runs are tiny digits runs with the default callbacks (progress bar on) and loggers, each in a forked
child of the test process (``infra_utils.train_forked``: a real process that a SIGKILL ends, without
the cost of importing everything again)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from infra_utils import TINY, assert_same_run, method_names, train_forked, tree_digest

from spikeforge.loggers import read_metrics_csv

# 2 epochs of 5 batches; last.ckpt every 3 steps (3, 6, 9) and at epoch ends (5, 10); every step logged;
# dropout, so that the restored RNG state matters. Default callbacks and loggers (TINY keeps them).
RUN = [*TINY, "++trainer.limit_train_batches=5", "++trainer.limit_val_batches=2",
       "++trainer.limit_test_batches=2", "reliability.checkpoint_every_n_steps=3", "++trainer.log_every_n_steps=1",
       "model.dropout=0.3"]
KILL = ["+callbacks.kill._target_=infra_utils.KillAt"]


def train(args: list[str], run: Path, *extra: str) -> tuple[int, str]:
    return train_forked([*args, f"run_dir={run}", *extra], timeout=300)


def killed_at(args: list[str], run: Path, step: int, resume: bool) -> None:
    """A run (or a resume) SIGKILLed inside optimiser step ``step + 1``."""
    rc, out = train(args, run, *KILL, f"+callbacks.kill.step={step}", *(["resume=auto"] if resume else []))
    assert rc == -signal.SIGKILL, out[-3000:]
    assert not (run / "results.json").exists()


def tensorboard_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars as TensorBoard shows them (its event reader, restarts/purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same_logs(ref: Path, run: Path) -> None:
    ref_header, ref_rows = read_metrics_csv(ref / "csv" / "metrics.csv")
    header, rows = read_metrics_csv(run / "csv" / "metrics.csv")
    assert header == ref_header
    assert rows == ref_rows, "metrics.csv differs from the uninterrupted run's"
    steps = [int(r["step"]) for r in rows if r["train/loss_step"]]
    assert steps == list(range(10)), steps  # every training step once
    ref_tb, tb = tensorboard_scalars(ref), tensorboard_scalars(run)
    for tag, points in tb.items():  # Lightning adds `epoch` to every log call: several per step
        if tag != "epoch":
            assert len({s for s, _ in points}) == len(points), f"TensorBoard {tag} has a step twice: {points}"
    assert tb == ref_tb



def checkpoint_files_exist(run: Path) -> None:
    """One last.ckpt, and every file its best-checkpoint state names exists."""
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["best-epoch000.ckpt", "last.ckpt"] or ckpts == ["best-epoch001.ckpt", "last.ckpt"], ckpts
    state: dict[str, Any] = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    mc = next(v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint"))
    named = {mc["best_model_path"], mc["kth_best_model_path"], *mc["best_k_models"]} - {""}
    assert named and all(Path(p).is_file() for p in named), named


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "uninterrupted"
    rc, out = train(RUN, run)
    assert rc == 0, out[-3000:]
    return run


def test_kills_and_resumes_keep_every_logged_step_once(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "killed"
    killed_at(RUN, run, 4, resume=False)  # last.ckpt: step 3, mid-epoch 0
    killed_at(RUN, run, 5, resume=True)  # resumed at step 3; last.ckpt: step 5, the end of epoch 0
    killed_at(RUN, run, 7, resume=True)  # resumed at the epoch end; last.ckpt: step 6, mid-epoch 1
    rc, out = train(RUN, run, "resume=auto")
    assert rc == 0, out[-3000:]
    assert_same_run(reference, run)
    assert_same_logs(reference, run)
    checkpoint_files_exist(run)
    checkpoint_files_exist(reference)
    log = (run / "train.log").read_text()  # every attempt's log, appended
    assert log.count(f"run directory {run}") == 4 and log.count("; resuming from") == 3


    # a requeued job of the finished run: one line, exit 0, not one file changed
    before = tree_digest(run)
    rc, out = train(RUN, run, "resume=auto")
    assert rc == 0, out[-3000:]
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "already finished" in lines[0], out[-3000:]
    assert tree_digest(run) == before


# every method, scaled down: killed mid-epoch, resumed, the same final weights and logs
@pytest.mark.parametrize("method", method_names())
def test_sigkill_mid_epoch_resume_every_method(method: str, reference: Path, tmp_path: Path) -> None:
    args = [*RUN, f"method={method}"]
    ref = reference if method == "bptt" else tmp_path / "ref"  # bptt is the default method
    if ref != reference:
        rc, out = train(args, ref)
        assert rc == 0, out[-3000:]
    run = tmp_path / "killed"
    killed_at(args, run, 7, resume=False)  # last.ckpt: step 6, mid-epoch 1
    rc, out = train(args, run, "resume=auto")
    assert rc == 0, out[-3000:]
    assert_same_run(ref, run)
    assert read_metrics_csv(run / "csv" / "metrics.csv") == read_metrics_csv(ref / "csv" / "metrics.csv")


# ---- logs of a run, signals, sweeps ----------------------------------------------------------------

SMALL = [*RUN, "trainer.max_epochs=1", "++trainer.limit_train_batches=3"]


def test_train_log_holds_the_run_and_a_failed_runs_error(tmp_path: Path) -> None:
    run = tmp_path / "nan"
    rc, out = train(SMALL, run, "+callbacks.poison._target_=infra_utils.PoisonAt", "+callbacks.poison.step=1")
    assert rc == 3, out[-3000:]
    log = (run / "train.log").read_text()
    assert f"run directory {run}" in log and "GPU available" in log  # spikeforge's and Lightning's lines
    last = log.strip().splitlines()[-1]  # the one-line error closes the log
    assert "[ERROR] - error: training loss became nan at global step 1 (epoch 0, batch 1);" in last, last
    assert last.endswith("or set reliability.nonfinite_loss=skip to skip such batches"), last


def test_sigusr2_checkpoints_and_stops(tmp_path: Path) -> None:
    """Hydra's submitit launcher (hydra/launcher=slurm) signals SIGUSR2 before the time limit."""
    run = tmp_path / "usr2"
    rc, out = train(SMALL, run, "+callbacks.sig._target_=infra_utils.SignalAt", "+callbacks.sig.step=1",
                    f"+callbacks.sig.signum={int(signal.SIGUSR2)}")
    assert rc == 0 and "stopped by SIGUSR2 after step 2" in out, out[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 2
    assert "stopped by SIGUSR2" in (run / "train.log").read_text()


def test_sweep_runs_every_job_and_lists_the_failures(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    rc, out = train_forked(["-m", *SMALL, "trainer.max_epochs=1", "method.optimizer.lr=-1,0.005,0",
                            f"hydra.sweep.dir={sweep}"], timeout=300)
    assert rc == 1, out[-3000:]
    assert (sweep / "1" / "results.json").is_file()  # the job after a failed one ran
    listing = out[out.index("error: 2 sweep job(s) failed:"):].splitlines()
    assert listing[1].startswith("  job 0 (") and listing[1].endswith(
        "method.optimizer.lr=-1): method.optimizer.lr must be a number > 0 (got -1); "
        "set method.optimizer.lr=<a number > 0>"), listing
    assert listing[2].startswith("  job 2 (") and "(got 0)" in listing[2], listing
    assert "error: method.optimizer.lr must be a number > 0 (got -1)" in (sweep / "0" / "train.log").read_text()


def test_lightning_version_in_supported_range() -> None:
    """The exact-resume code reads Lightning loop internals; it was checked on this version range."""
    from spikeforge.callbacks.resume import lightning_supported, lightning_version_notice

    assert lightning_version_notice() is None, lightning_version_notice()
    assert not lightning_supported("2.7.0") and not lightning_supported("2.5.9") and lightning_supported("2.6.6")
    assert "outside 2.6.0 <= version < 2.7.0" in str(lightning_version_notice("3.0.0"))
