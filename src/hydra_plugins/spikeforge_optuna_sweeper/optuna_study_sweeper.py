"""Hydra sweeper for ``hparams_search=optuna``: hydra-optuna-sweeper's loop with the study stored in the
sweep directory, resumable, per-method search spaces and a summary of the trials
(details: :mod:`spikeforge.optuna_search`).

Hydra imports every module of ``hydra_plugins`` at start-up, so this one imports only Hydra's base class;
Optuna and spikeforge are loaded when a sweep is set up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper


class OptunaStudySweeper(Sweeper):
    def __init__(self, sampler: Any, direction: Any, storage: str | None, study_name: str, n_trials: int,
                 n_jobs: int, max_failure_rate: float, params: Any = None, method_params: Any = None) -> None:
        self.sampler_cfg = sampler
        self.options = {"direction": direction, "storage": storage, "study_name": study_name, "n_trials": n_trials,
                        "n_jobs": n_jobs, "max_failure_rate": max_failure_rate}
        self.params, self.method_params = params, method_params
        self.impl: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from hydra.utils import instantiate

        from spikeforge import optuna_search
        from spikeforge.errors import ConfigError

        # before Optuna is imported: importing alembic logs one INFO line per plugin it sets up
        logging.getLogger("alembic").setLevel(logging.WARNING)  # Optuna's schema checks are not news
        try:
            from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
        except ImportError:
            raise ConfigError("hparams_search=optuna needs hydra-optuna-sweeper: pip install -e \".[optuna]\" "
                              "(or the pins in requirements.txt)") from None
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.sweep_dir.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
        storage = self.options["storage"] or optuna_search.sqlite_url(self.sweep_dir)
        done = optuna_search.existing_trials(storage, self.options["study_name"])
        space = optuna_search.search_space(self.params, self.method_params, str(config.method.name))
        sampler_kw = {}
        if self.sampler_cfg.get("seed") is not None:
            sampler_kw["seed"] = int(self.sampler_cfg.seed) + done  # new points when resuming a seeded sampler
        sampler = instantiate(self.sampler_cfg, **sampler_kw)
        self.impl = OptunaSweeperImpl(sampler, self.options["direction"], storage, self.options["study_name"],
                                      self.options["n_trials"], self.options["n_jobs"],
                                      self.options["max_failure_rate"], None, None, space)
        self.impl.setup(hydra_context=hydra_context, task_function=optuna_search.failures_as_exceptions(task_function),
                        config=config)
        self.impl.job_idx = done  # trial N runs in <sweep dir>/N, also after a resume
        self.storage = storage

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        from spikeforge import optuna_search

        try:
            return self.impl.sweep(arguments)
        finally:
            study = optuna.load_study(study_name=self.options["study_name"], storage=self.storage)
            optuna_search.write_summary(study, self.sweep_dir)
