"""Checkpoints: safetensors + JSON metadata, integrity checks, never unpickling."""
from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine_helpers import save_untrained_checkpoint
from fagan_engine.checkpoint import CheckpointMetadata, load_generator, read_metadata, save_checkpoint
from fagan_engine.errors import CheckpointError


def test_round_trip_restores_architecture_and_weights(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 4)
    assert path.with_suffix(".json").is_file()
    model, metadata = load_generator(str(path), expected_scale=4)
    assert metadata.scale == 4 and metadata.model["n_feats"] == 16 and metadata.engine_version
    assert set(metadata.normalization) == {"low_percentile", "high_percentile"}
    again, _ = load_generator(str(path.with_suffix(".json")))
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_wrong_scale_is_refused(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    with pytest.raises(CheckpointError, match="is for x2, but x4"):
        load_generator(str(path), expected_scale=4)


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        load_generator(str(path))


def test_truncated_and_non_safetensors_files_are_refused(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated|checksum"):
        read_metadata(str(path))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="not a safetensors"):
        read_metadata(str(junk))


class _Exploit:
    def __reduce__(self):  # unpickling this would create a file
        return (Path.touch, (Path(__file__).parent / "PWNED",))


def test_pickle_checkpoints_are_never_unpickled(tmp_path: Path) -> None:
    marker = Path(__file__).parent / "PWNED"
    for name in ("evil.pt", "evil.pth", "evil.safetensors"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(_Exploit()))
        with pytest.raises(CheckpointError):
            load_generator(str(path))
    assert not marker.exists()


def test_metadata_and_weights_disagreeing_is_refused(tmp_path: Path) -> None:
    from fagan_engine.archs import build_generator, preset_config
    from fagan_engine.config import NormalizationConfig

    small = build_generator(preset_config("fagan", 2, n_feats=16, n_blocks=1))
    wrong = CheckpointMetadata.create(preset_config("fagan", 2, n_feats=16, n_blocks=2), NormalizationConfig())
    path = save_checkpoint(str(tmp_path / "m.safetensors"), small.state_dict(), wrong)
    with pytest.raises(CheckpointError, match="metadata and weights disagree"):
        load_generator(str(path))


def test_edited_sidecar_or_header_is_refused(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    sidecar = path.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["scale"] = 4
    sidecar.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="disagree"):
        read_metadata(str(path))
    sidecar.unlink()
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = blob[8 : 8 + length]
    assert header.count(b'\\"scale\\": 2') == 2  # model.scale, then the top-level scale
    path.write_bytes(blob[:8] + header.replace(b'\\"scale\\": 2', b'\\"scale\\": 4', 1) + blob[8 + length :])
    with pytest.raises(CheckpointError, match="scale"):
        read_metadata(str(path))
    path.write_bytes(blob[:8] + header.replace(b'\\"scale\\": 2', b'\\"scale\\": 4') + blob[8 + length :])
    with pytest.raises(CheckpointError, match="disagree"):
        load_generator(str(path))


def test_read_metadata_needs_no_torch(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
        "from fagan_engine.checkpoint import read_metadata\n"
        f"print(read_metadata({str(path)!r}).scale)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"
