"""STDS — State Transition of Dendritic Spines (Chen et al., ICML 2022) and the Grad R prior.

What differs from BPTT (docs/methods/stds.md):
- every conv / linear weight of the model (minus ``exclude``) is reparametrised w = M(θ) with
  ``sparse_function`` ``stmod`` (w = sign(θ)·max(|θ| − D, 0), straight-through backward) or
  ``identity`` (dense baseline); θ is what the optimiser trains;
- D follows ``schedule`` after every optimiser step: ``sine`` / ``linear`` ramp from 0 to
  ``flat_width`` at the last step, ``fixed`` keeps D = ``flat_width`` from the start (θ₀ is then
  sign(w₀)(|w₀| + D) so the network starts unchanged). The step counter ``stds_step`` and D are
  buffers, so a resumed run continues the schedule where it stopped;
- ``alpha_gr`` > 0 adds the Grad R prior to the θ group after each step (Adam: sign-preserving
  shrink of |θ| by lr·α; SGD: θ ← θ − lr·α·sign(θ_before)); with ``grad_r_params: all`` (default)
  BN, biases and excluded layers (e.g. the ImageNet classifier) train in a second group without it,
  with ``theta`` the optimiser holds only θ and they keep their initial values, as in STDS's Grad R
  code (``ImageNet/train.py`` builds its SGD from the reparametrised weights alone);
- per-layer and total sparsity / connectivity are logged every validation epoch and written to
  ``results.json``; at the end of fitting the sparse weights w are exported to
  ``<run dir>/sparse_weights.pt`` with their number of non-zeros;
- the test split is evaluated on the final (fully sparse) weights, as the reference reports the
  final epoch (``test_checkpoint: last``); the best-on-validation epoch would be an early, denser one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from spikeforge.errors import ConfigError
from spikeforge.layers.sparse import (
    SCHEDULES,
    SPARSE_FUNCTIONS,
    export_sparse_weights,
    get_flat_width,
    nonzeros,
    set_flat_width,
    sparsify,
    sparsity,
    thetas,
)
from spikeforge.layers.sparse import (
    flat_width as flat_width_at,
)
from spikeforge.methods.base import SpikingClassifier
from spikeforge.methods.optim import split_decay
from spikeforge.neurons import NeuronFactory

GRAD_R_VARIANTS = {"adam": "adam", "adamw": "adam", "sgd": "sgd"}


@torch.no_grad()
def grad_r_adam(theta: torch.Tensor, sign_before: torch.Tensor, lr: float, alpha: float) -> None:
    """Adam variant (stds.md "Grad R"): θ ← s·max(s·θ′ − lr·α, 0), s = sign(θ) before the step:
    |θ| shrinks by lr·α, the sign cannot flip and θ = 0 is absorbing. In place."""
    theta.mul_(sign_before).sub_(lr * alpha).clamp_(min=0).mul_(sign_before)


@torch.no_grad()
def grad_r_sgd(theta: torch.Tensor, sign_before: torch.Tensor, lr: float, alpha: float) -> None:
    """SGD variant (stds.md "Grad R"): θ ← θ′ − lr·α·sign(θ_before), no clamp. In place."""
    theta.sub_(sign_before, alpha=lr * alpha)


class STDSClassifier(SpikingClassifier):
    """``method=stds``. Extra args: ``flat_width`` (D_final, or μ of Grad R), ``schedule``
    (sine|linear|fixed), ``alpha_gr`` (Grad R α, 0 = off), ``grad_r_params`` (all|theta: what the
    Grad R optimiser holds), ``sparse_function`` (stmod|identity),
    ``exclude`` (glob patterns of layer names left dense), ``test_checkpoint`` (last|best),
    ``export_sparse`` (write ``sparse_weights.pt`` at the end of fitting)."""

    def __init__(
        self,
        *args: Any,
        flat_width: float = 1.0,
        schedule: str = "sine",
        alpha_gr: float = 0.0,
        grad_r_params: str = "all",
        sparse_function: str = "stmod",
        exclude: list[str] | tuple[str, ...] = (),
        test_checkpoint: str = "last",
        export_sparse: bool = True,
        **kw: Any,
    ) -> None:
        for key, value in (("flat_width", flat_width), ("alpha_gr", alpha_gr)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"method.{key} must be a number (got {value!r}); set it on the command line, "
                                  f"e.g. method.{key}=0.001")
        if sparse_function not in SPARSE_FUNCTIONS:
            raise ConfigError(f"unknown method.sparse_function {sparse_function!r}; "
                              f"choose one of: {', '.join(SPARSE_FUNCTIONS)}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"unknown method.schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if float(flat_width) < 0:
            raise ConfigError(f"method.flat_width (D) must be >= 0 (got {flat_width})")
        if float(alpha_gr) < 0:
            raise ConfigError(f"method.alpha_gr must be >= 0 (got {alpha_gr}); 0 switches Grad R off")
        if float(alpha_gr) > 0 and schedule != "fixed":
            raise ConfigError("Grad R (method.alpha_gr > 0) uses flat_width as a fixed μ; set method.schedule=fixed")
        if test_checkpoint not in ("last", "best"):
            raise ConfigError(f"method.test_checkpoint must be 'last' or 'best' (got {test_checkpoint!r})")
        super().__init__(*args, **kw)
        self.d_final = float(flat_width)
        self.schedule = schedule
        self.alpha_gr = float(alpha_gr)
        self.grad_r_params = grad_r_params
        self.sparse_function = sparse_function
        self.test_checkpoint = test_checkpoint
        self.export_sparse = export_sparse
        if self.alpha_gr > 0:
            name = str(self.hparams.optimizer.get("name", "sgd")).lower()
            if name not in GRAD_R_VARIANTS:
                raise ConfigError(f"Grad R has an Adam and an SGD variant; set method.optimizer.name to one of: "
                                  f"{', '.join(GRAD_R_VARIANTS)} (got {name!r})")
            self.grad_r_variant = GRAD_R_VARIANTS[name]
        d0 = flat_width_at(0, 1, self.d_final, schedule)
        self.sparse_layer_names = sparsify(self.net, sparse_function, d=d0, exclude=list(exclude))
        # optimiser steps done: D(n) is a function of it; a buffer, hence restored on resume
        self.register_buffer("stds_step", torch.zeros((), dtype=torch.long))
        # host copy of stds_step, so the schedule never reads the device buffer in a training step;
        # re-read once after a state dict is loaded (resume)
        self._host_step: int | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_host_step", None))
        self.total_steps: int | None = None
        self._signs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.sparse_export: dict[str, Any] | None = None
        self.last_sparsity: dict[str, Any] = {}

    def neuron_factory(self) -> NeuronFactory:
        """As the base, but neuron keys set to null are left out (a recipe switching the method's LIF
        to IF nulls ``tau`` and ``decay_input``)."""
        cfg = {k: v for k, v in dict(self.hparams.neuron).items() if v is not None}
        return NeuronFactory(cfg.pop("kind"), **cfg)

    # ---- schedule of D ----------------------------------------------------------------------
    @property
    def flat_width(self) -> float | None:
        """Current D (None for the dense baseline)."""
        return get_flat_width(self.net)

    def _step_count(self) -> int:
        if self._host_step is None:
            self._host_step = int(self.stds_step)
        return self._host_step

    def update_flat_width(self) -> float:
        """Set D for the current ``stds_step`` (called after every optimiser step)."""
        d = flat_width_at(self._step_count(), self.total_steps or 1, self.d_final, self.schedule)
        set_flat_width(self.net, d)
        return d

    # ---- optimisation -----------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """θ of the reparametrised layers (with the Grad R prior when ``alpha_gr`` > 0), then every
        other parameter (BN, biases, excluded layers) without it; only θ with ``grad_r_params: theta``
        (STDS's Grad R optimiser: BN, biases and the dense classifier keep their initial values)."""
        th = thetas(self.net)
        theta_group: dict[str, Any] = {"params": th, "decay": True, "stds_theta": True}
        if self.alpha_gr > 0:
            theta_group["alpha_gr"] = self.alpha_gr
        if self.grad_r_params == "theta":
            return [theta_group]
        decay, no_decay = split_decay(self.net, self.hparams.optimizer.get("decay_norm_and_bias", False), exclude=th)
        return [theta_group, {"params": decay, "decay": True}, {"params": no_decay, "decay": False}]

    def configure_optimizers(self) -> dict[str, Any]:
        config = super().configure_optimizers()
        self.total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        self.attach(config["optimizer"], self.total_steps)
        return config

    def attach(self, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        """Hook ``optimizer``: Grad R prior and D update after each of its steps (usable without a
        Trainer, e.g. in tests)."""
        self.total_steps = int(total_steps)
        optimizer.register_step_pre_hook(self._before_step)
        optimizer.register_step_post_hook(self._after_step)
        self.update_flat_width()

    def _before_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        self._signs = [
            (p, torch.sign(p.detach()))
            for g in optimizer.param_groups if g.get("alpha_gr")
            for p in g["params"] if p.grad is not None
        ]

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        if self._signs:
            groups = {id(p): g for g in optimizer.param_groups if g.get("alpha_gr") for p in g["params"]}
            prior = grad_r_adam if self.grad_r_variant == "adam" else grad_r_sgd
            for p, s in self._signs:
                g = groups[id(p)]
                prior(p, s, g["lr"], g["alpha_gr"])
            self._signs = []
        step = self._step_count() + 1
        self.stds_step += 1
        self._host_step = step
        self.update_flat_width()

    # ---- logging & results ------------------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        per_layer, total = sparsity(self.net)
        logs = {"sparsity/total": total, "connectivity": 1.0 - total}
        logs.update({f"sparsity/{k}": v for k, v in per_layer.items()})
        if self.flat_width is not None:
            logs["flat_width"] = self.flat_width
        self.log_dict(logs)
        self.last_sparsity = {"total": total, "per_layer": per_layer}

    def on_fit_end(self) -> None:
        if not self.export_sparse or not self.trainer.is_global_zero:
            return
        path = Path(self.trainer.default_root_dir) / "sparse_weights.pt"
        cfg = {k: self.hparams[k] for k in ("model", "neuron", "norm", "T", "num_classes", "in_channels")}
        self.sparse_export = export_sparse_weights(self.net, path, extra={"config": cfg})
        rank_zero_info(f"sparse weights: {self.sparse_export['total_nonzeros']} non-zeros of "
                       f"{self.sparse_export['total_numel']} → {path}")

    def extra_results(self) -> dict[str, Any]:
        """Sparsity of the weights the test split was evaluated on (stds.md "Sparsity")."""
        per_layer, total = sparsity(self.net)
        _, nnz = nonzeros(self.net)
        out: dict[str, Any] = {
            "sparse_function": self.sparse_function,
            "schedule": self.schedule,
            "flat_width_final": self.d_final,
            "flat_width": self.flat_width,
            "alpha_gr": self.alpha_gr,
            "grad_r_params": self.grad_r_params,
            "stds_steps": int(self.stds_step),
            "sparsity": total,
            "connectivity": 1.0 - total,
            "sparsity_per_layer": per_layer,
            "nonzeros": nnz,
            "last_val_sparsity": self.last_sparsity.get("total"),
        }
        if self.sparse_export is not None:
            out["sparse_weights"] = {k: self.sparse_export[k] for k in
                                     ("path", "total_nonzeros", "total_numel", "file_bytes")}
        return out

