"""The paper's methods and ablations as switch settings of one ModelConfig (no torch needed)."""
from __future__ import annotations

import dataclasses
from typing import Any

from fagan_engine.util.config import PRESET_SWITCHES, PRESETS, ModelConfig
from fagan_engine.util.errors import ConfigError


def preset_config(name: str, scale: int, **overrides: Any) -> ModelConfig:
    """Return the ModelConfig of preset ``name`` at ``scale``; ``overrides`` set other fields."""
    if name not in PRESET_SWITCHES:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = dataclasses.replace(ModelConfig(), preset=name, scale=scale, **PRESET_SWITCHES[name], **overrides)
    cfg.validate()
    return cfg
