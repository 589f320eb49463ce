"""A result that cannot fit in memory is refused in one line before any work (not killed by the kernel)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.cli.sr import main
from fagan_engine.inference import memory_check
from fagan_engine.util import memory
from fagan_engine.util.errors import InputError


def test_available_memory_is_read_from_meminfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000 kB\nMemAvailable:   2048 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", meminfo)
    assert memory.available_bytes() == 2048 * 1024
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "missing")
    assert memory.available_bytes() is None
    memory_check.check_output_fits(10**10, 8)  # unknown memory: nothing is checked


def test_a_result_larger_than_memory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_check, "available_bytes", lambda: 2**30)
    memory_check.check_output_fits(250_000, 2)
    with pytest.raises(InputError, match="x8 result has 555 M voxels and needs about 25.7 GiB"):
        memory_check.check_output_fits(555_000_000 // 64, 8)  # in memory: 48 bytes per output voxel
    with pytest.raises(InputError, match="x8 result has 555 M voxels and needs about 2.96 GiB"):
        memory_check.check_output_fits(555_000_000 // 64, 8, memory_check.streamed_bytes_per_output_voxel([]))
    with pytest.raises(InputError, match="x4 result has 3000 M voxels and needs about 143 GiB of memory, but 1 GiB"):
        memory_check.check_output_fits(3_000_000_000 // 16, 4)  # no 3e+03


def test_cli_refuses_in_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    source = tmp_path / "in.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 32, 32), np.float32)), str(source))
    monkeypatch.setattr(memory_check, "available_bytes", lambda: 2**28)
    code = main([str(source), str(tmp_path / "out.nii.gz"), "--scale", "2", "--method", "bicubic", "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "GiB of memory" in err[0]
    assert not (tmp_path / "out.nii.gz").exists()
