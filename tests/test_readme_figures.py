"""Figures the README and docs/ state about the embedded data, asserted at their values."""

from __future__ import annotations

from conftest import compose_cfg

from spikeforge.run import build_datamodule


def test_digits_split_and_iterations_per_epoch() -> None:
    """docs/data.md: a stratified 72/8/20 split, 1,295 / 143 / 359 images; docs/methods/dsr.md: 21
    training iterations per epoch at the default batch size 64."""
    dm = build_datamodule(compose_cfg())
    dm.setup("fit")
    dm.setup("test")
    sizes = len(dm.train_dataloader().dataset), len(dm.val_dataloader().dataset), len(dm.test_dataloader().dataset)
    assert sizes == (1295, 143, 359) and sum(sizes) == 1797
    assert [round(100 * n / 1797) for n in sizes] == [72, 8, 20]
    assert dm.batch_size == 64 and len(dm.train_dataloader()) == 21
