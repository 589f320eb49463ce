"""Shared helpers of the training tests: a small crop of the template and tiny configs."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import SimpleITK as sitk
import torch

from fagan_engine.mri.sample_data import icbm152_t1_path
from fagan_engine.util.protocol import parse_line

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "configs" / "tiny_smoke.yaml"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The tests share 2 cores with other jobs; one intra-op thread avoids oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_crop(path: Path, index=(66, 88, 60), size=(48, 48, 24)) -> Path:
    """A 48×48×24 crop (axial slices) through the ICBM152 T1 template, 1 mm."""
    image = sitk.ReadImage(str(icbm152_t1_path()), sitk.sitkFloat32)
    sitk.WriteImage(sitk.RegionOfInterest(image, list(size), list(index)), str(path))
    return path


def tiny_args(volume: Path, run_dir: Path, *overrides: str) -> List[str]:
    """fagan-train arguments: configs/tiny_smoke.yaml on ``volume``, writing ``run_dir``."""
    return [
        "--config", str(TINY_CONFIG),
        "--set", f'data.train=["{volume}"]', f"train.output_dir={run_dir}", *overrides,
    ]


def events(stdout: str) -> List[Dict]:
    return [e for e in (parse_line(line) for line in stdout.splitlines()) if e is not None]


def subprocess_env() -> Dict[str, str]:
    """Single-threaded children: several processes on few cores oversubscribe badly otherwise."""
    return dict(os.environ, OMP_NUM_THREADS="1")


def engine_command(*args: str) -> List[str]:
    return [sys.executable, "-m", "fagan_engine", *args]
