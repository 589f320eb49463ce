"""Seeded fuzzing of every input format through ``fagan-sr --method bicubic`` (issue #12).

Byte flips and truncations of NIfTI, NRRD, MetaImage and DICOM inputs must end in exit 0 with a
valid output, or exit 2 with exactly one ``error:`` line; never a traceback, never a leftover,
never a change to the input.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import SimpleITK as sitk
from test_volume_io import oblique_volume, write_dicom_series

from fagan_engine.cli.sr import main
from fagan_engine.io.volume_io import write_volume

CASES = int(os.environ.get("FAGAN_FUZZ_CASES", "800"))
SEED = int(os.environ.get("FAGAN_FUZZ_SEED", "12"))
"""About 15 s on one core; set FAGAN_FUZZ_CASES / FAGAN_FUZZ_SEED for longer exploratory runs."""


def seeds(folder: Path) -> Dict[str, Path]:
    """One valid small input per format: name -> path (file or DICOM folder)."""
    image = oblique_volume()
    made = {}
    for ext, compress in ((".nii", False), (".nii.gz", True), (".nrrd", True), (".nhdr", False), (".mha", True),
                          (".mhd", False), (".mhd", True)):
        path = folder / f"{'z' if compress else 'r'}{ext}" / f"seed{ext}"
        path.parent.mkdir(parents=True)
        write_volume(image, str(path), compress=compress)
        made[path.parent.name] = path
    write_dicom_series(image, folder / "dicom" / "series", "1.2.826.0.1.3680043.2.1125.1.77")
    made["dicom"] = folder / "dicom" / "series"
    return made


def files_of(source: Path) -> List[Path]:
    """The files that make up an input: the file, its detached data file, or a folder's slices."""
    if source.is_dir():
        return sorted(source.iterdir())
    return sorted(source.parent.iterdir(), key=lambda p: p != source)


def mutate(blob: bytes, rng: np.random.Generator) -> bytes:
    if len(blob) == 0 or rng.random() < 0.35:
        return blob[: int(rng.integers(0, max(len(blob), 1)))]
    data = bytearray(blob)
    # headers are where the damage is interesting: bias flips towards the first 400 bytes
    limit = len(data) if rng.random() < 0.4 else min(len(data), 400)
    for _ in range(int(rng.integers(1, 5))):
        data[int(rng.integers(0, limit))] ^= 1 << int(rng.integers(0, 8))
    return bytes(data)


def digest(paths: List[Path]) -> str:
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in paths)).hexdigest()


def test_fuzzed_inputs_fail_cleanly_or_give_a_valid_output(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(SEED)
    originals = seeds(tmp_path / "seeds")
    names = sorted(originals)
    outcomes = {"ok": 0, "refused": 0}
    for case in range(CASES):
        name = names[case % len(names)]
        work = tmp_path / f"case{case}"
        inputs, outputs = work / "in", work / "out"
        outputs.mkdir(parents=True)
        shutil.copytree(originals[name].parent, inputs, ignore=shutil.ignore_patterns("*.tmp-*"))
        source = inputs / originals[name].name
        members = files_of(source)
        victim = members[int(rng.integers(0, len(members)))]
        victim.write_bytes(mutate(victim.read_bytes(), rng))
        before = digest(files_of(source))
        out_ext = (".nrrd", ".nii.gz", ".mha", ".mhd")[case % 4]
        target = outputs / f"sr{out_ext}"
        code = main([str(source), str(target), "--scale", "2", "--method", "bicubic", "--progress", "none"])
        err = capfd.readouterr().err
        lines = err.splitlines()
        context = f"case {case} ({name}, {victim.name}): exit {code}, stderr {err!r}"
        assert "Traceback" not in err, context
        assert digest(files_of(source)) == before, context
        leftovers = [p.name for p in outputs.iterdir() if ".tmp" in p.name]
        assert not leftovers, context
        if code == 0:
            assert all(line.startswith("warning: ") for line in lines) and len(lines) <= 1, context
            values = sitk.GetArrayFromImage(sitk.ReadImage(str(target)))
            assert np.isfinite(values).all(), context
            outcomes["ok"] += 1
        else:
            assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), context
            assert not any(outputs.iterdir()), context
            outcomes["refused"] += 1
        shutil.rmtree(work)
    assert outcomes["ok"] > 10 and outcomes["refused"] > 10, outcomes
