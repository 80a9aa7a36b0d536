"""``SpikingClassifier``: the method contract shared by every training method
(docs/architecture.md, "Adding a method").

It builds the model from the method's neuron and norm factories, encodes the input time-major
(direct encoding for static images: the image repeated T times; event frames ``[N, T, ...]`` are
transposed to ``[T, N, ...]``), runs the multi-step forward, resets neuron state around every
batch, applies the configured loss to the per-step outputs, logs loss and top-1/top-5 accuracy for
train/val/test, per-layer firing rates every validation epoch, and builds optimiser and LR schedule
from config. Backpropagation through time (BPTT) is this class used as it is.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from spikingjelly.activation_based import functional
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from spikeforge.callbacks.firing_rate import FiringRateRecorder
from spikeforge.errors import ConfigError
from spikeforge.layers import NormFactory
from spikeforge.losses import build_loss
from spikeforge.methods.optim import build_optimizer, build_scheduler, split_decay
from spikeforge.models import build_model
from spikeforge.neurons import NeuronFactory


class SampleMean(Metric):
    """Mean over samples of per-batch means (``update(mean, n)``): the sums are reduced over ranks.
    (torchmetrics' ``MeanMetric`` either checks for NaN on the host every step or, with the check
    disabled, drops the weights.)"""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, mean: torch.Tensor, n: int) -> None:
        self.total += mean.detach().to(torch.float64) * n
        self.count += n

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    metrics: dict[str, Any] = {"acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes > 5:
        metrics["acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


class SpikingClassifier(L.LightningModule):
    """BPTT through the multi-step forward; base of every method.

    Args:
        model: model config, ``{"name": ..., **kwargs}`` (``conf/model/*``).
        neuron: neuron config, ``{"kind": ..., **params}`` (``spikeforge.neurons.build_neuron``).
        norm: norm config, ``{"kind": ..., **params}`` (``spikeforge.layers.build_norm``).
        loss: loss config, ``{"name": ..., **params}`` (``spikeforge.losses.build_loss``).
        optimizer / scheduler: see ``spikeforge.methods.optim``.
        T: number of time steps.
        num_classes / in_channels: from the data config.
        memory: the run's ``memory`` group (``spikeforge.recompute``): ``{"mode": none|checkpoint|auto, ...}``.
    """

    def __init__(
        self,
        model: dict[str, Any],
        neuron: dict[str, Any],
        norm: dict[str, Any],
        loss: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        T: int,
        num_classes: int,
        in_channels: int = 3,
        memory: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__()
        if int(T) < 1:
            raise ConfigError(f"T must be a positive number of time steps (got T={T}); e.g. T=4")
        # the run logs its whole config (spikeforge.callbacks.hparams.RunConfigLogger), not this subset
        self.save_hyperparameters(logger=False)
        self.T = int(T)
        self.num_classes = num_classes
        self.net = self.build_net()
        self.criterion = build_loss(**loss)
        self.train_metrics = _metrics(num_classes, "train/")
        self.val_metrics = _metrics(num_classes, "val/")
        self.test_metrics = _metrics(num_classes, "test/")
        # evaluation losses as sample-weighted means whose sums are reduced over DDP ranks: exact with
        # uneven shards (spikeforge.data.sharding), where Lightning's own mean of a logged tensor divides
        # by an integer-averaged batch count
        self.eval_losses = nn.ModuleDict({s: SampleMean() for s in ("val", "test")})
        self.rates = FiringRateRecorder(self.net)
        self.last_firing_rates: dict[str, float] = {}
        self.run_config: dict[str, Any] | None = None  # set by spikeforge.run, saved in checkpoints

    # ---- construction hooks (methods override these) ---------------------------------------
    def neuron_factory(self) -> NeuronFactory:
        cfg = dict(self.hparams.neuron)
        return NeuronFactory(cfg.pop("kind"), **cfg)

    def norm_factory(self) -> NormFactory:
        cfg = dict(self.hparams.norm)
        return NormFactory(cfg.pop("kind"), **cfg)

    def build_net(self) -> nn.Module:
        cfg = dict(self.hparams.model)
        name = cfg.pop("name")
        compile_net = bool(cfg.pop("compile", False))
        self.channels_last = bool(cfg.pop("channels_last", False))
        net = build_model(
            name,
            num_classes=self.hparams.num_classes,
            in_channels=self.hparams.in_channels,
            neuron=self.neuron_factory(),
            norm=self.norm_factory(),
            **cfg,
        )
        net = self.apply_memory(net, compile_net)
        if self.channels_last:  # model.channels_last=true: NHWC conv weights (and inputs, see encode)
            net = net.to(memory_format=torch.channels_last)
        if compile_net:  # model.compile=true: torch.compile in place (state-dict keys unchanged)
            # static shapes: a layer's shapes do not change between steps, and automatic dynamic shapes
            # (recompiling a neuron's code for the next layer's shape after a graph break, e.g. ASGL's
            # mask draw from its own generator) stops Inductor (torch 2.14: "cannot determine truth
            # value of Relational")
            net.compile(dynamic=False)
        return net

    # ---- memory=checkpoint|auto (spikeforge.recompute) ------------------------------------------
    # methods whose backward is not one BPTT pass over the multi-step forward set ("none",)
    memory_modes: tuple[str, ...] = ("none", "checkpoint", "auto")

    def apply_memory(self, net: nn.Module, compiled: bool) -> nn.Module:
        mode = str((self.hparams.get("memory") or {}).get("mode", "none"))
        if mode != "none" and mode not in self.memory_modes:
            raise ConfigError(f"method={self.hparams.get('name', type(self).__name__)} runs each time step's forward "
                              f"and backward on its own (memory flat in T), so memory={mode} does not apply; use "
                              "memory=none, or memory=checkpoint|auto with a BPTT-style method (bptt, bptt_sltt, "
                              "stbp_tdbn, stds, asgl, asgl_sg, dsr, dsr_lif, dsr_ann)")
        if mode != "none" and compiled:
            raise ConfigError(f"memory={mode} and model.compile=true cannot be combined; use one of them")
        from spikeforge.recompute import apply_memory

        return apply_memory(net, mode)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        mem = self.hparams.get("memory") or {}
        if mem.get("mode") == "auto" and not getattr(self, "memory_units_chosen", None):
            from spikeforge.recompute import choose_units

            x = batch[0]
            self.memory_units_chosen = choose_units(self.net, lambda: self(x), mem.get("level"),
                                                    str(mem.get("budget", "balanced"))) or ["(none)"]

    # ---- forward ----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Time-major input: static ``[N, C, H, W]`` → repeated ``[T, N, C, H, W]`` (direct
        encoding); event frames ``[N, T, C, H, W]`` → ``[T, N, C, H, W]``. Models with
        ``static_input = True`` take the static ``[N, C, H, W]`` image and repeat it themselves."""
        if x.dim() == 4:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if getattr(self.net, "static_input", False):
                return x  # the model repeats over T itself (e.g. stem computed once, STDS)
            return x.unsqueeze(0).expand(self.T, *x.shape)
        if x.dim() == 5:
            return x.transpose(0, 1)
        raise ValueError(f"expected images [N, C, H, W] or frames [N, T, C, H, W], got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step outputs ``[T, N, num_classes]`` (state reset before and after)."""
        functional.reset_net(self.net)
        try:
            return self.net(self.encode(x))
        finally:
            functional.reset_net(self.net)

    def readout(self, out: torch.Tensor) -> torch.Tensor:
        """Class scores used for prediction: the mean over T of the per-step outputs."""
        return out.mean(0) if out.dim() == 3 else out

    def compute_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(out, y)

    # ---- steps ------------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self(x)
        loss = self.compute_loss(out, y)
        self.log_step("train", loss, self.readout(out), y)
        return loss

    def log_step(self, stage: str, loss: torch.Tensor, scores: torch.Tensor, y: torch.Tensor) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(scores.detach().float(), y)
        if stage == "train":
            self.log(f"{stage}/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True,
                     sync_dist=True, batch_size=y.shape[0])
        else:
            mean = self.eval_losses[stage]
            mean.update(loss, y.shape[0])
            self.log(f"{stage}/loss", mean, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "test", sync_dist=True)

    def _eval_step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        out = self(x)
        self.log_step(stage, self.compute_loss(out, y), self.readout(out), y)

    # metrics of the validation loop are logged as "<validation_stage>/..."; "test" when the loop runs on
    # the test split (protocol=paper, spikeforge.protocol)
    validation_stage: str = "val"

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(self.validation_stage, batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_start(self) -> None:
        self.rates.start()

    def on_validation_epoch_end(self) -> None:
        # every rank takes part in the sum (same hook, same order); on one process it is the identity
        rates = self.rates.stop(reduce=lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        if rates and not self.trainer.sanity_checking:
            self.last_firing_rates = rates
            self.log_dict({f"firing_rate/{k}": v for k, v in rates.items()}, sync_dist=True)

    # ---- optimisation -----------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups of the main optimiser; ``decay: False`` groups get no weight decay."""
        decay, no_decay = split_decay(self.net, self.hparams.optimizer.get("decay_norm_and_bias", False))
        return [{"params": decay, "decay": True}, {"params": no_decay, "decay": False}]

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.param_groups(), self.hparams.optimizer)
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_config(optimizer)}

    def lr_scheduler_config(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        epochs = max(self.trainer.max_epochs or 1, 1)
        steps_per_epoch = max(total // epochs, 1)
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, total, steps_per_epoch)
        return {"scheduler": scheduler, "interval": "step", "frequency": 1}

    def extra_results(self) -> dict[str, Any]:
        """Method-specific figures for ``results.json`` (e.g. STDS sparsity)."""
        return {}

    # ---- checkpoints ------------------------------------------------------------------------
    def rank_generators(self) -> dict[str, torch.Generator]:
        """Generators whose stream differs per DDP rank (``spikeforge.distributed.rank_generator``):
        ``RNGStateCallback`` saves every rank's state in checkpoints and restores it on resume.
        Generators shared by all ranks are saved by the method itself (``on_save_checkpoint``)."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint["spikeforge_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.run_config = checkpoint.get("spikeforge_config", self.run_config)
