"""DSR — Differentiation on Spike Representation (Meng et al., CVPR 2022; dsr.md).

The training loop is plain backpropagation through the multi-step forward; what differs from BPTT:

- neurons ``dsr_if`` / ``dsr_lif`` (``spikeforge.neurons.dsr``), whose backward differentiates the
  firing-rate representation, with one trainable bounded V_th per layer;
- readout = firing rate of the per-step outputs (IF) or their weighted rate â (LIF, weights
  w_i = exp(−(T − i)·Δt/τ)), and the loss (CE) is applied to that readout (dsr.md "Recipes");
- weight decay on every parameter, V_th included (``optimizer.decay_norm_and_bias: true``), SGD with a
  per-epoch cosine and a linear warm-up in iterations (``scheduler.per_epoch``, ``scheduler.warmup_steps``).

ImageNet hybrid pipeline (dsr.md "Networks"): (1) train the ReLU ANN of the same graph (``method=dsr_ann``,
neuron kind ``relu``); (2) :func:`calibrate_thresholds` — the 99.9th percentile of every layer's ReLU'd
pre-activations over a few batches of the ``calibration_split`` (the training split by default; the test set
under ``protocol=paper`` in ``experiment=dsr_imagenet_ann``, as DSR's ``imagenet/main.py --calculate_Vth``),
saved by :func:`save_thresholds` (``scripts/calibrate_dsr.py``);
(3) train the IF SNN with ``method.init_from=<ANN checkpoint>`` and ``method.thresholds=<file>``:
:func:`load_ann_weights` fails loudly unless every non-threshold tensor of the SNN was loaded.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.methods.base import SpikingClassifier
from spikeforge.neurons import is_neuron
from spikeforge.neurons.basic import ReLUNeuron
from spikeforge.neurons.dsr import DSRLIFNeuron, DSRNeuron, weighted_rate
from spikeforge.utils.checkpoints import load_matching, read_net_state_dict

log = logging.getLogger("spikeforge")

THRESHOLDS_FORMAT = "spikeforge-dsr-thresholds/1"
_READOUTS = ("auto", "rate", "weighted_rate")


class DSRClassifier(SpikingClassifier):
    """DSR training. Extra config keys (``conf/method/dsr.yaml``):

    Args:
        readout: ``auto`` (weighted rate for ``dsr_lif``, rate otherwise), ``rate`` or ``weighted_rate``.
        init_from: checkpoint of the ANN of the same graph (ImageNet hybrid step 3) or None.
        thresholds: JSON file written by ``scripts/calibrate_dsr.py`` (per-layer V_th) or None.
        calibration_split: the split ``scripts/calibrate_dsr.py`` reads from this run's checkpoint (hybrid
            step 2): ``train`` (default) or ``test`` (the reference's val_loader; ``protocol=paper`` only).
    """

    def __init__(
        self,
        *args: Any,
        readout: str = "auto",
        init_from: str | None = None,
        thresholds: str | None = None,
        calibration_split: str = "train",
        **kwargs: Any,
    ) -> None:
        if readout not in _READOUTS:
            raise ConfigError(f"method.readout={readout!r} is not valid; choose one of: {', '.join(_READOUTS)}")
        super().__init__(*args, **kwargs)
        neuron = dict(self.hparams.neuron)
        kind = neuron.get("kind")
        if readout == "auto":
            readout = "weighted_rate" if kind == "dsr_lif" else "rate"
        self.readout_kind = readout
        # τ and Δt of the readout: the neuron's (dsr_lif defaults: τ = 1, Δt = 0.05, dsr.md "Recipes")
        self.tau = float(neuron.get("tau", 1.0))
        self.delta_t = float(neuron.get("delta_t", 0.05))
        self.init_from = init_from
        self.thresholds_path = thresholds
        self.calibration_split = calibration_split
        self._initialised = False

    # ---- readout and loss -------------------------------------------------------------------
    def readout(self, out: torch.Tensor) -> torch.Tensor:
        """Class scores: rate (IF) or weighted rate â (LIF) of the per-step outputs ``[T, N, C]``."""
        if out.dim() != 3:
            return out
        if self.readout_kind == "weighted_rate":
            return weighted_rate(out, self.tau, self.delta_t)
        return out.mean(0)

    def compute_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured loss (CE) on the readout (a ``[N, C]`` input counts as one step)."""
        return self.criterion(self.readout(out), y)

    # ---- hybrid initialisation --------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Only when a fit starts from scratch: a resumed run (top-level ``ckpt_path``) restores its own
        # weights and thresholds right after this hook.
        resuming = bool((self.run_config or {}).get("ckpt_path"))
        if stage == "fit" and not self._initialised and not resuming:
            self.initialise_from_files()

    def initialise_from_files(self) -> None:
        """Load ``init_from`` (ANN weights) and ``thresholds`` (per-layer V_th) if configured."""
        self._initialised = True
        if self.init_from:
            n = load_ann_weights(self.net, self.init_from)
            log.info("DSR: loaded %d tensors from the ANN checkpoint %s", n, self.init_from)
        if self.thresholds_path:
            values = apply_thresholds(self.net, load_thresholds(self.thresholds_path))
            log.info("DSR: set %d thresholds from %s", len(values), self.thresholds_path)

    def extra_results(self) -> dict[str, Any]:
        return {"dsr_thresholds": current_thresholds(self.net)}


# ---- thresholds ------------------------------------------------------------------------------------
def dsr_neurons(net: nn.Module) -> dict[str, DSRNeuron]:
    return {name: m for name, m in net.named_modules() if isinstance(m, DSRNeuron)}


def current_thresholds(net: nn.Module) -> dict[str, float]:
    """V_th of every DSR neuron layer of ``net``, by module name."""
    return {name: float(m.v_threshold.detach()) for name, m in dsr_neurons(net).items()}


def _neuron_slots(net: nn.Module) -> dict[str, nn.Module]:
    """Modules in a neuron's place: ReLU stand-ins of an ANN, or spiking neurons."""
    return {name: m for name, m in net.named_modules() if isinstance(m, ReLUNeuron) or is_neuron(m)}


def percentile(values: torch.Tensor, q: float) -> float:
    """Nearest-rank q-th percentile: the ⌈q/100·n⌉-th smallest value."""
    flat = values.reshape(-1)
    if flat.numel() == 0:
        raise ValueError("percentile of an empty tensor")
    k = min(max(math.ceil(round(q * flat.numel() / 100.0, 6)), 1), flat.numel())  # round: 99.9·1000/100 ≠ 999.0
    return float(torch.kthvalue(flat.float().cpu(), k).values)


@torch.no_grad()
def calibrate_thresholds(
    net: nn.Module,
    batches: Iterable[torch.Tensor],
    q: float = 99.9,
    num_batches: int | None = None,
    max_samples: int = 10_000_000,
    seed: int = 0,
) -> dict[str, float]:
    """Per-layer q-th percentile of the ReLU'd pre-activations (inputs of the neuron slots) of ``net``.

    ``batches`` yields model inputs (already encoded, e.g. ``[T, N, C, H, W]``); the net runs in eval
    mode without gradients. At most ``max_samples`` values per layer are kept (a seeded random subset
    beyond that). dsr.md "Networks", ImageNet hybrid.
    """
    if not 0 < q <= 100:
        raise ConfigError(f"percentile q must be in (0, 100], got {q}")
    slots = _neuron_slots(net)
    if not slots:
        raise ConfigError("the model has no neuron layers (ReLU stand-ins or spiking neurons) to calibrate")
    gen = torch.Generator().manual_seed(seed)
    pools: dict[str, list[torch.Tensor]] = {name: [] for name in slots}
    counts: dict[str, int] = dict.fromkeys(slots, 0)

    def hook(name: str):
        def fn(_m: nn.Module, inp: tuple[torch.Tensor, ...], _out: object) -> None:
            v = torch.relu(inp[0].detach()).reshape(-1).float().cpu()
            pools[name].append(v)
            counts[name] += v.numel()
            if counts[name] > max_samples:  # keep memory bounded: a random half of the cap
                allv = torch.cat(pools[name])
                keep = torch.randint(allv.numel(), (max_samples // 2,), generator=gen)
                pools[name] = [allv[keep]]
                counts[name] = max_samples // 2

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in slots.items()]
    was_training = net.training
    net.eval()
    seen = 0
    try:
        from spikingjelly.activation_based import functional

        for x in batches:
            if num_batches is not None and seen >= num_batches:
                break
            functional.reset_net(net)
            net(x)
            seen += 1
        functional.reset_net(net)
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    if seen == 0:
        raise ConfigError("no batches to calibrate on; check the training data and calibration num_batches")
    return {name: percentile(torch.cat(pool), q) for name, pool in pools.items() if pool}


def save_thresholds(path: str | Path, thresholds: dict[str, float], **meta: Any) -> Path:
    """Write ``{"format", "thresholds": {layer: value}, **meta}`` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": THRESHOLDS_FORMAT, **meta, "thresholds": thresholds}, indent=2))
    return path


def load_thresholds(path: str | Path) -> dict[str, float]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"threshold file {path} does not exist; write it with scripts/calibrate_dsr.py")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read threshold file {path} ({type(e).__name__}); write it with "
                          "scripts/calibrate_dsr.py") from None
    if not isinstance(data, dict) or data.get("format") != THRESHOLDS_FORMAT or "thresholds" not in data:
        raise ConfigError(f"{path} is not a DSR threshold file (format {THRESHOLDS_FORMAT}); "
                          "write it with scripts/calibrate_dsr.py")
    return {str(k): float(v) for k, v in data["thresholds"].items()}


@torch.no_grad()
def apply_thresholds(net: nn.Module, thresholds: dict[str, float]) -> dict[str, float]:
    """Set every DSR neuron's V_th from calibrated ANN activations; returns the values set.

    IF: V_th = value. LIF: V_th = value·Δt/τ, since the LIF representation saturates at input V_th·τ/Δt
    (dsr.md "LIF backward"; the reference scales by Δt with τ = 1). Values are raised to the layer's bound.
    Every DSR layer needs a value and every value needs a layer, or this fails.
    """
    neurons = dsr_neurons(net)
    if not neurons:
        raise ConfigError("method.thresholds is set but the model has no DSR neurons; use neuron kind dsr_if/dsr_lif")
    missing = sorted(set(neurons) - set(thresholds))
    unknown = sorted(set(thresholds) - set(neurons))
    if missing or unknown:
        raise ConfigError(
            f"threshold file does not match the model: {len(missing)} DSR layers without a value "
            f"({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''}), {len(unknown)} values for no layer "
            f"({', '.join(unknown[:3])}{'…' if len(unknown) > 3 else ''}); calibrate the ANN of the same model"
        )
    out = {}
    for name, m in neurons.items():
        scale = m.delta_t / m.tau if isinstance(m, DSRLIFNeuron) else 1.0
        value = max(thresholds[name] * scale, m.v_threshold_bound)
        m.v_threshold.fill_(value)
        out[name] = value
    return out


def load_ann_weights(net: nn.Module, path: str | Path) -> int:
    """Copy the ANN's weights into ``net`` (the SNN of the same graph); returns the number of tensors loaded.

    Fails with :class:`CheckpointError` unless every tensor of ``net`` except the DSR thresholds is found in
    the checkpoint with the same shape and every checkpoint tensor has a place in ``net`` (a different graph
    would otherwise load silently).
    """
    thresholds = {f"{name}.v_threshold" for name in dsr_neurons(net)}
    return load_matching(net, read_net_state_dict(path, "method.init_from"), f"ANN checkpoint {path}",
                         skip=thresholds, hint="train the ANN with the same model and data (method=dsr_ann)")
