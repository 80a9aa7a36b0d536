"""A quiet, meaningful console: the progress bar, the model summary, the run summary and warnings that
concern the user's run — nothing else.

:func:`quiet_console` is called when a task starts (after Lightning is imported):

- Lightning's INFO messages ("Seed set to", "GPU available: False", product tips, "`Trainer.fit`
  stopped", the ``fast_dev_run`` note of ``debug=fdr``) go to the run's log file only
  (``<run dir>/train.log``); its warnings still reach the console, except
  :data:`LOG_ONLY_WARNINGS` (advice about settings a run chose on purpose), which go to the log only.
  Lightning prints them through a handler of its own besides the one Hydra configures, so every line
  appeared twice: that handler is removed.
- Warnings about library internals that no setting of a run can change are silenced
  (:data:`IRRELEVANT_WARNINGS`, each with the reason).
"""

from __future__ import annotations

import logging
import re
import warnings

# (message regex, category, why it does not concern a spikeforge run)
IRRELEVANT_WARNINGS: list[tuple[str, type[Warning], str]] = [
    # Lightning 2.6 uses torch's deprecated pytree LeafSpec internally (lightning/pytorch/utilities/_pytree.py)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, "library internals"),
    # the training loader is wrapped by spikeforge.callbacks.resume.make_resumable, whose sampler state
    # is in every checkpoint: a mid-epoch resume continues the same batch sequence exactly
    (r".*your dataloader is\s+not resumable", Warning, "resume is exact"),
    # only a resumed run reuses a run directory (spikeforge.hydra_callbacks.RunGuard refuses the rest)
    (r"Checkpoint directory .* exists and is not empty", Warning, "a resumed run continues its directory"),
]

LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")

# Python warnings (captured into logging as ``py.warnings``) that go to train.log only: advice about a
# setting the run chose on purpose, with a site-packages path the user cannot act on
LOG_ONLY_WARNINGS = (
    # a short run (debug=limit, scaled-down tests) has fewer batches than the logging interval
    r"smaller than the logging interval",
    # values logged once per epoch that are the same on every rank (ASGL's widths) need no reduction
    r"It is recommended to use `self\.log\(.*sync_dist=True",
)


class DropLibraryInfo(logging.Filter):
    """Console filter: records below WARNING from Lightning's loggers stay out of the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            return not any(re.search(p, record.getMessage(), re.S) for p in LOG_ONLY_WARNINGS)
        return record.levelno >= logging.WARNING or not record.name.startswith("lightning")


def quiet_console() -> None:
    """Apply the rules of the module docstring (idempotent)."""
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler:  # Lightning's own console handler
                lg.removeHandler(h)
        lg.propagate = True  # to Hydra's console (filtered below) and log file
    # the root's console and the one conf/hydra/default.yaml gives Python warnings (``py.warnings``)
    for h in [*logging.getLogger().handlers, *logging.getLogger("py.warnings").handlers]:
        if type(h) is logging.StreamHandler and not any(isinstance(f, DropLibraryInfo) for f in h.filters):
            h.addFilter(DropLibraryInfo())
    for message, category, _why in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
