"""Package layout (the metadata is in pyproject.toml): the ``spikeforge`` packages under ``src/`` (with ``hydra_plugins``: the Optuna study sweeper), and the
Hydra configs ``conf/`` shipped inside the package as ``spikeforge.conf`` so an installed
``spikeforge-train`` finds them (``spikeforge.cli.config_dir``)."""

from setuptools import find_namespace_packages, find_packages, setup

CONF = ["spikeforge.conf", *(f"spikeforge.conf.{group}" for group in find_namespace_packages("conf"))]

setup(
    packages=[*find_packages("src", include=["spikeforge", "spikeforge.*", "hydra_plugins", "hydra_plugins.*"]), *CONF],
    package_dir={"": "src", "spikeforge.conf": "conf"},
)
