"""``hparams_search=optuna``: a search space for every method, a 2-trial sweep on digits that stores its
study (sqlite) and a trials summary in the sweep directory, and a resume that adds to the same study."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import CONF, compose_cfg
from infra_utils import TINY, method_names, run_train
from omegaconf import OmegaConf

from spikeforge import optuna_search
from spikeforge.errors import ConfigError

SEARCH = OmegaConf.load(CONF / "hparams_search" / "optuna.yaml").hydra.sweeper


def test_every_method_has_a_search_space_of_existing_keys(tmp_path) -> None:
    assert sorted(SEARCH.method_params) == method_names()
    for method in method_names():
        space = optuna_search.search_space(SEARCH.params, SEARCH.method_params, method)
        assert "T" in space and "method.optimizer.lr" in space, method
        assert len(space) >= 2 + (method != "dsr_ann"), method  # lr, T and the method's own key(s)
        cfg = compose_cfg([f"method={method}"], tmp_path / method)
        for key in space:
            assert OmegaConf.select(cfg, key) is not None, f"{method}: no key {key}"


def test_unknown_method_names_the_place_to_add_a_space() -> None:
    with pytest.raises(ConfigError, match=r"no search space for method=mine .*method_params\.mine"):
        optuna_search.search_space({"T": "choice(2, 4)"}, {"bptt": {}}, "mine")


def _sweep(sweep_dir: Path, n_trials: int):
    # tiny trials (the T of TINY is fixed on the command line, so the sampler searches lr and tau)
    args = ["-m", "hparams_search=optuna", f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={sweep_dir}",
            *TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
            "test=false", "inference_cost=false"]
    proc = run_train(args, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def _study(sweep_dir: Path):
    import optuna

    return optuna.load_study(study_name="bptt-convnet-digits", storage=optuna_search.sqlite_url(sweep_dir))


def test_two_trial_sweep_writes_study_and_summary_and_resumes(tmp_path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = _sweep(sweep_dir, 2)
    assert (sweep_dir / "optuna.db").is_file() and (sweep_dir / "optimization_results.yaml").is_file()
    study = _study(sweep_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:  # the objective is the trial's best validation top-1, run in <sweep dir>/<number>
        results = json.loads((sweep_dir / str(t.number) / "results.json").read_text())
        assert t.value == pytest.approx(results["best_val_acc1"])
        assert results["T"] == 2
        assert set(t.params) == {"method.optimizer.lr", "method.neuron.tau"}
    rows = list(csv.DictReader((sweep_dir / "trials.csv").open()))
    assert [r["number"] for r in rows] == ["0", "1"] and rows[0]["output_dir"] == str(sweep_dir / "0")
    assert float(rows[1]["method.optimizer.lr"]) == pytest.approx(study.trials[1].params["method.optimizer.lr"])
    assert "optuna study bptt-convnet-digits: 2 trials" in proc.stdout
    console = proc.stdout + proc.stderr  # README "The console": no library set-up or advice lines
    for noise in ("setup plugin", "logging interval", "fast_dev_run", "site-packages", "│ None"):
        assert noise not in console, f"the sweep printed {noise!r}:\n{console[-3000:]}"

    _sweep(sweep_dir, 1)  # the same command on the same directory: one more trial in the same study
    study = _study(sweep_dir)
    assert len(study.trials) == 3 and study.trials[2].state.name == "COMPLETE"
    assert (sweep_dir / "2" / "results.json").is_file()
    first = {t.params["method.optimizer.lr"] for t in study.trials[:2]}
    assert study.trials[2].params["method.optimizer.lr"] not in first  # the reseeded sampler moves on
    assert len(list(csv.DictReader((sweep_dir / "trials.csv").open()))) == 3


def test_a_trial_that_exits_with_an_error_is_a_failed_trial_not_the_end_of_the_search() -> None:
    import sys

    def run(code: int | None):
        def task(cfg):
            sys.exit(code)

        return optuna_search.failures_as_exceptions(task)

    with pytest.raises(optuna_search.TrialFailed, match="exited with code 3"):
        run(3)(None)
    with pytest.raises(SystemExit):  # a clean stop (preemption) still ends the sweep
        run(0)(None)
    assert optuna_search.failures_as_exceptions(lambda cfg: 0.5)(None) == 0.5
