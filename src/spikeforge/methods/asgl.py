"""ASGL (``method=asgl``): hybrid noisy spikes with a learnable surrogate width (asgl.md).

What differs from BPTT:
- neuron ``asgl_lif`` (``spikeforge.neurons.asgl``); the method-level keys ``surrogate``, ``width``,
  ``p``, ``train_width``, ``train_decay`` and ``granularity`` are passed to every neuron, so a sweep
  overrides one key (``method.width=0.5,1,...``).
- two optimisers stepped together (asgl.md, "Hybrid noisy spike"): the network weights in the main
  one (SGD; weight decay only on conv/linear weights, asgl.md "Networks and recipes") and the
  width (and decay) parameters in their own Adam (lr 3e-4, wd 0), each with its own LR schedule.
- the p schedule: ``NoiseRateSchedule``, a callback whose state is checkpointed.
- the Bernoulli masks come from a per-rank generator (``spikeforge.distributed.rank_generator``): every
  data-parallel replica draws its own noise, as one process per GPU does in the original training
  (with the global RNG, seeded alike on every rank, all ranks would draw the same masks). Its state
  is saved per rank in checkpoints (``rank_generators``, restored by ``RNGStateCallback``).

Why one optimizer object (``OptimizerPair``) rather than manual optimisation: Lightning 2.x runs
several optimisers only under manual optimisation, where ``global_step`` counts every
``optimizer.step()`` (two per batch here), and gradient clipping / accumulation from the Trainer
are refused. ``OptimizerPair`` is a ``torch.optim.Optimizer`` exposing the param groups of both
optimisers: automatic optimisation, AMP, clipping, accumulation, the LR monitor and the LR
scheduler see one optimiser; its ``state_dict`` holds both states (``{"main", "width"}``), so a
checkpoint stores both and ``ckpt_path=...`` resumes both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from spikeforge.distributed import rank_generator
from spikeforge.errors import ConfigError
from spikeforge.methods.base import SpikingClassifier
from spikeforge.methods.optim import SchedulerConfig, build_optimizer, lr_factor
from spikeforge.neurons import NeuronFactory
from spikeforge.neurons.asgl import ASGLLIF, HybridSpike, hybrid_spikes, set_noise_rate

# asgl.md, "Hybrid noisy spike": milestones as fractions of the number of epochs.
DEFAULT_MILESTONES = (0.0, 0.2, 0.4, 0.6, 0.8, 0.95)


def noise_milestones(milestones: Sequence[float], max_epochs: int) -> set[int]:
    """Epochs after which p ← p·γ: ``int(fraction · max_epochs)`` (duplicates count once)."""
    return {int(m * max_epochs) for m in milestones}


class NoiseRateSchedule(L.Callback):
    """The p schedule (asgl.md, "Hybrid noisy spike"): after epoch e, if e is a milestone then
    p ← p·γ. The current p is this callback's checkpointed state, so a resumed run goes on with it."""

    def __init__(self, p: float, gamma: float = 1.0, milestones: Sequence[float] = DEFAULT_MILESTONES) -> None:
        self.p = float(p)
        self.gamma = float(gamma)
        self.milestones = tuple(float(m) for m in milestones)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_noise_rate(pl_module, self.p)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch in noise_milestones(self.milestones, int(trainer.max_epochs or 0)):
            self.p *= self.gamma
        pl_module.log("asgl/p", self.p)

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.p = float(state_dict["p"])


class OptimizerPair(torch.optim.Optimizer):
    """Two optimisers behind one ``torch.optim.Optimizer``: ``step`` runs the closure once and then
    steps both; ``param_groups`` are theirs (main first), so one LR scheduler can give each group
    its own schedule; ``state_dict`` is ``{"main": ..., "width": ...}``."""

    def __init__(self, main: torch.optim.Optimizer, width: torch.optim.Optimizer) -> None:
        params = [p for opt in (main, width) for g in opt.param_groups for p in g["params"]]
        super().__init__(params, {})
        self.main = main
        self.width = width
        self.param_groups = [*main.param_groups, *width.param_groups]  # the same dicts, shared
        self.n_main_groups = len(main.param_groups)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.main.step()
        self.width.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.main.zero_grad(set_to_none)
        self.width.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"main": self.main.state_dict(), "width": self.width.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.main.load_state_dict(state_dict["main"])
        self.width.load_state_dict(state_dict["width"])
        self.param_groups = [*self.main.param_groups, *self.width.param_groups]


def conv_linear_weights(model: nn.Module) -> set[int]:
    """ids of the weights of conv and linear layers (the only ones under weight decay)."""
    return {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear) and isinstance(m.weight, nn.Parameter)
    }


class ASGLClassifier(SpikingClassifier):
    """ASGL on top of :class:`SpikingClassifier` (asgl.md).

    Args (beyond the base class):
        surrogate / width / p / train_width / train_decay / granularity: passed to every ``asgl_lif``.
        gamma / milestones: the p schedule (γ = 1 keeps p constant, both reference recipes).
        width_optimizer / width_scheduler: the optimiser of the width (and decay) parameters
            (default Adam lr 3e-4, wd 0, constant LR) — see ``spikeforge.methods.optim``.
    """

    def __init__(
        self,
        *args: Any,
        surrogate: str = "sigmoid",
        width: float = 5.0,
        p: float = 0.2,
        gamma: float = 1.0,
        milestones: Sequence[float] = DEFAULT_MILESTONES,
        train_width: bool = True,
        train_decay: bool = False,
        granularity: str = "layer",
        width_optimizer: dict[str, Any] | None = None,
        width_scheduler: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # p is checked where it lives, the neurons' setter (spikeforge.neurons.asgl.ASGLLIF.p)
        if float(gamma) < 0:
            raise ConfigError(f"method.gamma must be >= 0 (got {gamma})")
        super().__init__(
            *args, surrogate=surrogate, width=width, p=p, gamma=gamma, milestones=list(milestones),
            train_width=train_width, train_decay=train_decay, granularity=granularity,
            width_optimizer=width_optimizer, width_scheduler=width_scheduler, **kwargs,
        )
        if not any(isinstance(m, ASGLLIF) for m in self.net.modules()):
            raise ConfigError("method=asgl needs the asgl_lif neuron (method.neuron.kind=asgl_lif)")

    def neuron_factory(self) -> NeuronFactory:
        cfg = dict(self.hparams.neuron)
        kind = cfg.pop("kind")
        if kind != "asgl_lif":
            raise ConfigError(f"method=asgl needs method.neuron.kind=asgl_lif (got {kind!r})")
        h = self.hparams
        return NeuronFactory(kind, **cfg, surrogate=h.surrogate, width=float(h.width), p=float(h.p),
                             train_width=bool(h.train_width), train_decay=bool(h.train_decay),
                             granularity=h.granularity)

    def configure_callbacks(self) -> list[L.Callback]:
        return [NoiseRateSchedule(self.hparams.p, self.hparams.gamma, self.hparams.milestones)]

    # ---- noise stream -----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # here the rank is known and the network is on its device; seeded from the run's seed
        self.noise_generator = rank_generator(int(os.environ.get("PL_GLOBAL_SEED", 0)), "asgl/masks",
                                              device=self.device, rank=self.trainer.global_rank)
        for m in hybrid_spikes(self.net):
            m.generator = self.noise_generator

    def rank_generators(self) -> dict[str, torch.Generator]:
        gen = getattr(self, "noise_generator", None)
        return {"asgl/masks": gen} if gen is not None else {}

    # ---- optimisation -----------------------------------------------------------------------
    def neuron_params(self) -> list[nn.Parameter]:
        """Trainable width and decay parameters (the second optimiser's)."""
        return [p for m in self.net.modules() if isinstance(m, ASGLLIF) for p in m.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict[str, Any]]:
        """Main optimiser: weight decay only on conv/linear weights (asgl.md)."""
        skip = {id(p) for p in self.neuron_params()}
        decayed_ids = conv_linear_weights(self.net)
        decay, no_decay = [], []
        for p in self.net.parameters():
            if not p.requires_grad or id(p) in skip:
                continue
            (decay if id(p) in decayed_ids else no_decay).append(p)
        return [{"params": decay, "decay": True}, {"params": no_decay, "decay": False}]

    def configure_optimizers(self) -> dict[str, Any]:
        main = build_optimizer(self.param_groups(), self.hparams.optimizer)
        width_cfg = {"name": "adam", "lr": 3e-4, "weight_decay": 0.0, **(self.hparams.width_optimizer or {})}
        neuron_params = self.neuron_params()
        # an optimiser needs a parameter: with nothing to learn (SG baseline) it gets a dummy group
        width = build_optimizer([{"params": neuron_params or [self._no_width]}], width_cfg)
        optimizer = OptimizerPair(main, width)

        total = max(int(self.trainer.estimated_stepping_batches), 1)
        spe = max(total // max(self.trainer.max_epochs or 1, 1), 1)
        main_sched = SchedulerConfig(**self.hparams.scheduler)
        width_sched = SchedulerConfig(**{"name": "constant", **(self.hparams.width_scheduler or {})})
        fns = [
            (lambda s, c=(main_sched if i < optimizer.n_main_groups else width_sched), b=g["lr"]:
             lr_factor(s, total, spe, c, b))
            for i, g in enumerate(optimizer.param_groups)
        ]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fns)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    @property
    def _no_width(self) -> torch.Tensor:
        """A placeholder for the width optimiser when nothing is learnable (SG baseline): a plain
        tensor, so it is not registered on the module and never enters the state dict."""
        if "_dummy_width" not in self.__dict__:
            self.__dict__["_dummy_width"] = torch.zeros(1, device=self.device, requires_grad=True)
        return self.__dict__["_dummy_width"]

    # ---- results ----------------------------------------------------------------------------
    def width_summary(self) -> dict[str, float]:
        """Mean surrogate width w per neuron layer."""
        names = {m: n for n, m in self.net.named_modules()}
        return {names[m]: float(m.width.mean()) for m in hybrid_spikes(self.net)}

    def on_train_epoch_end(self) -> None:
        widths = list(self.width_summary().values())
        if widths:
            self.log("asgl/width_mean", sum(widths) / len(widths))

    def extra_results(self) -> dict[str, Any]:
        widths = self.width_summary()
        spikes = hybrid_spikes(self.net)
        return {
            "asgl": {
                "surrogate": self.hparams.surrogate,
                "initial_width": float(self.hparams.width),
                "final_width": widths,
                "final_width_mean": sum(widths.values()) / len(widths) if widths else None,
                "final_p": spikes[0].p if spikes else None,
            }
        }


__all__ = ["ASGLClassifier", "HybridSpike", "NoiseRateSchedule", "OptimizerPair", "noise_milestones"]
