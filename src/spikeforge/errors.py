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


def user_error_in(e: BaseException | None) -> SpikeforgeError | None:
    """The :class:`SpikeforgeError` behind ``e`` (Hydra's instantiate wraps errors in its own)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, SpikeforgeError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


# the user's HYDRA_FULL_ERROR, kept by spikeforge.cli while it runs a Hydra app with HYDRA_FULL_ERROR=1
USER_FULL_ERROR_ENV = "SPIKEFORGE_FULL_ERROR"


def full_errors() -> bool:
    """The user asked for full stack traces instead of one-line errors (``HYDRA_FULL_ERROR=1``)."""
    import os

    value = os.environ.get(USER_FULL_ERROR_ENV)
    return (value if value is not None else os.environ.get("HYDRA_FULL_ERROR")) == "1"
