"""Helpers for the run-infrastructure tests (scale-out, reliability, bad input): tiny digits runs,
subprocess launches of ``src/train.py``, in-process CLI runs, and test-only callbacks that the
launched processes import (``PYTHONPATH`` includes this folder)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# Test-only overrides, all in this one place. Tests run the configuration users run: the default
# callbacks (checkpointing, LR monitor, rich progress bar, model summary) and loggers (CSV +
# TensorBoard). TINY only scales the default digits run down; each entry says why.
TINY = [
    "data.image_size=8",  # scale: the native 8×8 digits, not resized to 32×32 (16× fewer pixels)
    "model.channels=[8,16]",  # scale: two thin conv stages instead of 16/32/64
    "model.pool_size=1",  # an 8×8 image has no room for a pool after each stage
    "T=2",  # scale: 2 time steps instead of 4
    "data.batch_size=32",  # 41 batches per epoch: enough steps to stop, kill or resume inside an epoch
    "trainer.max_epochs=2",  # scale: 2 epochs instead of 10 (one epoch boundary to cross)
]


def method_names() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT / 'src'}",
              "SPIKEFORGE_ROOT": str(ROOT)})
    e.pop("HYDRA_FULL_ERROR", None)
    e.update(extra)
    return e


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a process's output (assertion messages)."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_cmd(cmd: list[str], timeout: float, cwd: Path = ROOT, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess:
    """Run ``cmd`` (output captured). A hang cannot stall the suite: after ``timeout`` seconds the whole
    process group (DDP ranks included) is killed and the test fails with the last lines of output."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except BaseException as e:  # TimeoutExpired, or pytest-timeout / Ctrl-C interrupting the wait
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        if not isinstance(e, subprocess.TimeoutExpired):
            raise
        timed_out = True
    if timed_out:
        import pytest

        pytest.fail(f"{' '.join(map(str, cmd))}\ndid not finish within {timeout:.0f} s; last lines of output:\n"
                    f"{tail(out, 20)}\n--- stderr ---\n{tail(err)}", pytrace=False)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_parallel(cmds: list[tuple[list[str], dict[str, str]]], timeout: float, cwd: Path = ROOT,
                 ) -> list[subprocess.CompletedProcess]:
    """Start every ``(cmd, env)`` at once (the nodes of a multi-node run) and wait for all; after
    ``timeout`` seconds every process group is killed and the test fails with each one's last lines."""
    import tempfile
    import time

    logs = [tempfile.TemporaryFile("w+") for _ in cmds]  # noqa: SIM115  (closed below)
    procs = [subprocess.Popen(c, cwd=cwd, env=e, stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True)
             for (c, e), f in zip(cmds, logs, strict=True)]
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    timed_out = any(p.poll() is None for p in procs)
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    outs = []
    for f in logs:
        f.seek(0)
        outs.append(f.read())
        f.close()
    if timed_out:
        import pytest

        pytest.fail(f"{len(cmds)} processes did not finish within {timeout:.0f} s; last lines of each:\n"
                    + "\n---\n".join(tail(o, 20) for o in outs), pytrace=False)
    return [subprocess.CompletedProcess(c, p.returncode, o, o) for (c, _), p, o in zip(cmds, procs, outs, strict=True)]


def run_train(args: list[str], timeout: float = 300, **env_extra: str) -> subprocess.CompletedProcess:
    return run_cmd([PY, str(ROOT / "src" / "train.py"), *args], timeout, env=env(**env_extra))


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (relative names), to show a directory did not change."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def results(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "results.json").read_text())


def assert_same_run(a: Path, b: Path) -> None:
    """Run ``b`` (e.g. killed and resumed) ended exactly like run ``a``: every weight, the metrics, steps."""
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs after resume"
    ra, rb = results(a), results(b)
    for key in ("val", "test", "best_val_acc1", "global_steps", "epochs"):
        assert ra[key] == rb[key], (key, ra[key], rb[key])


def cli_in_process(args: list[str]) -> tuple[int, str]:
    """Run ``src/train.py args`` in this process (Hydra app and all); (exit code, stderr)."""
    import runpy

    from hydra.core.global_hydra import GlobalHydra

    err = io.StringIO()
    argv = sys.argv
    code = 0
    GlobalHydra.instance().clear()  # an earlier in-process app or compose may have left it initialised
    sys.argv = [str(ROOT / "src" / "train.py"), *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(ROOT / "src" / "train.py"), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return code, err.getvalue()


def train_forked(args: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run ``src/train.py args`` (Hydra app and all) in a forked child of this process; (exit code, the
    child's output). The child starts with everything imported, so a run costs its training only; it
    is a separate process, so a SIGKILL (:class:`KillAt`) ends it as it ends a real run (the code is
    then ``-SIGKILL``). On timeout the child is killed and the output's tail is raised."""
    import tempfile
    import time
    import traceback

    with tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False) as f:
        out = Path(f.name)
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            fd = os.open(out, os.O_WRONLY | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            os.environ.pop("HYDRA_FULL_ERROR", None)
            torch.set_num_threads(1)  # as the subprocess runs (OMP_NUM_THREADS=1): same arithmetic
            code = _run_app(args)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"train.py {' '.join(args)} timed out after {timeout} s:\n"
                                 + out.read_text()[-3000:])
        time.sleep(0.05)
    text = out.read_text()
    out.unlink()
    return os.waitstatus_to_exitcode(status), text


def _run_app(args: list[str]) -> int:
    import runpy

    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    sys.argv = [str(ROOT / "src" / "train.py"), *args]
    try:
        runpy.run_path(str(ROOT / "src" / "train.py"), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


# ---- test-only callbacks (imported by launched processes) ---------------------------------------


class KillAt(L.Callback):
    """SIGKILL this process in the middle of optimiser step ``step`` (after backward, before the update);
    with ``seeds``, only in a run whose ``seed`` (pass ``seed=${seed}``) is one of them (one job of a sweep)."""

    def __init__(self, step: int, seed: int | None = None, seeds: list[int] | None = None) -> None:
        self.step = step
        self.armed = seeds is None or seed in list(seeds)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self.armed and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAt(L.Callback):
    """Send ``signum`` to this process at the start of training batch ``step`` — unless the environment
    variable ``unless_env`` is set (e.g. ``SLURM_RESTART_COUNT``: only the first attempt of a job)."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM), unless_env: str | None = None) -> None:
        self.step, self.signum = step, signum
        self.armed = not (unless_env and unless_env in os.environ)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self.armed and trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class PoisonAt(L.Callback):
    """Make the network output NaN during training step ``step`` only (a one-batch numerical fault)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self._hook: Any = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if trainer.global_step == self.step:
            self._hook = pl_module.net.register_forward_hook(lambda m, i, o: o * float("nan"))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


class DumpWeights(L.Callback):
    """Every rank saves its final weights to ``<dir>/weights_rank<r>.pt``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"state": state, "cfg_T": pl_module.T, "lr": pl_module.hparams.optimizer["lr"],
                    "world_size": trainer.world_size},
                   self.dirpath / f"weights_rank{trainer.global_rank}_T{pl_module.T}.pt")


class RecordBatches(L.Callback):
    """Append ``global_step label-checksum`` of every training batch to ``path`` (data-order checks)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        y = batch[1]
        with self.path.open("a") as f:
            f.write(f"{trainer.current_epoch} {idx} {trainer.global_step} {int((y * torch.arange(len(y))).sum())}\n")
