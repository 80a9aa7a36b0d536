"""The command line: ``--cfg job``, ``--help`` and config errors (unknown neuron, norm, loss and model
names included) answer before torch is imported; a GPU
trainer on a machine without one stops with one line and no run directory; eval's ``data_overrides``
need no ``+``; the console stays quiet on a resumed run; the configs are found from an installed
package; and the console filter keeps Lightning's INFO lines in the log file only."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from infra_utils import TINY, cli_in_process, run_train

from spikeforge import cli
from spikeforge.console import DropLibraryInfo

ROOT = Path(__file__).resolve().parents[1]

CHECK_NO_TORCH = """
import json, runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = sorted(m for m in ("torch", "lightning", "spikingjelly", "torchvision") if m in sys.modules)
print("\\n" + json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize("argv", [
    ["src/train.py", "--cfg", "job"],
    ["src/train.py", "--help"],
    ["src/train.py", "method=sltt", "T=0"],            # an error found by validation
    ["src/train.py", "method=bptx"],                   # an unknown option (Hydra's composition error)
    ["src/train.py", "method.neuron.kind=izhikevich"],  # a name the registries do not know
    ["src/eval.py", "--cfg", "job", "ckpt_path=x.ckpt", "data_overrides.batch_size=256"],
], ids=["cfg-job", "help", "validation-error", "unknown-option", "unknown-neuron", "eval-cfg-job"])
def test_entry_points_answer_without_importing_torch(argv: list[str], tmp_path: Path) -> None:
    """--cfg job, --help and config errors compose and validate before any heavy import (speed itself
    is measured by benchmarks, not here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("HYDRA_FULL_ERROR", None)
    extra = [] if "--help" in argv else [f"paths.log_dir={tmp_path}/outputs"]
    out = subprocess.run([sys.executable, "-c", CHECK_NO_TORCH, *argv, *extra], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    tail = (out.stdout + out.stderr)[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], tail
    if any(a in argv for a in ("T=0", "method=bptx", "method.neuron.kind=izhikevich")):
        assert result["code"] == 2 and out.stderr.startswith("error: "), tail
        assert not (tmp_path / "outputs").exists(), "a config error left a run directory"
    else:
        assert result["code"] in (0, None), tail


def test_repro_list_does_not_import_torch() -> None:
    """`make repro-list` composes recipes (for their budget) without torch: one recipe checked here."""
    code = ("import json, sys; sys.path.insert(0, 'scripts'); import repro; "
            "row = repro.describe(repro.recipes()['sltt_k_dvs_gesture']); "
            "print(json.dumps({'row': row, 'torch': 'torch' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                         capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "GPU-h" in result["row"]["GPU budget"] and not result["torch"], out.stderr[-2000:]


def test_names_read_from_the_source_equal_the_registries() -> None:
    from spikeforge.config_schema import _REGISTERED
    from spikeforge.layers import NORMS
    from spikeforge.losses import LOSSES
    from spikeforge.models import MODELS
    from spikeforge.neurons import NEURONS
    from spikeforge.registry import declared_names

    registries = {"spikeforge.neurons": NEURONS, "spikeforge.layers": NORMS, "spikeforge.losses": LOSSES,
                  "spikeforge.models": MODELS}
    for _key, module, register, _what in _REGISTERED:
        assert declared_names(module, register) == registries[module].names(), module


def test_method_keys_read_from_the_source_equal_the_signatures() -> None:
    """Validation reads a method class's keyword arguments from the source (no torch); they equal what
    ``inspect`` finds on the imported class (its ``__init__`` and, through ``**kwargs``, its bases')."""
    import importlib
    import inspect

    import lightning as L
    from omegaconf import OmegaConf

    from spikeforge.config_schema import method_keys_from_source

    def signature_keys(cls: type) -> set[str]:
        keys: set[str] = set()
        for klass in cls.__mro__:
            if klass in (L.LightningModule, object):
                break
            if "__init__" in vars(klass):
                params = inspect.signature(vars(klass)["__init__"]).parameters.values()
                keys |= {p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                                   p.KEYWORD_ONLY)}
                if not any(p.kind == p.VAR_KEYWORD for p in params):
                    break
        return keys

    targets = {OmegaConf.load(f).get("_target_") for f in (ROOT / "conf" / "method").glob("*.yaml")} - {None}
    assert len(targets) >= 6
    for target in sorted(targets):
        module, name = target.rsplit(".", 1)
        assert method_keys_from_source(target) == signature_keys(getattr(importlib.import_module(module), name)), target
    assert method_keys_from_source("spikeforge.methods.base.NoSuchMethod") is None


def test_gpu_trainer_without_a_gpu_stops_before_the_run_directory(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has a GPU")
    for trainer in ("gpu", "ddp"):
        rc, err = cli_in_process([f"trainer={trainer}", f"paths.log_dir={tmp_path}"])
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1, err[-2000:]
        assert lines[0].startswith("error: ") and "trainer=cpu" in lines[0] and "trainer=ddp_cpu" in lines[0]
        assert list(tmp_path.iterdir()) == [], "a run directory was left behind"


def test_eval_data_overrides_need_no_plus() -> None:
    assert cli.open_key_overrides(["ckpt_path=a", "data_overrides.batch_size=256", "+data_overrides.x=1"]) == [
        "ckpt_path=a", "+data_overrides.batch_size=256", "+data_overrides.x=1"]


def test_configs_found_in_a_checkout_and_in_an_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    assert cli.config_dir() == (ROOT / "conf").resolve()
    # a wheel's layout: site-packages/spikeforge/{cli.py, conf/} and no checkout around it
    pkg = tmp_path / "site-packages" / "spikeforge"
    (pkg / "conf").mkdir(parents=True)
    (pkg / "conf" / "train.yaml").write_text("task_name: train\n")
    monkeypatch.setattr(cli, "PACKAGE_DIR", pkg)
    monkeypatch.delenv("SPIKEFORGE_ROOT", raising=False)
    assert cli.checkout_root() is None and cli.config_dir() == (pkg / "conf").resolve()
    monkeypatch.setenv("SPIKEFORGE_ROOT", str(ROOT))
    assert cli.config_dir() == (ROOT / "conf").resolve()


def test_console_filter_keeps_lightning_info_out() -> None:
    def record(name: str, level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, None, None)

    f = DropLibraryInfo()
    assert not f.filter(record("lightning.pytorch.utilities.rank_zero", logging.INFO, "💡 Tip: try litlogger"))
    assert not f.filter(record("lightning.fabric.utilities.seed", logging.INFO, "Seed set to 42"))
    assert not f.filter(record("lightning.pytorch.utilities.rank_zero", logging.INFO,
                               "Running in `fast_dev_run` mode: ... checkpointing is suppressed."))
    log_every = ("/site-packages/lightning/pytorch/loops/fit_loop.py:317: The number of training batches (3) is "
                 "smaller than the logging interval Trainer(log_every_n_steps=50). Set a lower value ...")
    assert not f.filter(record("py.warnings", logging.WARNING, log_every))
    assert not f.filter(record("py.warnings", logging.WARNING, "It is recommended to use `self.log('asgl/width_mean'"
                               ", ..., sync_dist=True)` when logging on epoch level in distributed setting"))
    assert f.filter(record("py.warnings", logging.WARNING, "UserWarning: a warning about the run"))
    assert f.filter(record("lightning.pytorch", logging.WARNING, "GPU available but not used"))
    assert f.filter(record("spikeforge", logging.INFO, "inference cost"))


def test_resumed_run_prints_no_library_noise(tmp_path: Path) -> None:
    """Stopped mid-epoch by SIGTERM (checkpoint between two steps), then resumed: the resume is exact
    (tests/test_reliability.py), so Lightning's "dataloader is not resumable" and its `weights_only`
    notes are noise and must not be printed."""
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_epochs=1", "++trainer.limit_train_batches=6", "++trainer.limit_val_batches=1",
            "++trainer.limit_test_batches=1", f"run_dir={run}"]
    # the stop in this process (cheaper); the resume, whose console is checked, as the user runs it
    rc, err = cli_in_process([*args, "+callbacks.sig._target_=infra_utils.SignalAt", "+callbacks.sig.step=2"])
    assert rc == 0 and "stopped by SIGTERM" in err, err[-2000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "results.json").exists(), err[-2000:]
    second = run_train([*args, "resume=auto"], timeout=300)
    text = second.stdout + second.stderr
    assert second.returncode == 0 and (run / "results.json").is_file(), text[-3000:]
    assert json.loads((run / "results.json").read_text())["resumed_from"].endswith("last.ckpt")
    for noise in ("not resumable", "weights_only", "Checkpoint directory", "LeafSpec", "💡 Tip", "Seed set to"):
        assert noise not in text, f"printed {noise!r}:\n{text[-3000:]}"
