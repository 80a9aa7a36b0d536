"""Lightning plugins: atomic checkpoint writes, SyncBatchNorm for time-major norms."""

from spikeforge.plugins.checkpoint_io import AtomicCheckpointIO
from spikeforge.plugins.sync_bn import TimeSyncBatchNorm

__all__ = ["AtomicCheckpointIO", "TimeSyncBatchNorm"]
