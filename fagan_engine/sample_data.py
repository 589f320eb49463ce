"""The bundled sample: the ICBM152 2009a T1 template shipped inside nilearn's wheel (offline)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import InputError

ICBM152_T1 = "icbm152:t1"
_TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def icbm152_t1_path() -> Path:
    """Path of the 1 mm ICBM152 2009a T1 template (197×233×189) inside the installed nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise InputError("the ICBM152 sample needs nilearn: pip install nilearn")
    path = Path(spec.origin).parent / "datasets" / "data" / _TEMPLATE
    if not path.is_file():
        raise InputError(f"nilearn is installed but lacks {_TEMPLATE}")
    return path


def resolve_volume_path(spec: str) -> Path:
    """Resolve a data entry: the token ``icbm152:t1`` or a filesystem path."""
    return icbm152_t1_path() if spec == ICBM152_T1 else Path(spec)
