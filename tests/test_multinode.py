"""Beyond one machine, on one machine (gloo on CPU): two nodes started one command per node, SLURM as
``srun`` starts the tasks of ``scripts/slurm/train.sbatch`` (a stand-in ``srun`` on ``PATH`` gives each
process the variables a cluster would), preemption → requeue → exact resume, and a sweep through
hydra-submitit-launcher's ``submitit_local`` with a killed and relaunched job. docs/scaling.md."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from infra_utils import (
    PY,
    ROOT,
    assert_same_run,
    cli_in_process,
    env,
    final_state,
    results,
    run_cmd,
    run_parallel,
    tree_digest,
)
from omegaconf import OmegaConf

from spikeforge.distributed import check_slurm_tasks, cluster_plugins
from spikeforge.errors import ConfigError

# 2 epochs of 3 global batches of 2 × 16 (8×8 digits, T=2); threads=1 pins every rank's intra-op
# threads (docs/scaling.md: the thread count decides the float summation order)
SMALL = ["data.image_size=8", "model.channels=[8,16]", "model.pool_size=1", "T=2", "data.batch_size=16",
         "trainer.max_epochs=2", "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=1",
         "++trainer.limit_test_batches=1", "reliability.checkpoint_every_n_steps=0", "callbacks.progress_bar=null",
         "callbacks.model_summary=null", "logger=csv", "inference_cost=false", "threads=1", "trainer=ddp_cpu"]
TIMEOUT = 300  # per launch; a scaled-down launch takes 10-20 s on 2 loaded cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_env(**extra: str) -> dict[str, str]:
    """The test environment without anything a launcher sets, and without OMP_NUM_THREADS: Lightning's
    launcher would set it to cores ÷ ranks per node; ``threads=1`` must pin it on every layout."""
    e = env(**extra)
    for k in ("OMP_NUM_THREADS", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE",
              "GROUP_RANK", "TORCHELASTIC_RUN_ID"):
        if k not in extra:
            e.pop(k, None)
    for k in [k for k in e if k.startswith(("SLURM_", "SUBMITIT_"))]:
        if k not in extra:
            e.pop(k)
    return e


def readme_lines(prefix: str) -> list[list[str]]:
    """The command lines starting with ``prefix`` in the code blocks of docs/scaling.md, split."""
    text = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [ln.split(" #", 1)[0].strip().rstrip("&").strip() for block in blocks for ln in block.splitlines()]
    return [shlex.split(ln) for ln in lines if ln.startswith(prefix)]


def layouts(dirpath: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(dirpath.glob("layout_rank*.json"))]


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One node, two ranks (Lightning starts rank 1): the reference run."""
    run = tmp_path_factory.mktemp("one_node") / "run"
    r = run_cmd([PY, str(ROOT / "src" / "train.py"), *SMALL, "trainer.devices=2", f"run_dir={run}"], TIMEOUT,
                env=cluster_env())
    assert r.returncode == 0, r.stderr[-3000:]
    res = results(run)
    assert (res["world_size"], res["num_nodes"], res["cluster_environment"]) == (2, 1, "LightningEnvironment")
    assert res["threads"] == 1 and res["global_steps"] == 6
    return run


def test_two_nodes_equal_one_node(one_node: Path, tmp_path: Path) -> None:
    """docs/scaling.md: the way to run on several nodes without a scheduler — the same command on every node
    with MASTER_ADDR, MASTER_PORT and NODE_RANK — gives bit-identical weights and metrics."""
    run, probe = tmp_path / "run", tmp_path / "layout"
    port = free_port()
    launches = []
    for argv in readme_lines("MASTER_ADDR="):  # the README's commands, scaled down, in a fresh directory
        assigns = dict(a.split("=", 1) for a in argv[:3])
        assert argv[3:5] == ["python", "src/train.py"] and set(assigns) == {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK"}
        cmd = [PY, str(ROOT / "src" / "train.py"), *argv[5:], *SMALL, f"run_dir={run}",
               "+callbacks.layout._target_=ddp_probes.RecordLayout", f"+callbacks.layout.dirpath={probe}"]
        launches.append((cmd, cluster_env(**{**assigns, "MASTER_PORT": str(port)})))
    assert [e["NODE_RANK"] for _, e in launches] == ["0", "1"] and "trainer.num_nodes=2" in launches[0][0]
    nodes = run_parallel(launches, TIMEOUT)
    assert [p.returncode for p in nodes] == [0, 0], "\n---\n".join(p.stdout[-2000:] for p in nodes)
    res = results(run)
    assert (res["world_size"], res["num_nodes"], res["cluster_environment"]) == (2, 2, "LightningEnvironment")
    # global rank = node rank × devices + local rank; each rank trains its own shard of the data
    assert [(x["global_rank"], x["node_rank"], x["local_rank"], x["sampler"], x["port"], x["threads"])
            for x in layouts(probe)] == [(0, 0, 0, [0, 2], port, 1), (1, 1, 0, [1, 2], port, 1)]
    assert_same_run(one_node, run)  # every weight bit for bit, val/test metrics, steps


# ---- SLURM ---------------------------------------------------------------------------------------

SRUN = '''#!{py}
"""Stand-in srun: starts --ntasks-per-node × --nodes copies of the command with the variables srun
gives each task, waits for all and exits with the highest exit code."""
import os, subprocess, sys
nodes, per_node = int(os.environ["SLURM_JOB_NUM_NODES"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
n = nodes * per_node
procs = [subprocess.Popen(sys.argv[1:], env=dict(
    os.environ, SLURM_NTASKS=str(n), SLURM_NPROCS=str(n), SLURM_NNODES=str(nodes), SLURM_STEP_ID="0",
    SLURM_STEP_NUM_TASKS=str(n), SLURM_PROCID=str(r), SLURM_LOCALID=str(r % per_node),
    SLURM_NODEID=str(r // per_node), SLURMD_NODENAME=f"node{{r // per_node}}")) for r in range(n)]
sys.exit(max(p.wait() for p in procs))
'''
SCONTROL = '''#!/bin/sh
# stand-in scontrol: records the call
echo "$@" >> "{log}"
'''


def slurm_job(tmp_path: Path, nodes: int, per_node: int) -> tuple[dict[str, str], Path]:
    """The environment ``sbatch`` gives ``scripts/slurm/train.sbatch`` (a submission directory whose
    ``src`` is this checkout's), with stand-in ``srun`` and ``scontrol`` first on PATH; the job id is
    chosen so that Lightning's port for it (15000 + its last 4 digits) is free."""
    bin_dir, submit = tmp_path / "bin", tmp_path / "submit"
    bin_dir.mkdir()
    submit.mkdir()
    (submit / "src").symlink_to(ROOT / "src")
    for name, text in (("srun", SRUN.format(py=sys.executable)),
                       ("scontrol", SCONTROL.format(log=tmp_path / "scontrol.log"))):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    job = next(f"7{p - 15000:04d}" for p in random.sample(range(15000, 25000), 10000) if port_is_free(p))
    e = cluster_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PY=sys.executable, SLURM_JOB_ID=job,
                    SLURM_JOB_NAME="spikeforge", SLURM_SUBMIT_DIR=str(submit), SLURM_NODELIST="127.0.0.1,127.0.0.2",
                    SLURM_JOB_NUM_NODES=str(nodes), SLURM_NNODES=str(nodes), SLURM_NTASKS_PER_NODE=str(per_node),
                    SLURM_NTASKS=str(nodes * per_node))
    return e, submit / "outputs" / "train" / "slurm" / job


def sbatch(args: list[str], job_env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_cmd(["bash", str(ROOT / "scripts" / "slurm" / "train.sbatch"), *args], TIMEOUT, env=job_env)


def test_slurm_preemption_requeue_resumes_exactly(one_node: Path, tmp_path: Path) -> None:
    """docs/scaling.md: scripts/slurm/train.sbatch on 2 nodes × 1 task under Lightning's SLURMEnvironment; SIGUSR1
    (SLURM's time-limit warning) during step 5 → the step finishes, checkpoint, `scontrol requeue <job>`,
    exit 0; the requeued job (same id, same run directory) resumes and ends bit-identical to the one-node run."""
    job_env, run = slurm_job(tmp_path, nodes=2, per_node=1)
    probe = tmp_path / "layout"
    args = [*SMALL, "+callbacks.layout._target_=ddp_probes.RecordLayout", f"+callbacks.layout.dirpath={probe}",
            "+callbacks.sig._target_=infra_utils.SignalAt", "+callbacks.sig.step=4",
            f"+callbacks.sig.signum={int(signal.SIGUSR1)}", "+callbacks.sig.unless_env=SLURM_RESTART_COUNT"]
    first = sbatch(args, job_env)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stderr
    assert "stopped by SIGUSR1 after step 5" in out and "SLURM job requeued" in out, out[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == f"requeue {job_env['SLURM_JOB_ID']}\n"  # once, by rank 0
    assert not (run / "results.json").exists() and not list(run.rglob("hpc_ckpt_*.ckpt"))  # one mechanism
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5
    port = 15000 + int(job_env["SLURM_JOB_ID"][-4:])
    expected = [(0, 0, 0, [0, 2], port, 1, "SLURMEnvironment", {"SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                                                                 "SLURM_NODEID": "0"}),
                (1, 1, 0, [1, 2], port, 1, "SLURMEnvironment", {"SLURM_PROCID": "1", "SLURM_LOCALID": "0",
                                                                 "SLURM_NODEID": "1"})]
    got = [(x["global_rank"], x["node_rank"], x["local_rank"], x["sampler"], x["port"], x["threads"],
            x["environment"], x["slurm"]) for x in layouts(probe)]
    assert got == expected

    requeued = sbatch(args, {**job_env, "SLURM_RESTART_COUNT": "1"})
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    res = results(run)
    assert (res["world_size"], res["num_nodes"], res["cluster_environment"]) == (2, 2, "SLURMEnvironment")
    assert res["resumed_from"] == str(run.resolve() / "checkpoints" / "last.ckpt")
    assert (tmp_path / "scontrol.log").read_text().count("requeue") == 1
    assert_same_run(one_node, run)


def test_slurm_task_count_mismatch_is_one_line(tmp_path: Path) -> None:
    """srun started 2 tasks (2 nodes × 1) but the trainer asks for 2 × 2 ranks: every task stops before
    writing anything with one line saying what to set, exit code 2."""
    job_env, run = slurm_job(tmp_path, nodes=2, per_node=1)
    r = sbatch([*SMALL, "trainer.devices=2"], job_env)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    expected = ("error: trainer.devices × trainer.num_nodes = 2 × 2 = 4 ranks, but srun started 2 tasks on 2 node(s); "
                "set trainer.devices=1 trainer.num_nodes=2, or ask SLURM for --nodes=2 --ntasks-per-node=2")
    assert lines == [expected, expected], r.stderr[-3000:]  # one line per task, no traceback
    assert not run.exists()


def test_slurm_checks_and_signal_mechanism(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = OmegaConf.create({"trainer": {"devices": 4, "num_nodes": 2}})
    for k in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(k)
    check_slurm_tasks(cfg)  # not under SLURM: nothing to check
    assert cluster_plugins(True) == []
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    check_slurm_tasks(cfg)  # 4 × 2 = 8 tasks
    (env_,) = cluster_plugins(True)  # spikeforge's PreemptionHandler requeues: Lightning's auto-requeue is off
    assert type(env_).__name__ == "SLURMEnvironment" and env_.auto_requeue is False
    assert cluster_plugins(False) == []  # reliability.handle_signals=false: Lightning's own auto-requeue
    with pytest.raises(ConfigError, match=r"set trainer\.devices=4 trainer\.num_nodes=2"):
        check_slurm_tasks(OmegaConf.create({"trainer": {"devices": 4, "num_nodes": 1}}))
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # Lightning ignores SLURM here: so do we
    check_slurm_tasks(OmegaConf.create({"trainer": {"devices": 1, "num_nodes": 1}}))


# ---- submitit ------------------------------------------------------------------------------------


def test_submitit_local_sweep_killed_job_resumes(tmp_path: Path) -> None:
    """docs/scaling.md: a 2-job `-m` sweep through hydra-submitit-launcher's submitit_local (real submitit, one
    process per job); job 1 is SIGKILLed inside optimiser step 2, the sweep fails; the same command again
    (resume=auto) leaves the finished job 0's results and checkpoints untouched and resumes job 1 from
    its own checkpoint, ending as an uninterrupted run; the sweep summary holds both jobs."""
    sweep = tmp_path / "sweep"
    (readme,) = readme_lines("python src/train.py -m hydra/launcher=submitit_local")
    assert readme[-3:] == ["seed=0,1", "resume=auto", "hydra.sweep.dir=outputs/train/sweep"], readme
    budget = [*SMALL[:-1], "trainer.max_epochs=1", "++trainer.limit_train_batches=4",
              "reliability.checkpoint_every_n_steps=1"]
    args = [*readme[2:-1], *budget, f"hydra.sweep.dir={sweep}"]
    kill = ["+callbacks.kill._target_=infra_utils.KillAt", "+callbacks.kill.step=2", "+callbacks.kill.seed=${seed}",
            "+callbacks.kill.seeds=[1]"]
    first = run_cmd([PY, str(ROOT / "src" / "train.py"), *args, *kill], TIMEOUT, env=cluster_env())
    assert first.returncode != 0 and "has not produced any output" in first.stderr, first.stderr[-3000:]
    assert (sweep / "0" / "results.json").exists() and not (sweep / "1" / "results.json").exists()
    assert torch.load(sweep / "1" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert len(list((sweep / ".submitit").glob("*/*_submitted.pkl"))) == 2  # submitit ran the jobs
    def outcome(job: Path) -> dict[str, str]:  # what a run produced (Hydra re-records .hydra/ and train.log)
        return {k: v for k, v in tree_digest(job).items() if k.startswith(("checkpoints/", "csv/", "results.json"))}

    done = outcome(sweep / "0")

    again = run_cmd([PY, str(ROOT / "src" / "train.py"), *args], TIMEOUT, env=cluster_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert outcome(sweep / "0") == done and len(done) >= 4  # finished job: nothing trained, nothing rewritten
    res = results(sweep / "1")
    assert res["resumed_from"] == str(sweep / "1" / "checkpoints" / "last.ckpt") and res["global_steps"] == 4
    ref = tmp_path / "ref"  # job 1 uninterrupted (same thread count: threads=1)
    rc, err = cli_in_process([*budget, "seed=1", f"run_dir={ref}"])
    assert rc == 0, err[-2000:]
    assert_same_run(ref, sweep / "1")
    assert final_state(ref).keys() == final_state(sweep / "1").keys()

    (summarize,) = readme_lines("python scripts/summarize.py")
    assert summarize[2:] == ["outputs/train/sweep", "--group-by", "seed"], summarize
    summary = run_cmd([PY, str(ROOT / "scripts" / "summarize.py"), str(sweep), *summarize[3:]], 120)
    assert summary.returncode == 0, summary.stderr
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and [r.split(",")[0] for r in rows[1:]] == ["0", "1"], rows
    assert all(r.endswith(",1/0") for r in rows[1:]), rows  # each seed: 1 run ok, 0 failed


# ---- sizing ----------------------------------------------------------------------------------------


def test_comm_volume_counts_one_gradient_all_reduce_per_step() -> None:
    """docs/scaling.md: the DDP comm hook of scripts/comm_volume.py sees every trainable gradient once per
    optimiser step — for BPTT, with gradient accumulation (2 backward passes, one sync) and for SLTT
    (T backward passes per step, one sync)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import comm_volume
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    rows = [comm_volume.measure(m, "convnet", T=3, batch=2, image_size=8, steps=2, accumulate=acc, bucket_cap_mb=25)
            for m, acc in (("bptt", 1), ("bptt", 2), ("sltt", 1))]
    for r in rows:
        assert r["optimizer_steps"] == 2 and r["allreduce_calls_per_step"] == 1, r
        assert r["bytes_per_step"] == r["trainable_param_bytes"] > 0, r
    est = comm_volume.estimates(rows[0])
    assert set(est["InfiniBand 100 Gb/s"]) == {"8", "64", "256"} and set(est["NVLink (H100, one node)"]) == {"8"}
    assert est["InfiniBand 100 Gb/s"]["8"] > est["InfiniBand 400 Gb/s"]["8"] > 0
