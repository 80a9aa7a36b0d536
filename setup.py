"""Package layout (the metadata is in pyproject.toml): the ``spikeforge`` packages under ``src/``, and the
Hydra configs ``conf/`` shipped inside the package as ``spikeforge.conf`` so an installed
``spikeforge-train`` finds them (``spikeforge.cli.config_dir``)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src", include=["spikeforge", "spikeforge.*"]), "spikeforge.conf"],
    package_dir={"": "src", "spikeforge.conf": "conf"},
)
