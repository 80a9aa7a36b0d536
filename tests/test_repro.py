"""Recipes: every experiment config composes (``--cfg job``) and is listed as a make target."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT, compose_cfg, config_options
from infra_utils import run_cmd
from omegaconf import OmegaConf

sys.path.insert(0, str(ROOT / "scripts"))

import repro

EXPERIMENTS = config_options("experiment")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_resolves(name: str, tmp_path) -> None:
    cfg = compose_cfg([f"experiment={name}"], tmp_path / "run")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["method"]["T"] == resolved["T"]
    if not name.endswith("_digits"):
        # paper recipes record the paper's number beside ours, and where it comes from (or why it is missing)
        expected = resolved["expected"]
        assert expected and expected.get("source"), name
        assert expected["top1"] is None or 0 < expected["top1"] <= 100, name


def test_cfg_job_prints_the_composed_config() -> None:
    proc = run_cmd([sys.executable, "src/train.py", f"experiment={EXPERIMENTS[0]}", "--cfg", "job"], cwd=ROOT,
                   timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "method:" in proc.stdout and "model:" in proc.stdout


def test_repro_list_names_every_recipe() -> None:
    listing = repro.list_recipes()
    for name in EXPERIMENTS:
        assert "repro-" + name.replace("_", "-") in listing
    # the protocol column and the note on protocol=paper / protocol=clean
    assert "protocol" in listing.splitlines()[0] and repro.PROTOCOL_NOTE in listing
    assert repro.resolve("bptt-digits") == "bptt_digits"
    with pytest.raises(SystemExit):
        repro.resolve("no-such-recipe")
