"""Distributed runs under Hydra, and random streams for methods.

**Every rank trains the job's own config.** Lightning's ``strategy=ddp`` (CPU or GPU, one node)
starts ranks 1..N-1 by re-executing ``sys.argv``; under ``-m`` that re-runs the whole sweep in each
child with other hyper-parameters. Instead, rank 0 of every job exports its fully resolved config
(:data:`CONFIG_ENV`) before ``trainer.fit``; ``src/train.py`` in a child process started by Lightning
(``LOCAL_RANK`` > 0 and that variable set) skips Hydra and trains exactly that config, in the same run
directory. Processes started by an external launcher (SLURM ``srun``, ``torchrun``) run the same
command each: there the run directory must not depend on the clock (``hydra.run.dir`` with
``${oc.env:SLURM_JOB_ID}``, see ``scripts/slurm/``), which :func:`check_external_launch` enforces.

**Random streams for methods.** ``seed_everything`` gives every rank the same global RNG state, so
anything drawn from the global RNG is identical on all ranks. Methods choose:

- :func:`shared_generator` — the same stream on every rank (choices that must agree across ranks,
  e.g. SLTT-K's random time steps: gradients of different steps on different ranks would be averaged
  into a meaningless update).
- :func:`rank_generator` — an independent stream per rank (noise that should differ per sample, e.g.
  ASGL's Bernoulli masks: identical masks on every rank would correlate the data-parallel replicas).

Both return a ``torch.Generator`` that a method keeps as an attribute. A shared one is the same on
every rank, so the method saves ``generator.get_state()`` in ``on_save_checkpoint`` and restores it in
``on_load_checkpoint``; a per-rank one is returned from the method's ``rank_generators()``, and
``spikeforge.callbacks.resume.RNGStateCallback`` saves every rank's state and restores each rank's own,
so a resumed run continues every stream exactly.

**Collective timeout.** ``conf/trainer/ddp*.yaml`` instantiate ``DDPStrategy`` with ``timeout``; a
collective that times out becomes one line (:func:`collective_timeout_in`, used by ``run_cli``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from spikeforge.errors import ConfigError, SpikeforgeError

if TYPE_CHECKING:
    import torch

# torch is imported lazily: the entry points and the config checks use this module before the task
# starts, and a process group cannot exist before torch.distributed has been imported.

CONFIG_ENV = "SPIKEFORGE_DDP_CONFIG"


def _initialized_dist() -> Any:
    """``torch.distributed`` when a process group is up, else None (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def global_rank() -> int:
    dist = _initialized_dist()
    if dist is not None:
        return dist.get_rank()
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)) or 0)


def first_process() -> bool:
    """True in the process that owns the run directory: global rank 0, and node 0 of a multi-node
    launch started one command per node (``NODE_RANK``, ranks unknown before the process group)."""
    return global_rank() == 0 and int(os.environ.get("NODE_RANK", 0) or 0) == 0


def _derive(seed: int, *parts: Any) -> int:
    h = hashlib.sha256(("/".join(str(p) for p in (seed, *parts))).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def shared_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator with the same state on every rank, independent of other ``stream`` names."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(_derive(seed, stream))
    return g


def rank_generator(
    seed: int, stream: str, device: str | torch.device = "cpu", rank: int | None = None
) -> torch.Generator:
    """A generator with a different state on each rank (``rank`` defaults to this process's)."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(_derive(seed, stream, "rank", global_rank() if rank is None else rank))
    return g


# ---- Hydra × Lightning DDP ----------------------------------------------------------------------


def is_spawned_child() -> bool:
    """True in a rank process that Lightning started by re-executing the script for this job."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 and CONFIG_ENV in os.environ


def export_job_config(cfg: DictConfig) -> None:
    """Called by rank 0 before fitting: children started from now on train this resolved config."""
    if uses_subprocess_ddp(cfg):
        os.environ[CONFIG_ENV] = OmegaConf.to_yaml(cfg, resolve=True)
    else:
        os.environ.pop(CONFIG_ENV, None)


def child_config() -> DictConfig:
    return OmegaConf.create(os.environ[CONFIG_ENV])


def strategy_name(strategy: Any) -> str:
    """Lightning's registry name for ``trainer.strategy``: a name (``ddp``, ``ddp_spawn``, ``auto``) or
    a node instantiating ``DDPStrategy`` (conf/trainer/ddp*.yaml: ``ddp``, or ``ddp_<start_method>``)."""
    if isinstance(strategy, (dict, DictConfig)):
        target = str(strategy.get("_target_", ""))
        if target.endswith("DDPStrategy"):
            start = str(strategy.get("start_method", "popen"))
            return "ddp" if start == "popen" else f"ddp_{start}"
        return target.rsplit(".", 1)[-1].lower()
    return str(strategy)


def uses_subprocess_ddp(cfg: DictConfig) -> bool:
    tr = cfg.get("trainer") or {}
    strategy = strategy_name(tr.get("strategy", "auto"))
    devices = tr.get("devices", 1)
    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif isinstance(devices, int) and devices >= 0:
        n = devices
    elif isinstance(devices, str) and devices.replace(",", "").strip().isdigit():
        n = len([d for d in devices.split(",") if d.strip()]) if "," in devices else int(devices)
    else:  # "auto" / -1: every visible device
        n = 2
    return (
        # strategy=auto picks "ddp" for several devices (Lightning 2.6 _choose_strategy)
        (strategy == "auto" or strategy.startswith("ddp"))
        and "spawn" not in strategy
        and "fork" not in strategy
        and (n > 1 or int(tr.get("num_nodes", 1) or 1) > 1)
    )


def check_launcher(cfg: DictConfig, hydra_cfg: Any | None) -> None:
    """Refuse combinations where rank processes cannot get the job's config."""
    if hydra_cfg is None or not uses_subprocess_ddp(cfg):
        return
    launcher = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "")
    if "joblib" in launcher.lower():
        raise ConfigError(
            "trainer=ddp/ddp_cpu cannot run inside the joblib launcher (its worker processes "
            "cannot start DDP ranks); use the default launcher (jobs one after another) or "
            "hydra/launcher=submitit_slurm for parallel DDP jobs"
        )


def check_external_launch(cfg: DictConfig, run_dir_from_clock: bool) -> None:
    """Under srun/torchrun, or one command per node (``NODE_RANK``), every rank composes the config
    itself: the run directory must agree."""
    external = ("SLURM_NTASKS" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1) or (
        "TORCHELASTIC_RUN_ID" in os.environ
    )
    per_node = "NODE_RANK" in os.environ and _int(OmegaConf.select(cfg, "trainer.num_nodes", default=1)) > 1
    if (external or per_node) and run_dir_from_clock and uses_subprocess_ddp(cfg):
        raise ConfigError(
            "every rank of a srun/torchrun or multi-node launch composes its own config, so the run "
            "directory must not depend on the clock; pass run_dir=outputs/train/slurm/$SLURM_JOB_ID "
            "(see scripts/slurm/train.sbatch), or the same run_dir=<dir> on every node"
        )


def _int(v: Any, default: int = 1) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def slurm_tasks_in_use() -> bool:
    """True when Lightning's ``SLURMEnvironment.detect()`` holds: the processes were started by
    ``srun`` (``SLURM_NTASKS`` set) and the job is not an interactive one (``SLURM_JOB_NAME`` bash or
    interactive, where Lightning ignores SLURM and starts the ranks itself)."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def check_slurm_tasks(cfg: DictConfig) -> None:
    """Under srun every task is one rank: ``trainer.devices × trainer.num_nodes`` must equal the task
    count (``SLURM_NTASKS``), else the ranks wait for processes that never start (or Lightning stops
    with a traceback). Checked on every task before anything is written."""
    if not slurm_tasks_in_use():
        return
    tr = OmegaConf.select(cfg, "trainer", default=None) or {}
    devices, nodes = tr.get("devices", 1), _int(tr.get("num_nodes", 1))
    if not isinstance(devices, int):  # "auto", a list: Lightning counts them
        return
    tasks = _int(os.environ["SLURM_NTASKS"])
    snodes = _int(os.environ.get("SLURM_NNODES", os.environ.get("SLURM_JOB_NUM_NODES")), default=nodes)
    per_node = tasks // max(snodes, 1)
    if devices * nodes != tasks or nodes != snodes:
        raise ConfigError(
            f"trainer.devices × trainer.num_nodes = {devices} × {nodes} = {devices * nodes} ranks, but srun "
            f"started {tasks} tasks on {snodes} node(s); set trainer.devices={per_node} "
            f"trainer.num_nodes={snodes}, or ask SLURM for --nodes={nodes} --ntasks-per-node={devices}"
        )


def cluster_plugins(handle_signals: bool) -> list[Any]:
    """Lightning's SLURM environment without its auto-requeue when spikeforge handles the signals
    (``reliability.handle_signals``: :class:`~spikeforge.callbacks.reliability.PreemptionHandler`
    checkpoints and requeues), so one mechanism reacts to SIGUSR1, not two. Else nothing: Lightning
    picks the environment (and requeues itself under SLURM)."""
    if not (handle_signals and slurm_tasks_in_use()):
        return []
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


def cluster_info(trainer: Any) -> dict[str, Any]:
    """What ``results.json`` records about the process layout of a run."""
    env = getattr(trainer.strategy, "cluster_environment", None)  # None: one process, no cluster
    return {"world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
            "cluster_environment": type(env).__name__ if env is not None else None}


def pin_threads(n: int) -> None:
    """``threads=n``: torch's intra-op threads of this rank, and of the ranks Lightning starts
    (``OMP_NUM_THREADS``, which Lightning's launcher otherwise sets to cores ÷ ranks on this node,
    so that the thread count — and with it the float summation order — would depend on how the
    ranks are spread over nodes)."""
    import torch

    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)


class CollectiveTimeout(SpikeforgeError):
    """A DDP collective waited longer than ``trainer.strategy.timeout``."""

    exit_code = 1


_TIMEOUT_MARKS = ("timed out", "collective operation timeout")


def collective_timeout_in(e: BaseException | None) -> CollectiveTimeout | None:
    """The one-line error for a collective that timed out (gloo: "Timed out waiting ...ms for recv";
    NCCL's watchdog: "collective operation timeout") behind ``e``, if that is what ``e`` is."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, RuntimeError) and any(m in str(e).lower() for m in _TIMEOUT_MARKS):
            return CollectiveTimeout(
                f"rank {global_rank()} waited longer than the DDP timeout for the other ranks "
                f"({str(e).strip().splitlines()[0][:200]}); a rank crashed or is stuck (see its output), "
                "or rank 0 did something long alone: raise trainer.strategy.timeout.seconds"
            )
        e = e.__cause__ or e.__context__
    return None


def teardown_process_group() -> None:
    """End the job's process group so the next job of a sweep starts a fresh one."""
    dist = _initialized_dist()
    if dist is not None:
        dist.destroy_process_group()


# Lightning's launcher writes these into os.environ of rank 0; left behind, the next job of a sweep
# would believe its ranks were started externally (LOCAL_RANK set) and wait for them forever.
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS", CONFIG_ENV)


def snapshot_launch_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in _LAUNCH_ENV}


def restore_launch_env(saved: dict[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
