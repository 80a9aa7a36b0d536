"""Method keys come from the method class's signature: every shipped method config validates, and a new
method's own arguments are valid keys without any list to update."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import compose_cfg
from infra_utils import method_names

from spikeforge.config_schema import check_method_keys, method_keys, validate
from spikeforge.errors import ConfigError
from spikeforge.methods.base import SpikingClassifier
from spikeforge.methods.sltt import SLTT


@pytest.mark.parametrize("method", method_names())
def test_every_method_config_has_only_valid_keys(method: str) -> None:
    validate(compose_cfg([f"method={method}"]))


class _NewMethod(SLTT):
    def __init__(self, *args: Any, beta: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


class _Closed(SpikingClassifier):  # passes nothing on: only its own arguments
    def __init__(self, gamma: float = 1.0) -> None:  # pragma: no cover - never built
        pass


def test_keys_are_read_from_the_signatures() -> None:
    base = {"model", "neuron", "norm", "loss", "optimizer", "scheduler", "T", "num_classes", "in_channels", "memory"}
    assert method_keys(SpikingClassifier) == base
    assert method_keys(SLTT) >= base | {"K", "seed", "init_from"}
    assert method_keys(_NewMethod) == method_keys(SLTT) | {"beta"}
    assert method_keys(_Closed) == {"gamma"}
    target = f"{__name__}._NewMethod"
    check_method_keys({"_target_": target, "name": "new", "beta": 1.0, "K": 2})
    with pytest.raises(ConfigError, match=r"unknown key method.bta for _NewMethod .*; did you mean method.beta\?"):
        check_method_keys({"_target_": target, "bta": 1.0})
