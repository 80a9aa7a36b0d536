"""Every option of every config group composes, and the composed config resolves."""

from __future__ import annotations

import pytest
from conftest import CONF, compose_cfg, config_options
from omegaconf import OmegaConf

GROUPS = ["method", "model", "data", "trainer", "logger", "callbacks", "debug", "protocol", "experiment"]
CASES = [(g, o) for g in GROUPS for o in config_options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_group_option_composes(group: str, option: str, tmp_path) -> None:
    cfg = compose_cfg([f"{group}={option}"], tmp_path / "run")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["T"] >= 1
    assert resolved["method"]["name"] and resolved["model"]["name"] and resolved["data"]["name"]
    # T is one top-level key read by the method through interpolation
    assert resolved["method"]["T"] == resolved["T"]


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert config_options(group), f"conf/{group}/ is empty"


def test_method_names_match_files() -> None:
    for option in config_options("method"):
        cfg = OmegaConf.load(CONF / "method" / f"{option}.yaml")
        assert cfg.name == option, f"conf/method/{option}.yaml has name={cfg.name}"


def test_T_override_reaches_method(tmp_path) -> None:
    cfg = compose_cfg(["T=6"], tmp_path / "run")
    assert cfg.method.T == 6
