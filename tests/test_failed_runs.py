"""Bad input to any entry point (train, eval, export): exactly one line saying what to change, exit code
2, and no run directory left behind — including mistakes found only after Hydra created the run
directory (a missing checkpoint, a dataset without its files, a data override of the wrong type). The
cases run the real Hydra apps in this process."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from infra_utils import ROOT, TINY, cli_in_process


def run_entry(script: str, args: list[str]) -> tuple[int | None, str]:
    """``src/<script> args`` in this process: (exit code, stderr)."""
    err, argv = io.StringIO(), sys.argv
    code: int | None = 0
    GlobalHydra.instance().clear()
    sys.argv = [str(ROOT / "src" / script), *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) or e.code is None else 1
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return code, err.getvalue()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("failed_runs") / "run"
    rc, err = cli_in_process([*TINY, "trainer.max_epochs=1", "++trainer.limit_train_batches=2",
                              "++trainer.limit_val_batches=1", "++trainer.limit_test_batches=1", f"run_dir={run}"])
    assert rc == 0, err[-2000:]
    return run / "checkpoints" / "last.ckpt"


EVAL_KEYS = "`python src/eval.py --cfg job`"
# (id, script, arguments, the whole error line); {ckpt} and {out} are filled in
CASES = [
    ("eval: missing checkpoint", "eval.py", ["ckpt_path={out}/none.ckpt"],
     "error: checkpoint {out}/none.ckpt does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt"),
    ("export: missing checkpoint", "export.py", ["ckpt_path={out}/none.ckpt"],
     "error: checkpoint {out}/none.ckpt does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt"),
    ("eval: override of the wrong type", "eval.py", ["ckpt_path={ckpt}", "data_overrides.batch_size=abc"],
     "error: data_overrides.batch_size must be an integer like the checkpoint's value 32 (got 'abc'); "
     "e.g. data_overrides.batch_size=32"),
    ("export: override of the wrong type", "export.py", ["ckpt_path={ckpt}", "+data_overrides.image_size=[8]"],
     "error: data_overrides.image_size must be an integer like the checkpoint's value 8 (got [8]); "
     "e.g. data_overrides.image_size=8"),
    ("eval: override out of range", "eval.py", ["ckpt_path={ckpt}", "data_overrides.val_fraction=2"],
     "error: data_overrides.val_fraction must be a number in [0, 1) (got 2); "
     "set data_overrides.val_fraction=<a number in [0, 1)>"),
    ("eval: unknown data setting", "eval.py", ["ckpt_path={ckpt}", "data_overrides.batch_sise=3"],
     "error: data_overrides.batch_sise is not a setting of this checkpoint's data (digits); its settings: "
     "_target_, batch_size, channels, image_size, name, num_classes, num_workers, split_seed, test_fraction, "
     "val_fraction"),
    ("eval: a training key", "eval.py", ["ckpt_path={ckpt}", "threads=1"],
     f"error: threads is a setting of `python src/train.py`, not of `python src/eval.py`; drop it, or see this "
     f"command's settings with {EVAL_KEYS}"),
    ("eval: an export key", "eval.py", ["ckpt_path={ckpt}", "format=nir"],
     f"error: format is a setting of `python src/export.py`, not of `python src/eval.py`; drop it, or see this "
     f"command's settings with {EVAL_KEYS}"),
    ("train: an eval key", "train.py", [*TINY, "data_overrides.batch_size=3"],
     "error: data_overrides is a setting of `python src/eval.py`, not of `python src/train.py`; drop it, or see "
     "this command's settings with `python src/train.py --cfg job`"),
    ("train: dataset without its files", "train.py", ["data=cifar10", "paths.data_dir={out}/nodata"],
     "error: cifar10 not found or unreadable at {out}/nodata/cifar10/cifar-10-batches-py (missing "
     "['data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5', 'test_batch']); expected "
     "{out}/nodata/cifar10/cifar-10-batches-py/{{data_batch_1, data_batch_2, data_batch_3, data_batch_4, "
     "data_batch_5, test_batch, batches.meta}} (torchvision's python pickle batches); get it from "
     "https://www.cs.toronto.edu/~kriz/cifar.html (the 'python version' archive, extracted) and set "
     "paths.data_dir (env SPIKEFORGE_DATA_DIR) or data.root to its folder"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_left(case: tuple, ckpt: Path, tmp_path: Path) -> None:
    _, script, args, line = case
    out = tmp_path / "outputs"
    out.mkdir()
    fill = {"ckpt": ckpt, "out": out}
    code, err = run_entry(script, [*(a.format(**fill) for a in args), f"paths.log_dir={out}"])
    assert code == 2, err[-3000:]
    assert err.strip().splitlines() == [line.format(**fill)], err[-3000:]
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == [], f"left behind: {left}"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_a_folder_that_cannot_be_created_is_named(script: str, ckpt: Path) -> None:
    args = [*TINY] if script == "train.py" else [f"ckpt_path={ckpt}"]
    code, err = run_entry(script, [*args, "paths.log_dir=/proc/spikeforge-x", "hydra.run.dir=/proc/spikeforge-x/run"])
    assert code == 2, err[-3000:]
    assert err.strip().splitlines() == [
        "error: cannot create the run directory /proc/spikeforge-x/run (No such file or directory: "
        "/proc/spikeforge-x); set run_dir or paths.log_dir to a writable folder"], err[-3000:]


def test_hint_names_the_command_that_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from spikeforge.entry_errors import cfg_job_hint, unknown_key_line

    monkeypatch.setattr(sys, "argv", ["/venv/bin/spikeforge-export"])
    assert cfg_job_hint() == "`spikeforge-export --cfg job`"
    assert re.match(r"^num_sample is|^unknown config key 'num_sample'", unknown_key_line("num_sample"))
