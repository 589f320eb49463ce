"""The bundled sample: the ICBM152 2009a templates shipped inside nilearn's wheel (offline).

nilearn's wheel carries three maps of the 2009a symmetric template on one 1 mm grid (197×233×189):
the T1 template (skull-stripped) and the grey- and white-matter probability maps (uint8, 0-255).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict

from fagan_engine.util.errors import InputError

ICBM152_T1 = "icbm152:t1"
ICBM152_MAPS: Dict[str, str] = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
"""File names, inside ``nilearn/datasets/data/``, of the ICBM152 2009a T1 template and GM/WM maps."""
_TEMPLATE = ICBM152_MAPS["t1"]


def icbm152_path(kind: str = "t1") -> Path:
    """Path of one ICBM152 2009a map inside the installed nilearn: ``t1``, ``gm`` or ``wm``."""
    if kind not in ICBM152_MAPS:
        raise ValueError(f"ICBM152 map must be one of {', '.join(ICBM152_MAPS)}; got {kind!r}")
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise InputError("the ICBM152 sample needs nilearn: pip install nilearn")
    name = ICBM152_MAPS[kind]
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        raise InputError(f"nilearn is installed but lacks {name}")
    return path


def icbm152_t1_path() -> Path:
    """Path of the 1 mm ICBM152 2009a T1 template (197×233×189) inside the installed nilearn."""
    return icbm152_path("t1")


def icbm152_gm_path() -> Path:
    """Path of the ICBM152 2009a grey-matter probability map (same grid as the T1; 0-255)."""
    return icbm152_path("gm")


def icbm152_wm_path() -> Path:
    """Path of the ICBM152 2009a white-matter probability map (same grid as the T1; 0-255)."""
    return icbm152_path("wm")


def resolve_volume_path(spec: str) -> Path:
    """Resolve a data entry: the token ``icbm152:t1`` or a filesystem path."""
    return icbm152_t1_path() if spec == ICBM152_T1 else Path(spec)
