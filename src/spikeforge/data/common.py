"""Pieces shared by the file-backed datamodules: a transformed view of a subset (so the held-out
validation split of a training set is served without augmentation), and the one-sentence
missing-data error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from spikeforge.errors import DataError


class TransformedSubset(Dataset):
    """``base[indices[i]]`` with ``transform`` applied to the sample and ``label_map`` to the label.

    One base dataset can back several views (augmented training split, plain validation split)
    without reading the files twice.
    """

    def __init__(
        self,
        base: Dataset,
        indices: Sequence[int] | np.ndarray | None = None,
        transform: Callable[[Any], Any] | None = None,
        label_map: Sequence[int] | None = None,
    ) -> None:
        self.base = base
        self.indices = np.arange(len(base)) if indices is None else np.asarray(indices, dtype=np.int64)  # type: ignore[arg-type]
        self.transform = transform
        self.label_map = None if label_map is None else list(label_map)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        x, y = self.base[int(self.indices[i])]
        if self.transform is not None:
            x = self.transform(x)
        y = int(y)
        if self.label_map is not None:
            y = self.label_map[y]
        return x, y


def missing_data(name: str, path: str | Path, layout: str, source: str, detail: str = "") -> DataError:
    """The error for a missing or malformed dataset: what, where, which layout, where to get it."""
    why = f" ({detail})" if detail else ""
    return DataError(
        f"{name} not found or unreadable at {path}{why}; expected {layout}; get it from {source} "
        f"and set paths.data_dir (env SPIKEFORGE_DATA_DIR) or data.root to its folder"
    )

