"""Network weights from an earlier run's checkpoint (``init_from``: SLTT ImageNet stage 2, the DSR
hybrid SNN initialised from its ANN). One reader, one strict matcher with a precise error."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

from spikeforge.errors import CheckpointError


def read_net_state_dict(path: str | Path, what: str = "init_from") -> dict[str, torch.Tensor]:
    """The network's tensors in ``path``: the ``net.*`` entries of a spikeforge/Lightning checkpoint, or a
    bare state dict. ``what`` names the setting in error messages."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}={path} does not exist; pass the earlier run's checkpoints/last.ckpt "
                              "(or best-*.ckpt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # any unpickling failure means an unreadable file
        raise CheckpointError(f"cannot read {what}={path} ({type(e).__name__}); it is truncated or not a "
                              "checkpoint") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what}={path} holds no state dict; pass a checkpoint written by src/train.py")
    if any(k.startswith("net.") for k in state):
        state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    return state


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (" …" if len(keys) > 3 else "")


def load_matching(net: nn.Module, state: dict[str, torch.Tensor], source: str, skip: Collection[str] = (),
                  hint: str = "use a checkpoint of the same model config") -> int:
    """Load ``state`` into ``net``: every tensor of ``net`` except ``skip`` must be found with the same shape,
    and every tensor of ``state`` must have a place in ``net``; otherwise a :class:`CheckpointError` lists
    what is missing, unexpected or mis-shaped. Returns the number of tensors loaded."""
    own = net.state_dict()
    wanted = [k for k in own if k not in skip]
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in wanted if k in state and state[k].shape != own[k].shape]
    matched = [k for k in wanted if k in state and state[k].shape == own[k].shape]
    if not matched or missing or unexpected or shape:
        raise CheckpointError(
            f"{source} does not fit this model: {len(matched)}/{len(wanted)} tensors matched; "
            f"missing {len(missing)} ({_few(missing)}), unexpected {len(unexpected)} ({_few(unexpected)}), "
            f"wrong shape {len(shape)} ({_few(shape)}); {hint}")
    result = net.load_state_dict({k: state[k] for k in matched}, strict=False)
    if set(result.missing_keys) - set(skip) or result.unexpected_keys:
        raise CheckpointError(f"loading {source} left {len(result.missing_keys)} tensors unset")
    return len(matched)
