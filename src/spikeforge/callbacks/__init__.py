"""Lightning callbacks: firing-rate recording, cost (time/memory) monitoring, schedules."""

from spikeforge.callbacks.cost import CostMonitor
from spikeforge.callbacks.firing_rate import FiringRateRecorder

__all__ = ["CostMonitor", "FiringRateRecorder"]
