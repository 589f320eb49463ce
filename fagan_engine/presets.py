"""The paper's methods and ablations as switch settings of one ModelConfig (no torch needed)."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

from .config import PRESETS, ModelConfig
from .errors import ConfigError

_SWITCHES: Dict[str, Dict[str, Any]] = {
    "fagan": {},
    "srgan": {"use_lffb": False, "use_ca": False, "use_sa": False},
    "ca-srgan": {"use_lffb": False, "use_sa": False},
    "sa-srgan": {"use_lffb": False, "use_ca": False},
    "fagan-no-sa": {"use_sa": False},
    "fagan-no-ca": {"use_ca": False},
    "fagan-no-lffb": {"use_lffb": False},
    "fagan-direct-fusion": {"fusion": "direct"},
}
assert tuple(_SWITCHES) == PRESETS


def preset_config(name: str, scale: int, **overrides: Any) -> ModelConfig:
    """Return the ModelConfig of preset ``name`` at ``scale``; ``overrides`` set other fields."""
    if name not in _SWITCHES:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = dataclasses.replace(ModelConfig(), preset=name, scale=scale, **_SWITCHES[name])
    cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    return cfg
