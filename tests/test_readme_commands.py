"""Every ``python src/...`` and ``make ...`` command line of the README's "Quick start" and of
docs/running.md's "Running a configuration" runs as written, read from those files (so the test
follows the docs), with a tiny budget
appended, in a fresh copy of the repository: the tracked and new files only (no outputs, caches or
data of the developer's tree) and a ``.venv`` of its own that holds the installed packages.
``python`` is the ``.venv``'s, as after ``source .venv/bin/activate`` (the Quick start's step);
one more case starts ``src/train.py`` with the bare interpreter, as on a fresh machine without it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a few batches of 8×8 digits: every README command finishes in seconds (the logs and checkpoints are real)
TINY = ["data.image_size=8", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0"]
# `make test` with a budget: one quick test of the suite
TINY_TEST = "tests/test_packaging.py -k python_311 -q"


# (file, section): the Quick start stays in the README, the running commands live in docs/running.md
SECTIONS = (("README.md", "Quick start"), ("docs/running.md", "Running a configuration"))


def readme_commands(sections: tuple[tuple[str, str], ...] = SECTIONS) -> list[str]:
    """The ``python src/...`` and ``make ...`` lines of the code blocks of ``sections`` (comments cut)."""
    commands = []
    for path, title in sections:
        text = (ROOT / path).read_text(encoding="utf-8")
        m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
        assert m, f"{path} has no section {title!r}"
        for block in re.findall(r"```bash\n(.*?)```", m.group(1), re.S):
            for line in block.splitlines():
                line = line.split(" #", 1)[0].strip()
                if line.startswith(("python src/", "make ")):
                    commands.append(line)
    return commands


def with_budget(command: str) -> list[str]:
    argv = shlex.split(command)
    if argv[:2] == ["python", "src/eval.py"]:
        return [*argv, "trainer.limit_test_batches=1"]  # the data settings are the checkpoint's
    if argv[0] == "python":
        return [*argv, *TINY]
    if argv[:2] == ["make", "test"]:
        return [*argv, f"PYTEST_ARGS={TINY_TEST}"]
    return [*argv, "ARGS=" + " ".join(TINY)]  # make train / make eval


def fresh_checkout(dest: Path) -> Path:
    """Copy the files git knows of (tracked and new, not ignored) and give the copy its own .venv whose
    site-packages reach the installed packages and the copy's src/ (as `make install`'s editable install)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True, timeout=60).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    venv = dest / ".venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    site.mkdir(parents=True, exist_ok=True)
    (site / "spikeforge-test.pth").write_text(f"{dest / 'src'}\n{sysconfig.get_path('purelib')}\n")
    (venv / ".installed").touch()  # newer than pyproject.toml/requirements.txt: make installs nothing
    return dest


def activated_env(checkout: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPIKEFORGE_ROOT", "PYTHONPATH", "HYDRA_FULL_ERROR", "VIRTUAL_ENV", "PYTEST_ADDOPTS")}
    bindir = checkout / ".venv" / "bin"
    return {**env, "VIRTUAL_ENV": str(checkout / ".venv"), "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}",
            "OMP_NUM_THREADS": "1"}


def run(argv: list[str], checkout: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        out = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        tail = ((e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace"))[-3000:]
        pytest.fail(f"{shlex.join(argv)} ran past {timeout} s:\n{tail}")
    assert out.returncode == 0, f"{shlex.join(argv)} exited {out.returncode}:\n{(out.stdout + out.stderr)[-3000:]}"
    return out


def test_readme_and_docs_name_the_commands() -> None:
    commands = readme_commands()
    assert "make train" in commands and "make test" in commands
    assert sum(c.startswith("python src/train.py") for c in commands) >= 5
    assert any(c.startswith("python src/eval.py") for c in commands)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_checkout(tmp_path_factory.mktemp("readme") / "spikeforge")


def _check_output(command: str, out: subprocess.CompletedProcess) -> None:
    text = out.stdout + out.stderr
    if "--cfg" in command or command.startswith("make test"):
        return
    assert "spikeforge run summary" in text, f"{command}: no summary\n{text[-2000:]}"
    # a quiet console: none of the library noise, warnings only about the run
    # (README "Outputs": these stay in train.log) — the fast-dev-run note, Lightning's advice about the
    # logging interval of short runs and about sync_dist, Optuna's alembic plugin set-up, raw `None`s
    for noise in ("💡 Tip", "LeafSpec", "Total FLOPs", "weights_only", "not resumable", "INFO: ", "fast_dev_run",
                  "logging interval", "sync_dist=True", "setup plugin", "site-packages", "│ None"):
        assert noise not in text, f"{command} printed {noise!r}:\n{text[-3000:]}"


def test_every_readme_and_docs_command_runs_as_written(checkout: Path) -> None:
    env = activated_env(checkout)
    runs = checkout / "outputs" / "train" / "runs"
    commands = readme_commands()
    independent = [c for c in commands if "<run>" not in c]
    # two at a time (CI machines have two cores); those that read an earlier run's output after them
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda c: run(with_budget(c), checkout, env), independent))
    for command, out in zip(independent, done):
        _check_output(command, out)
    for command in (c for c in commands if "<run>" in c):
        latest = max((p for p in runs.iterdir() if (p / "checkpoints" / "last.ckpt").is_file()), key=lambda p: p.name)
        command = command.replace("<run>", latest.name)  # the run directory the docs leave to the reader
        _check_output(command, run(with_budget(command), checkout, env))
    assert len([p for p in runs.iterdir() if (p / "results.json").is_file()]) >= 6
    multiruns = list((checkout / "outputs" / "train" / "multiruns").glob("*/*/results.json"))
    assert len(multiruns) == 3, multiruns
    fdr = [p for p in runs.iterdir() if "fast_dev_run: true" in (p / ".hydra" / "config.yaml").read_text()]
    assert len(fdr) == 1 and not (fdr[0] / "checkpoints").exists(), "debug=fdr wrote checkpoints"
    evals = list((checkout / "outputs" / "eval" / "runs").glob("*/eval_results.json"))
    assert evals, "python src/eval.py wrote no eval_results.json"


def test_train_without_activating_the_venv(checkout: Path) -> None:
    """A bare ``python`` without the dependencies re-runs the command with the checkout's .venv."""
    env = {k: v for k, v in activated_env(checkout).items() if k != "VIRTUAL_ENV"}
    bare = [sys._base_executable, "-I", "src/train.py", "--cfg", "job"]  # -I: no user site, no PYTHONPATH
    probe = subprocess.run([sys._base_executable, "-I", "-c", "import hydra"], capture_output=True, timeout=60)
    if probe.returncode == 0:
        pytest.skip("the base interpreter has the dependencies itself")
    out = run(bare, checkout, env, timeout=120)
    assert "task_name: train" in out.stdout
