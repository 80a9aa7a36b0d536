"""One LightningModule per training method. ``base.SpikingClassifier`` is plain BPTT; the others
override only what differs (neuron/norm factories, loss, optimisation loop)."""

from spikeforge.methods.base import SpikingClassifier

__all__ = ["SpikingClassifier"]
