"""Checkpoints written atomically: serialise to memory, write a temporary file in the target folder,
fsync, then ``os.replace`` over the target. A crash (even SIGKILL) mid-write leaves the previous
``last.ckpt`` intact, never a truncated one."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from spikeforge.utils.io import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote file systems: Lightning's own transactional save
            return super().save_checkpoint(checkpoint, path, storage_options)
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(Path(path), buf.getvalue())
        return None
