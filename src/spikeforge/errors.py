"""User-facing errors: one clear sentence, non-zero exit, no stack trace (unless HYDRA_FULL_ERROR=1)."""

from __future__ import annotations


class SpikeforgeError(Exception):
    """A mistake the user can fix (bad config value, missing dataset, wrong checkpoint...).

    The message must say what is wrong and how to fix it, in one line.
    """

    exit_code = 2


class ConfigError(SpikeforgeError):
    """Invalid or incompatible configuration."""


class DataError(SpikeforgeError):
    """Missing or malformed dataset files."""


class CheckpointError(SpikeforgeError):
    """Unreadable or mismatched checkpoint."""


class ExportError(SpikeforgeError):
    """A network the chosen export format cannot express, or an export that does not reproduce it."""
