"""The independent real-scan set: real MRI slices that installed packages ship, outside the development set.

``python -m fagan_engine.training.independent_set OUT`` writes ``OUT/slices/`` in the development set's
layout (``index.json`` plus one ``.npy`` per slice, float32 in [0, 1]: clip(raw, 0) / p99.9, clipped to 1), so
``realscan_eval --realdev OUT`` scores it with the same protocol. The images are read from the installed
packages each time and never copied into the repository.

Every image shipped by another package is reserved for evaluation: nothing in the project trains, tunes or
selects on this set. The selection rule below was fixed before any score was seen: every real MRI image among
the installed packages' test data that is not in the development set, one slice per source (the middle slice
of a volume). Left out, with the reason: nibabel's ``0.dcm``/``1.dcm`` (uniform random pixel values), the
``philips_mprage``, ``siemens_dwi_*`` and ``decimal_rescale`` DICOMs (pixel data zeroed), ``scaled+tlrc``
(a statistics map), ``phantom_varscale``/``phantom_truncated`` (the same phantom as the one kept), the
``MR_small`` variants (the development set's ``pydicom_MR_small``), volumes below 32 pixels a side, and
nilearn's files (the training data's source).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from importlib import import_module, metadata
from pathlib import Path
from typing import Callable, Dict, List, Optional

import nibabel
import numpy as np
import pydicom

from fagan_engine.io.paths import check_output_folder
from fagan_engine.util.atomic import atomic_write_bytes
from fagan_engine.util.errors import FAGANError, InputError


@dataclass(frozen=True)
class Source:
    """One real image in an installed package and how to read its slice."""

    name: str
    package: str
    path: str
    """The file, relative to the package's folder."""
    read: Callable[[Path], np.ndarray]
    spacing_mm: List[float]
    selection: str
    contrast: str
    anatomy: str
    note: str = ""


def _read_matplotlib_raw(path: Path) -> np.ndarray:
    with gzip.open(path) as handle:
        return np.frombuffer(handle.read(), np.uint16).reshape(256, 256)


def _read_dicom(path: Path) -> np.ndarray:
    return pydicom.dcmread(str(path)).pixel_array


def _read_parrec_middle(path: Path) -> np.ndarray:
    volume = np.asarray(nibabel.load(str(path)).dataobj)[..., 0]
    return volume[:, :, volume.shape[2] // 2].T


SOURCES = (
    Source("mpl_s1045", "matplotlib", "mpl-data/sample_data/s1045.ima.gz", _read_matplotlib_raw, [1.0, 1.0],
           "the whole 256x256 slice", "T1w", "head, sagittal",
           "raw uint16 without a header: the pixel spacing is not recorded (1 mm assumed; the scores do not depend on it)"),
    Source("pydicom_abdomen_mpr", "pydicom", "data/test_files/examples_overlay.dcm", _read_dicom, [0.7231405, 0.7231405],
           "the whole 300x484 image (overlay not applied)", "T1w GRE (contrast-enhanced)", "abdomen, axial",
           "ImageType DERIVED/MPR: reformatted, so interpolated, by the scanner"),
    Source("nib_phantom_epi", "nibabel", "tests/data/phantom_EPI_asc_CLEAR_2_1.PAR", _read_parrec_middle, [3.75, 3.75],
           "dynamic 0, middle slice (z=4 of 64x64x9)", "T2* GRE EPI", "phantom",
           "Philips PAR/REC"),
)
"""The set, in the fixed order of ``index.json``."""


def normalise(raw: np.ndarray) -> np.ndarray:
    """The development set's normalisation: clip(raw, 0) / p99.9, clipped to [0, 1], float32."""
    image = np.clip(np.asarray(raw, dtype=np.float64), 0.0, None)
    top = float(np.percentile(image, 99.9))
    if top <= 0.0:
        raise InputError("a blank source image")
    return np.clip(image / top, 0.0, 1.0).astype(np.float32)


def _package_folder(package: str) -> Optional[Path]:
    try:
        return Path(import_module(package).__file__).parent
    except ImportError:
        return None


SET_NAME = "independent"
"""``index.json``'s ``set``: a folder holding it may be rebuilt; any other non-empty ``slices/`` is refused."""


def build(out: Path) -> Dict[str, object]:
    """Write ``out/slices`` (``index.json`` and the ``.npy`` files); return the index. Missing packages are listed, not fatal."""
    slices = out / "slices"
    _check_not_foreign(slices)
    slices.mkdir(parents=True, exist_ok=True)
    cases, missing = [], []
    for source in SOURCES:
        folder = _package_folder(source.package)
        path = folder / source.path if folder is not None else None
        if path is None or not path.is_file():
            missing.append(f"{source.name} ({source.package} or its file is not installed)")
            continue
        image = normalise(source.read(path))
        buffer = _npy_bytes(image)
        atomic_write_bytes(slices / f"{source.name}.npy", buffer)
        cases.append({
            "name": source.name, "file": f"{source.name}.npy", "shape": list(image.shape), "spacing_mm": source.spacing_mm,
            "package": source.package, "version": metadata.version(source.package), "path": f"{source.package}/{source.path}",
            "sha256_16": hashlib.sha256(path.read_bytes()).hexdigest()[:16], "selection": source.selection,
            "contrast": source.contrast, "anatomy": source.anatomy, "note": source.note,
        })
    if not cases:
        raise InputError("none of the independent set's packages is installed (matplotlib, pydicom, nibabel)")
    index = {"set": SET_NAME, "normalisation": "clip(raw,0)/p99.9(raw), clipped to [0,1], float32", "cases": cases, "missing": missing}
    atomic_write_bytes(slices / "index.json", (json.dumps(index, indent=1) + "\n").encode())
    return index


def _check_not_foreign(slices: Path) -> None:
    if not slices.is_dir() or not any(slices.iterdir()):
        return
    try:
        ours = json.loads((slices / "index.json").read_text()).get("set") == SET_NAME
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise InputError(f"{slices} already holds files that this tool did not write; give an empty or new folder")


def _npy_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, image)
    return buffer.getvalue()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fagan_engine.training.independent_set", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (its slices/ subfolder); then run realscan_eval --realdev OUT")
    args = parser.parse_args(argv)
    try:
        check_output_folder(args.out.parent if not args.out.exists() else args.out)
        index = build(args.out)
    except (FAGANError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for case in index["cases"]:
        print(f"{case['name']}: {case['shape'][0]}x{case['shape'][1]}, {case['contrast']}, {case['anatomy']}")
    for line in index["missing"]:
        print(f"not built: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
