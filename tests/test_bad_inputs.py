"""Every user-facing mistake ends with a non-zero exit and one clear sentence, and never changes an
earlier run's directory. The cases run the real ``src/train.py`` Hydra app in this process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from infra_utils import TINY, cli_in_process, tree_digest

from spikeforge.errors import ConfigError


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished tiny run (the directory every case must leave untouched) and a corrupt checkpoint."""
    base = tmp_path_factory.mktemp("bad_inputs")
    run = base / "earlier_run"
    rc, err = cli_in_process([*TINY, "trainer.max_epochs=1", "++trainer.limit_train_batches=3",
                              "++trainer.limit_val_batches=1", "++trainer.limit_test_batches=1", f"run_dir={run}"])
    assert rc == 0 and (run / "results.json").is_file(), err[-2000:]
    corrupt = base / "corrupt.ckpt"
    corrupt.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes()[:1000])  # truncated
    not_a_dir = base / "a_file"
    not_a_dir.write_text("x")
    return {"run": run, "corrupt": corrupt, "base": base, "file": not_a_dir}


# (id, overrides, exit code, message regex); {run}, {corrupt}, {file} are filled from the fixture
CASES: list[tuple[str, list[str], int, str]] = [
    ("unknown method", ["method=bptx"], 2, r"unknown method option 'bptx'; choose one of: .*bptt"),
    ("unknown model", ["model=resnet9000"], 2, r"unknown model option 'resnet9000'"),
    ("unknown data", ["data=cifar11"], 2, r"unknown data option 'cifar11'"),
    ("unknown trainer", ["trainer=tpu"], 2, r"unknown trainer option 'tpu'; choose one of: .*ddp_cpu"),
    ("misspelt top key", ["metod=bptt"], 2, r"unknown config key 'metod'"),
    ("misspelt nested key", ["method.optimiser.lr=0.1"], 2,
     r"unknown key method.optimiser for SpikingClassifier .*did you mean method.optimizer\?"),
    ("misspelt key of a method group", ["method.optimizer.lrr=0.1"], 2, r"unknown config key 'method.optimizer.lrr'"),
    ("bad override syntax", ["T=="], 2,
     r"^error: cannot parse the command line \(Error parsing override 'T=='\); write overrides as key=value$"),
    ("T zero", ["T=0"], 2, r"^error: T must be a positive number of time steps \(got T=0\); e.g. T=4"),
    ("T negative", ["T=-3"], 2, r"T must be a positive number of time steps \(got T=-3\)"),
    ("T fractional", ["T=2.5"], 2, r"T must be a positive number of time steps \(got T=2.5\)"),
    ("negative seed", ["seed=-1"], 2, r"seed must be an integer >= 0"),
    ("zero threads", ["threads=0"], 2, r"^error: threads must be a positive number of torch threads"),
    ("negative lr", ["method.optimizer.lr=-0.1"], 2, r"method.optimizer.lr must be a number > 0 \(got -0.1\)"),
    ("zero lr", ["method.optimizer.lr=0"], 2, r"method.optimizer.lr must be a number > 0"),
    ("negative weight decay", ["method.optimizer.weight_decay=-1"], 2, r"weight_decay must be a number >= 0"),
    ("batch size zero", ["data.batch_size=0"], 2, r"data.batch_size must be an integer >= 1"),
    ("val fraction", ["data.val_fraction=1.5"], 2, r"data.val_fraction must be a number in \[0, 1\)"),
    ("wrong class count", ["data.num_classes=7"], 2, r"digits has 10 classes"),
    ("zero surrogate width", ["method.neuron.surrogate_alpha=0"], 2, r"surrogate_alpha must be a number > 0"),
    ("negative tau", ["method.neuron.tau=-2"], 2, r"method.neuron.tau must be a number > 0"),
    ("K larger than T", ["T=2", "method=sltt_k", "method.K=5"], 2, r"method.K=5 is larger than T=2"),
    ("p outside [0,1]", ["method=asgl", "method.p=1.5"], 2, r"method.p must be a number in \[0, 1\] \(got 1.5\)"),
    ("negative STDS width", ["method=stds", "method.flat_width=-1"], 2, r"method.flat_width must be a number"),
    # method keys are the method class's arguments (its signature), with or without `+`
    ("unknown method key", ["method=sltt_k", "+method.k=2"], 2,
     r"^error: unknown key method.k for SLTT \(spikeforge.methods.sltt.SLTT\); did you mean method.K\?$"),
    ("unknown method key without +", ["method=sltt_k", "method.k=2"], 2,
     r"^error: unknown key method.k for SLTT \(spikeforge.methods.sltt.SLTT\); did you mean method.K\?$"),
    ("method key of another method", ["method=bptt", "+method.K=2"], 2, r"unknown key method.K for SpikingClassifier"),
    ("method key the run sets", ["+method.num_classes=3"], 2, r"method.num_classes is set by the run"),
    ("unknown neuron", ["method.neuron.kind=izhikevich"], 2, r"unknown neuron kind 'izhikevich'; choose one of"),
    ("unknown norm", ["method.norm.kind=groupnorm9"], 2, r"unknown norm kind 'groupnorm9'; choose one of"),
    ("unknown optimizer", ["method.optimizer.name=rmsprop"], 2, r"unknown optimizer 'rmsprop'"),
    ("precision", ["trainer.precision=17"], 2, r"trainer.precision=17 is not a Lightning precision"),
    ("zero devices", ["trainer.devices=0"], 2, r"trainer.devices must be a positive count"),
    ("gpu on a cpu machine", ["trainer=gpu"], 2, r"^error: .*(gpu|GPU|CUDA)"),
    ("nonfinite action", ["reliability.nonfinite_loss=ignore"], 2, r"reliability.nonfinite_loss must be 'stop' or"),
    ("resume value", ["resume=yes"], 2, r"resume must be 'auto' or unset"),
    ("missing checkpoint", ["ckpt_path=/nonexist/last.ckpt"], 2, r"checkpoint /nonexist/last.ckpt does not exist"),
    ("corrupt checkpoint", ["ckpt_path={corrupt}"], 2, r"cannot read checkpoint .*corrupt.ckpt .*truncated"),
    ("last without a run", ["ckpt_path=last"], 2, r"ckpt_path=last but .*last.ckpt does not exist"),
    ("reuse a run dir", ["run_dir={run}"], 2, r"already holds a run; continue it with resume=auto"),
    ("resume with another model", ["run_dir={run}", "resume=auto", "model.channels=[8,32]"], 2,
     r"checkpoint .*last.ckpt does not match this model"),
    ("unwritable run dir", ["run_dir={file}/sub"], 2, r"cannot write the run directory .*a_file/sub"),
    ("image size", ["data.image_size=0"], 2, r"data.image_size and data.channels must be >= 1"),
    ("energy preset", ["energy.preset=fp8"], 2, r"energy.preset must be one of fp32, fp16, int8 \(got 'fp8'\)"),
    ("energy constant", ["energy.e_ac_pj=-0.9"], 2, r"energy.e_ac_pj must be a non-negative number of picojoules"),
]


# case id → the error line the run printed (filled by test_bad_input, counted by test_at_least_25_mistakes)
REPORTED: dict[str, str] = {}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case: tuple[str, list[str], int, str], earlier: dict[str, Path], tmp_path: Path) -> None:
    _, overrides, code, pattern = case
    before = tree_digest(earlier["run"])
    args = [*TINY, f"paths.log_dir={tmp_path / 'outputs'}"] + [
        o.format(run=earlier["run"], corrupt=earlier["corrupt"], file=earlier["file"]) for o in overrides
    ]
    rc, err = cli_in_process(args)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == code, err[-3000:]
    assert lines and lines[-1].startswith("error: "), err[-3000:]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert re.search(pattern, errors[0]), errors[0]
    assert tree_digest(earlier["run"]) == before, "an earlier run directory was changed"
    left = sorted(str(p) for p in (tmp_path / "outputs").rglob("*")) if (tmp_path / "outputs").exists() else []
    assert left == [], f"left behind: {left}"
    REPORTED[case[0]] = errors[0]


def _template(line: str) -> str:
    """An error line without its values (numbers, paths, quoted names): one template per kind of mistake."""
    return re.sub(r"'[^']*'|\S*[/\d]\S*", "_", line)


def test_at_least_25_mistakes() -> None:
    """Counts what the cases above did, not the table: every case ran and passed, and the runs
    reported at least 25 different kinds of mistake (distinct messages once values are removed)."""
    missing = [c[0] for c in CASES if c[0] not in REPORTED]
    if missing:
        pytest.skip(f"{len(missing)} bad-input cases did not run or failed in this session: {missing[:5]}")
    kinds = {_template(line) for line in REPORTED.values()}
    assert len(kinds) >= 25, sorted(kinds)


def test_full_trace_on_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With HYDRA_FULL_ERROR=1 the exception propagates (Python prints the whole trace)."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="T must be"):
        cli_in_process([*TINY, "T=0", f"paths.log_dir={tmp_path}"])
