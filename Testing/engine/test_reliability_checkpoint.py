"""Issue #20 item 7: a format-2 checkpoint must not become format 1 by an edit (which would let a
swap of two same-shape tensors pass), and format 1 is refused unless the user opts in."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from engine_helpers import save_untrained_checkpoint
from test_checkpoint import edit_header, swap_offsets

from fagan_engine.models.checkpoint import load_generator, read_metadata
from fagan_engine.util.errors import CheckpointError


def downgrade(header: dict, drop_content_checksum: bool) -> None:
    metadata = json.loads(header["__metadata__"]["fagan"])
    metadata["format"] = "fagan-checkpoint/1"
    if drop_content_checksum:
        metadata["content_sha256"] = ""
    header["__metadata__"]["fagan"] = json.dumps(metadata)
    swap_offsets(header)


@pytest.mark.parametrize("drop", [False, True], ids=["format-edited", "format-and-checksum-edited"])
def test_downgraded_format_2_with_swapped_tensors_is_refused(tmp_path: Path, drop: bool, monkeypatch) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    path.with_suffix(".json").unlink()
    edit_header(path, lambda header: downgrade(header, drop))
    monkeypatch.delenv("FAGAN_ALLOW_FORMAT_1", raising=False)
    for load in (read_metadata, load_generator):
        with pytest.raises(CheckpointError, match="format was edited" if not drop else "FAGAN_ALLOW_FORMAT_1=1") as excinfo:
            load(str(path))
        assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("command", ["sr", "export"])
def test_cli_refuses_a_downgraded_checkpoint_in_one_line(tmp_path: Path, command: str) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    path.with_suffix(".json").unlink()
    edit_header(path, lambda header: downgrade(header, False))
    volume = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((4, 24, 24)).astype(np.float32)), str(volume))
    argv = {"sr": [str(volume), str(tmp_path / "o.nrrd"), "--scale", "2", "--checkpoint", str(path), "--adapt", "0"],
            "export": [str(path), str(tmp_path / "o.onnx")]}[command]
    proc = subprocess.run([sys.executable, "-m", "fagan_engine", command, *argv, *(["--progress", "none"] if command == "sr" else [])],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert "format was edited" in proc.stderr
    assert not (tmp_path / "o.nrrd").exists() and not (tmp_path / "o.onnx").exists()


def test_one_kind_of_weights_given_for_the_other_says_which_it_is(tmp_path: Path) -> None:
    """Through-plane weights given as --checkpoint read as "not an FA-GAN checkpoint (no metadata)"."""
    from fagan_engine.models.checkpoint import THROUGH_PLANE_WEIGHTS, read_through_plane

    with pytest.raises(CheckpointError, match="holds through-plane weights .* not an in-plane FA-GAN checkpoint"):
        read_metadata(str(THROUGH_PLANE_WEIGHTS))
    in_plane = save_untrained_checkpoint(tmp_path / "x2.safetensors", 2)
    with pytest.raises(CheckpointError, match="is an in-plane FA-GAN checkpoint, not through-plane weights"):
        read_through_plane(in_plane)
