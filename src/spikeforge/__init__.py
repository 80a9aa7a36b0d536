"""spikeforge: direct training of spiking neural networks (STDS, ASGL, DSR, STBP-tdBN, SLTT, BPTT).

Public building blocks (stable surface, see README "Building blocks"):
``spikeforge.neurons.build_neuron``, ``spikeforge.layers.build_norm``,
``spikeforge.models.build_model``, ``spikeforge.losses.build_loss``.
"""

__version__ = "0.1.0"
