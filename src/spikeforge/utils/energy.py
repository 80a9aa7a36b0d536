"""Energy per operation of the compute-energy estimate E = e_MAC·MACs + e_AC·ACs (no torch import:
the run config is checked with it before torch loads).

Presets (Horowitz, ISSCC 2014, 45 nm; the same figures as spikingjelly 2.0's
``op_counter.SimpleEnergyCostConfig``):

- ``fp32``: e_MAC = 4.6 pJ (FMult32 3.7 + FAdd32 0.9), e_AC = 0.9 pJ — the constants of the SNN literature;
- ``fp16``: e_MAC = 1.5 pJ (FMult16 1.1 + FAdd16 0.4), e_AC = 0.4 pJ;
- ``int8``: e_MAC = 0.23 pJ (Mult8 0.2 + Add8 0.03), e_AC = 0.03 pJ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from spikeforge.errors import ConfigError

PRESETS: dict[str, tuple[float, float]] = {"fp32": (4.6, 0.9), "fp16": (1.5, 0.4), "int8": (0.23, 0.03)}


@dataclass(frozen=True)
class EnergyCost:
    """pJ per multiply-accumulate and per accumulate; ``preset`` names where they came from."""

    e_mac_pj: float = 4.6
    e_ac_pj: float = 0.9
    preset: str = "fp32"

    def millijoules(self, macs: float, acs: float) -> float:
        return (self.e_mac_pj * macs + self.e_ac_pj * acs) * 1e-9

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def energy_cost(preset: str = "fp32", e_mac_pj: float | None = None, e_ac_pj: float | None = None) -> EnergyCost:
    """The preset's constants, each replaced by ``e_mac_pj`` / ``e_ac_pj`` where given (``preset`` is then
    reported as ``custom``). Raises :class:`ConfigError` for an unknown preset or a negative constant."""
    if preset not in PRESETS:
        raise ConfigError(f"energy.preset must be one of {', '.join(PRESETS)} (got {preset!r}); "
                          "e.g. energy.preset=int8")
    mac, ac = PRESETS[preset]
    for key, value in (("e_mac_pj", e_mac_pj), ("e_ac_pj", e_ac_pj)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise ConfigError(f"energy.{key} must be a non-negative number of picojoules or null for the preset's "
                              f"(got {value!r}); e.g. energy.{key}=1.5")
    custom = (e_mac_pj is not None and e_mac_pj != mac) or (e_ac_pj is not None and e_ac_pj != ac)
    return EnergyCost(float(mac if e_mac_pj is None else e_mac_pj), float(ac if e_ac_pj is None else e_ac_pj),
                      "custom" if custom else preset)


def energy_from_config(cfg: Any) -> EnergyCost:
    """:func:`energy_cost` from a mapping ``{preset, e_mac_pj, e_ac_pj}`` (the run's ``energy:``), a preset
    name, an :class:`EnergyCost` or None (fp32)."""
    if cfg is None:
        return energy_cost()
    if isinstance(cfg, EnergyCost):
        return cfg
    if isinstance(cfg, str):
        return energy_cost(cfg)
    unknown = set(cfg) - {"preset", "e_mac_pj", "e_ac_pj"}
    if unknown:
        raise ConfigError(f"unknown key(s) energy.{', energy.'.join(sorted(unknown))}; energy takes preset, "
                          "e_mac_pj and e_ac_pj")
    return energy_cost(cfg.get("preset") or "fp32", cfg.get("e_mac_pj"), cfg.get("e_ac_pj"))


__all__ = ["PRESETS", "EnergyCost", "energy_cost", "energy_from_config"]
